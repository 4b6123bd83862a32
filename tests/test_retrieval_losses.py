"""The loss set-up against numbers computed by hand (units, which distance, which reduction)."""

import math

import numpy as np
import pytest
import torch

from mobilize.errors import BadInput
from mobilize.models.retrieval.losses import ArcFaceHead, BatchHardTriplet, Cohort, SoftmaxHead, mutual_kl
from mobilize.models.retrieval.train import TrainConfig


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_arcface_matches_hand_computation_with_margin_in_radians():
    scale, margin = 16.0, 0.5  # radians, as InsightFace writes it
    head = ArcFaceHead(num_classes=3, dim=2, scale=scale, margin=margin)
    centres = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # one row per class
    with torch.no_grad():
        head.loss.W.copy_(torch.tensor(centres.T, dtype=torch.float32))  # PML stores W as [dim, classes]
    feats = np.array([[2.0, 1.0], [-0.5, 3.0]])  # not unit length: ArcFace normalises
    labels = [0, 1]
    got = float(head(torch.tensor(feats, dtype=torch.float32), torch.tensor(labels)).detach())

    losses = []
    for f, y in zip(feats, labels):
        cos = np.array([_unit(f) @ _unit(c) for c in centres])
        logits = scale * cos
        logits[y] = scale * math.cos(math.acos(cos[y]) + margin)
        losses.append(-logits[y] + math.log(np.exp(logits).sum()))
    assert got == pytest.approx(np.mean(losses), rel=1e-5)

    # without the margin the same head gives the plain scaled-cosine softmax, and a larger loss
    # with it: the margin makes the target harder
    plain = ArcFaceHead(3, 2, scale, 0.0)
    plain.loss.W.data.copy_(head.loss.W.data)
    assert float(plain(torch.tensor(feats, dtype=torch.float32), torch.tensor(labels)).detach()) < got
    # logits (for mutual learning) carry no margin
    lg = head.logits(torch.tensor(feats, dtype=torch.float32)).detach().numpy()
    assert lg[0, 0] == pytest.approx(scale * _unit(feats[0]) @ _unit(centres[0]), rel=1e-5)


def test_subcenter_arcface_scores_each_sample_against_its_nearest_centre():
    scale, margin = 16.0, 0.3
    head = ArcFaceHead(num_classes=2, dim=2, scale=scale, margin=margin, sub_centers=2)
    # PML lays sub-centres out class by class: columns (0, a), (0, b), (1, a), (1, b)
    centres = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    with torch.no_grad():
        head.loss.W.copy_(torch.tensor(centres.T, dtype=torch.float32))
    feats = np.array([[0.2, 3.0], [3.0, 0.5]])  # near class 0's second centre; near class 0's first
    labels = [0, 1]
    got = float(head(torch.tensor(feats, dtype=torch.float32), torch.tensor(labels)).detach())

    losses = []
    for f, y in zip(feats, labels):
        cos = np.array([max(_unit(f) @ _unit(c) for c in centres[2 * k:2 * k + 2]) for k in range(2)])
        logits = scale * cos
        logits[y] = scale * math.cos(math.acos(cos[y]) + margin)
        losses.append(-logits[y] + math.log(np.exp(logits).sum()))
    assert got == pytest.approx(np.mean(losses), rel=1e-5)
    # one centre per class (class 0's first, class 1's first) is plain ArcFace, and a larger loss
    # for the first sample, which sits near class 0's second centre
    plain = ArcFaceHead(2, 2, scale, margin)
    with torch.no_grad():
        plain.loss.W.copy_(torch.tensor(centres[[0, 2]].T, dtype=torch.float32))
    x0 = torch.tensor(feats[:1], dtype=torch.float32)
    assert float(plain(x0, torch.tensor([0])).detach()) > float(head(x0, torch.tensor([0])).detach())
    assert head.logits(x0).shape == (1, 2)
    with pytest.raises(BadInput, match="--arcface-subcenters must be at least 1"):
        TrainConfig(data="d", out="o", arcface_subcenters=0).validate()


def test_batch_hard_triplet_matches_hand_computation():
    margin = 0.3
    # two tight classes (zero loss) and a spread-out one whose member sits between them
    pts = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99], [-2.0, 0.0], [0.5, 0.866]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    got = float(BatchHardTriplet(margin)(torch.tensor(pts, dtype=torch.float32), torch.tensor(labels)).detach())

    u = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    d = np.linalg.norm(u[:, None] - u[None], axis=2)
    per_anchor = []
    for i in range(len(u)):
        pos = [j for j in range(len(u)) if labels[j] == labels[i] and j != i]
        neg = [j for j in range(len(u)) if labels[j] != labels[i]]
        per_anchor.append(max(0.0, max(d[i, pos]) - min(d[i, neg]) + margin))
    nonzero = [v for v in per_anchor if v > 0]
    assert len(nonzero) not in (0, len(per_anchor))  # the case exercises the "average of non-zero" rule
    assert got == pytest.approx(np.mean(nonzero), rel=1e-5)


def test_softmax_head_is_cross_entropy():
    head = SoftmaxHead(3, 2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.fc.bias.zero_()
    got = float(head(torch.tensor([[2.0, -1.0]]), torch.tensor([2])).detach())
    logits = np.array([2.0, -1.0, 1.0])
    assert got == pytest.approx(-logits[2] + math.log(np.exp(logits).sum()), rel=1e-6)


def test_mutual_kl_is_kl_of_peer_to_self_and_only_trains_self():
    own = torch.tensor([[1.0, 0.0]], requires_grad=True)
    peer = torch.tensor([[0.0, 2.0]], requires_grad=True)
    got = mutual_kl(own, peer, temperature=1.0)
    p = np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum()
    q = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    assert float(got.detach()) == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-6)
    got.backward()
    assert own.grad is not None and peer.grad is None  # the peer is a target, not trained by this term


def test_cohort_adds_mutual_term_only_with_two_students():
    from mobilize.models.retrieval.losses import Student
    from mobilize.models.retrieval.model import NetConfig, build_net

    torch.manual_seed(0)
    cfg = NetConfig(width=0.25, input_size=32, embedding_dim=16)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    one = Cohort([Student(build_net(cfg), ArcFaceHead(4, 16), BatchHardTriplet(), 1.0)])
    _, parts = one(x, y)
    assert set(parts) == {"cls", "triplet"}
    two = Cohort([Student(build_net(cfg), ArcFaceHead(4, 16), None, 0.0) for _ in range(2)], mutual_weight=1.0)
    total, parts = two(x, y)
    assert set(parts) == {"cls", "mutual"} and float(parts["mutual"]) > 0
    assert float(total.detach()) == pytest.approx(float(parts["cls"] + parts["mutual"]), rel=1e-5)
