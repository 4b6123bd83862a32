"""Run an ONNX artifact in onnxruntime (CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Runtime, Session, from_runtime, to_runtime


class OnnxRuntimeSession(Session):
    def __init__(self, path: Path, record, spec_inputs, spec_outputs, threads: int | None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.io = record.io
        self.spec_inputs = spec_inputs
        self.spec_outputs = spec_outputs

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feeds = {e["name"]: to_runtime(x, e) for e, x in zip(self.io["inputs"], inputs)}
        names = [e["name"] for e in self.io["outputs"]]
        outs = self.session.run(names, feeds)
        return [from_runtime(o, e, s["shape"]) for o, e, s in zip(outs, self.io["outputs"], self.spec_outputs)]


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    target = "onnx"

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def open(self, directory: Path, record, spec_inputs, spec_outputs, threads=None) -> Session:
        model = next(f.path for f in record.files if f.path.endswith(".onnx"))
        return OnnxRuntimeSession(Path(directory) / model, record, spec_inputs, spec_outputs, threads)
