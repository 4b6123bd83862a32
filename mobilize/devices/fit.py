"""Fitting predictor profiles: from a table of measured latencies and the matching .param files.

`calibrate` is what `mobilize device calibrate` runs on a team's own phone measurements; the
shipped Android profiles are made the same way by `benchmarks/fit_profiles.py` from the ncnn
project's published numbers. A device's own numbers set its prices; the prior (the published
low-end boards' relative prices, each weighted by how well it explains the device's own
numbers) fills in what a handful of measurements cannot pin down.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput
from .measurements import benchncnn_input_shapes, read_measurements
from .graph import Graph, analyse
from .predictor import (CACHE_BYTES, EXTRAS, INT8_TWIN, PRICES, UNITS, band_from_errors, error_summary, features, fit,
                        layer_quantities, parent_kind, predict)
from .profiles import Profile, load_profile, save_profile

STRENGTH = 1.0  # prior strength; chosen with the five-model holdout (docs/devices-validation.md)
# A device with a full table of its own (30+ models) still cannot pin the price of a fully connected
# layer's weights: only alexnet and vgg16 stream 100+ MB of them. That one price leans on the other
# boards' (relative) price; every other price is the table's own (docs/devices-validation.md).
OWN_TABLE_STRENGTH = {"gemv_weight_bytes": 1.0}
MIN_BAND = math.log(1.10)  # never claim better than +-10%
# How many models a team might calibrate a phone from: the shipped profiles record, per size, how far
# off such calibrations were on the published boards held out (`calibration_bands`).
CALIBRATION_SIZES = (3, 5, 7, 10, 15, 20)


def model_graphs(models_dir: Path | str, names: Sequence[str]) -> tuple[dict[str, Graph], list[str]]:
    """Analysed graphs for the names that have a NAME.param in the directory; and the missing names."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise BadInput(f"--models '{models_dir}' is not a directory", "pass the directory holding MODEL.param files")
    graphs, missing = {}, []
    for n in names:
        p = models_dir / f"{n}.param"
        if not p.is_file():
            missing.append(n)
            continue
        graphs[n] = analyse(p, benchncnn_input_shapes(p), name=n)
    return graphs, missing


LAYER_FLOOR_MS = 1e-4  # a layer timed at or below the empty-network overhead counts as 0.1 us


def layer_rows(graph: Graph, layer_ms: dict[str, float], threads: int = 1,
               cache_bytes: float = CACHE_BYTES) -> list[tuple[dict, float]]:
    """(priced quantities, ms) of every layer of a graph timed on its own (kernels.py)."""
    return [(layer_quantities(c, threads, cache_bytes), max(layer_ms[c.name], LAYER_FLOOR_MS))
            for c in graph.layers if c.kind != "free" and c.name in layer_ms]


def _fit_rows(names, feats, ms, layers, prior, strength):
    """Fit on whole-model rows and, when given, each model's layer rows: a model's layers together
    weigh as much as the model itself (they pin the per-dispatch and small-layer prices that
    millisecond-scale models cannot, without outvoting what whole models say)."""
    rows = [feats[n] for n in names]
    y = [ms[n] for n in names]
    w = [1.0] * len(names)
    for n in names:
        for q, t in (layers or {}).get(n, []):
            rows.append(q)
            y.append(t)
            w.append(1.0 / len(layers[n]))
    return fit(rows, y, prior=prior, strength=strength, weights=w, layer_level=bool(layers))[0]


def loo_predictions(feats: dict[str, dict], ms: dict[str, float], prior: dict | None, strength: float,
                    prior_without=None, layers: dict | None = None) -> dict:
    """Leave-one-model-out: each model predicted by prices fitted without it (and without its layers).

    prior_without(name) gives a prior built without that model, when the prior itself came
    from measurements of the same architectures (on other devices); otherwise `prior` is used.
    """
    names = sorted(feats)
    out = {}
    for held in names:
        train = [n for n in names if n != held]
        fold_prior = prior_without(held) if prior_without else prior
        prices = _fit_rows(train, feats, ms, layers, fold_prior, strength)
        out[held] = predict(prices, feats[held])
    return out


