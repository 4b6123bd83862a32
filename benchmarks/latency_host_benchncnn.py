"""Measure this machine on the benchncnn architectures (empty weights, the benchncnn way).

These measurements calibrate the `host` profile's ncnn predictor. Rounds are interleaved so a burst of load from other processes
hits every model a little rather than one model a lot. Each round records its median and its
fastest run; on a machine shared with other jobs, which only ever add time, the fastest run
over all rounds is the stable figure (the per-round medians are kept too).

    .venv/bin/python benchmarks/latency_host_benchncnn.py [--rounds 3] [--threads 1 2]
        -> benchmarks/results/latency-host-benchncnn.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.host import measure_param  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "benchncnn"
OUT = ROOT / "benchmarks" / "results" / "latency-host-benchncnn.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    params = sorted(DATA.glob("*.param"))
    if args.models:
        params = [p for p in params if p.stem in args.models]
    rounds: dict = {}
    fastest: dict = {}
    for r in range(args.rounds):
        for threads in args.threads:
            for p in params:
                shapes = benchncnn_input_shapes(p)
                res = measure_param(p, shapes, threads=threads, warmup=3, runs=5, min_seconds=0.5, isolated=False)
                rounds.setdefault(str(threads), {}).setdefault(p.stem, []).append(res["latency_ms"])
                fastest.setdefault(str(threads), {}).setdefault(p.stem, []).append(res["min_ms"])
                print(f"round {r} t{threads} {p.stem:22s} {res['latency_ms']:9.2f} ms", flush=True)
    result = {
        "what": "benchncnn architectures on this machine (ms): per-round medians and fastest runs; latency_ms = median of round medians",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count(),
                    "note": "2 cores shared with other jobs; see docs/devices.md"},
        "date": time.strftime("%Y-%m-%d"),
        "rounds": rounds,
        "fastest_run_ms": fastest,
        "latency_ms": {t: {m: round(statistics.median(v), 3) for m, v in d.items()} for t, d in rounds.items()},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
