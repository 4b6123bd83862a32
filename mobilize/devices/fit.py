"""Fitting predictor profiles: from a table of measured latencies and the matching .param files.

`calibrate` is what `mobilize device calibrate` runs on a team's own phone measurements; the
shipped Android profiles are made the same way by `benchmarks/fit_profiles.py` from the ncnn
project's published numbers. Shape efficiencies (how a kernel's speed moves with its shape)
are shared by all devices and come from the prior; a device's own numbers set its prices.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput
from .calibrate import benchncnn_input_shapes, read_measurements
from .graph import Graph, analyse
from .predictor import PRICES, UNITS, band_from_errors, error_summary, features, fit, predict
from .profiles import Profile, load_profile, save_profile

STRENGTH = 1.0  # prior strength; chosen with the five-model holdout (docs/devices.md)
MIN_BAND = math.log(1.10)  # never claim better than +-10%


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


def loo_predictions(feats: dict[str, dict], ms: dict[str, float], prior: dict | None, strength: float) -> dict:
    """Leave-one-model-out: each model predicted by prices fitted without it."""
    names = sorted(feats)
    out = {}
    for held in names:
        train = [n for n in names if n != held]
        prices, _ = fit([feats[n] for n in train], [ms[n] for n in train], prior=prior, strength=strength)
        out[held] = predict(prices, feats[held])
    return out


def fit_predictor(graphs: dict[str, Graph], ms: dict[str, float], prior: dict | None = None,
                  strength: float = STRENGTH, efficiency: dict | None = None, loo: bool = True) -> dict:
    """A profile's predictor record: prices, shape efficiencies, error band and the evidence."""
    names = sorted(graphs)
    feats = {n: features(graphs[n], efficiency) for n in names}
    prices, _ = fit([feats[n] for n in names], [ms[n] for n in names], prior=prior, strength=strength)
    record = {"prices": prices, "units": {k: UNITS[k] for k in PRICES}}
    if efficiency:
        record["efficiency"] = efficiency
    models = {n: {"measured_ms": ms[n], "fitted_ms": round(predict(prices, feats[n]), 3)} for n in names}
    if loo and len(names) >= 3:
        held = loo_predictions(feats, ms, prior, strength)
        for n in names:
            models[n]["loo_predicted_ms"] = round(held[n], 3)
        pred, meas = [held[n] for n in names], [ms[n] for n in names]
        band = max(band_from_errors(pred, meas), MIN_BAND)
        record["error_band"] = {"log_p90": round(band, 4), "loo": error_summary(pred, meas),
                                "meaning": "90% of leave-one-model-out predictions were within x/e^b .. x*e^b"}
    record["calibration"] = {"models": models, "prior_strength": strength}
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
    prior_prices = pred.get("prior_prices", pred["prices"])
    with log.step(f"fitting {name} on {len(graphs)} models (prior: {prior_profile.name})"):
        record = fit_predictor(graphs, {n: ms[n] for n in graphs}, prior=prior_prices, strength=strength,
                               efficiency=pred.get("efficiency"))
    if len(graphs) < 10:  # too few models to trust their own spread: no narrower than the prior's
        record["error_band"]["log_p90"] = round(max(record["error_band"]["log_p90"], prior_profile.band), 4)
    record["prior"] = prior_profile.name
    record["prior_prices"] = prior_prices
    record["source"] = {"measurements": str(measurements), "config": cfg}
    notes = [f"calibrated from {len(graphs)} models measured on the device; prices shrunk towards "
             f"'{prior_profile.name}'"]
    if missing:
        notes.append(f"measured but without a .param (ignored): {', '.join(missing)}")
    profile = Profile(name=name, kind="predicted", description=description or f"{name} (calibrated, {threads} threads)",
                      runtimes=["ncnn"], threads=threads, predictor=record, notes=notes)
    if out is not None:
        save_profile(profile, out)
        profile.path = str(out)
    return profile


def lomo_errors(graphs: dict[str, Graph], ms: dict[str, float], **kw) -> dict:
    """Leave-one-model-out summary for one device (what docs/devices.md reports)."""
    rec = fit_predictor(graphs, ms, **kw)
    return rec["error_band"]["loo"]