def loo_error_band(pred: Sequence[float], meas: Sequence[float]) -> dict:
    """A profile's error band from leave-one-model-out predictions: their 90th percentile of
    |log error|, rounded up, so that a band is never narrower than MIN_BAND or than the errors say."""
    band = max(band_from_errors(pred, meas), MIN_BAND)
    return {"log_p90": math.ceil(band * 1e4) / 1e4, "loo": error_summary(pred, meas),
            "meaning": "90% of leave-one-model-out predictions were within x/e^b .. x*e^b"}


def fit_predictor(graphs: dict[str, Graph], ms: dict[str, float], prior: dict | None = None,
                  strength: float | dict[str, float] = STRENGTH, loo: bool = True, prior_without=None, threads: int = 1,
                  cache_bytes: float = CACHE_BYTES, layer_ms: dict[str, dict[str, float]] | None = None) -> dict:
    """A profile's predictor record: prices, error band and the evidence behind them.

    threads and cache_bytes are the feature settings (a layer's OpenMP imbalance at that many
    threads; the cache size under which its bytes are "cached_bytes"); the record keeps them
    so that predictions use the same features. layer_ms ({model: {layer: ms}}, each layer
    timed on its own) adds layer-level evidence, as nn-Meter's kernel-level measurements."""
    names = sorted(graphs)
    feats = {n: features(graphs[n], threads=threads, cache_bytes=cache_bytes) for n in names}
    layers = None
    if layer_ms:
        layers = {n: layer_rows(graphs[n], layer_ms[n], threads, cache_bytes) for n in names if layer_ms.get(n)}
    prices = _fit_rows(names, feats, ms, layers, prior, strength)
    record = {"prices": prices, "units": {k: UNITS[k] for k in PRICES}, "threads": int(threads),
              "cache_bytes": int(cache_bytes)}
    models = {n: {"measured_ms": ms[n], "fitted_ms": round(predict(prices, feats[n]), 3)} for n in names}
    if loo and len(names) >= 3:
        held = loo_predictions(feats, ms, prior, strength, prior_without, layers)
        for n in names:
            models[n]["loo_predicted_ms"] = round(held[n], 3)
        record["error_band"] = loo_error_band([held[n] for n in names], [ms[n] for n in names])
    record["calibration"] = {"models": models, "prior_strength": strength if prior is not None else None,
                             "layer_rows": sum(map(len, layers.values())) if layers else 0}
    return record


