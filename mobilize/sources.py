"""Turn what the user names (a file, a callable, a checkpoint, a module) into a ModelSpec.

A small registry: each loader says whether it recognises a source and how to load it. The
model families plug their checkpoints in through `mobilize.models.register_family`.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import BadInput
from .spec import ModelSpec, SourceInfo, TensorSpec, default_names, sha256_file

Shape = tuple[int, ...]


@dataclass
class SourceLoader:
    kind: str
    matches: Callable[[Any], bool]
    load: Callable[[Any, list[Shape] | None], ModelSpec]


_LOADERS: list[SourceLoader] = []


def register_source(kind: str, matches, load) -> None:
    _LOADERS.append(SourceLoader(kind, matches, load))


def parse_shape(text: str) -> Shape:
    parts = [p.strip() for p in re.split(r"[,x]", str(text).strip().strip("[]()"))]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise BadInput(
            f"--input-shape '{text}' is not a shape",
            "write positive integers separated by commas, e.g. --input-shape 1,3,224,224",
        )
    return shape


def parse_shapes(shapes: Sequence[str | Sequence[int]] | None) -> list[Shape] | None:
    if not shapes:
        return None
    out = []
    for s in shapes:
        out.append(parse_shape(s) if isinstance(s, str) else tuple(int(d) for d in s))
    return out


def load_source(source: Any, input_shapes=None, name: str | None = None) -> ModelSpec:
    """Load SOURCE into a ModelSpec. Raises BadInput with a one-line reason."""
    shapes = parse_shapes(input_shapes)
    if isinstance(source, Path):
        source = str(source)
    for loader in _LOADERS:
        if loader.matches(source):
            spec = loader.load(source, shapes)
            if name:
                spec.name = name
            return spec
    if isinstance(source, str) and not Path(source).exists() and ":" not in source:
        raise BadInput(f"source '{source}' does not exist", "give an .onnx file, a TorchScript file, "
                       "a mobilize checkpoint, or package.module:callable")
    raise BadInput(f"cannot tell what kind of model '{source}' is",
                   "give an .onnx file, a TorchScript file, a mobilize checkpoint, or package.module:callable")


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "model"
    return name[:64]


# -- nn.Module objects (the Python API) ------------------------------------------------------
def _is_module(source) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(source, torch.nn.Module)


def spec_from_module(module, shapes: list[Shape] | None, source: SourceInfo, name: str,
                     input_names: list[str] | None = None) -> ModelSpec:
    if not shapes:
        shapes = getattr(module, "mobilize_input_shapes", None)
        shapes = [tuple(s) for s in shapes] if shapes else None
    if not shapes:
        raise BadInput(f"'{name}' needs its input shape", "pass --input-shape 1,3,224,224 (once per input)")
    module.eval()
    if source.sha256 is None:
        source.sha256 = state_dict_sha256(module)
    names = input_names or getattr(module, "mobilize_input_names", None) or default_names("input", len(shapes))
    inputs = [TensorSpec(n, s, "float32", "NCHW" if len(s) == 4 else None) for n, s in zip(names, shapes)]
    spec = ModelSpec(name=name, inputs=inputs, source=source, module=module,
                     output_names=getattr(module, "mobilize_output_names", None))
    check_reference_runs(spec)
    return spec


def state_dict_sha256(module) -> str:
    """A fingerprint of the weights, for sources that are code rather than a file."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_reference_runs(spec: ModelSpec) -> None:
    """Fail early, as bad input, when the model rejects the shapes it was given."""
    example = spec.random_inputs(np.random.default_rng(0))
    try:
        spec.infer_outputs(example)
    except BadInput:
        raise
    except Exception as e:  # the model's own error, e.g. a shape mismatch
        shapes = " ".join(",".join(map(str, t.shape)) for t in spec.inputs)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"the model does not run on input shape {shapes}: {first[:300]}",
                       "check --input-shape (one per input, in forward() order)") from e


register_source(
    "module",
    _is_module,
    lambda m, shapes: spec_from_module(m, shapes, SourceInfo("module", label=type(m).__name__),
                                       _safe_name(type(m).__name__)),
)


# -- ONNX files ------------------------------------------------------------------------------
def _is_onnx(source) -> bool:
    return isinstance(source, str) and source.lower().endswith(".onnx")