# -- shape efficiencies, fitted on many devices at once -------------------------------------
class _Design:
    """Per model: sum of q*eff per price, and of q*eff*z per MAC kind, for given exponents."""

    def __init__(self, graphs: dict[str, Graph]):
        from .predictor import MAC_KINDS, layer_quantities, shape_z

        self.names = sorted(graphs)
        self.kinds = MAC_KINDS
        rows = []  # (model index, price index, quantity, z or None)
        for i, n in enumerate(self.names):
            for c in graphs[n].layers:
                if c.kind == "free":
                    continue
                for k, v in layer_quantities(c).items():
                    rows.append((i, PRICES.index(k), v, shape_z(c) if k in MAC_KINDS else None))
        self.mid = np.array([r[0] for r in rows])
        self.pid = np.array([r[1] for r in rows])
        self.q = np.array([r[2] for r in rows], float)
        self.z = np.array([r[3] if r[3] is not None else np.zeros(3) for r in rows])
        self.kid = np.array([MAC_KINDS.index(PRICES[p]) if PRICES[p] in MAC_KINDS else -1 for p in self.pid])

    def sums(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A[m, price] and Az[m, kind, 3] for exponents B[kind, 3]."""
        n, K = len(self.names), len(PRICES)
        eff = np.ones(len(self.q))
        mac = self.kid >= 0
        eff[mac] = np.exp(np.sum(self.z[mac] * B[self.kid[mac]], axis=1))
        w = self.q * eff
        A = np.zeros((n, K))
        np.add.at(A, (self.mid, self.pid), w)
        Az = np.zeros((n, len(self.kinds), 3))
        np.add.at(Az, (self.mid[mac], self.kid[mac]), w[mac, None] * self.z[mac])
        return A, Az


def fit_pooled(graphs: dict[str, Graph], tables: Sequence[dict[str, float]], ridge: float = 1.0,
               iters: int = 100) -> tuple[dict, list[dict]]:
    """Shape exponents shared by all devices, and each device's prices, in one least-squares fit.

    tables: one {model: ms} per device configuration. Squared log errors over every
    (device, model) pair, plus ridge * |B|^2 so exponents stay modest where data is thin.
    Returns ({kind: [b_cin, b_cout, b_hw]}, [prices per table]).
    """
    from .predictor import MAC_KINDS

    design = _Design(graphs)
    idx = {n: i for i, n in enumerate(design.names)}
    obs = [(c, idx[m], math.log(v)) for c, t in enumerate(tables) for m, v in t.items() if m in idx]
    oc = np.array([o[0] for o in obs])
    om = np.array([o[1] for o in obs])
    oy = np.array([o[2] for o in obs])
    nc, K, nk = len(tables), len(PRICES), len(MAC_KINDS)
    A, _ = design.sums(np.zeros((nk, 3)))
    # start: each device's prices from a plain per-device fit
    U = np.zeros((nc, K))
    for c, t in enumerate(tables):
        names = [m for m in t if m in idx]
        prices, _ = fit([dict(zip(PRICES, A[idx[m]])) for m in names], [t[m] for m in names])
        U[c] = np.log([max(prices[k], 1e-30) for k in PRICES])
    B = np.zeros((nk, 3))
    lam = math.sqrt(ridge)
    mu = 1e-2

    def residual(U, B):
        A, Az = design.sums(B)
        P = np.exp(U)  # nc x K
        pred = np.einsum("ok,ok->o", P[oc], A[om])
        r = np.concatenate([np.log(pred) - oy, lam * B.ravel(), 1e-3 * (U.ravel() - U0.ravel())])
        return r, pred, A, Az

    U0 = U.copy()
    r, pred, A, Az = residual(U, B)
    cost = float(r @ r)
    for _ in range(iters):
        P = np.exp(U)
        no = len(obs)
        J = np.zeros((len(r), nc * K + nk * 3))
        share = P[oc] * A[om] / pred[:, None]  # d log pred / d U[c, k]
        for k in range(K):
            J[np.arange(no), oc * K + k] = share[:, k]
        mac_prices = np.array([PRICES.index(k) for k in MAC_KINDS])
        dB = P[oc][:, mac_prices, None] * Az[om] / pred[:, None, None]  # no x nk x 3
        J[:no, nc * K:] = dB.reshape(no, -1)
        J[no:no + nk * 3, nc * K:] = lam * np.eye(nk * 3)
        J[no + nk * 3:, :nc * K] = 1e-3 * np.eye(nc * K)
        Hm = J.T @ J
        g = J.T @ r
        step = np.linalg.solve(Hm + mu * np.diag(np.diag(Hm) + 1e-12), -g)
        U2 = U + np.clip(step[:nc * K].reshape(nc, K), -5, 5)
        B2 = B + np.clip(step[nc * K:].reshape(nk, 3), -1, 1)
        r2, pred2, A2, Az2 = residual(U2, B2)
        c2 = float(r2 @ r2)
        if c2 < cost:
            done = cost - c2 < 1e-10 * cost
            U, B, r, pred, A, Az, cost = U2, B2, r2, pred2, A2, Az2, c2
            mu = max(mu / 3, 1e-9)
            if done:
                break
        else:
            mu *= 4
            if mu > 1e10:
                break
    efficiency = {k: [round(float(x), 5) for x in B[i]] for i, k in enumerate(MAC_KINDS)}
    prices = [{k: float(math.exp(U[c, i])) for i, k in enumerate(PRICES)} for c in range(nc)]
    return efficiency, prices