def calibrate(name: str, measurements: Path | str, models: Path | str, out: Path | str | None = None, *,
              threads: int | None = None, prior: str | Path | Profile | None = None, description: str = "",
              strength: float = STRENGTH, reporter=None) -> Profile:
    """A predicted-device profile from a phone's benchncnn output (or {model: ms} JSON)."""
    from .._ui import SILENT

    log = reporter or SILENT
    ms, cfg = read_measurements(measurements)
    threads = int(threads or cfg.get("num_threads") or 1)
    with log.step(f"analysing {len(ms)} architectures"):
        graphs, missing = model_graphs(models, sorted(ms))
    if len(graphs) < 3:
        raise BadInput(f"only {len(graphs)} of the measured models have a .param in '{models}' (need at least 3)",
                       f"missing: {', '.join(missing[:8])}")
    if prior is None:
        prior = "android-lowend-1t" if threads == 1 else "android-lowend"
    prior_profile = load_profile(prior)
    if prior_profile.kind != "predicted":
        raise BadInput(f"--prior '{prior_profile.name}' is a {prior_profile.kind} profile; it must be a predicted one")
    pred = prior_profile.predictor
    cache_bytes = pred.get("cache_bytes", CACHE_BYTES)
    ms = {n: ms[n] for n in graphs}
    feats = {n: features(g, threads=threads, cache_bytes=cache_bytes) for n, g in graphs.items()}
    references = pred.get("reference_prices")
    evidence = None
    if references:
        with log.step(f"weighing {len(references)} reference boards by how well they explain {len(graphs)} models"):
            prior_prices, evidence = reference_prior(feats, ms, references, strength)
        nearest = next(iter(evidence))
        towards = f"the published boards weighted by fit (nearest: '{nearest}', {evidence[nearest]['weight']:.0%})"
    else:  # a prior profile without reference boards (older or hand-made): its pooled prices
        prior_prices = pred.get("prior_prices", pred["prices"])
        towards = f"'{prior_profile.name}'"
    with log.step(f"fitting {name} on {len(graphs)} models (prior: {towards})"):
        record = fit_predictor(graphs, ms, prior=prior_prices, strength=strength, threads=threads,
                               cache_bytes=cache_bytes)
    # A few models' leave-one-out spread says little about the models they are unlike: the band is
    # what calibrations of that many models needed on published boards held out: no narrower than
    # their pooled p90, and the own band times the factor that made them hold on every such board.
    held_out = pred.get("calibration_bands")
    if held_out:
        size, rec = calibration_band(held_out["sizes"], len(graphs))
        cal = record["calibration"]["models"].values()
        own = band_from_errors([m["loo_predicted_ms"] for m in cal], [m["measured_ms"] for m in cal])
        band = max(rec["log_p90"], rec["own_factor"] * own, MIN_BAND)
        record["error_band"]["held_out"] = {"models": size, **rec, "own_log_p90": round(own, 4)}
        record["error_band"]["log_p90"] = round(band, 4)
    elif len(graphs) < 10:  # a prior without that record: no narrower than the prior's own band
        record["error_band"]["log_p90"] = round(max(record["error_band"]["log_p90"], prior_profile.band), 4)
    record["prior"] = prior_profile.name
    record["prior_prices"] = prior_prices
    few = pred.get("kinds_on_few_boards")
    if few is not None:  # this device's models join the evidence for the kinds few boards ran
        mine = seen_kinds(list(feats.values()))
        record["kinds_on_few_boards"] = {k: boards + [name] * runs_kind(mine, k) for k, boards in few.items()
                                         if len(boards) + runs_kind(mine, k) < FEW_BOARDS}
    if evidence:
        record["prior_references"] = evidence
    record["source"] = {"measurements": str(measurements), "config": cfg}
    notes = [f"calibrated from {len(graphs)} models measured on the device; prices shrunk towards {towards}"]
    if missing:
        notes.append(f"measured but without a .param (ignored): {', '.join(missing)}")
    profile = Profile(name=name, kind="predicted", description=description or f"{name} (calibrated, {threads} threads)",
                      runtimes=["ncnn"], threads=threads, predictor=record, notes=notes)
    if out is not None:
        save_profile(profile, out)
        profile.path = str(out)
    return profile


REFERENCE_SIGMA = 0.1  # log-error of one prediction: about the predictor's own (median 6.6%, p90 20%)


def reference_prior(feats: dict[str, dict], ms: dict[str, float], references: dict[str, dict],
                    strength: float = STRENGTH, sigma: float = REFERENCE_SIGMA) -> tuple[dict[str, float], dict]:
    """A prior for a few measured models: the published boards' relative prices, each weighted
    by how well it explains the measurements.

    Each reference's prices serve in turn as the prior of a fit on the measurements; a
    reference whose fit leaves squared log error E gets the weight exp(-E / 2 sigma^2)
    (normalised), the probability that the new device is like that board when one prediction
    is off by a log-normal error of sigma. Boards differ in how their kernels compare (four
    A53 cores on a memory-starved board are not four on a phone), and five models tell which
    boards a new one resembles better than they pin prices of their own (docs/devices-validation.md).
    Returns the prior (the weighted geometric mean of the centred reference prices, as
    `pooled_prior`) and, per reference, its weight and RMS log error."""
    names = sorted(ms)
    rows, y = [feats[n] for n in names], np.array([ms[n] for n in names], dtype=float)
    sse = {}
    for label, ref in references.items():
        prices, _ = fit(rows, y, prior=ref, strength=strength)
        r = np.log(np.array([predict(prices, f) for f in rows]) / y)
        sse[label] = float(r @ r)
    best = min(sse.values())
    w = {k: math.exp(-(v - best) / (2 * sigma ** 2)) for k, v in sse.items()}
    total = sum(w.values())
    weights = {k: v / total for k, v in w.items()}
    evidence = {k: {"weight": round(weights[k], 4), "rms_log_error": round(math.sqrt(sse[k] / len(names)), 5)}
                for k in sorted(sse, key=sse.get)}
    return pooled_prior(list(references.values()), list(weights[k] for k in references)), evidence


