"""How does ncnn split a dense convolution over threads? Three rules checked on the published tables.

The predictor splits a dense convolution (GEMM, winograd) finely: at T threads its MACs cost 1/T
of their one-thread time (`predictor.parallel_units` returns 0 for it). ncnn's sources say the
compute loop is parallel over blocks of output channels only:

- ncnn since 2023 (`convolution_im2col_gemm.h`, `convolution_3x3_winograd.h`): the GEMM and the
  output transform run `#pragma omp parallel for` over M tiles (output channels), TILE_M a
  multiple of 8 on arm64; only the input packing is split over pixels;
- older ncnn (`convolution_sgemm_pack4.h`): over pairs of 4-channel packs on arm64 (8 channels),
  single packs on armv7 (4 channels).

So a convolution with 8 outputs (per group) would run on one thread, 16 on two. The rules:
"fine" (as shipped), "block4" and "block8" (ceil(outputs per group / block) pieces, each an equal
share, `predictor.imbalance`). Which ncnn built each published table is not recorded; QRB2210's
is the newest (2025, the only table with a vision transformer). Reported per rule: the
leave-one-model-out error of the several-thread configurations (device variant, as
latency_predictor.py), each configuration's in-sample fit (RMS log error over its own models),
and the unseen board from five models (30 subsets) with each reference board fitted under the
rule its own table fits best, the held-out board under "fine", "block8", the rule its full table
fits best (an oracle), or the rule of the three its five models fit best.

    .venv/bin/python benchmarks/latency_thread_rules.py   -> benchmarks/results/latency-thread-rules.json (~3 min)
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import latency_predictor as lp  # noqa: E402
from mobilize.devices import predictor  # noqa: E402
from mobilize.devices.fit import STRENGTH, reference_prior  # noqa: E402
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "latency-thread-rules.json"
RULES = {"fine": 0, "block4": 4, "block8": 8}
SHIPPED_UNITS = predictor.parallel_units


def rule_units(block: int):
    """parallel_units with a dense convolution split over blocks of `block` outputs per group."""
    def units(c):
        if block and c.kind.removesuffix("_int8") in predictor.DENSE:
            per = c.attrs.get("cout", 0) // max(1, c.attrs.get("group", 1))
            return max(1, math.ceil(per / block)) if per else 0
        return SHIPPED_UNITS(c)
    return units


def with_rule(block: int, fn, *args):
    predictor.parallel_units = rule_units(block)
    try:
        return fn(*args)
    finally:
        predictor.parallel_units = SHIPPED_UNITS


def summary(errs: list[float]) -> dict:
    a = np.abs(errs)
    return {"median_abs_pct": round(float(np.median(a)), 2), "p90_abs_pct": round(float(np.percentile(a, 90)), 2),
            "within_20_pct": round(float(np.mean(a <= 20)), 3)}


def in_sample_rms(graphs, cfg) -> float:
    names = sorted(cfg["ms"])
    feats = {m: predictor.features(graphs[m], threads=cfg["threads"]) for m in names}
    prices, _ = predictor.fit([feats[m] for m in names], [cfg["ms"][m] for m in names])
    r = [math.log(predictor.predict(prices, feats[m]) / cfg["ms"][m]) for m in names]
    return float(np.sqrt(np.mean(np.square(r))))


def unseen_by_rule(graphs, configs, own_rule: dict, subsets: int, k: int = 5, seed: int = 0) -> dict:
    feats = {(t, b): with_rule(b, lambda: {m: predictor.features(g, threads=t) for m, g in graphs.items()})
             for t in {c["threads"] for c in configs} for b in set(RULES.values())}

    def prices(cfg, b, names):
        f = feats[(cfg["threads"], b)]
        return predictor.fit([f[m] for m in names], [cfg["ms"][m] for m in names])[0]

    rng = random.Random(seed)
    out = {}
    for cfg in configs:
        refs = {o["label"]: prices(o, own_rule[o["label"]], sorted(o["ms"])) for o in configs if o["board"] != cfg["board"]}
        names = sorted(cfg["ms"])
        errs = {v: [] for v in ("fine", "block8", "oracle", "chosen by the five")}
        for _ in range(subsets):
            pick = rng.sample(names, k)
            ms = {m: cfg["ms"][m] for m in pick}
            test = [m for m in names if m not in pick]
            res = {}
            for b in sorted(set(RULES.values())):
                f = feats[(cfg["threads"], b)]
                prior, _ = reference_prior(f, ms, refs, STRENGTH)
                p, _ = predictor.fit([f[m] for m in pick], [ms[m] for m in pick], prior=prior, strength=STRENGTH)
                fit_rms = float(np.sqrt(np.mean([math.log(predictor.predict(p, f[m]) / ms[m]) ** 2 for m in pick])))
                res[b] = (fit_rms, [(predictor.predict(p, f[m]) / cfg["ms"][m] - 1) * 100 for m in test])
            chosen = min(res, key=lambda b: res[b][0])
            for v, b in (("fine", 0), ("block8", 8), ("oracle", own_rule[cfg["label"]]), ("chosen by the five", chosen)):
                errs[v].append(summary(res[b][1]))
        out[cfg["label"]] = {v: {key: round(float(np.median([s[key] for s in rows])), 3) for key in rows[0]}
                             for v, rows in errs.items()}
        print(f"unseen {cfg['label'][:40]}: " + "; ".join(
            f"{v} {s['median_abs_pct']}/{s['p90_abs_pct']}" for v, s in out[cfg["label"]].items()), flush=True)
    means = {v: {key: round(float(np.mean([r[v][key] for r in out.values()])), 2) for key in next(iter(out.values()))[v]}
             for v in next(iter(out.values()))}
    for v in means:
        means[v]["configurations_meeting_goal"] = sum(r[v]["median_abs_pct"] <= 10 and r[v]["p90_abs_pct"] <= 20
                                                      for r in out.values())
    return {"per_configuration": out, "mean": means}


def main() -> None:
    t0 = time.time()
    graphs = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in sorted(lp.DATA.glob("*.param"))}
    configs = lp.load_tables()
    several = [c for c in configs if c["threads"] > 1]
    lomo, rms = {}, {}
    for rule, b in RULES.items():
        rows = with_rule(b, lp.lomo, graphs, configs, STRENGTH)["device"]
        lomo[rule] = {r["device"]: {k: r[k] for k in ("median_abs_pct", "p90_abs_pct", "within_20_pct", "worst")}
                      for r in rows if not r["device"].split("|")[1].strip().startswith("1 ")}
        rms[rule] = {c["label"]: round(with_rule(b, in_sample_rms, graphs, c), 4) for c in several}
    own_rule = {c["label"]: RULES[min(RULES, key=lambda r: rms[r][c["label"]])] for c in several}
    unseen = unseen_by_rule(graphs, several, own_rule, subsets=30)
    result = {"what": __doc__.split("\n\n")[0], "date": time.strftime("%Y-%m-%d"),
              "leave_one_model_out_device": lomo, "in_sample_rms_log_error": rms,
              "rule_each_table_fits_best": {k: next(r for r, b in RULES.items() if b == v) for k, v in own_rule.items()},
              "unseen_board_five_models": unseen, "seconds": round(time.time() - t0)}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    for rule in RULES:
        print(rule, {lab[:24]: (v["median_abs_pct"], v["p90_abs_pct"]) for lab, v in lomo[rule].items()})
    print("in-sample rms", json.dumps(rms, indent=1))
    print("unseen means", json.dumps(unseen["mean"], indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
