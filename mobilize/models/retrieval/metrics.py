"""Retrieval metrics: Recall@K and mAP@R (Musgrave, Belongie, Lim: "A Metric Learning Reality
Check", 2020), from embeddings or from any distance matrix (re-ranked or not).

Recall@K: share of queries with at least one gallery item of their class in the top K.
mAP@R: with R the number of gallery items of the query's class, the mean over queries of
(1/R) sum_{i<=R} P(i) [item i is a match]: it rewards ranking *all* the matches first.
Queries whose class has no gallery item are left out (and counted in `queries_unmatched`).
Without re-ranking, Recall@1 and mAP@R come from pytorch-metric-learning's AccuracyCalculator;
a test checks that the two computations agree.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .index import l2n, search


def ranking_metrics(ranked: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                    ks: Sequence[int] = (1, 5, 10)) -> dict:
    """`ranked`: gallery indices per query, best first, at least max(R) and max(ks) deep."""
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    counts = {int(c): int(n) for c, n in zip(*np.unique(gallery_labels, return_counts=True))}
    r = np.array([counts.get(int(c), 0) for c in query_labels])
    keep = r > 0
    match = gallery_labels[ranked[keep]] == query_labels[keep, None]
    r = r[keep]
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(match[:, :k].any(1))) if len(match) else float("nan")
    aps = []
    for m, rq in zip(match, r):
        m = m[:rq]
        hits = np.cumsum(m)
        aps.append(float(np.sum(m * hits / np.arange(1, rq + 1)) / rq))
    out["map@r"] = float(np.mean(aps)) if aps else float("nan")
    out["queries"] = int(keep.sum())
    out["queries_unmatched"] = int((~keep).sum())
    return out


def depth_needed(query_labels, gallery_labels, ks: Sequence[int] = (1, 5, 10)) -> int:
    counts = np.unique(np.asarray(gallery_labels), return_counts=True)[1]
    return int(min(len(gallery_labels), max(max(ks), int(counts.max()) if len(counts) else 1)))


def embedding_metrics(queries: np.ndarray, query_labels, gallery: np.ndarray, gallery_labels,
                      rerank: bool = False, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                      ks: Sequence[int] = (1, 5, 10), backend: str = "auto") -> dict:
    queries, gallery = l2n(queries), l2n(gallery)
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    depth = depth_needed(query_labels, gallery_labels, ks)
    if rerank:
        from .rerank import rerank_embeddings

        dist = rerank_embeddings(queries, gallery, k1, k2, lambda_value)
        ranked = np.argsort(dist, axis=1, kind="stable")[:, :depth]
    else:
        ranked = search(queries, gallery, depth, backend)[1]
    return ranking_metrics(ranked, query_labels, gallery_labels, ks)


def accuracy_calculator_metrics(queries: np.ndarray, query_labels, gallery: np.ndarray, gallery_labels) -> dict:
    """precision_at_1 (= Recall@1) and mean_average_precision_at_r from pytorch-metric-learning."""
    import torch
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    q = torch.from_numpy(l2n(queries))
    g = torch.from_numpy(l2n(gallery))
    ql = torch.from_numpy(np.asarray(query_labels, np.int64))
    gl = torch.from_numpy(np.asarray(gallery_labels, np.int64))
    keep = torch.isin(ql, gl)  # PML counts queries without a match as zero; ranking_metrics drops them
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count",
                              device=torch.device("cpu"), knn_func=CustomKNN(CosineSimilarity()))
    acc = calc.get_accuracy(q[keep], ql[keep], g, gl, ref_includes_query=False)
    return {"recall@1": float(acc["precision_at_1"]), "map@r": float(acc["mean_average_precision_at_r"])}
