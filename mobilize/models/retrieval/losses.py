"""Training objectives: a classification head (softmax or ArcFace) plus batch-hard triplet.

The losses themselves come from pytorch-metric-learning; this module only states how they
are set up (units, which embedding each one sees) so that a test can check the set-up
against numbers computed by hand. Only the embedding network is deployed; the heads stay in
the checkpoint for --resume.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS = ("arcface", "softmax")


class SoftmaxHead(nn.Module):
    """The baseline: a linear classifier on the embedding and cross-entropy."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def logits(self, features):
        return self.fc(features)

    def forward(self, features, labels):
        return F.cross_entropy(self.logits(features), labels)


class ArcFaceHead(nn.Module):
    """Cosine softmax with an additive angular margin (Deng et al. 2019), via PML's ArcFaceLoss.

    margin is in radians here, as in the paper and InsightFace (m = 0.5); PML takes degrees.
    With sub_centers > 1 each class has that many centres and a sample is scored against its
    nearest one (sub-center ArcFace, Deng et al. 2020): a class may keep several looks.
    """

    def __init__(self, num_classes: int, dim: int, scale: float = 30.0, margin: float = 0.3, sub_centers: int = 1):
        super().__init__()
        from pytorch_metric_learning.losses import ArcFaceLoss, SubCenterArcFaceLoss

        self.scale, self.margin, self.sub_centers = float(scale), float(margin), int(sub_centers)
        if self.sub_centers > 1:
            self.loss = SubCenterArcFaceLoss(num_classes=num_classes, embedding_size=dim, margin=math.degrees(margin),
                                             scale=scale, sub_centers=self.sub_centers)
        else:
            self.loss = ArcFaceLoss(num_classes, dim, margin=math.degrees(margin), scale=scale)

    def logits(self, features):
        """scale * cos(angle to each class centre), without the margin (for mutual learning)."""
        return self.loss.get_logits(features)

    def forward(self, features, labels):
        return self.loss(features, labels)


class BatchHardTriplet(nn.Module):
    """For each anchor: its farthest positive and nearest negative in the batch (Hermans et al.).

    Distances are Euclidean between L2-normalised embeddings (PML's default LpDistance with
    normalize_embeddings=True), so the margin is on the unit sphere: d in [0, 2].
    """

    def __init__(self, margin: float = 0.3):
        super().__init__()
        from pytorch_metric_learning.losses import TripletMarginLoss
        from pytorch_metric_learning.miners import BatchHardMiner

        self.margin = float(margin)
        self.miner = BatchHardMiner()
        self.loss = TripletMarginLoss(margin=margin)

    def forward(self, features, labels):
        return self.loss(features, labels, self.miner(features, labels))


def build_head(kind: str, num_classes: int, dim: int, scale: float, margin: float, sub_centers: int = 1) -> nn.Module:
    if kind == "arcface":
        return ArcFaceHead(num_classes, dim, scale, margin, sub_centers)
    if kind == "softmax":
        return SoftmaxHead(num_classes, dim)
    raise ValueError(f"head must be one of {HEADS}, not {kind!r}")


class Student(nn.Module):
    """One network with its heads: forward returns (loss parts, logits for mutual learning)."""

    def __init__(self, net: nn.Module, head: nn.Module, triplet: BatchHardTriplet | None, triplet_weight: float,
                 dropout: float = 0.0):
        super().__init__()
        self.net = net
        self.head = head
        self.triplet = triplet
        self.triplet_weight = triplet_weight
        self.dropout = dropout

    def forward(self, x, labels):
        features = self.net.features(x, self.dropout)
        parts = {"cls": self.head(features, labels)}
        if self.triplet is not None and self.triplet_weight > 0:
            parts["triplet"] = self.triplet_weight * self.triplet(features, labels)
        return parts, self.head.logits(features)


def mutual_kl(logits: torch.Tensor, peer_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(peer || self) on softened class posteriors (Zhang et al. 2018); the peer is a target."""
    t = temperature
    target = F.softmax(peer_logits.detach() / t, dim=1)
    return F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="batchmean") * (t * t)


class Cohort(nn.Module):
    """One or two students trained together; DDP wraps this so every head syncs too."""

    def __init__(self, students: list[Student], mutual_weight: float = 1.0, temperature: float = 1.0):
        super().__init__()
        self.students = nn.ModuleList(students)
        self.mutual_weight = mutual_weight
        self.temperature = temperature

    def forward(self, x, labels):
        outs = [s(x, labels) for s in self.students]
        total = 0.0
        parts: dict[str, torch.Tensor] = {}
        for i, (p, logits) in enumerate(outs):
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v.detach()
                total = total + v
            if len(outs) > 1 and self.mutual_weight > 0:
                kl = sum(mutual_kl(logits, outs[j][1], self.temperature) for j in range(len(outs)) if j != i)
                kl = self.mutual_weight * kl / (len(outs) - 1)
                parts["mutual"] = parts.get("mutual", 0.0) + kl.detach()
                total = total + kl
        return total, parts
