"""Run an ncnn artifact with ncnn's Python bindings.

ncnn has no batch axis: a [1, C, H, W] tensor is a C x H x W Mat, a [1, N] tensor a 1-D Mat.
fp16 storage and arithmetic are switched off unless the artifact's precision is fp16, so the
numbers compared are the numbers the weights define.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Runtime, Session, from_runtime, to_runtime


def configure(net, threads: int | None, fp16: bool) -> None:
    opt = net.opt
    opt.num_threads = int(threads or 1)
    opt.use_vulkan_compute = False
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        if hasattr(opt, flag):
            setattr(opt, flag, bool(fp16) and flag != "use_bf16_storage")


def owned_mat(ncnn, arr: np.ndarray):
    """A Mat that owns a copy of `arr`. ncnn.Mat(array) wraps the array without a reference
    count, and ncnn crashes when a first layer works in place on such an input."""
    shape = arr.shape
    if arr.ndim == 1:
        mat = ncnn.Mat(shape[0])
    elif arr.ndim == 2:
        mat = ncnn.Mat(shape[1], shape[0])
    elif arr.ndim == 3:
        mat = ncnn.Mat(shape[2], shape[1], shape[0])
    elif arr.ndim == 4:
        mat = ncnn.Mat(shape[3], shape[2], shape[1], shape[0])
    else:
        raise ValueError(f"ncnn takes at most 4 dims per sample, got {arr.ndim}")
    view = np.asarray(mat)
    view[...] = arr.reshape(view.shape)
    return mat


class NcnnSession(Session):
    def __init__(self, param: Path, weights: Path | None, record, spec_outputs, threads):
        import ncnn

        self.ncnn = ncnn
        self.net = ncnn.Net()
        configure(self.net, threads, fp16=False)
        if self.net.load_param(str(param)) != 0:
            raise RuntimeError(f"ncnn could not load {param.name}")
        if weights is None:
            self.net.load_model(ncnn.DataReaderFromEmpty())
        elif self.net.load_model(str(weights)) != 0:
            raise RuntimeError(f"ncnn could not load {weights.name}")
        self.io = record.io
        self.spec_outputs = spec_outputs
        self.threads = int(threads or 1)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        ex = self.net.create_extractor()
        for e, x in zip(self.io["inputs"], inputs):
            ex.input(e["name"], owned_mat(self.ncnn, to_runtime(x, e)))
        outs = []
        for e, s in zip(self.io["outputs"], self.spec_outputs):
            ret, mat = ex.extract(e["name"])
            if ret != 0:
                raise RuntimeError(f"ncnn could not compute output {e['name']} (code {ret})")
            outs.append(from_runtime(np.array(mat), e, s["shape"]))
        return outs

    def close(self) -> None:
        self.net.clear()


class NcnnRuntime(Runtime):
    name = "ncnn"
    target = "ncnn"

    def version(self) -> str:
        import ncnn

        return ncnn.__version__

    def open(self, directory: Path, record, spec_inputs, spec_outputs, threads=None) -> Session:
        directory = Path(directory)
        param = next(f.path for f in record.files if f.path.endswith(".param"))
        weights = next((f.path for f in record.files if f.path.endswith(".bin")), None)
        return NcnnSession(directory / param, directory / weights if weights else None, record, spec_outputs, threads)
