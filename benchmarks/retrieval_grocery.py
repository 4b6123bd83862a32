"""Retrieval on the Grocery Store dataset: one technique per row, then the deployed artifacts.

Queries: val/ photos. Gallery: train/ photos + catalog/ iconic images. No pretrained weights.

    python benchmarks/retrieval_grocery.py train ROW [ROW...]   # train rows (skips finished ones)
    python benchmarks/retrieval_grocery.py report               # evaluate, export, time -> JSON

Rows (ablation rows share a short schedule; "final" is the longer run of the kept recipe):

    softmax      1  softmax baseline
    arcface      2  ArcFace instead of softmax
    triplet      3  + batch-hard triplet
    erasing      4  + random erasing
    (rerank)     5  + k-reciprocal re-ranking at query time (evaluation of row 4's model)
    mutual       6  + deep mutual learning (two students, one deployed)
    att-none / att-channel: row 4 without attention / with channel instead of spatial attention
    final        the kept recipe, longer schedule, 160 px: the committed checkpoint

Runs go to runs/retrieval-grocery/ROW (git-ignored); results to
benchmarks/results/retrieval-grocery.json; the final checkpoint to
benchmarks/results/retrieval-grocery.pt. Training is on CPU; with other jobs on the machine,
`--threads 1` per run is faster than 2 threads (less OpenMP contention).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GROCERY", REPO.parent / "shared" / "data" / "grocery"))
RUNS = REPO / "runs" / "retrieval-grocery"
RESULTS = REPO / "benchmarks" / "results"

SHORT = dict(width=0.5, train_size=96, input_size=128, epochs=15)
ROWS = {
    "softmax": dict(SHORT, head="softmax", triplet_weight=0.0, random_erasing=0.0),
    "arcface": dict(SHORT, head="arcface", triplet_weight=0.0, random_erasing=0.0),
    "triplet": dict(SHORT, head="arcface", triplet_weight=1.0, random_erasing=0.0),
    "erasing": dict(SHORT, head="arcface", triplet_weight=1.0, random_erasing=0.5),
    "mutual": dict(SHORT, head="arcface", triplet_weight=1.0, random_erasing=0.5, mutual=True),
    "att-none": dict(SHORT, head="arcface", triplet_weight=1.0, random_erasing=0.5, attention="none"),
    "att-channel": dict(SHORT, head="arcface", triplet_weight=1.0, random_erasing=0.5, attention="channel"),
}
FINAL = dict(width=0.5, train_size=128, input_size=160, epochs=40, head="arcface", triplet_weight=1.0, random_erasing=0.5)
ROWS["final"] = FINAL


def train_row(name: str, threads: int) -> None:
    from mobilize._ui import Reporter
    from mobilize.models.retrieval.train import TrainConfig, train

    out = RUNS / name
    if (out / "model.pt").exists():
        print(f"{name}: done already ({out / 'model.pt'})")
        return
    cfg = TrainConfig(data=str(DATA), out=str(out), threads=threads, seed=0, eval_every=5,
                      resume=(out / "last.pt").exists(), **ROWS[name])
    summary = train(cfg, Reporter())
    summary.pop("history", None)
    print(json.dumps({name: summary}, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("rows", nargs="+", choices=list(ROWS))
    t.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report")
    r.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not DATA.is_dir():
        print(f"grocery data not found at {DATA} (set GROCERY=...)", file=sys.stderr)
        return 2
    if args.cmd == "train":
        for row in args.rows:
            train_row(row, args.threads)
        return 0
    from benchmarks_retrieval_report import report  # noqa: E402  (filled in below)

    return report(args)


if __name__ == "__main__":
    raise SystemExit(main())
