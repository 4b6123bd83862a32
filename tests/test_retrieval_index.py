"""Exact search, category voting, the index file, and the metrics against pytorch-metric-learning."""

import struct
import json

import numpy as np
import pytest

from mobilize.errors import BadInput
from mobilize.models.retrieval.index import Index, search, vote
from mobilize.models.retrieval.metrics import accuracy_calculator_metrics, embedding_metrics, ranking_metrics


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_numpy_search_is_exact():
    rng = np.random.default_rng(1)
    q, g = _unit(rng.normal(size=(37, 16))), _unit(rng.normal(size=(1000, 16)))
    scores, idx = search(q, g, k=7, backend="numpy", block=10)  # several blocks
    brute = np.argsort(-(q @ g.T), axis=1)[:, :7]
    assert np.array_equal(idx, brute)
    assert np.allclose(scores, np.take_along_axis(q @ g.T, brute, 1), atol=1e-6)
    assert search(q, g[:3], k=10, backend="numpy")[1].shape == (37, 3)  # k larger than the gallery


def test_weighted_vote_trusts_the_closest_neighbours():
    # one very close neighbour of class 1, three farther ones of class 0
    scores = np.array([[0.99, 0.60, 0.59, 0.58]])
    labels = np.array([[1, 0, 0, 0]])
    sharp, _ = vote(scores, labels, 2, temperature=0.05)
    flat, share = vote(scores, labels, 2, temperature=100.0)
    assert sharp[0] == 1  # exp(0) vs 3 * exp(-0.39 / 0.05): the close one wins
    assert flat[0] == 0 and share[0] == pytest.approx(0.75, abs=0.01)  # a plain majority


def test_index_file_round_trip_and_layout(tmp_path):
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(5, 4)).astype(np.float32)
    index = Index(emb, [0, 1, 1, 2, 0], ["apple", "milk", "oat"], [f"train/x/{i}.jpg" for i in range(5)],
                  {"model_sha256": "abc"})
    path = index.save(tmp_path / "index.safetensors")
    back = Index.load(path)
    assert np.allclose(back.embeddings, _unit(emb)) and list(back.labels) == [0, 1, 1, 2, 0]
    assert back.classes == ["apple", "milk", "oat"] and back.items[4] == "train/x/4.jpg"
    assert back.metadata["model_sha256"] == "abc"
    raw = path.read_bytes()  # the documented layout: u64 header length, JSON header, raw tensors
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    a, b = header["embeddings"]["data_offsets"]
    assert np.allclose(np.frombuffer(raw[8 + n + a:8 + n + b], "<f4").reshape(5, 4), _unit(emb))
    half = Index.load(index.save(tmp_path / "half.safetensors", fp16=True))
    assert np.allclose(half.embeddings, _unit(emb), atol=2e-3)
    assert (tmp_path / "half.safetensors").stat().st_size < path.stat().st_size
    with pytest.raises(BadInput):
        Index.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not an index")
    with pytest.raises(BadInput):
        Index.load(tmp_path / "junk.safetensors")


def test_index_predict_names_the_class():
    index = Index(np.eye(3, dtype=np.float32), [0, 1, 2], ["a", "b", "c"])
    names, conf = index.predict(np.array([[0.1, 0.9, 0.0], [1.0, 0.0, 0.2]], np.float32), k=3, temperature=0.05)
    assert names == ["b", "a"] and np.all(conf > 0.5)


def test_ranking_metrics_by_hand():
    # gallery labels: class 0 x2, class 1 x1; one query of class 0 ranks [0, 1, 0] -> hits at 1 and 3
    gallery_labels = np.array([0, 1, 0])
    ranked = np.array([[0, 1, 2]])
    m = ranking_metrics(ranked, np.array([0]), gallery_labels, ks=(1, 2))
    assert m["recall@1"] == 1.0 and m["recall@2"] == 1.0
    assert m["map@r"] == pytest.approx(0.5)  # R = 2: (1/2) * (P(1) * 1 + P(2) * 0)
    # a query whose class is missing from the gallery is left out and counted
    m = ranking_metrics(np.array([[0, 1, 2], [1, 0, 2]]), np.array([0, 7]), gallery_labels, ks=(1,))
    assert m["queries"] == 1 and m["queries_unmatched"] == 1


def test_metrics_agree_with_accuracy_calculator():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 12))
    gl = rng.integers(0, 6, 90)
    ql = np.concatenate([rng.integers(0, 6, 30), [6, 6]])  # two queries of a class the gallery lacks
    g = _unit(centres[gl] + rng.normal(scale=0.9, size=(90, 12)))
    q = _unit(np.concatenate([centres[ql[:30]], rng.normal(size=(2, 12))]) + rng.normal(scale=0.9, size=(32, 12)))
    ours = embedding_metrics(q, ql, g, gl)
    pml = accuracy_calculator_metrics(q, ql, g, gl)
    assert 0.2 < ours["recall@1"] < 1.0  # neither trivial nor hopeless
    assert ours["recall@1"] == pytest.approx(pml["recall@1"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(pml["map@r"], abs=1e-6)
    assert ours["recall@1"] <= ours["recall@5"] <= ours["recall@10"]