def _load_onnx(source: str, shapes: list[Shape] | None) -> ModelSpec:
    import onnx

    path = Path(source)
    if not path.is_file():
        raise BadInput(f"source '{source}' does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"'{source}' is not a valid ONNX model: {first[:200]}") from e
    init_names = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init_names]
    if shapes and len(shapes) != len(graph_inputs):
        raise BadInput(f"'{path.name}' has {len(graph_inputs)} input(s) but {len(shapes)} --input-shape were given")
    inputs = []
    for k, gi in enumerate(graph_inputs):
        tt = gi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise BadInput(f"input '{gi.name}' of '{path.name}' is not float32",
                           "mobilize exports float32-input models")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if shapes:
            given = shapes[k]
            if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given)):
                raise BadInput(f"--input-shape {','.join(map(str, given))} does not fit input "
                               f"'{gi.name}' of shape {_fmt_dims(dims)}")
            dims = list(given)
        if any(d is None or d <= 0 for d in dims):
            raise BadInput(f"input '{gi.name}' has a dynamic shape {_fmt_dims(dims)}",
                           "pass --input-shape with fixed sizes, e.g. --input-shape 1,3,224,224")
        inputs.append(TensorSpec(gi.name, tuple(dims), "float32", "NCHW" if len(dims) == 4 else None))

    session = _ort_session(path)
    names = [i.name for i in inputs]

    def reference(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return list(session.run(None, dict(zip(names, arrays))))

    spec = ModelSpec(name=_safe_name(path.stem), inputs=inputs,
                     source=SourceInfo("onnx", path.name, sha256_file(path), source),
                     onnx_path=path.resolve(), output_names=[o.name for o in model.graph.output],
                     _reference=reference)
    check_reference_runs(spec)
    return spec


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _fmt_dims(dims) -> str:
    return "[" + ",".join("?" if d is None or d <= 0 else str(d) for d in dims) + "]"


register_source("onnx", _is_onnx, _load_onnx)


# -- Torch files: TorchScript or mobilize checkpoints ---------------------------------------
def _torch_file_kind(path: Path) -> str | None:
    if not path.is_file():
        return None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any("/code/" in n or n.startswith("code/") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "checkpoint"
        return None
    with open(path, "rb") as f:
        head = f.read(2)
    return "checkpoint" if head[:1] == b"\x80" else None  # legacy pickle


def _is_torch_file(source) -> bool:
    if not isinstance(source, str) or source.lower().endswith(".onnx"):
        return False
    p = Path(source)
    if p.suffix.lower() in {".pt", ".pth", ".ts", ".torchscript", ".jit", ".ckpt"}:
        return True
    return p.is_file() and _torch_file_kind(p) is not None


def _load_torch_file(source: str, shapes: list[Shape] | None) -> ModelSpec:
    path = Path(source)
    if not path.is_file():
        raise BadInput(f"source '{source}' does not exist")
    kind = _torch_file_kind(path)
    if kind == "torchscript":
        import torch

        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise BadInput(f"'{source}' is not a loadable TorchScript file: {str(e).splitlines()[0][:200]}") from e
        spec = spec_from_module(module, shapes, SourceInfo("torchscript", path.name, sha256_file(path), source),
                                _safe_name(path.stem))
        spec.torchscript_path = path.resolve()
        return spec
    if kind == "checkpoint":
        return load_checkpoint(path, shapes)
    raise BadInput(f"'{source}' is neither TorchScript nor a mobilize checkpoint (the file is corrupt or of another kind)")


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint as data (weights_only=True): a checkpoint never runs code."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"'{path}' is not a loadable checkpoint: {first[:200]}") from e
    if not isinstance(ckpt, dict) or "family" not in ckpt:
        raise BadInput(f"'{path}' is not a mobilize checkpoint (it has no 'family' entry)",
                       "export plain PyTorch models as package.module:callable or TorchScript")
    return ckpt


def load_checkpoint(path: Path, shapes: list[Shape] | None = None) -> ModelSpec:
    from .models import get_family

    ckpt = read_checkpoint(path)
    family = get_family(ckpt["family"])
    spec = family.spec_from_checkpoint(ckpt, shapes)
    spec.source = SourceInfo("checkpoint", path.name, sha256_file(path), str(path))
    spec.family = family.name
    if ckpt.get("average_of"):  # `mobilize average`: which runs the weights are the mean of
        spec.metadata["average_of"] = list(ckpt["average_of"])
    if spec.outputs == []:
        check_reference_runs(spec)
    return spec


register_source("torchfile", _is_torch_file, _load_torch_file)


# -- Callables: package.module:callable or path/to/file.py:callable --------------------------
_CALLABLE = re.compile(r"^(?P<mod>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


def _is_callable_ref(source) -> bool:
    return isinstance(source, str) and bool(_CALLABLE.match(source)) and not Path(source).exists()


def import_callable(ref: str):
    m = _CALLABLE.match(ref)
    assert m
    mod_name, attr = m["mod"], m["attr"]
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise BadInput(f"cannot import '{ref}': file '{mod_name}' does not exist")
            mod_id = f"_mobilize_user_{_safe_name(path.stem)}"
            spec = importlib.util.spec_from_file_location(mod_id, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_id] = module
            sys.path.insert(0, str(path.parent.resolve()))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.pop(0)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(mod_name)
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"cannot import '{ref}': {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BadInput(f"cannot import '{ref}': '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BadInput(f"'{ref}' is not callable")
    return obj


def _load_callable(source: str, shapes: list[Shape] | None) -> ModelSpec:
    import torch

    factory = import_callable(source)
    try:
        module = factory()
    except Exception as e:
        raise BadInput(f"calling '{source}' failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(module, torch.nn.Module):
        raise BadInput(f"'{source}' returned {type(module).__name__}, not a torch.nn.Module")
    name = _safe_name(_CALLABLE.match(source)["attr"].split(".")[-1])
    return spec_from_module(module, shapes, SourceInfo("callable", source, None, source), name)


register_source("callable", _is_callable_ref, _load_callable)
