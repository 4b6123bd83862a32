"""Two retrieval artifacts' single-image embedding time, interleaved in one run (1 thread, batch 1).

Absolute times on this shared machine move 2x between runs; the ratio of two models timed turn
about is what holds. Used for the committed model against the one it replaced (docs/retrieval.md):

    mobilize export runs/retrieval-grocery/final-scratch/model.pt --target onnx,ncnn --out /tmp/old
    mobilize export benchmarks/results/retrieval-grocery.pt --target onnx,ncnn --out /tmp/new
    python benchmarks/retrieval_embed_ratio.py /tmp/old /tmp/new
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from mobilize.runtimes import open_predictor


def main(old: str, new: str, runs: int = 60) -> dict:
    out = {}
    for target in ("onnx", "ncnn"):
        predictors = {"old": open_predictor(old, target, threads=1), "new": open_predictor(new, target, threads=1)}
        inputs = {k: [np.random.default_rng(0).normal(size=[1, *p.inputs[0]["shape"][1:]]).astype(np.float32)]
                  for k, p in predictors.items()}
        times: dict = {k: [] for k in predictors}
        for k, p in predictors.items():
            for _ in range(5):
                p.run(inputs[k])
        for _ in range(runs):
            for k, p in predictors.items():
                t = time.perf_counter()
                p.run(inputs[k])
                times[k].append((time.perf_counter() - t) * 1000)
        for p in predictors.values():
            p.close()
        median = {k: float(np.median(v)) for k, v in times.items()}
        out[target] = {"old_ms": round(median["old"], 2), "new_ms": round(median["new"], 2),
                       "new_over_old": round(median["new"] / median["old"], 2)}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
