"""GFL losses with ATSS assignment.

- ATSS (Zhang et al., 2020) picks positives per object from the statistics of its candidate
  IoUs, so no IoU threshold has to be tuned per data set: what a user's data needs.
- Quality focal loss (Li et al., GFL, 2020): the class score is trained to predict the IoU of
  its box, so one score ranks detections for NMS and mAP.
- GIoU loss on the decoded box, and distribution focal loss on the box-side distributions.

Normalisers (number of positives, sum of weights) are summed over all processes, so that the
loss of a batch split over N processes is the loss of the whole batch: DDP averages the
gradients, and each process multiplies its share by N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU [len(a), len(b)] of xyxy boxes."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-6)


def aligned_iou(a: torch.Tensor, b: torch.Tensor, giou: bool = False) -> torch.Tensor:
    """IoU (or GIoU) of a[i] with b[i]."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (area_a + area_b - inter).clamp(min=1e-6)
    iou = inter / union
    if not giou:
        return iou
    elt = torch.min(a[:, :2], b[:, :2])
    erb = torch.max(a[:, 2:], b[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = (ewh[:, 0] * ewh[:, 1]).clamp(min=1e-6)
    return iou - (enclose - union) / enclose


@torch.no_grad()
def atss_assign(points, strides, level_sizes, gt_boxes, anchor_scale: float = 5.0, topk: int = 9) -> torch.Tensor:
    """Index of the assigned ground-truth box per location, -1 for background."""
    n, m = points.shape[0], gt_boxes.shape[0]
    if m == 0:
        return torch.full((n,), -1, dtype=torch.long, device=points.device)
    half = (strides * anchor_scale / 2)[:, None]
    anchors = torch.cat([points - half, points + half], 1)
    ious = box_iou(anchors, gt_boxes)  # [N, M]
    centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    dist = torch.cdist(points, centres)  # [N, M]
    cand, start = [], 0
    for size in level_sizes:
        k = min(topk, size)
        cand.append(dist[start:start + size].topk(k, dim=0, largest=False).indices + start)
        start += size
    cand = torch.cat(cand, 0)  # [K, M]
    cand_iou = ious.gather(0, cand)
    thr = cand_iou.mean(0) + cand_iou.std(0)
    px, py = points[cand, 0], points[cand, 1]  # [K, M]
    inside = torch.stack([px - gt_boxes[:, 0], py - gt_boxes[:, 1], gt_boxes[:, 2] - px, gt_boxes[:, 3] - py]).amin(0) > 0.01
    pos = (cand_iou >= thr[None]) & inside
    overlaps = torch.full((n, m), -1.0, dtype=ious.dtype, device=ious.device)
    gt_idx = torch.arange(m, device=cand.device).expand_as(cand)
    overlaps[cand[pos], gt_idx[pos]] = cand_iou[pos]
    best, arg = overlaps.max(1)
    return torch.where(best >= 0, arg, torch.full_like(arg, -1))


def quality_focal_loss(logits, target, beta: float = 2.0):
    p = logits.sigmoid()
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * (p - target).abs().pow(beta)


def distribution_focal_loss(logits, target):
    """logits [P, R+1], target [P] in [0, R): cross-entropy on the two bins around the target."""
    left = target.floor().long()
    wr = target - left
    return (F.cross_entropy(logits, left, reduction="none") * (1 - wr)
            + F.cross_entropy(logits, left + 1, reduction="none") * wr)


class GFLLoss:
    def __init__(self, num_classes: int, reg_max: int, points, strides, level_sizes,
                 box_weight: float = 2.0, dfl_weight: float = 0.25, anchor_scale: float = 5.0):
        self.num_classes, self.reg_max = num_classes, reg_max
        self.points, self.strides, self.level_sizes = points, strides, level_sizes
        self.box_weight, self.dfl_weight, self.anchor_scale = box_weight, dfl_weight, anchor_scale
        self.project = torch.arange(reg_max + 1, dtype=torch.float32)

    def __call__(self, cls_logits, reg_logits, targets, reduce=None) -> tuple[torch.Tensor, dict]:
        """targets: list of (boxes [K, 4] in input pixels, labels [K]) per image.

        `reduce(tensor) -> tensor` sums a normaliser over processes (identity when alone);
        the returned loss is this process's share, to be averaged by DDP.
        """
        b, n, c = cls_logits.shape
        world = 1
        if reduce is not None:
            world = reduce.world
        assigned = [atss_assign(self.points, self.strides, self.level_sizes, t[0], self.anchor_scale) for t in targets]
        pos_b, pos_n, gt_boxes, gt_labels = [], [], [], []
        for i, (a, (boxes, labels)) in enumerate(zip(assigned, targets)):
            idx = torch.nonzero(a >= 0).squeeze(1)
            pos_b.append(torch.full_like(idx, i))
            pos_n.append(idx)
            gt_boxes.append(boxes[a[idx]])
            gt_labels.append(labels[a[idx]])
        pos_b, pos_n = torch.cat(pos_b), torch.cat(pos_n)
        gt_boxes, gt_labels = torch.cat(gt_boxes).float(), torch.cat(gt_labels).long()
        num_pos = pos_b.numel()

        pos_reg = reg_logits[pos_b, pos_n]  # [P, 4, R+1]
        stride = self.strides[pos_n][:, None]
        centre = self.points[pos_n]
        dist = (pos_reg.softmax(-1) * self.project).sum(-1) * stride  # [P, 4]
        pred_boxes = torch.cat([centre - dist[:, :2], centre + dist[:, 2:]], 1)
        iou = aligned_iou(pred_boxes.detach(), gt_boxes).clamp(min=1e-6) if num_pos else gt_boxes.new_zeros(0)

        score_target = torch.zeros_like(cls_logits)
        score_target[pos_b, pos_n, gt_labels] = iou
        weight = cls_logits.detach()[pos_b, pos_n].sigmoid().amax(-1) if num_pos else iou

        norms = torch.tensor([float(num_pos), float(weight.sum())], dtype=torch.float64)
        if reduce is not None:
            norms = reduce(norms)
        pos_norm = max(float(norms[0]), 1.0)
        weight_norm = max(float(norms[1]), 1e-6)

        loss_cls = quality_focal_loss(cls_logits, score_target).sum() / pos_norm
        if num_pos:
            loss_box = (weight * (1 - aligned_iou(pred_boxes, gt_boxes, giou=True))).sum() / weight_norm
            side = torch.cat([centre - gt_boxes[:, :2], gt_boxes[:, 2:] - centre], 1) / stride
            side = side.clamp(0, self.reg_max - 0.01)
            dfl = distribution_focal_loss(pos_reg.reshape(-1, self.reg_max + 1), side.reshape(-1))
            loss_dfl = (dfl.reshape(-1, 4).mean(1) * weight).sum() / weight_norm
        else:
            loss_box = loss_dfl = reg_logits.sum() * 0.0
        total = loss_cls + self.box_weight * loss_box + self.dfl_weight * loss_dfl
        parts = {"cls": loss_cls.item(), "box": loss_box.item(), "dfl": loss_dfl.item(), "pos": num_pos}
        return total * world, parts