def held_out_calibrations(tables: Sequence[dict], k: int, subsets: int = 30, strength: float = STRENGTH,
                          seed: int = 0, targets: Sequence[int] | None = None):
    """Calibrations of boards the references never saw, made as `calibrate` makes them.

    tables: one per device configuration (all at one thread class), each {"board": name,
    "feats": {model: features}, "ms": {model: measured ms}, "prices": the table's own fit}. Each
    table (or each index in `targets`) is in turn the new device and the other boards' tables
    its references; k of its models, drawn at random `subsets` times, calibrate it and its other
    models are predicted. Yields (table index, the k models, the 90th percentile of their own
    leave-one-out |log errors|, {other model: log(predicted / measured)})."""
    rng = random.Random(seed)
    for i, t in enumerate(tables):
        if targets is not None and i not in targets:
            continue
        refs = {str(j): o["prices"] for j, o in enumerate(tables) if o["board"] != t["board"]}
        names = sorted(t["ms"])
        for _ in range(subsets):
            pick = rng.sample(names, k)
            ms = {m: t["ms"][m] for m in pick}
            feats = {m: t["feats"][m] for m in pick}
            prior, _ = reference_prior(feats, ms, refs, strength)
            loo = loo_predictions(feats, ms, prior, strength)
            own = band_from_errors([loo[m] for m in pick], [ms[m] for m in pick])
            prices, _ = fit([feats[m] for m in pick], [ms[m] for m in pick], prior=prior, strength=strength)
            yield i, pick, own, {m: math.log(predict(prices, t["feats"][m]) / t["ms"][m]) for m in names if m not in pick}


OWN_FACTORS = tuple(round(1.0 + 0.1 * i, 1) for i in range(21))  # 1.0 .. 3.0


def calibration_bands(tables: Sequence[dict], sizes: Sequence[int] = CALIBRATION_SIZES, subsets: int = 30,
                      strength: float = STRENGTH, seed: int = 0) -> dict[str, dict]:
    """Per calibration size k: what `held_out_calibrations` say a band must be to hold.

    "log_p90": the 90th percentile of |log error|, pooled over the held-out tables and subsets
    (rounded up); "own_factor": the smallest factor f (1.0 .. 3.0) such that the band
    max(log_p90, f * the k models' own leave-one-out band) holds 90% of every held-out board's
    other models. A pooled percentile holds on average; the factor widens the band of a device
    whose own few models already disagree, as those of boards unlike the references did."""
    out = {}
    for k in sizes:
        runs = [(tables[i]["board"], own, np.abs(list(err.values())))
                for i, _, own, err in held_out_calibrations(tables, k, subsets, strength, seed)]
        p90 = math.ceil(float(np.percentile(np.concatenate([e for *_, e in runs]), 90)) * 1e4) / 1e4

        def holds(f: float) -> bool:
            return all(np.mean(np.concatenate([e <= max(p90, f * own) for b, own, e in runs if b == board])) >= 0.9
                       for board in {b for b, *_ in runs})

        out[str(k)] = {"log_p90": p90, "own_factor": next((f for f in OWN_FACTORS if holds(f)), OWN_FACTORS[-1])}
    return out


