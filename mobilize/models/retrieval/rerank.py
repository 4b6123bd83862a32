"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017).

Idea: j is a trustworthy match of i when i is also among j's nearest neighbours. Each sample
gets a soft set of k-reciprocal neighbours (expanded with the half-size sets of its members
when they overlap by more than 2/3), encoded as a vector V of weights exp(-d); two samples
are close when their neighbour sets overlap (Jaccard distance). The final distance mixes
Jaccard and original distances: d* = (1 - lambda) d_J + lambda d.

Needs query-query, query-gallery and gallery-gallery distances: memory and time grow with
(Q + G)^2, so it suits galleries of thousands (evaluation, a shop's shelf), not 100k.
"""

from __future__ import annotations

import numpy as np


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of unit vectors: 2 - 2 cos, in [0, 4]."""
    return np.clip(2.0 - 2.0 * (a @ b.T), 0.0, None).astype(np.float32)


def _top(dist_row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries, nearest first (ties broken by index)."""
    k = min(k, len(dist_row))
    part = np.argpartition(dist_row, k - 1)[:k] if k < len(dist_row) else np.arange(len(dist_row))
    return part[np.lexsort((part, dist_row[part]))]


def k_reciprocal_neighbours(ranks: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k) = { j in N(i, k) : i in N(j, k) }, with N(., k) the k+1 nearest (self included)."""
    forward = ranks[i, :k + 1]
    backward = ranks[forward, :k + 1]
    return forward[np.any(backward == i, axis=1)]


def rerank(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
           lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked query-gallery distance matrix [Q, G] from the three distance matrices."""
    q_g, q_q, g_g = (np.asarray(m, np.float32) for m in (q_g, q_q, g_g))
    nq, ng = q_g.shape
    n = nq + ng
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32)
    full = full / np.maximum(full.max(axis=1, keepdims=True), 1e-12)
    k1 = max(1, min(k1, n - 1))
    depth = k1 + 1
    ranks = np.stack([_top(full[i], depth) for i in range(n)])
    half = max(1, int(np.around(k1 / 2)))

    V = np.zeros((n, n), np.float32)
    for i in range(n):
        r = k_reciprocal_neighbours(ranks, i, k1)
        expanded = r
        for c in r:
            rc = k_reciprocal_neighbours(ranks, int(c), half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3.0 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-full[i, expanded])
        V[i, expanded] = w / w.sum()
    if k2 > 1:  # local query expansion: average the encodings of the k2 nearest
        k2 = min(k2, depth)
        V = np.stack([V[ranks[i, :k2]].mean(0) for i in range(n)])

    jaccard = np.empty((nq, ng), np.float32)
    gallery_v = V[nq:]
    for i in range(nq):
        nz = np.flatnonzero(V[i])
        min_sum = np.minimum(V[i, nz][None, :], gallery_v[:, nz]).sum(1)
        jaccard[i] = 1.0 - min_sum / (2.0 - min_sum)
    return (1.0 - lambda_value) * jaccard + lambda_value * full[:nq, nq:]


def rerank_embeddings(queries: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
                      lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked distances for unit-length embeddings (smaller is closer)."""
    return rerank(cosine_distances(queries, gallery), cosine_distances(queries, queries),
                  cosine_distances(gallery, gallery), k1, k2, lambda_value)
