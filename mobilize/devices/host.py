"""Latency measured on this machine: ncnn, ONNX Runtime, LiteRT (TFLite) and TF.js under Node.

Every measurement runs in a child process of its own, so its peak RSS is the runtime's and
the model's, not whatever the calling process had loaded before (PyTorch, TensorFlow). The
child warms up, then times `runs` inferences one after another and reports the median and
the 90th percentile: the first runs pay for allocation and caches, and a shared machine
gives a long tail that a mean would hide.

ncnn runs with the options benchncnn uses (ncnn's defaults, light mode, pool allocators),
because the published latencies that calibrate the Android predictor were taken that way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ..errors import BadInput, ToolFailed
from .graph import filled_mat

HOST_RUNTIMES = ("ncnn", "onnx", "tflite", "tfjs")


def summarize(ms: Sequence[float]) -> dict:
    import numpy as np

    a = np.asarray(ms, dtype=float)
    return {"latency_ms": round(float(np.median(a)), 4), "p90_ms": round(float(np.percentile(a, 90)), 4),
            "min_ms": round(float(a.min()), 4), "runs": int(a.size)}


def cpu_name() -> str:
    """This machine's CPU model as Linux reports it ("AMD EPYC", "Intel(R) Xeon(R) ..."), else the
    architecture: which machine a host measurement was taken on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.machine()


def l2_cache_bytes(default: int = 2 * 1024 * 1024) -> int:
    """This machine's per-core L2 size (Linux sysfs; `default` where it cannot be read): the
    host profile's "cached_bytes" threshold, as a Cortex-A53's 512 KiB L2 is the Android ones'."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    for idx in sorted(base.glob("index*")):
        try:
            if (idx / "level").read_text().strip() != "2" or (idx / "type").read_text().strip() == "Instruction":
                continue
            size = (idx / "size").read_text().strip()
            return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except (OSError, ValueError):
            continue
    return default


def _rss_mb() -> float:
    """Current resident set size of this process (Linux), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time_loop(step, warmup: int, runs: int, min_seconds: float = 0.0) -> list[float]:
    for _ in range(warmup):
        step()
    ms = []
    start = time.perf_counter()
    while len(ms) < runs or (time.perf_counter() - start < min_seconds and len(ms) < 20 * runs):
        t = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t) * 1000)
    return ms


# -- ncnn the benchncnn way -----------------------------------------------------------------
def ncnn_bench_net(param: Path, weights: Path | None, threads: int):
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.lightmode = True
    opt.num_threads = int(threads)
    opt.use_vulkan_compute = False
    opt.use_winograd_convolution = True
    opt.use_sgemm_convolution = True
    opt.use_packing_layout = True
    blob_pool, work_pool = ncnn.UnlockedPoolAllocator(), ncnn.PoolAllocator()
    opt.blob_allocator = blob_pool
    opt.workspace_allocator = work_pool
    if net.load_param(str(param)) != 0:
        raise ToolFailed(f"ncnn could not load {param}")
    if weights is None:
        net.load_model(ncnn.DataReaderFromEmpty())
    elif net.load_model(str(weights)) != 0:
        raise ToolFailed(f"ncnn could not load {weights}")
    return net, (blob_pool, work_pool)


def measure_ncnn(param: Path | str, input_shapes: dict[str, list[int]], threads: int = 1, warmup: int = 8,
                 runs: int = 20, weights: Path | str | None = None, min_seconds: float = 0.0) -> dict:
    """Time an ncnn graph as benchncnn does; empty weights unless `weights` is given."""
    base = _rss_mb()
    net, pools = ncnn_bench_net(Path(param), Path(weights) if weights else None, threads)
    mats = {k: filled_mat(v) for k, v in input_shapes.items()}
    outputs = list(net.output_names())

    def step():
        ex = net.create_extractor()
        for k, m in mats.items():
            ex.input(k, m)
        for o in outputs:
            ex.extract(o)
        del ex

    try:
        ms = _time_loop(step, warmup, runs, min_seconds)
    finally:
        mats.clear()
        net.clear()
        del pools
    return summarize(ms) | {"runtime": "ncnn", "threads": threads, "ms": [round(x, 4) for x in ms],
                            "baseline_rss_mb": round(base, 1)}


# -- artifact runtimes ----------------------------------------------------------------------
def _random_inputs(manifest) -> list:
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.standard_normal(t["shape"]).astype(np.float32) for t in manifest.inputs]


