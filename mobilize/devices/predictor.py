"""The ncnn latency predictor: a per-layer cost model with one price per kind of kernel.

A layer costs `price[kind] * MACs + price["bytes"] * bytes moved + price["layer"] *
dispatches`, and a model costs the sum over its layers. `kind` is the kernel ncnn runs
(winograd 3x3, 1x1 sgemm, im2col convolution, depthwise, int8, ...), because a
multiply-accumulate in a depthwise convolution costs several times one in a winograd
convolution on the same core; a fully connected layer at batch 1 is priced by the weight
bytes it must read. The dense kinds are split by shape, as nn-Meter prices kernels by their
configuration: "_small" when the output map has fewer than 200 pixels (14x14 and below: few
winograd tiles, short GEMM rows), else "_thin" when a group has fewer than 64 output channels
(a GEMM that narrow runs well below peak). Summing per layer is what lets the predictor
price an architecture it has never seen.

Prices are fitted in log space (relative error is what matters from a 15 ms model to a 2 s
one). A device measured on only a few models cannot pin down every price, so `fit` can shrink
them towards a prior: each price stays near the prior's, scaled by one free device factor,
unless the measurements say otherwise. See `benchmarks/fit_profiles.py` for how the shipped
profiles are made and docs/devices.md for how well this does.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from .graph import Graph, LayerCost

DENSE = ("conv3x3_winograd", "conv1x1", "conv")
THIN_CHANNELS = 64
SMALL_PIXELS = 200
MAC_KINDS = tuple(f"{k}{s}" for k in DENSE for s in ("", "_small", "_thin")) + ("dwconv", "conv_int8", "dwconv_int8")
PRICES = MAC_KINDS + ("gemv_weight_bytes", "bytes", "layer")

# what one unit of each price is, for people reading a profile
UNITS = {k: "ms per MAC" for k in MAC_KINDS} | {
    "gemv_weight_bytes": "ms per weight byte of a matrix-vector product (fully connected, batch 1)",
    "bytes": "ms per activation byte read or written", "layer": "ms per kernel dispatch"}


def price_kind(c: LayerCost) -> str:
    """The priced kind of a MAC layer: its kernel, split by output width and map size."""
    if c.kind not in DENSE:
        return c.kind
    if c.type in ("Gemm", "MatMul", "MultiHeadAttention", "InnerProduct", "SDPA"):
        cout = c.out_shape[-1] if c.out_shape else 1
        pixels = SMALL_PIXELS  # rows of a matrix product are not a feature map: never "small"
    else:
        group = max(1, c.attrs.get("group", 1))
        cout = c.attrs.get("cout", 0) // group
        pixels = int(np.prod(c.out_shape[1:])) if len(c.out_shape) > 1 else 1
    if pixels < SMALL_PIXELS:  # on a small map the tile/row shortage dominates, whatever the width
        return c.kind + "_small"
    return c.kind + ("_thin" if cout < THIN_CHANNELS else "")


def layer_quantities(c: LayerCost) -> dict[str, float]:
    """The priced quantities of one analysed layer."""
    q = {"bytes": c.bytes, "layer": float(c.ops)}
    if c.kind in DENSE or c.kind in MAC_KINDS:
        q[price_kind(c)] = c.macs
    elif c.kind == "gemv":
        q["gemv_weight_bytes"] = c.weight_bytes
    return q


def features(graph: Graph) -> dict[str, float]:
    """How much of each priced quantity a graph holds."""
    f = dict.fromkeys(PRICES, 0.0)
    for c in graph.layers:
        if c.kind == "free":
            continue
        for k, v in layer_quantities(c).items():
            f[k] += v
    return f


def _matrix(feats: Sequence[dict]) -> np.ndarray:
    return np.array([[f.get(k, 0.0) for k in PRICES] for f in feats], dtype=float)


def predict(prices: dict[str, float], feats: dict[str, float]) -> float:
    return float(sum(prices.get(k, 0.0) * feats.get(k, 0.0) for k in PRICES))


def predict_graph(predictor: dict, graph: Graph) -> float:
    """Predicted latency (ms) of a graph with a profile's predictor record."""
    return predict(predictor["prices"], features(graph))


def layer_breakdown(prices: dict[str, float], graph: Graph) -> list[dict]:
    """Each layer's predicted share, in ms (Qualcomm AI Hub's per-layer view, predicted)."""
    rows = []
    for c in graph.layers:
        if c.kind == "free":
            continue
        q = layer_quantities(c)
        ms = sum(prices.get(k, 0.0) * v for k, v in q.items())
        kind = next((k for k in q if k in MAC_KINDS or k == "gemv_weight_bytes"), "elementwise")
        rows.append({"name": c.name, "type": c.type, "kind": kind, "macs": c.macs, "bytes": c.bytes, "ms": ms})
    return rows


