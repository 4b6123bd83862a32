"""Replay the host validation from stored timings: no timing, so a change to the predictor can be
checked on every machine the chain was run on, in seconds.

For each machine (a pair of files written by latency_host_kernels.py and latency_host_zoo.py),
the host predictor is refitted from the stored benchncnn layer timings as fit_profiles.py does,
and the export test zoo (re-exported here: the graphs are deterministic) is predicted and
compared with the stored measurements. Also reports the refit's leave-one-model-out error.

    .venv/bin/python benchmarks/latency_host_replay.py            # the Xeon (shipped) and EPYC timings
        -> benchmarks/results/latency-host-replay.json
    .venv/bin/python benchmarks/latency_host_replay.py --machine NAME KERNELS.json ZOO.json ...

With the code unchanged, each machine's zoo errors equal its stored latency-host-zoo*.json
figures (the stored profile was fitted from the same layer timings).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from latency_host_kernels import fit_host, shown  # noqa: E402
from latency_host_zoo import cases, export_case  # noqa: E402
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.predictor import error_summary, predict_graph  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BENCHNCNN = ROOT.parent / "shared" / "data" / "benchncnn"
MACHINES = {"xeon": (RESULTS / "latency-host-kernels.json", RESULTS / "latency-host-zoo.json"),
            "epyc": (RESULTS / "latency-host-kernels-epyc.json", RESULTS / "latency-host-zoo-epyc.json")}
OUT = RESULTS / "latency-host-replay.json"


def zoo_graphs() -> dict:
    """The zoo's ncnn graphs at the sizes latency_host_zoo.py measures (exported, not timed)."""
    work = Path(tempfile.mkdtemp(prefix="mobilize-replay-"))
    try:
        cases_ = {label: export_case(work, label, name, shape) for label, name, shape in cases()}
        return {label: case[1] for label, case in cases_.items() if case is not None}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replay(kernels: Path, zoo: Path, bench: dict, graphs: dict) -> dict:
    kern, measured = json.loads(kernels.read_text()), json.loads(zoo.read_text())
    record = fit_host(kern, bench)
    labels = sorted(k for k in measured["models"] if k in graphs)
    rows = {k: {"measured_ms": measured["models"][k]["measured_ms"], "predicted_ms": round(predict_graph(record, graphs[k]), 4)}
            for k in labels}
    for r in rows.values():
        r["error_pct"] = round((r["predicted_ms"] / r["measured_ms"] - 1) * 100, 1)
    return {"kernels": shown(kernels), "zoo": shown(zoo),
            "cpu": kern.get("cpu", "unrecorded"), "timed": kern.get("date"),
            "zoo_summary": error_summary([rows[k]["predicted_ms"] for k in labels], [rows[k]["measured_ms"] for k in labels]),
            "leave_one_model_out": record["error_band"]["loo"], "models": rows}


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
    for name, (kernels, zoo) in machines.items():
        r = replay(kernels, zoo, bench, graphs)
        result["machines"][name] = r
        z, lo = r["zoo_summary"], r["leave_one_model_out"]
        print(f"{name} ({r['cpu']}): zoo median {z['median_abs_pct']}%, p90 {z['p90_abs_pct']}%, "
              f"{z['within_20_pct']:.0%} within +-20%; leave-one-model-out median {lo['median_abs_pct']}%, "
              f"p90 {lo['p90_abs_pct']}%", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
