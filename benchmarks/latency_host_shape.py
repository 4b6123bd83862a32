"""Is one price per kind of kernel what limits the host predictor? A diagnostic, from stored timings.

The host predictor prices a layer by its kind (winograd, 1x1, im2col, depth-wise, each split by
shape) at one price per MAC. nn-Meter instead learns, per kernel, how cost moves with shape. This
adds that as a second stage: per priced kind, a ridge regression of the layer rows' log residual
(measured / predicted) on log input channels, output channels, output pixels and activation bytes,
fitted on the calibration layers (benchncnn's, with or without the sampled convolutions of
latency_host_sampled.py), and applied to each zoo layer (correction clipped to e^+-1.5). Kinds
with fewer than 10 layer rows keep their price. One specification, written before it was run;
not used by any profile (docs/devices-validation.md, "Sampled convolutions").

    .venv/bin/python benchmarks/latency_host_shape.py      -> benchmarks/results/latency-host-shape.json (~1 min)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from latency_host_kernels import fit_host  # noqa: E402
from latency_host_replay import BENCHNCNN, RESULTS, SAMPLED_RUNS, zoo_graphs  # noqa: E402
from latency_host_sampled import timed_bundles  # noqa: E402
from mobilize.devices.fit import LAYER_FLOOR_MS  # noqa: E402
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.predictor import MAC_KINDS, error_summary, layer_quantities, predict  # noqa: E402

OUT = RESULTS / "latency-host-shape.json"
RIDGE, MIN_ROWS, CLIP = 1.0, 10, 1.5


def kind_of(q: dict) -> str | None:
    return next((k for k in MAC_KINDS if q.get(k, 0) > 0), None)


def shape(c) -> list[float]:
    cin = c.in_shapes[0][0] if len(c.in_shapes[0]) >= 3 else 1
    pixels = float(np.prod(c.out_shape[1:])) if len(c.out_shape) >= 3 else 1.0
    return [1.0, np.log(cin), np.log(c.out_shape[0]), np.log(pixels), np.log(c.bytes + 1)]


def corrections(record: dict, timed: list[tuple], cache: float) -> dict[str, np.ndarray]:
    """Per kind, the ridge coefficients of the log residual on the shape (intercept unpenalised)."""
    rows: dict[str, list] = {}
    for graph, layer_ms in timed:
        for c in graph.layers:
            if c.kind == "free" or c.name not in layer_ms:
                continue
            q = layer_quantities(c, 1, cache)
            k = kind_of(q)
            if k:
                rows.setdefault(k, []).append((shape(c), np.log(max(layer_ms[c.name], LAYER_FLOOR_MS) / predict(record["prices"], q))))
    out = {}
    for k, v in rows.items():
        if len(v) >= MIN_ROWS:
            X, y = np.array([a for a, _ in v]), np.array([b for _, b in v])
            out[k] = np.linalg.solve(X.T @ X + RIDGE * np.diag([0, 1, 1, 1, 1]), X.T @ y)
    return out


def predict_corrected(record: dict, coef: dict, graph, cache: float) -> float:
    total = 0.0
    for c in graph.layers:
        if c.kind == "free":
            continue
        q = layer_quantities(c, 1, cache)
        t, k = predict(record["prices"], q), kind_of(q)
        if k in coef:
            t *= float(np.exp(np.clip(np.array(shape(c)) @ coef[k], -CLIP, CLIP)))
        total += t
    return total


def main() -> None:
    bench = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in sorted(BENCHNCNN.glob("*.param"))}
    zoo = zoo_graphs()
    result = {"what": "host predictor with a per-kind shape correction fitted on layer rows, on the export test zoo",
              "date": time.strftime("%Y-%m-%d"), "ridge": RIDGE, "min_rows": MIN_ROWS, "clip": CLIP, "runs": {}}
    for run, (kernels, zoo_file) in SAMPLED_RUNS.items():
        kern, measured = json.loads(kernels.read_text()), json.loads(zoo_file.read_text())
        cache = kern["l2_cache_bytes"]
        labels = sorted(k for k in measured["models"] if k in zoo)
        meas = [measured["models"][k]["measured_ms"] for k in labels]
        bundles, bundle_layer_ms, _ = timed_bundles(kern)
        for sampled in (False, True):
            record = fit_host(kern, bench, loo=False, sampled=sampled)
            timed = [(bench[m], kern["layer_ms"][m]) for m in kern["sum_ms"] if m in bench]
            if sampled:
                timed += [(g, bundle_layer_ms[n]) for n, g in bundles.items()]
            coef = corrections(record, timed, cache)
            pred = [predict_corrected(record, coef, zoo[k], cache) for k in labels]
            s = error_summary(pred, meas)
            name = run + ("+sampled" if sampled else "")
            result["runs"][name] = {"zoo_summary": s, "errors_pct": {k: round((p / m - 1) * 100, 1)
                                                                      for k, p, m in zip(labels, pred, meas)}}
            print(f"{name}: shape-corrected zoo median {s['median_abs_pct']}%, p90 {s['p90_abs_pct']}%, "
                  f"{s['within_20_pct']:.0%} within +-20%", flush=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
