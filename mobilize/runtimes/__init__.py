"""Run artifacts in their real runtimes; one module per runtime, one line each in RUNTIMES.

`open_predictor(source, target)` is what evaluation code uses: it gives the same interface
for a checkpoint (PyTorch) and for an exported artifact in any runtime, so "eval on the
artifact equals eval on the checkpoint" is one loop with two predictors.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput
from ..manifest import Manifest, is_artifact
from .base import Runtime, Session

# target -> "module:Class" (imported on first use: runtimes pull in heavy packages)
RUNTIMES = {
    "onnx": "mobilize.runtimes.onnxruntime:OnnxRuntime",
    "ncnn": "mobilize.runtimes.ncnn:NcnnRuntime",
    "tfjs": "mobilize.runtimes.tfjs:TFJSRuntime",
    "tflite": "mobilize.runtimes.tflite:TFLiteRuntime",
}


def get_runtime(target: str) -> Runtime:
    if target not in RUNTIMES:
        raise BadInput(f"no runtime for target '{target}'", f"known: {', '.join(RUNTIMES)}")
    module, cls = RUNTIMES[target].split(":")
    return getattr(importlib.import_module(module), cls)()


def open_session(directory: Path | str, target: str, threads: int | None = None,
                 manifest: Manifest | None = None) -> Session:
    manifest = manifest or Manifest.load(directory)
    if target not in manifest.targets:
        raise BadInput(f"'{directory}' has no {target} target", f"it has: {', '.join(manifest.targets) or 'none'}")
    record = manifest.targets[target]
    if record.status != "ok":
        raise BadInput(f"the {target} target of '{directory}' is {record.status}: {record.error}")
    return get_runtime(target).open(Path(directory), record, manifest.inputs, manifest.outputs, threads)


class Predictor:
    """Inputs in, outputs out, in PyTorch layout, whatever runs underneath."""

    def __init__(self, run, inputs: list[dict], outputs: list[dict], metadata: dict, preprocess, labels,
                 family: str | None, kind: str, closer=None, module=None):
        self._run = run
        self.inputs = inputs
        self.outputs = outputs
        self.metadata = metadata
        self.preprocess = preprocess
        self.labels = labels
        self.family = family
        self.kind = kind  # "torch" or the target name
        self.module = module
        self._closer = closer

    @property
    def batch_size(self) -> int:
        return int(self.inputs[0]["shape"][0])

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._run([np.ascontiguousarray(x, dtype=np.float32) for x in inputs])

    def predict(self, *batches: np.ndarray) -> list[np.ndarray]:
        """Run any number of samples (first axis) through a fixed-batch model in chunks."""
        n = len(batches[0])
        b = self.batch_size if self.module is None else 32  # a torch module takes any batch
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, b):
            part = [x[start:start + b] for x in batches]
            real = len(part[0])
            if real < b:  # pad the last chunk to the exported batch size
                part = [np.concatenate([p, np.repeat(p[-1:], b - real, 0)]) for p in part]
            outs = self.run(part)
            chunks.append([o[:real] for o in outs])
        return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]

    def close(self) -> None:
        if self._closer:
            self._closer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_predictor(source, target: str | None = None, threads: int | None = None) -> Predictor:
    """A checkpoint (or any export source) runs in PyTorch; an artifact directory runs `target`."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        if not is_artifact(Path(source)):
            raise BadInput(f"'{source}' is a directory but not a mobilize artifact (no manifest.json)")
        manifest = Manifest.load(source)
        if target is None:
            raise BadInput(f"'{source}' is an artifact: say which runtime to use",
                           f"pass --target ({', '.join(manifest.targets)})")
        session = open_session(source, target, threads, manifest)
        return Predictor(session.run, manifest.inputs, manifest.outputs, manifest.metadata, manifest.preprocess,
                         manifest.labels, manifest.family, target, session.close)
    if target not in (None, "torch", "pytorch"):
        raise BadInput(f"--target {target} needs an exported artifact directory, not '{source}'")
    from ..sources import load_source

    spec = load_source(source)
    if not spec.outputs:
        from ..sources import check_reference_runs

        check_reference_runs(spec)
    return Predictor(spec.reference, [t.to_dict() for t in spec.inputs], [t.to_dict() for t in spec.outputs],
                     spec.metadata, spec.preprocess, spec.labels, spec.family, "torch", module=spec.module)