# -- fitting --------------------------------------------------------------------------------
def fit(feats: Sequence[dict], ms: Sequence[float], groups: Sequence[int] | None = None,
        prior: dict[str, float] | None = None, strength: float = 1.0, iters: int = 200,
        weights: Sequence[float] | None = None) -> tuple[dict, list[float]]:
    """Prices (shared) and one log speed factor per group, minimising squared log error.

    Without groups every row belongs to one device. With a prior, the penalty
    strength * sum_k (log p_k - log prior_k - s)^2 keeps each price near the prior's up to a
    common factor e^s that is free: the prior says how kernels compare, the data how fast
    the device is. Prices the data cannot see (a kind absent from every row) follow the prior.
    """
    X = _matrix(feats)
    y = np.log(np.asarray(ms, dtype=float))
    n, k = X.shape
    g = np.zeros(n, dtype=int) if groups is None else np.asarray(groups, dtype=int)
    ng = int(g.max()) + 1
    if prior is None:
        u0 = _default_prior(X, y)
        strength = 1e-3  # only to fix prices the data leaves free
    else:
        u0 = np.log(np.array([max(prior.get(p, 0.0), 1e-30) for p in PRICES]))
    # initial common factor: the prior's median ratio
    base = np.log(np.maximum(X @ np.exp(u0), 1e-30))
    s_init = float(np.median(y - base))
    theta = np.concatenate([u0 + s_init, np.zeros(ng), [s_init]])  # u (k), group offsets (ng), s
    offsets = [float(np.median((y - base - s_init)[g == j])) if np.any(g == j) else 0.0 for j in range(ng)]
    theta[k:k + ng] = np.asarray(offsets) - offsets[0]  # group 0 is the reference (offset pinned at 0)
    lam = math.sqrt(strength)
    sw = np.sqrt(np.ones(n) if weights is None else np.asarray(weights, dtype=float))
    mu = 1e-2

    def residuals(t):
        u, off, s = t[:k], t[k:k + ng], t[-1]
        pred = X @ np.exp(u)
        r_data = sw * (np.log(np.maximum(pred, 1e-300)) + off[g] - y)
        r_prior = lam * (u - u0 - s)
        r_anchor = np.array([10.0 * off[0]])
        return np.concatenate([r_data, r_prior, r_anchor]), pred

    def jacobian(t, pred):
        u, s = t[:k], t[-1]
        J = np.zeros((n + k + 1, k + ng + 1))
        share = X * np.exp(u)[None, :] / np.maximum(pred, 1e-300)[:, None]
        J[:n, :k] = share * sw[:, None]
        J[np.arange(n), k + g] = sw
        J[n:n + k, :k] = lam * np.eye(k)
        J[n:n + k, -1] = -lam
        J[n + k, k] = 10.0
        return J

    r, pred = residuals(theta)
    cost = float(r @ r)
    for _ in range(iters):
        J = jacobian(theta, pred)
        A = J.T @ J
        grad = J.T @ r
        step = np.linalg.solve(A + mu * np.diag(np.diag(A) + 1e-9), -grad)
        cand = theta + np.clip(step, -5, 5)
        r2, pred2 = residuals(cand)
        c2 = float(r2 @ r2)
        if c2 < cost:
            improvement = cost - c2
            theta, r, pred, cost = cand, r2, pred2, c2
            mu = max(mu / 3, 1e-9)
            if improvement < 1e-12 * max(cost, 1e-12):
                break
        else:
            mu *= 4
            if mu > 1e10:
                break
    prices = {p: float(math.exp(v)) for p, v in zip(PRICES, theta[:k])}
    if prior is None:
        seen = {p for p, col in zip(PRICES, X.T) if col.sum() > 0}
        prices = fill_unseen(prices, seen)
    return prices, [float(v) for v in theta[k:k + ng]]


def parent_kind(kind: str) -> str | None:
    """conv1x1_thin -> conv1x1: the coarser price a split kind falls back to."""
    for suffix in ("_thin", "_small"):
        if kind.endswith(suffix):
            return kind[: -len(suffix)]
    return None


def fill_unseen(prices: dict[str, float], seen: set[str]) -> dict[str, float]:
    """Prices no measured model exercised take their parent kind's (a thin 3x3 is still a 3x3)."""
    out = dict(prices)
    for k in PRICES:
        if k in seen:
            continue
        p = parent_kind(k)
        while p is not None and p not in seen:
            p = parent_kind(p)
        if p is not None:
            out[k] = out[p]
    return out


def _default_prior(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A neutral start without a prior: every price the same share of the typical latency."""
    col = np.where(X.sum(0) > 0, X.mean(0), 1.0)
    typical = float(np.exp(np.median(y)))
    return np.log(typical / (len(col) * col))


# -- error ----------------------------------------------------------------------------------
def abs_pct_errors(pred: Iterable[float], meas: Iterable[float]) -> np.ndarray:
    p, m = np.asarray(list(pred), float), np.asarray(list(meas), float)
    return np.abs(p / m - 1.0) * 100.0


def error_summary(pred: Iterable[float], meas: Iterable[float]) -> dict:
    e = abs_pct_errors(pred, meas)
    return {"n": int(e.size), "median_abs_pct": round(float(np.median(e)), 2),
            "p90_abs_pct": round(float(np.percentile(e, 90)), 2),
            "within_10_pct": round(float(np.mean(e <= 10.0)), 3), "within_20_pct": round(float(np.mean(e <= 20.0)), 3),
            "max_abs_pct": round(float(e.max()), 2)}


def band_from_errors(pred: Iterable[float], meas: Iterable[float], q: float = 90.0) -> float:
    """The q-th percentile of |log(pred/meas)|: a prediction p is reported as p*e^-b .. p*e^b."""
    r = np.abs(np.log(np.asarray(list(pred), float) / np.asarray(list(meas), float)))
    return float(np.percentile(r, q)) if r.size else 0.0
