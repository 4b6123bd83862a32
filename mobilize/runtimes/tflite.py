"""Run a TFLite artifact with the LiteRT interpreter (ai_edge_litert)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Runtime, Session, from_runtime, native_stderr_silenced, to_runtime


class TFLiteSession(Session):
    def __init__(self, path: Path, record, spec_outputs, threads):
        from ai_edge_litert.interpreter import Interpreter

        with native_stderr_silenced():
            self.interp = Interpreter(model_path=str(path), num_threads=int(threads or 1))
            self.interp.allocate_tensors()
        by_name_in = {d["name"]: d for d in self.interp.get_input_details()}
        by_name_out = {d["name"]: d for d in self.interp.get_output_details()}
        self.io = record.io
        self.inputs = [by_name_in[e["name"]]["index"] for e in self.io["inputs"]]
        self.outputs = [by_name_out[e["name"]]["index"] for e in self.io["outputs"]]
        self.spec_outputs = spec_outputs

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        for idx, e, x in zip(self.inputs, self.io["inputs"], inputs):
            self.interp.set_tensor(idx, to_runtime(x, e))
        self.interp.invoke()
        return [from_runtime(self.interp.get_tensor(idx).copy(), e, s["shape"])
                for idx, e, s in zip(self.outputs, self.io["outputs"], self.spec_outputs)]


class TFLiteRuntime(Runtime):
    name = "litert"
    target = "tflite"

    def version(self) -> str:
        from importlib.metadata import version

        return version("ai-edge-litert")

    def open(self, directory: Path, record, spec_inputs, spec_outputs, threads=None) -> Session:
        return TFLiteSession(Path(directory) / record.io["model"], record, spec_outputs, threads)