def measure_artifact_inprocess(directory: Path | str, target: str, threads: int = 1, warmup: int = 5,
                               runs: int = 30, min_seconds: float = 1.0) -> dict:
    """Load one target of an artifact in this process and time it; see `measure_artifact`."""
    from ..manifest import Manifest
    from ..runtimes import open_session

    manifest = Manifest.load(directory)
    base = _rss_mb()
    if target == "ncnn":
        record = manifest.targets[target]
        param = Path(directory) / record.io["model"]
        weights = Path(directory) / record.io["weights"] if record.io.get("weights") else None
        shapes = {e["name"]: e["shape"] for e in record.io["inputs"]}
        out = measure_ncnn(param, shapes, threads, warmup, runs, weights, min_seconds)
        out["baseline_rss_mb"] = round(base, 1)
        return out | {"peak_rss_mb": round(_peak_rss_mb(), 1)}
    t0 = time.perf_counter()
    session = open_session(directory, target, threads, manifest)
    load_ms = (time.perf_counter() - t0) * 1000
    inputs = _random_inputs(manifest)
    try:
        t0 = time.perf_counter()
        session.run(inputs)
        first_ms = (time.perf_counter() - t0) * 1000
        if target == "tfjs":  # one request, timed inside Node: no pipe round trip per run
            session.run(inputs, repeat=warmup)
            session.run(inputs, repeat=runs)
            ms = list(session.last_ms)
            extra = {"tfjs_memory": session.memory, "backend": "wasm (Node)"}
        else:
            ms = _time_loop(lambda: session.run(inputs), warmup, runs, min_seconds)
            extra = {}
    finally:
        session.close()
    return summarize(ms) | {"runtime": target, "threads": threads, "load_ms": round(load_ms, 2),
                            "first_ms": round(first_ms, 2), "ms": [round(x, 4) for x in ms],
                            "baseline_rss_mb": round(base, 1), "peak_rss_mb": round(_peak_rss_mb(), 1)} | extra


def _child(request: dict) -> dict:
    """Run one measurement in a fresh Python so peak RSS belongs to it alone."""
    env = dict(os.environ, OMP_NUM_THREADS=str(request.get("threads", 1)))
    proc = subprocess.run([sys.executable, "-m", "mobilize.devices.host", json.dumps(request)],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolFailed(f"measuring {request.get('target', 'ncnn')} on this machine failed: {err}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise ToolFailed(f"measuring {request.get('target', 'ncnn')} on this machine failed: {answer['error']}")
    return answer


def measure_artifact(directory: Path | str, target: str, threads: int = 1, warmup: int = 5, runs: int = 30,
                     min_seconds: float = 1.0) -> dict:
    """Median/p90 latency, load and first-run time and peak RSS of one target, measured here."""
    if target not in HOST_RUNTIMES:
        raise BadInput(f"'{target}' cannot be measured on this machine", f"use one of {', '.join(HOST_RUNTIMES)}")
    return _child({"kind": "artifact", "dir": str(directory), "target": target, "threads": threads,
                   "warmup": warmup, "runs": runs, "min_seconds": min_seconds})


def measure_param(param: Path | str, input_shapes: dict[str, list[int]], threads: int = 1, warmup: int = 8,
                  runs: int = 20, min_seconds: float = 0.0, isolated: bool = True) -> dict:
    """benchncnn on this machine for one architecture (empty weights)."""
    if not isolated:
        return measure_ncnn(param, input_shapes, threads, warmup, runs, None, min_seconds) | {
            "peak_rss_mb": round(_peak_rss_mb(), 1)}
    return _child({"kind": "param", "param": str(param), "shapes": input_shapes, "threads": threads,
                   "warmup": warmup, "runs": runs, "min_seconds": min_seconds})


def _main(argv: list[str]) -> int:
    req = json.loads(argv[0])
    try:
        if req["kind"] == "param":
            out = measure_ncnn(req["param"], req["shapes"], req["threads"], req["warmup"], req["runs"], None,
                               req.get("min_seconds", 0.0))
            out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        else:
            out = measure_artifact_inprocess(req["dir"], req["target"], req["threads"], req["warmup"],
                                             req["runs"], req.get("min_seconds", 1.0))
    except Exception as e:  # reported to the parent as data; it raises ToolFailed
        out = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
