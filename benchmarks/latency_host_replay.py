"""Replay the host validation from stored timings: no timing, so a change to the predictor can be
checked on every machine the chain was run on, in seconds.

For each machine (a pair of files written by latency_host_kernels.py and latency_host_zoo.py),
the host predictor is refitted from the stored benchncnn layer timings as fit_profiles.py does,
and the export test zoo (re-exported here: the graphs are deterministic) is predicted and
compared with the stored measurements. Also reports the refit's leave-one-model-out error.

    .venv/bin/python benchmarks/latency_host_replay.py            # the Xeon (shipped) and EPYC runs
        -> benchmarks/results/latency-host-replay.json
    .venv/bin/python benchmarks/latency_host_replay.py --machine NAME KERNELS.json ZOO.json ...

With the code unchanged, each machine's zoo errors equal its stored latency-host-zoo*.json
figures (the stored profile was fitted from the same layer timings). A run timed with sampled
convolutions (latency_host_zoo.py --sampled) is also refitted with them ("NAME+sampled"), with
how far the sampled layers of each kind lie from its fitted price (`sampled_layer_spread`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from latency_host_kernels import fit_host, shown  # noqa: E402
from latency_host_sampled import timed_bundles  # noqa: E402
from latency_host_zoo import cases, export_case  # noqa: E402
from mobilize.devices.fit import LAYER_FLOOR_MS  # noqa: E402
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.predictor import MAC_KINDS, error_summary, layer_quantities, predict, predict_graph  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BENCHNCNN = ROOT.parent / "shared" / "data" / "benchncnn"
# three later runs on the EPYC with sampled convolutions (latency_host_zoo.py --sampled, seeds 20261205, 2, 3)
SAMPLED_RUNS = {f"epyc-sampled-{i}": (RESULTS / f"latency-host-kernels-epyc-sampled-{i}.json",
                                      RESULTS / f"latency-host-zoo-epyc-sampled-{i}.json") for i in (1, 2, 3)}
MACHINES = {"xeon": (RESULTS / "latency-host-kernels.json", RESULTS / "latency-host-zoo.json"),
            "epyc": (RESULTS / "latency-host-kernels-epyc.json", RESULTS / "latency-host-zoo-epyc.json"),
            **SAMPLED_RUNS}
OUT = RESULTS / "latency-host-replay.json"


def zoo_graphs() -> dict:
    """The zoo's ncnn graphs at the sizes latency_host_zoo.py measures (exported, not timed)."""
    work = Path(tempfile.mkdtemp(prefix="mobilize-replay-"))
    try:
        cases_ = {label: export_case(work, label, name, shape) for label, name, shape in cases()}
        return {label: case[1] for label, case in cases_.items() if case is not None}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replay(kernels: Path, zoo: Path, bench: dict, graphs: dict, sampled: bool = False) -> dict:
    """The refit and its zoo errors; with `sampled`, the refit includes the sampled convolutions
    timed with the layers (latency_host_zoo.py --sampled)."""
    kern, measured = json.loads(kernels.read_text()), json.loads(zoo.read_text())
    record = fit_host(kern, bench, sampled=sampled)
    labels = sorted(k for k in measured["models"] if k in graphs)
    rows = {k: {"measured_ms": measured["models"][k]["measured_ms"], "predicted_ms": round(predict_graph(record, graphs[k]), 4)}
            for k in labels}
    for r in rows.values():
        r["error_pct"] = round((r["predicted_ms"] / r["measured_ms"] - 1) * 100, 1)
    out = {"kernels": shown(kernels), "zoo": shown(zoo), "sampled": sampled,
           "cpu": kern.get("cpu", "unrecorded"), "timed": kern.get("date"),
           "zoo_summary": error_summary([rows[k]["predicted_ms"] for k in labels], [rows[k]["measured_ms"] for k in labels]),
           "leave_one_model_out": record["error_band"]["loo"], "models": rows}
    if sampled:
        out["sampled_layer_spread"] = sampled_spread(kern, record)
    return out


def sampled_spread(kern: dict, record: dict) -> dict:
    """How far the sampled layers of each priced kind lie from that kind's fitted price (in sample:
    the fit saw them): per kind, the 10th, 50th and 90th percentile of measured / predicted. What one
    price per kind cannot express however well the calibration covers the shapes."""
    ratios: dict[str, list[float]] = {}
    graphs, layer_ms, _ = timed_bundles(kern)
    for name, g in graphs.items():
        timed = layer_ms[name]
        for c in g.layers:
            if c.name not in timed:
                continue
            q = layer_quantities(c, 1, kern["l2_cache_bytes"])
            kind = next(k for k in MAC_KINDS if q.get(k, 0) > 0)
            ratios.setdefault(kind, []).append(max(timed[c.name], LAYER_FLOOR_MS) / predict(record["prices"], q))
    return {k: {"layers": len(v), **{f"p{q}": round(float(np.percentile(v, q)), 2) for q in (10, 50, 90)}}
            for k, v in sorted(ratios.items())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", nargs=3, action="append", metavar=("NAME", "KERNELS", "ZOO"),
                    help="a machine's stored timings (default: the Xeon's and the EPYC's)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    machines = {n: (Path(k).resolve(), Path(z).resolve()) for n, k, z in args.machine} if args.machine else MACHINES
    if not BENCHNCNN.is_dir():
        raise SystemExit(f"{BENCHNCNN} is missing: the benchncnn architectures are needed to refit")
    bench = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in sorted(BENCHNCNN.glob("*.param"))}
    graphs = zoo_graphs()
    result = {"what": "host predictor refitted from stored layer timings, checked against stored zoo timings",
              "date": time.strftime("%Y-%m-%d"), "machines": {}}
    runs = [(name, k, z, False) for name, (k, z) in machines.items()]
    runs += [(f"{name}+sampled", k, z, True) for name, (k, z) in machines.items()
             if "sampled" in json.loads(k.read_text())]  # timed with latency_host_zoo.py --sampled
    for name, kernels, zoo, sampled in runs:
        r = replay(kernels, zoo, bench, graphs, sampled)
        result["machines"][name] = r
        z, lo = r["zoo_summary"], r["leave_one_model_out"]
        print(f"{name} ({r['cpu']}): zoo median {z['median_abs_pct']}%, p90 {z['p90_abs_pct']}%, "
              f"{z['within_20_pct']:.0%} within +-20%; leave-one-model-out median {lo['median_abs_pct']}%, "
              f"p90 {lo['p90_abs_pct']}%", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
