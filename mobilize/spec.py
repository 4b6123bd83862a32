"""ModelSpec: what a model is, independent of where it came from.

Every source (ONNX file, TorchScript, a callable, a mobilize checkpoint) becomes a ModelSpec;
every exporter reads one. The spec carries the PyTorch reference (or, for an ONNX source, the
original graph in onnxruntime) that every artifact is verified against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str | None = None  # "NCHW" for images; None when it has no spatial meaning
    description: str | None = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.layout:
            d["layout"] = self.layout
        if self.description:
            d["description"] = self.description
        return d


@dataclass
class SourceInfo:
    kind: str  # onnx | torchscript | callable | checkpoint | module
    path: str | None = None
    sha256: str | None = None
    label: str | None = None  # what the user typed

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256}


@dataclass
class ModelSpec:
    """A model ready to export.

    `module` is the torch.nn.Module to convert (None for an ONNX source, where `onnx_path` is
    the graph itself). `reference` maps a list of float32 arrays to a list of arrays and is
    the judge every artifact is compared with.
    """

    name: str
    inputs: list[TensorSpec]
    source: SourceInfo
    module: Any = None
    onnx_path: Path | None = None
    torchscript_path: Path | None = None
    outputs: list[TensorSpec] = field(default_factory=list)
    output_names: list[str] | None = None
    preprocess: dict | None = None
    labels: list[str] | None = None
    family: str | None = None
    metadata: dict = field(default_factory=dict)
    # Draws valid inputs for verification; the default is a seeded standard normal.
    sample_inputs: Callable[[np.random.Generator], list[np.ndarray]] | None = None
    # Optional: maps an image file (PIL.Image) to model inputs, used by --calib.
    calib_inputs: Callable[[Any], list[np.ndarray]] | None = None
    _reference: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None

    # -- running the reference -------------------------------------------------------------
    def reference(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._reference is not None:
            return self._reference(list(inputs))
        return run_torch_module(self.module, inputs)

    def random_inputs(self, rng: np.random.Generator) -> list[np.ndarray]:
        if self.sample_inputs is not None:
            return [np.ascontiguousarray(x, dtype=np.float32) for x in self.sample_inputs(rng)]
        return [rng.standard_normal(t.shape).astype(np.float32) for t in self.inputs]

    def infer_outputs(self, example: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the reference once and fill `outputs` with names and shapes."""
        outs = self.reference(example)
        names = self.output_names or default_names("output", len(outs))
        if len(names) != len(outs):
            names = default_names("output", len(outs))
        self.outputs = [
            TensorSpec(n, tuple(int(s) for s in o.shape), str(o.dtype)) for n, o in zip(names, outs)
        ]
        return outs


def default_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}{i}" for i in range(count)]


def flatten_outputs(out: Any) -> list:
    """Tensors of a forward() result in a stable order (tuples, lists and dicts flattened)."""
    if isinstance(out, dict):
        items = []
        for v in out.values():
            items.extend(flatten_outputs(v))
        return items
    if isinstance(out, (list, tuple)):
        items = []
        for v in out:
            items.extend(flatten_outputs(v))
        return items
    return [out]


def run_torch_module(module, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
        out = module(*tensors)
    return [o.detach().cpu().numpy() for o in flatten_outputs(out)]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
