"""Time every layer of the benchncnn architectures on this machine, one layer at a time.

The kernel-level data behind the shape-aware kernel model (see mobilize/devices/kernels.py):
what a layer of a given shape costs on one core, measured as the minimum over repeats.

    .venv/bin/python benchmarks/latency_host_kernels.py [--passes 4]
        -> benchmarks/results/latency-host-kernels.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilize.devices.fit import fit_predictor, loo_error_band  # noqa: E402
from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.host import cpu_name, l2_cache_bytes  # noqa: E402
from mobilize.devices.kernels import KernelTimer, time_graph_layers  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "benchncnn"
OUT = ROOT / "benchmarks" / "results" / "latency-host-kernels.json"


def kernels_record(best: dict[str, dict[str, float]], passes: int) -> dict:
    """The stored form of {model: {layer: fastest ms}}: what fit_profiles.py reads."""
    return {"what": "per-layer latency (ms) on this machine, 1 thread, fp32, min over repeats and passes",
            "date": time.strftime("%Y-%m-%d"), "passes": passes, "cpu": cpu_name(),
            "l2_cache_bytes": l2_cache_bytes(),  # of the machine measured: the host fit's cache threshold
            "layer_ms": {m: {k: round(v, 5) for k, v in d.items()} for m, d in best.items()},
            "sum_ms": {m: round(sum(d.values()), 3) for m, d in best.items()}}


def fit_host(kern: dict, graphs: dict, loo: bool = True, sampled: bool = False) -> dict:
    """The host predictor record fitted on a kernels record (`kernels_record`): on whole-model
    sums and on every layer on its own, below the L2 of the machine the layers were timed on.
    What fit_profiles.py ships, latency_host_zoo.py --interleave validates and
    latency_host_replay.py refits. With `sampled` (and a record that holds them,
    latency_host_zoo.py --sampled), the sampled convolution bundles (latency_host_sampled.py) join
    the calibration as models of their own; the leave-one-model-out error is still reported on the
    benchncnn models alone."""
    ms = {m: v for m, v in kern["sum_ms"].items() if m in graphs and v > 0}
    graphs = {m: graphs[m] for m in ms}
    layer_ms = {m: kern["layer_ms"][m] for m in ms}
    if sampled:
        from latency_host_sampled import timed_bundles

        bundle_graphs, bundle_layer_ms, bundle_ms = timed_bundles(kern)
        graphs, layer_ms, ms = graphs | bundle_graphs, layer_ms | bundle_layer_ms, ms | bundle_ms
    record = fit_predictor(graphs, ms, prior=None, cache_bytes=kern["l2_cache_bytes"], layer_ms=layer_ms, loo=loo)
    if sampled and loo:  # the error band on the architectures, as without the bundles
        models = record["calibration"]["models"]
        names = [m for m in models if m in kern["sum_ms"]]
        pred, meas = [models[m]["loo_predicted_ms"] for m in names], [models[m]["measured_ms"] for m in names]
        record["error_band"] = loo_error_band(pred, meas)
    return record


def shown(path: Path) -> str:
    """A path as recorded in results: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=4, help="independent passes; the minimum per layer is kept")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    params = sorted(DATA.glob("*.param"))
    graphs = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in params}
    best: dict = {}
    for i in range(args.passes):
        timer = KernelTimer()
        for p in params:
            t = time.time()
            times = time_graph_layers(p, graphs[p.stem], timer)
            for layer, ms in times.items():
                prev = best.setdefault(p.stem, {}).get(layer)
                best[p.stem][layer] = ms if prev is None else min(prev, ms)
            print(f"pass {i} {p.stem:22s} sum {sum(times.values()):9.2f} ms ({time.time() - t:.1f} s)", flush=True)
        timer.close()
    Path(args.out).write_text(json.dumps(kernels_record(best, args.passes), indent=0) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