def calibration_band(bands: dict[str, dict], n: int) -> tuple[int, dict]:
    """(size, its record) of the held-out calibrations that stand for one from n models: the
    largest size tabulated up to n (the smallest when n is below all)."""
    sizes = sorted(int(k) for k in bands)
    size = max((s for s in sizes if s <= n), default=sizes[0])
    return size, bands[str(size)]


def seen_kinds(feats: Sequence[dict]) -> set[str]:
    """The prices some measured model exercised (an int8 twin's data also pins its fp32 kind)."""
    seen = {k for k in PRICES if any(f.get(k, 0.0) > 0 for f in feats)}
    return seen | {INT8_TWIN[k] for k in seen if k in INT8_TWIN}


def borrow_unseen(prices: dict[str, float], seen: set[str], donors: Sequence[tuple[dict, set]]) -> tuple[dict, dict]:
    """Prices of kinds none of a device's models exercised, from devices whose models did.

    `fit` gives an unseen kind its parent kind's price (a transformer's `gemm` the 1x1
    convolutions'). When other boards measured that kind, its ratio to the parent is evidence
    and the parent's price is not: each unseen kind takes the parent's price on this device
    times the geometric mean of that ratio over the donors (prices, seen kinds) that saw both;
    its int8 twin keeps its factor. Returns the prices and, per borrowed kind, the ratio used
    and how many donors it came from."""
    out, borrowed = dict(prices), {}
    for k in PRICES:
        parent = parent_kind(k)
        if k in seen or k in INT8_TWIN or k in EXTRAS or parent is None or parent not in seen:
            continue
        logs = [math.log(d[k] / d[parent]) for d, s in donors if k in s and parent in s and d[k] > 0 and d[parent] > 0]
        if not logs:
            continue
        ratio = math.exp(sum(logs) / len(logs))
        out[k] = prices[parent] * ratio
        twin = f"{k}_int8"
        if twin in out and prices.get(k, 0) > 0:
            out[twin] = out[k] * prices[twin] / prices[k]
        borrowed[k] = {"ratio_to": parent, "ratio": round(ratio, 4), "donors": len(logs)}
    return out, borrowed


FEW_BOARDS = 2  # a kind fewer boards' models ran than this is thin evidence (`kinds_on_few_boards`)


def runs_kind(kinds: set, k: str) -> bool:
    """Whether models that ran these kinds ran kind k: an int8 twin counts as run where its fp32
    kind and some int8 kind were (its price is theirs: `predictor.tie_matrix`)."""
    return k in kinds or (k in INT8_TWIN and INT8_TWIN[k] in kinds and any(t in kinds for t in INT8_TWIN))


def kinds_on_few_boards(ran: dict[str, set]) -> dict[str, list[str]]:
    """The priced kinds fewer than FEW_BOARDS boards' models ran, each with those boards, from
    {board: the kinds its models ran} (`runs_kind`). Surcharges fitted only where
    they show (`EXTRAS`) are left out: they are 0 where no model shows them."""
    out = {}
    for k in PRICES:
        if k in EXTRAS:
            continue
        boards = sorted(b for b, kinds in ran.items() if runs_kind(kinds, k))
        if len(boards) < FEW_BOARDS:
            out[k] = boards
    return out


def pooled_prior(price_sets: Sequence[dict], weights: Sequence[float] | None = None) -> dict:
    """Relative prices common to several devices: the (weighted) geometric mean after
    normalising each.

    Only ratios matter to `fit`'s prior (the device factor is free), so each device's prices
    are centred in log space before averaging.
    """
    logs = []
    for p in price_sets:
        v = np.log([max(p.get(k, 0.0), 1e-30) for k in PRICES])
        logs.append(v - v.mean())
    mean = np.average(logs, axis=0, weights=weights)
    return {k: float(math.exp(x)) for k, x in zip(PRICES, mean)}


def lomo_errors(graphs: dict[str, Graph], ms: dict[str, float], **kw) -> dict:
    """Leave-one-model-out summary for one device (what docs/devices-validation.md reports)."""
    rec = fit_predictor(graphs, ms, **kw)
    return rec["error_band"]["loo"]
