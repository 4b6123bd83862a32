"""How good is the ncnn latency predictor on devices it cannot see? (published benchncnn tables)

1. Leave-one-model-out, per device configuration: the held-out architecture is removed from
   everything (the pooled prior and the device's own prices), then predicted. Variants:
     device      the device's own prices, except the fully connected weights' price, which
                 leans on the other devices' pooled relative prices (OWN_TABLE_STRENGTH: what
                 the shipped profiles use)
     own         the device's own prices only (the shipped profiles until 2026-11-22)
     prior       the device's prices shrunk towards the other devices' pooled relative prices
   (the other devices' prices are fitted without the held-out model too)
2. An unseen device: hold out one board entirely (all its configurations), calibrate from five
   of its models with the other boards as references (as `mobilize device calibrate` does: the
   prior is the boards' prices weighted by how well each explains the five models; "pooled":
   weighted alike), predict its other models; repeated over random five-model subsets, at
   several prior strengths.
3. The band of such a calibration: `device calibrate` reports each prediction as x/e^b .. x*e^b.
   Does it hold on the held-out board's other models 90% of the time? Per calibration size, the
   rule shipped since 2026-12-05 (`calibration_bands`, recomputed here without the board being
   checked) against a simpler one and the rule before it (see `band_coverage`).
4. `check`'s evidence note (a prediction leaning on kinds fewer than two boards ran): which
   leave-one-model-out predictions it marks, and the unseen board's figures over the predictions
   it does not flag ("unflagged").

    .venv/bin/python benchmarks/latency_predictor.py  -> benchmarks/results/latency-predictor.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.check import evidence_note  # noqa: E402
from mobilize.devices.fit import (CALIBRATION_SIZES, MIN_BAND, OWN_TABLE_STRENGTH, STRENGTH, calibration_bands,  # noqa: E402
                                  held_out_calibrations, kinds_on_few_boards, pooled_prior, reference_prior, seen_kinds)
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.predictor import error_summary, features, fit, layer_breakdown, predict  # noqa: E402
from mobilize.devices.profiles import load_profile  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "benchncnn"
OUT = ROOT / "benchmarks" / "results" / "latency-predictor.json"


def load_tables() -> list[dict]:
    pub = json.loads((DATA / "published_lowend.json").read_text())
    configs = []
    for d in pub["devices"]:
        for r in d["runs"]:
            cfg = r["cfg"]
            if cfg["gpu_device"] != -1:
                continue  # Vulkan GPU runs are not CPU latency
            board = d["device"].split("(")[0].strip()
            label = f"{board} | {cfg['num_threads']} thread(s), powersave={cfg['powersave']}"
            configs.append({"board": board, "label": label, "threads": cfg["num_threads"], "ms": r["res"]})
    return configs


def device_prices(feats, table: dict, names) -> dict:
    prices, _ = fit([feats[m] for m in names], [table[m] for m in names])
    return prices


def thread_features(graphs, configs) -> dict[int, dict]:
    """Each model's features at each thread count in the tables (a layer's OpenMP imbalance
    depends on the thread count)."""
    return {t: {m: features(g, threads=t) for m, g in graphs.items()} for t in sorted({c["threads"] for c in configs})}


def lomo(graphs, configs, strength) -> dict:
    models = sorted(graphs)
    tfeats = thread_features(graphs, configs)
    preds = {v: [dict() for _ in configs] for v in ("device", "prior", "own")}
    for i, held in enumerate(models):
        t0 = time.time()
        own = [device_prices(tfeats[c["threads"]], c["ms"], sorted(m for m in c["ms"] if m != held)) for c in configs]
        for c, cfg in enumerate(configs):
            if held not in cfg["ms"]:
                continue
            feats = tfeats[cfg["threads"]]
            names = sorted(m for m in cfg["ms"] if m != held)
            others = [own[j] for j, o in enumerate(configs) if j != c and (o["threads"] == 1) == (cfg["threads"] == 1)]
            x, y = [feats[m] for m in names], [cfg["ms"][m] for m in names]
            prior = pooled_prior(others)
            p_prior, _ = fit(x, y, prior=prior, strength=strength)
            p_device, _ = fit(x, y, prior=prior, strength=OWN_TABLE_STRENGTH)
            preds["own"][c][held] = predict(own[c], feats[held])
            preds["device"][c][held] = predict(p_device, feats[held])
            preds["prior"][c][held] = predict(p_prior, feats[held])
        print(f"[{i + 1}/{len(models)}] held out {held} ({time.time() - t0:.1f} s)", flush=True)
    out = {}
    for variant, per_cfg in preds.items():
        rows = []
        for c, cfg in enumerate(configs):
            names = sorted(per_cfg[c])
            s = error_summary([per_cfg[c][m] for m in names], [cfg["ms"][m] for m in names])
            s["device"] = cfg["label"]
            s["worst"] = sorted(((round(per_cfg[c][m] / cfg["ms"][m] * 100 - 100, 1), m) for m in names),
                                key=lambda x: -abs(x[0]))[:4]
            s["predicted_ms"] = {m: round(per_cfg[c][m], 2) for m in names}
            s["measured_ms"] = {m: cfg["ms"][m] for m in names}
            rows.append(s)
        out[variant] = rows
    return out


def unseen_device(graphs, configs, strength_grid, subsets: int, k: int = 5, seed: int = 0) -> dict:
    """Per held-out configuration, per prior variant and strength: error over random k-model
    calibrations. Variants: "weighted" (what `device calibrate` does: the other boards' prices,
    each weighted by how well it explains the k models) and "pooled" (all weighted alike)."""
    rng = random.Random(seed)
    tfeats = thread_features(graphs, configs)
    ran_by = models_ran(tfeats)
    boards = sorted({c["board"] for c in configs})
    result = {}
    for board in boards:
        rest = [c for c in configs if c["board"] != board]
        rest_prices = [device_prices(tfeats[c["threads"]], c["ms"], sorted(c["ms"])) for c in rest]
        for cfg in [c for c in configs if c["board"] == board]:
            feats = tfeats[cfg["threads"]]
            same = {o["label"]: p for p, o in zip(rest_prices, rest) if (o["threads"] == 1) == (cfg["threads"] == 1)}
            ran = kinds_ran([o for o in rest if (o["threads"] == 1) == (cfg["threads"] == 1)], ran_by)
            pooled = pooled_prior(list(same.values()))
            names = sorted(cfg["ms"])
            picks = [rng.sample(names, k) for _ in range(subsets)]
            per_variant = {}
            for variant in ("weighted", "pooled"):
                per_strength = {}
                for strength in strength_grid:
                    meds, p90s, w20s, pooled_err, chosen = [], [], [], [], []
                    unflagged, flagged = [], 0
                    per_model: dict[str, list[float]] = {}
                    for pick in picks:
                        ms = {m: cfg["ms"][m] for m in pick}
                        prior = pooled
                        if variant == "weighted":
                            prior, evidence = reference_prior(feats, ms, same, strength)
                            chosen.append(next(iter(evidence)))
                        prices, _ = fit([feats[m] for m in pick], [ms[m] for m in pick], prior=prior, strength=strength)
                        test = [m for m in names if m not in pick]
                        pred = [predict(prices, feats[m]) for m in test]
                        s = error_summary(pred, [cfg["ms"][m] for m in test])
                        meds.append(s["median_abs_pct"])
                        p90s.append(s["p90_abs_pct"])
                        w20s.append(s["within_20_pct"])
                        pooled_err += [abs(p / cfg["ms"][m] - 1) * 100 for p, m in zip(pred, test)]
                        for p, m in zip(pred, test):
                            per_model.setdefault(m, []).append((p / cfg["ms"][m] - 1) * 100)
                        if variant == "weighted" and strength == STRENGTH:  # the predictions check does not flag
                            record = {"prices": prices, "threads": cfg["threads"], "kinds_on_few_boards":
                                      kinds_on_few_boards(ran | {"phone": set().union(*(ran_by[m] for m in pick))})}
                            keep = []
                            for p, m in zip(pred, test):
                                rows = layer_breakdown(record, graphs[m])
                                if evidence_note(record, rows, sum(r["ms"] for r in rows)):
                                    flagged += 1
                                else:
                                    keep.append((p, cfg["ms"][m]))
                            unflagged.append(error_summary(*zip(*keep)))
                    per_strength[str(strength)] = {
                        "median_abs_pct": round(float(np.median(meds)), 2),
                        "p90_abs_pct": round(float(np.median(p90s)), 2),
                        "within_20_pct": round(float(np.median(w20s)), 3),
                        "all_predictions_median_abs_pct": round(float(np.median(pooled_err)), 2),
                        "all_predictions_p90_abs_pct": round(float(np.percentile(pooled_err, 90)), 2),
                        "subsets": subsets, "calibration_models": k, "test_models": len(names) - k}
                    if unflagged:
                        per_strength[str(strength)]["unflagged"] = {
                            "what": "the same, over the predictions check's evidence note does not flag",
                            "flagged_predictions": flagged,
                            **{k: round(float(np.median([u[k] for u in unflagged])), 3 if k == "within_20_pct" else 2)
                               for k in ("median_abs_pct", "p90_abs_pct", "within_20_pct")}}
                    if chosen:
                        per_strength[str(strength)]["nearest_reference"] = {c: chosen.count(c) for c in sorted(set(chosen))}
                    if strength == STRENGTH:  # which models miss: median signed error, share of subsets beyond +-20%
                        per_strength[str(strength)]["per_model"] = {
                            m: {"median_error_pct": round(float(np.median(e)), 1),
                                "beyond_20_pct": round(float(np.mean(np.abs(e) > 20)), 2)}
                            for m, e in sorted(per_model.items())}
                per_variant[variant] = per_strength
            result[cfg["label"]] = per_variant
            print(f"unseen {cfg['label']}: " + "; ".join(
                f"{v} {per_variant[v][str(STRENGTH)]['median_abs_pct']}/{per_variant[v][str(STRENGTH)]['p90_abs_pct']}"
                f"/{per_variant[v][str(STRENGTH)]['within_20_pct']}" for v in per_variant), flush=True)
    return result


def unseen_mean(unseen: dict, variant: str, strength: str, part: str | None = None) -> dict:
    rows = [v[variant][strength] if part is None else v[variant][strength][part] for v in unseen.values()]
    out = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("median_abs_pct", "p90_abs_pct", "within_20_pct")}
    out["configurations_meeting_goal"] = sum(r["median_abs_pct"] <= 10 and r["p90_abs_pct"] <= 20 for r in rows)
    return out


def class_tables(configs, tfeats, one: bool) -> list[dict]:
    """The configurations at one thread class (one thread, or several), as `held_out_calibrations` takes them."""
    return [{"board": c["board"], "label": c["label"], "feats": tfeats[c["threads"]], "ms": c["ms"],
             "prices": device_prices(tfeats[c["threads"]], c["ms"], sorted(c["ms"]))}
            for c in configs if (c["threads"] == 1) == one]


def band_coverage(graphs, configs, subsets: int, sizes=CALIBRATION_SIZES) -> dict:
    """Per thread class and calibration size: how often a calibrated profile's band held the
    held-out board's other models. Rules: "shipped" (the larger of the held-out calibrations'
    pooled p90 and the k models' own leave-one-out band times the held-out factor, both computed
    from the other boards only), "pooled p90" (the larger of that p90 and the own band: the rule
    of the first 2026-12-05 commit) and "before" (below 10 models, the larger of the own band and
    the prior profile's)."""
    tfeats = thread_features(graphs, configs)
    rules = ("before", "pooled p90", "shipped")
    out = {}
    for one in (True, False):
        tables = class_tables(configs, tfeats, one)
        prior_band = load_profile("android-lowend-1t" if one else "android-lowend").band
        boards = sorted({t["board"] for t in tables})
        per_size = {}
        for k in sizes:
            hits = {t["label"]: {r: [] for r in rules} for t in tables}
            bands = {r: [] for r in rules}
            for board in boards:
                held_out = calibration_bands([t for t in tables if t["board"] != board], (k,), subsets)[str(k)]
                targets = [i for i, t in enumerate(tables) if t["board"] == board]
                for i, _, own, err in held_out_calibrations(tables, k, subsets, targets=targets):
                    floored = max(own, MIN_BAND)  # the band of the k models alone, as `fit_predictor` gives it
                    rule = {"before": max(floored, prior_band) if k < 10 else floored,
                            "pooled p90": max(floored, held_out["log_p90"]),
                            "shipped": max(held_out["log_p90"], held_out["own_factor"] * own, MIN_BAND)}
                    for r, b in rule.items():
                        bands[r].append(b)
                        hits[tables[i]["label"]][r] += [abs(e) <= b for e in err.values()]
            row = {r: {"coverage": round(float(np.mean([h for v in hits.values() for h in v[r]])), 3),
                       "median_band_x": round(float(np.exp(np.median(bands[r]))), 3),
                       "configurations_covered_90": int(sum(np.mean(v[r]) >= 0.9 for v in hits.values())),
                       "worst_configuration": round(float(min(np.mean(v[r]) for v in hits.values())), 3)}
                   for r in rules}
            row["per_configuration"] = {lab: {r: round(float(np.mean(v[r])), 3) for r in v} for lab, v in hits.items()}
            per_size[str(k)] = row
            print(f"band coverage, {'1 thread' if one else 'several threads'}, {k} models: " + "; ".join(
                f"{r} {row[r]['coverage']:.0%} (worst {row[r]['worst_configuration']:.0%}, x{row[r]['median_band_x']})"
                for r in rules), flush=True)
        out["1 thread" if one else "several threads"] = per_size
    return out


def models_ran(tfeats: dict[int, dict]) -> dict[str, set]:
    """{model: the kinds it runs at any of the thread counts}."""
    models = next(iter(tfeats.values()))
    return {m: seen_kinds([f[m] for f in tfeats.values()]) for m in models}


def kinds_ran(configs, ran_by: dict[str, set], without: str | None = None) -> dict[str, set]:
    """{board: the kinds its models ran} over these configurations (`without` one model)."""
    ran: dict[str, set] = {}
    for c in configs:
        ran.setdefault(c["board"], set()).update(*(ran_by[n] for n in c["ms"] if n != without))
    return ran


def evidence_marks(graphs, configs, rows) -> dict:
    """Which leave-one-model-out predictions `check`'s evidence note marks: at least THIN_SHARE of
    the predicted time in kinds that fewer than FEW_BOARDS boards' other models ran (the held-out
    model removed from every board, as in `lomo`), with the configuration's prices (device
    variant rows give the errors)."""
    tfeats = thread_features(graphs, configs)
    ran_by = models_ran(tfeats)
    marked, unmarked = [], []
    for cfg, row in zip(configs, rows):
        peers = [c for c in configs if (c["threads"] == 1) == (cfg["threads"] == 1)]
        record = {"prices": device_prices(tfeats[cfg["threads"]], cfg["ms"], sorted(cfg["ms"])), "threads": cfg["threads"]}
        for m, pred in row["predicted_ms"].items():
            record["kinds_on_few_boards"] = kinds_on_few_boards(kinds_ran(peers, ran_by, without=m))
            breakdown = layer_breakdown(record, graphs[m])
            note = evidence_note(record, breakdown, sum(r["ms"] for r in breakdown))
            err = round(pred / cfg["ms"][m] * 100 - 100, 1)
            (marked if note else unmarked).append({"configuration": cfg["label"], "model": m, "error_pct": err})
    share = lambda rows: round(float(np.mean([abs(r["error_pct"]) > 20 for r in rows])), 3) if rows else None  # noqa: E731
    return {"what": "leave-one-model-out predictions that check's evidence note would mark, and how often each group "
                    "misses +-20%", "marked": marked, "marked_beyond_20": share(marked),
            "unmarked": len(unmarked), "unmarked_beyond_20": share(unmarked)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subsets", type=int, default=30)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    graphs = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in sorted(DATA.glob("*.param"))}
    configs = load_tables()
    lomo_res = lomo(graphs, configs, STRENGTH)
    marks = evidence_marks(graphs, configs, lomo_res["device"])
    print(f"evidence note: marks {len(marks['marked'])} predictions ({marks['marked_beyond_20']:.0%} beyond +-20%), "
          f"{marks['unmarked']} unmarked ({marks['unmarked_beyond_20']:.0%})", flush=True)
    unseen = unseen_device(graphs, configs, [0.3, 1.0, 3.0, 10.0], args.subsets)
    coverage = band_coverage(graphs, configs, args.subsets)
    summary = {v: {"mean_median_abs_pct": round(float(np.mean([r["median_abs_pct"] for r in rows])), 2),
                   "mean_p90_abs_pct": round(float(np.mean([r["p90_abs_pct"] for r in rows])), 2),
                   "devices_meeting_goal": sum(r["median_abs_pct"] <= 10 and r["p90_abs_pct"] <= 20 for r in rows),
                   "devices": len(rows)} for v, rows in lomo_res.items()}
    result = {"what": "ncnn latency predictor vs the ncnn project's published benchncnn latencies",
              "date": time.strftime("%Y-%m-%d"), "goal": "median |error| <= 10%, 90th percentile <= 20%",
              "prior_strength": STRENGTH, "summary": summary,
              "unseen_summary": {v: {st: unseen_mean(unseen, v, st) for st in next(iter(unseen.values()))[v]}
                                 for v in ("weighted", "pooled")}
                                | {"weighted, unflagged by check": unseen_mean(unseen, "weighted", str(STRENGTH), "unflagged")},
              "leave_one_model_out": lomo_res,
              "evidence_note": marks,
              "unseen_device_five_models": unseen,
              "calibrated_band_coverage": {
                  "what": "share of a held-out board's other models inside the band of a profile calibrated from "
                          "k of its models (goal: 90%); 'shipped': the larger of the held-out calibrations' pooled "
                          "p90 and the k models' own leave-one-out band times the held-out factor (both computed "
                          "without the board checked); 'pooled p90': the larger of that p90 and the own band; "
                          "'before': below 10 models, the larger of the own band and the prior profile's",
                  **coverage}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
