"""k-reciprocal re-ranking on tiny cases whose answer is known by construction."""

import numpy as np

from mobilize.models.retrieval.rerank import k_reciprocal_neighbours, rerank, rerank_embeddings


def _sqdist(a, b):
    return np.linalg.norm(a[:, None] - b[None], axis=2) ** 2


def _scene():
    """Query at the origin; its own class (B) sits around it at radius 0.45. A wrong-class item d
    is the single closest one (0.40), but d's neighbourhood is its own tight cluster C, so the
    query is not among d's nearest neighbours: d is not a k-reciprocal neighbour of the query."""
    ang = np.radians([90, 150, 180, 210, 270])
    B = 0.45 * np.stack([np.cos(ang), np.sin(ang)], 1)
    d = np.array([[0.40, 0.0]])
    C = d + 0.06 * np.array([[1, 0], [0, 1], [0, -1], [1, 1], [1, -1]])
    gallery = np.concatenate([B, d, C])
    labels = np.array([1] * 5 + [0] * 6)
    return np.zeros((1, 2)), gallery, labels


def test_k_reciprocal_set_by_hand():
    # ranks[i] = neighbours of i, nearest first (self first). 0 <-> 1 mutual, 0 -> 2 one-way.
    ranks = np.array([[0, 1, 2, 3],
                      [1, 0, 3, 2],
                      [2, 3, 1, 0],
                      [3, 2, 1, 0]])
    assert sorted(k_reciprocal_neighbours(ranks, 0, 2)) == [0, 1]  # 2 is in N(0,2) but 0 not in N(2,2)
    assert sorted(k_reciprocal_neighbours(ranks, 2, 1)) == [2, 3]
    assert sorted(k_reciprocal_neighbours(ranks, 0, 3)) == [0, 1, 2, 3]


def test_rerank_puts_the_reciprocal_neighbours_first():
    q, g, labels = _scene()
    raw = np.argsort(_sqdist(q, g)[0], kind="stable")
    assert list(labels[raw[:3]]) == [0, 0, 0]  # plain nearest neighbours: all wrong at the top
    d = rerank(_sqdist(q, g), _sqdist(q, q), _sqdist(g, g), k1=4, k2=1, lambda_value=0.0)
    order = np.argsort(d[0], kind="stable")
    assert sorted(order[:5]) == [0, 1, 2, 3, 4]  # the five true matches, and only they, come first
    mixed = rerank(_sqdist(q, g), _sqdist(q, q), _sqdist(g, g), k1=4, k2=1, lambda_value=0.3)
    assert list(labels[np.argsort(mixed[0], kind="stable")[:3]]) == [1, 1, 1]


def test_lambda_one_keeps_the_original_order():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, 8)); g = rng.normal(size=(12, 8))
    q /= np.linalg.norm(q, axis=1, keepdims=True); g /= np.linalg.norm(g, axis=1, keepdims=True)
    d = rerank_embeddings(q, g, k1=4, k2=2, lambda_value=1.0)
    assert np.array_equal(np.argsort(d, 1, kind="stable"), np.argsort(-(q @ g.T), 1, kind="stable"))
