"""Kernel-level measurement on this machine: every layer of a graph timed on its own.

nn-Meter's lesson is that latency is a sum over kernels and each kernel's cost depends on
its shape in ways FLOPs miss (a GEMM with 16 output channels runs far below peak; a winograd
tile grid padded from 7x7 to 8x8 wastes a quarter). A phone cannot be measured here, but
this machine runs the same ncnn kernel selection, so timing each layer in a one-layer
network shows how a kernel's efficiency moves with its shape. The Android predictor then
only has to learn, per kind of kernel, how much slower the phone is.

Each layer is run as `Input(s) -> layer` with empty weights, on one thread, with fp16 and
bf16 off (a Cortex-A53 has no fp16 arithmetic). The time kept is the minimum over repeats,
minus the same loop around an empty network: on a shared machine the minimum is what the
kernel costs, the rest is other people's work.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .graph import FREE, Graph, Layer, filled_mat, read_param


def _input_line(i: int, blob: str, shape: Sequence[int]) -> str:
    dims = list(shape)
    if len(dims) == 1:
        p = f"0={dims[0]}"
    elif len(dims) == 2:
        p = f"0={dims[1]} 1={dims[0]}"
    elif len(dims) == 3:
        p = f"0={dims[2]} 1={dims[1]} 2={dims[0]}"
    else:
        p = f"0={dims[3]} 1={dims[2]} 11={dims[1]} 2={dims[0]}"
    return f"Input in{i} 0 1 {blob} {p}"


def mini_param(layer: Layer, in_shapes: Sequence[Sequence[int]]) -> str:
    bottoms = [f"b{i}" for i in range(len(layer.bottoms))]
    tops = [f"t{i}" for i in range(len(layer.tops))]
    lines = [_input_line(i, b, s) for i, (b, s) in enumerate(zip(bottoms, in_shapes))]
    lines.append(" ".join([layer.type, "layer", str(len(bottoms)), str(len(tops)), *bottoms, *tops, *layer.raw]))
    return "7767517\n" + f"{len(lines)} {len(bottoms) + len(tops)}\n" + "\n".join(lines) + "\n"


def _avx512() -> bool:
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _packed(mat, ncnn):
    """The input in the packed layout a real graph would hand over (what ncnn's convert_layout picks)."""
    count = {1: mat.w, 2: mat.h}.get(mat.dims, mat.c)
    if _avx512():
        widths = (16, 8, 4)
    elif ncnn.cpu_support_x86_avx():
        widths = (8, 4)
    else:
        widths = (4,)
    for e in widths:
        if count % e == 0:
            return ncnn.convert_packing(mat, e)
    return mat


def signature(layer: Layer, in_shapes: Sequence[Sequence[int]]) -> str:
    text = layer.type + "|" + " ".join(layer.raw) + "|" + ";".join(",".join(map(str, s)) for s in in_shapes)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class KernelTimer:
    """Times one-layer networks; `overhead_ms` is the same loop around an empty network."""

    def __init__(self, threads: int = 1, min_reps: int = 5, max_reps: int = 200, budget_s: float = 0.15,
                 options: dict[str, bool] | None = None):
        self.threads = threads
        self.options = dict(options or {})  # ncnn Option overrides, e.g. {"use_winograd63_convolution": False}
        self.min_reps, self.max_reps, self.budget_s = min_reps, max_reps, budget_s
        self.tmp = Path(tempfile.mkdtemp(prefix="mobilize-kernels-"))
        self.cache: dict[str, float] = {}
        empty = Layer("Noop", "noop", ["x"], ["y"], {}, [])
        self.overhead_ms = 0.0
        try:
            self.overhead_ms = min(self._time_text(mini_param(empty, [[16]])) for _ in range(3))
        except Exception:
            self.close()  # e.g. a misspelt option: leave no temporary folder behind
            raise

    def _net(self, text: str):
        import ncnn

        path = self.tmp / f"k{os.getpid()}.param"
        path.write_text(text)
        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = self.threads
        opt.lightmode = True
        opt.use_vulkan_compute = False
        for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                     "use_bf16_packed"):
            if hasattr(opt, flag):
                setattr(opt, flag, False)
        for flag, value in self.options.items():
            if not hasattr(opt, flag):
                raise ValueError(f"ncnn.Option has no '{flag}'")
            setattr(opt, flag, value)
        if net.load_param(str(path)) != 0:
            raise RuntimeError("ncnn could not load a one-layer network")
        net.load_model(ncnn.DataReaderFromEmpty())
        return net

    def _time_text(self, text: str) -> float:
        import ncnn

        net = self._net(text)
        try:
            shapes = []
            for line in text.splitlines()[2:]:
                parts = line.split()
                if parts[0] != "Input":
                    continue
                kv = dict(t.split("=") for t in parts[5:])
                w, h, d, c = (int(kv.get(k, 0)) for k in ("0", "1", "11", "2"))
                shapes.append((parts[4], [x for x in (c, d, h, w) if x] or [w]))
            mats = [(name, _packed(filled_mat(shape), ncnn)) for name, shape in shapes]
            tops = [t for t in net.output_names()]
            best = float("inf")
            start = time.perf_counter()
            n = 0
            while n < self.max_reps and (n < self.min_reps or time.perf_counter() - start < self.budget_s):
                t0 = time.perf_counter()
                ex = net.create_extractor()
                for name, m in mats:
                    ex.input(name, m)
                for top in tops:
                    ex.extract(top, 1)  # 1: leave it packed, as the next layer of a real graph takes it
                del ex
                best = min(best, (time.perf_counter() - t0) * 1000)
                n += 1
            del mats
            return best
        finally:
            net.clear()

    def time_layer(self, layer: Layer, in_shapes: Sequence[Sequence[int]]) -> float:
        key = signature(layer, in_shapes)
        if key not in self.cache:
            raw = self._time_text(mini_param(layer, in_shapes))
            self.cache[key] = max(raw - self.overhead_ms, 0.0)
        return self.cache[key]

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def time_graph_layers(param: Path | str, graph: Graph, timer: KernelTimer) -> dict[str, float]:
    """{layer name: ms} for every layer that does work, measured one layer at a time."""
    layers = {layer.name: layer for layer in read_param(param)}
    out = {}
    for c in graph.layers:
        if c.kind == "free" or layers[c.name].type in FREE:
            continue
        out[c.name] = timer.time_layer(layers[c.name], c.in_shapes)
    return out


def fastest_layer_ms(layer: Layer, in_shapes: Sequence[Sequence[int]], passes: int,
                     options: dict[str, bool] | None = None) -> float:
    """One layer's fastest time over `passes` independent timers (a fresh network each: on a shared
    machine other jobs only ever add time), with optional ncnn Option overrides."""
    best = float("inf")
    for _ in range(passes):
        timer = KernelTimer(options=options)
        try:
            best = min(best, timer.time_layer(layer, in_shapes))
        finally:
            timer.close()
    return best
