"""The ncnn latency predictor: a per-layer cost model with one price per kind of kernel.

A layer costs `price[kind] * MACs + price["bytes"] * bytes moved + price["layer"] * dispatches`,
and a model costs the sum over its layers; a dense convolution also pays "conv_layer" per dispatch
(its fixed set-up: padding the input into a new blob, allocating and packing the winograd / im2col
workspace), a price only layer-level timings can tell apart from "layer" (`LAYER_LEVEL`). `kind`
is the kernel ncnn runs (winograd 3x3, 1x1 sgemm, im2col convolution, depthwise, int8, ...),
because a multiply-accumulate in a depthwise convolution costs several times one in a winograd
convolution on the same core; a fully connected layer at batch 1 is priced by the weight bytes it
must read. The dense kinds are split by shape, as nn-Meter prices kernels by their configuration:
"_small" when the output map has fewer than 200 pixels (14x14 and below: few winograd tiles, short
GEMM rows), else "_thin" when a group has fewer than 64 output channels (a GEMM that narrow runs
well below peak); an im2col convolution reducing over fewer than 200 inputs (an RGB stem) is
"conv_shallow", and also pays "shallow_outputs" per output element: with a reduction that short,
the work per output (accumulators, the loop prologue) is not amortised, so a MAC costs a + b /
depth rather than a flat price. A matrix product with several rows (a transformer's Gemm, MatMul
or attention) runs ncnn's Gemm kernel rather than a convolution's: "gemm"; one device's price for
it must not be learned from convolutions, nor theirs from it. An int8 convolution is the same kind
with "_int8" appended, priced as the fp32 kind times one int8 factor per device (`tie_matrix`).
Activation bytes are priced as "cached_bytes" when a layer moves less than the profile's cache
size (an A53's 512 KiB L2 by default), and element-wise layers evaluating exp/erf/pow pay
"transcendental_bytes" on top. At several threads a per-channel layer's work is scaled by its
OpenMP imbalance (`imbalance`). Summing per layer is what lets the predictor price an architecture
it has never seen.

Prices are fitted in log space (relative error is what matters from a 15 ms model to a 2 s one).
A device measured on only a few models cannot pin down every price, so `fit` can shrink them
towards a prior: each price stays near the prior's, scaled by one free device factor, unless the
measurements say otherwise. See `benchmarks/fit_profiles.py` for how the shipped profiles are
made and docs/devices-validation.md for how well this does.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from .graph import Graph, LayerCost

DENSE = ("conv3x3_winograd", "conv1x1", "conv")
THIN_CHANNELS = 64
SMALL_PIXELS = 200
SHALLOW_DEPTH = 200  # an im2col convolution reducing over fewer inputs (cin/group*kh*kw): "conv_shallow"
MATRIX_TYPES = ("Gemm", "MatMul", "MultiHeadAttention", "InnerProduct", "SDPA")
FP32_KINDS = tuple(f"{k}{s}" for k in DENSE for s in ("", "_small", "_thin")) + ("conv_shallow", "gemm")
# an int8 convolution is priced as its fp32 kind times one int8 factor per device (tied in `fit`)
INT8_TWIN = {f"{k}_int8": k for k in FP32_KINDS}
MAC_KINDS = FP32_KINDS + ("dwconv",) + tuple(INT8_TWIN) + ("dwconv_int8",)
# element-wise layers that evaluate exp / erf / pow per element: several times a ReLU's cost per byte
TRANSCENDENTAL = {"Swish", "GELU", "LRN", "Sigmoid", "Softmax", "Mish", "TanH", "ELU", "SELU", "Exp", "Log", "Power"}
PRICES = MAC_KINDS + ("shallow_outputs", "gemv_weight_bytes", "transcendental_bytes", "bytes", "cached_bytes", "layer",
                     "conv_layer")
EXTRAS = ("shallow_outputs", "transcendental_bytes", "conv_layer")  # on top of another price: 0 where no model shows them
# A dense convolution's fixed cost per dispatch is paid as often as there are convolutions, which in
# whole models goes with the number of layers (r = 0.96 over the 35 benchncnn models): only layers
# timed one by one (the host's) separate it from "layer". A fit on whole models alone leaves these
# at 0 (folded into "layer").
LAYER_LEVEL = ("conv_layer",)
ROW_PARALLEL = {"LayerNorm", "Softmax", *MATRIX_TYPES}
CACHE_BYTES = 512 * 1024  # default: the L2 of a Cortex-A53 cluster: a layer moving less stays in cache

# what one unit of each price is, for people reading a profile
UNITS = {k: "ms per MAC" for k in MAC_KINDS} | {
    "shallow_outputs": "ms per output element of a conv_shallow layer (on top of its MACs: a short reduction "
                       "does not amortise the per-output work)",
    "gemv_weight_bytes": "ms per weight byte of a matrix-vector product (fully connected, batch 1)",
    "transcendental_bytes": "ms per activation byte of an exp/erf/pow element-wise layer (on top of bytes)",
    "bytes": "ms per activation byte read or written",
    "cached_bytes": "ms per activation byte of a layer moving less than the record's cache_bytes (it stays in L2)",
    "layer": "ms per kernel dispatch",
    "conv_layer": "ms per dense convolution dispatch, on top of layer (its fixed set-up; fitted only from layers "
                  "timed one by one, else 0)"}


def price_kind(c: LayerCost) -> str:
    """The priced kind of a MAC layer: its kernel, split by output width and map size."""
    base = c.kind.removesuffix("_int8")
    if base not in DENSE:
        return c.kind
    split = _split_kind(c, base)
    return split + "_int8" if c.kind.endswith("_int8") else split


def _split_kind(c: LayerCost, base: str) -> str:
    if c.type in MATRIX_TYPES:  # ncnn's Gemm / attention layers: their own GEMM kernel, not a convolution
        return "gemm"
    group = max(1, c.attrs.get("group", 1))
    cout = c.attrs.get("cout", 0) // group
    pixels = int(np.prod(c.out_shape[1:])) if len(c.out_shape) > 1 else 1
    depth = c.attrs.get("cin", 0) // group * c.attrs.get("k", 1) * c.attrs.get("kh", 1)
    if base == "conv" and 0 < depth < SHALLOW_DEPTH:  # a stem on an RGB image: short GEMM columns
        return "conv_shallow"
    if pixels < SMALL_PIXELS:  # on a small map the tile/row shortage dominates, whatever the width
        return base + "_small"
    return base + ("_thin" if cout < THIN_CHANNELS else "")


# ncnn copies these with a plain loop of memcpy on one thread, whatever num_threads says: Concat and
# Slice along channels (the first axis) and ShuffleChannel (concat_arm.cpp, slice_arm.cpp,
# shufflechannel_arm.cpp and the generic shufflechannel.cpp have no OpenMP loop for them)
SERIAL_COPIES = {"Concat", "Slice", "ShuffleChannel"}


def parallel_units(c: LayerCost) -> int:
    """How many independent pieces ncnn's OpenMP loop splits a layer into (0: not modelled).

    ncnn's per-channel layers (depth-wise convolution, pooling, padding, element-wise) run
    `#pragma omp parallel for` over channels, and on ARM a channel holds 4 packed channels when
    the count divides by 4 (elempack 4). A 1-D or 2-D blob (a transformer's tokens x features)
    has c == 1: the element-wise layers that loop over channels run on one thread. The dense
    kernels (GEMM tiles, winograd tiles) and the row-parallel LayerNorm / Softmax / Gemm are
    split finely enough that they are not modelled (0), except a group convolution that is not
    depth-wise: ncnn runs it as one small convolution per group, in turn, each split only over
    its own (packed) outputs. Channel copies (`SERIAL_COPIES`) run on one thread: 1 piece."""
    if c.type in SERIAL_COPIES:
        axis = c.attrs.get("axis", 0)
        if c.type == "ShuffleChannel" or axis == 0 or axis == -len(c.out_shape):
            return 1
    dense = c.kind.removesuffix("_int8") in DENSE
    group = c.attrs.get("group", 1) if dense else 1
    if group > 1:
        per = c.attrs.get("cout", 0) // group
        return max(1, per // 4 if per % 4 == 0 else per)
    if dense or c.kind in ("gemv",) or c.type in ROW_PARALLEL:
        return 0
    shape = c.out_shape
    if len(shape) < 3:
        return 1
    ch = int(shape[0])
    return max(1, ch // 4 if ch % 4 == 0 else ch)


def imbalance(c: LayerCost, threads: int) -> float:
    """Time of a layer's OpenMP loop relative to perfect splitting over `threads`:
    ceil(P / T) * T / P for P parallel pieces (1 at one thread)."""
    p = parallel_units(c)
    if threads <= 1 or p <= 0:
        return 1.0
    return math.ceil(p / threads) * threads / p


def layer_quantities(c: LayerCost, threads: int = 1, cache_bytes: float = CACHE_BYTES) -> dict[str, float]:
    """The priced quantities of one analysed layer (at a thread count, with a cache size)."""
    e = imbalance(c, threads)
    q = {"bytes" if c.bytes >= cache_bytes else "cached_bytes": c.bytes * e, "layer": float(c.ops)}
    if c.kind.removesuffix("_int8") in DENSE or c.kind in MAC_KINDS:
        kind = price_kind(c)
        q[kind] = c.macs * e
        if c.kind.removesuffix("_int8") in DENSE and kind.removesuffix("_int8") != "gemm":
            q["conv_layer"] = float(c.ops)
        if kind.removesuffix("_int8") == "conv_shallow":
            q["shallow_outputs"] = float(np.prod(c.out_shape)) * e
    elif c.kind == "gemv":
        q["gemv_weight_bytes"] = c.weight_bytes
    elif c.type in TRANSCENDENTAL:
        q["transcendental_bytes"] = c.bytes * e
    return q


def features(graph: Graph, threads: int = 1, cache_bytes: float = CACHE_BYTES) -> dict[str, float]:
    """How much of each priced quantity a graph holds (run on `threads` threads)."""
    f = dict.fromkeys(PRICES, 0.0)
    for c in graph.layers:
        if c.kind == "free":
            continue
        for k, v in layer_quantities(c, threads, cache_bytes).items():
            f[k] += v
    return f


def _matrix(feats: Sequence[dict]) -> np.ndarray:
    return np.array([[f.get(k, 0.0) for k in PRICES] for f in feats], dtype=float)


def predict(prices: dict[str, float], feats: dict[str, float]) -> float:
    return float(sum(prices.get(k, 0.0) * feats.get(k, 0.0) for k in PRICES))


def record_settings(predictor: dict) -> dict:
    """The feature settings a predictor record was fitted with: its thread count and the cache
    size below which a layer's bytes are "cached_bytes" (records without them: 1 thread, A53 L2)."""
    return {"threads": int(predictor.get("threads", 1)), "cache_bytes": float(predictor.get("cache_bytes", CACHE_BYTES))}


def predict_graph(predictor: dict, graph: Graph) -> float:
    """Predicted latency (ms) of a graph with a profile's predictor record."""
    return predict(predictor["prices"], features(graph, **record_settings(predictor)))


def calibrated_range(predictor: dict) -> tuple[float, float] | None:
    """The fastest and slowest measured model a predictor record was fitted on (ms), if it says.

    Its error band was measured inside that range; below it, fixed per-layer costs weigh more
    than in any model it was checked on (docs/devices-validation.md: on the host, before its profile priced a
    convolution's fixed cost, models under 0.1 ms were mostly predicted 18-38% too fast; the
    Android profiles cannot price it; on the published boards at 4 threads the fastest,
    blazeface, 25-59% too slow)."""
    models = predictor.get("calibration", {}).get("models", {})
    ms = [m["measured_ms"] for m in models.values() if m.get("measured_ms")]
    return (min(ms), max(ms)) if ms else None


def layer_breakdown(predictor: dict, graph: Graph) -> list[dict]:
    """Each layer's predicted share, in ms, with a profile's predictor record (Qualcomm AI
    Hub's per-layer view, predicted)."""
    prices, settings = predictor["prices"], record_settings(predictor)
    rows = []
    for c in graph.layers:
        if c.kind == "free":
            continue
        q = layer_quantities(c, **settings)
        ms = sum(prices.get(k, 0.0) * v for k, v in q.items())
        kind = next((k for k in q if k in MAC_KINDS or k == "gemv_weight_bytes"), "elementwise")
        rows.append({"name": c.name, "type": c.type, "kind": kind, "macs": c.macs, "bytes": c.bytes, "ms": ms})
    return rows


# -- fitting --------------------------------------------------------------------------------
def tie_matrix() -> np.ndarray:
    """log prices = B @ free parameters: each price its own, but an int8 twin is its fp32 kind's
    log price plus one shared log int8 factor (the last free parameter)."""
    free = [p for p in PRICES if p not in INT8_TWIN]
    B = np.zeros((len(PRICES), len(free) + 1))
    for i, p in enumerate(PRICES):
        if p in INT8_TWIN:
            B[i, free.index(INT8_TWIN[p])] = 1.0
            B[i, -1] = 1.0
        else:
            B[i, free.index(p)] = 1.0
    return B


FREE_STRENGTH = 1e-3  # a prior this weak only fixes the prices the data leaves free


def fit(feats: Sequence[dict], ms: Sequence[float], groups: Sequence[int] | None = None,
        prior: dict[str, float] | None = None, strength: float | dict[str, float] = 1.0, iters: int = 200,
        weights: Sequence[float] | None = None, layer_level: bool = False) -> tuple[dict, list[float]]:
    """Prices (shared) and one log speed factor per group, minimising squared log error.

    Without groups every row belongs to one device. With a prior, the penalty
    strength * sum_k (log p_k - log prior_k - s)^2 keeps each price near the prior's up to a
    common factor e^s that is free: the prior says how kernels compare, the data how fast
    the device is. Prices the data cannot see (a kind absent from every row) follow the prior.
    strength may be a {price: strength} dict: those prices lean on the prior that much, the
    others only as much as fixes what the data leaves free (FREE_STRENGTH).
    An int8 convolution's price is tied to its fp32 kind's by one int8 factor (`tie_matrix`),
    so int8 models at different shapes inform one number instead of a price per shape.
    layer_level says some rows are single layers timed on their own: only then are the
    `LAYER_LEVEL` prices fitted; otherwise they are 0 and "layer" carries them.
    """
    X = _matrix(feats)
    if not layer_level:
        X[:, [PRICES.index(p) for p in LAYER_LEVEL]] = 0.0
    y = np.log(np.asarray(ms, dtype=float))
    n, k = X.shape
    B = tie_matrix()
    kf = B.shape[1]
    g = np.zeros(n, dtype=int) if groups is None else np.asarray(groups, dtype=int)
    ng = int(g.max()) + 1
    if prior is None:
        u0 = _default_prior(X, y)
        strength = FREE_STRENGTH
        seen = X.sum(0) > 0
        for twin, base_kind in INT8_TWIN.items():  # start the int8 factor at 1
            i, j = PRICES.index(twin), PRICES.index(base_kind)
            if seen[i] and not seen[j]:
                u0[j] = u0[i]
            elif not seen[i]:
                u0[i] = u0[j]
    else:
        u0 = np.log(np.array([max(prior.get(p, 0.0), 1e-30) for p in PRICES]))
    v0 = np.linalg.lstsq(B, u0, rcond=None)[0]  # the tied prices nearest the prior's
    # initial common factor: the prior's median ratio
    base = np.log(np.maximum(X @ np.exp(B @ v0), 1e-30))
    s_init = float(np.median(y - base))
    theta = np.concatenate([v0 + s_init * (np.arange(kf) < kf - 1), np.zeros(ng), [s_init]])
    offsets = [float(np.median((y - base - s_init)[g == j])) if np.any(g == j) else 0.0 for j in range(ng)]
    theta[kf:kf + ng] = np.asarray(offsets) - offsets[0]  # group 0 is the reference (offset pinned at 0)
    lam = np.sqrt([strength.get(p, FREE_STRENGTH) for p in PRICES]) if isinstance(strength, dict) \
        else np.full(k, math.sqrt(strength))
    sw = np.sqrt(np.ones(n) if weights is None else np.asarray(weights, dtype=float))
    mu = 1e-2

    def residuals(t):
        u, off, s = B @ t[:kf], t[kf:kf + ng], t[-1]
        pred = X @ np.exp(u)
        r_data = sw * (np.log(np.maximum(pred, 1e-300)) + off[g] - y)
        r_prior = lam * (u - u0 - s)
        r_anchor = np.array([10.0 * off[0]])
        return np.concatenate([r_data, r_prior, r_anchor]), pred

    def jacobian(t, pred):
        u = B @ t[:kf]
        J = np.zeros((n + k + 1, kf + ng + 1))
        share = X * np.exp(u)[None, :] / np.maximum(pred, 1e-300)[:, None]
        J[:n, :kf] = (share @ B) * sw[:, None]
        J[np.arange(n), kf + g] = sw
        J[n:n + k, :kf] = lam[:, None] * B
        J[n:n + k, -1] = -lam
        J[n + k, kf] = 10.0
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
    prices = {p: float(math.exp(v)) for p, v in zip(PRICES, B @ theta[:kf])}
    if prior is None:
        seen = {p for p, col in zip(PRICES, X.T) if col.sum() > 0}
        prices = fill_unseen(prices, seen)
    if not layer_level:
        prices.update(dict.fromkeys(LAYER_LEVEL, 0.0))
    return prices, [float(v) for v in theta[kf:kf + ng]]


def parent_kind(kind: str) -> str | None:
    """conv1x1_thin -> conv1x1, gemm -> conv1x1: the coarser price a split kind falls back to."""
    if kind == "gemm":
        return "conv1x1"
    for suffix in ("_thin", "_small", "_shallow"):
        if kind.endswith(suffix):
            return kind[: -len(suffix)]
    return None


def fill_unseen(prices: dict[str, float], seen: set[str]) -> dict[str, float]:
    """Prices no measured model exercised take their parent kind's (a thin 3x3 is still a 3x3);
    an int8 twin stays its fp32 kind's price times the int8 factor; a surcharge on top of
    another price (`EXTRAS`) is 0."""
    seen = seen | {INT8_TWIN[k] for k in seen if k in INT8_TWIN}  # a twin's data pins its fp32 kind
    out = dict(prices)
    for k in (p for p in PRICES if p not in INT8_TWIN):
        if k in seen:
            continue
        p = parent_kind(k)
        while p is not None and p not in seen:
            p = parent_kind(p)
        if p is not None:
            out[k] = out[p]
    for twin, base in INT8_TWIN.items():
        out[twin] = out[base] * prices[twin] / prices[base]
    for k in EXTRAS:
        if k not in seen:
            out[k] = 0.0
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
