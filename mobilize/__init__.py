"""mobilize: compact vision models from data to verified artifacts for phones and browsers.

    import mobilize
    manifest = mobilize.export("model.onnx", target="all", out="artifacts/model")
    print(manifest.ok, manifest.targets["ncnn"].parity["passed"])
"""

__version__ = "0.1.0"


def export(*args, **kwargs):
    from ._export import export as _export

    return _export(*args, **kwargs)


export.__doc__ = """Export a model to ONNX, ncnn, TF.js and TFLite, verify each, return the manifest.

See mobilize._export.export for the arguments."""


def average(*args, **kwargs):
    from ._average import average as _average

    return _average(*args, **kwargs)


average.__doc__ = """Average several runs' weights into one checkpoint. See mobilize._average.average for the arguments."""

__all__ = ["average", "export", "__version__"]
