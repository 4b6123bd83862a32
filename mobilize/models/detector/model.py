"""The detector: MobileNetV2-style backbone, PAN neck and GFL head, all depthwise separable.

`Detector.forward` is the deployable graph: it ends in decoded boxes (xyxy, input pixels) and
per-class scores for every location, built only from convs, reshape, concat, softmax,
sigmoid, mul/add and transpose, so that every converter (pnnx, onnx2tf) takes it as is. NMS
is left to post-processing. `forward_raw` gives the logits the losses need.

`separable=False` builds the same architecture with every depthwise-separable pair
(k x k depthwise + 1 x 1 pointwise) replaced by one standard k x k convolution with the same
input and output channels: the comparison the benchmark reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._shape import ShapeConfig


@dataclass
class DetectorConfig(ShapeConfig):
    num_classes: int
    imgsz: int = 320
    width: float = 1.0  # backbone width multiplier
    neck_channels: int = 96
    head_convs: int = 2
    reg_max: int = 7  # box sides are distributions over 0..reg_max strides (GFL)
    separable: bool = True
    strides: list[int] = field(default_factory=lambda: [8, 16, 32])


def make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_act(cin, cout, k=1, s=1, groups=1, act=True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def sep_conv(cin, cout, k=3, s=1, act=True, separable=True, mid_act=True) -> nn.Sequential:
    """Depthwise k x k + pointwise 1 x 1, or (separable=False) one standard k x k conv."""
    if not separable:
        return conv_bn_act(cin, cout, k, s, act=act)
    return nn.Sequential(conv_bn_act(cin, cin, k, s, groups=cin, act=mid_act), conv_bn_act(cin, cout, 1, act=act))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, separable=True):
        super().__init__()
        mid = make_divisible(cin * expand)
        self.use_res = stride == 1 and cin == cout
        layers = [conv_bn_act(cin, mid, 1)] if expand != 1 else []
        layers.append(sep_conv(mid, cout, 3, stride, act=False, separable=separable))  # linear bottleneck
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


# (expansion, channels, repeats, stride); outputs taken after the stages marked in OUT_STAGES
MBV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2)]
OUT_STAGES = (2, 4, 5)  # strides 8, 16, 32


class Backbone(nn.Module):
    def __init__(self, width=1.0, separable=True):
        super().__init__()
        c = make_divisible(32 * width)
        self.stem = conv_bn_act(3, c, 3, 2)
        self.stages = nn.ModuleList()
        self.out_channels = []
        for i, (t, ch, n, s) in enumerate(MBV2_STAGES):
            cout = make_divisible(ch * width)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(c, cout, s if j == 0 else 1, t, separable))
                c = cout
            self.stages.append(nn.Sequential(*blocks))
            if i in OUT_STAGES:
                self.out_channels.append(c)

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in OUT_STAGES:
                outs.append(x)
        return outs


class PAN(nn.Module):
    """Top-down (FPN) then bottom-up path, every 3x3 depthwise separable."""

    def __init__(self, in_channels, c, separable=True):
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn_act(ci, c, 1) for ci in in_channels)
        n = len(in_channels)
        self.top_down = nn.ModuleList(sep_conv(c, c, separable=separable) for _ in range(n - 1))
        self.down = nn.ModuleList(sep_conv(c, c, 3, 2, separable=separable) for _ in range(n - 1))
        self.bottom_up = nn.ModuleList(sep_conv(c, c, separable=separable) for _ in range(n - 1))

    def forward(self, feats):
        x = [lat(f) for lat, f in zip(self.lateral, feats)]
        for i in range(len(x) - 1, 0, -1):  # top-down
            x[i - 1] = self.top_down[i - 1](x[i - 1] + F.interpolate(x[i], scale_factor=2.0, mode="nearest"))
        for i in range(len(x) - 1):  # bottom-up
            x[i + 1] = self.bottom_up[i](x[i + 1] + self.down[i](x[i]))
        return x


class Head(nn.Module):
    """One small tower per level; one 1x1 conv gives class logits and box distributions."""

    def __init__(self, c, num_classes, reg_max, convs, separable=True):
        super().__init__()
        self.num_classes = num_classes
        self.tower = nn.Sequential(*[sep_conv(c, c, separable=separable) for _ in range(convs)])
        self.out = nn.Conv2d(c, num_classes + 4 * (reg_max + 1), 1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.constant_(self.out.bias, 0.0)
        with torch.no_grad():
            self.out.bias[:num_classes] = -4.595  # prior 0.01: the focal-loss start (RetinaNet)

    def forward(self, x):
        return self.out(self.tower(x))


def anchor_points(imgsz: int, strides) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Centres [N, 2] (x, y in input pixels), stride per location [N], locations per level."""
    pts, strd, sizes = [], [], []
    for s in strides:
        n = -(-imgsz // s)
        ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
        pts.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) * s + s / 2)
        strd.append(torch.full((n * n,), float(s)))
        sizes.append(n * n)
    return torch.cat(pts), torch.cat(strd), sizes


class Detector(nn.Module):
    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.width, cfg.separable)
        self.neck = PAN(self.backbone.out_channels, cfg.neck_channels, cfg.separable)
        self.heads = nn.ModuleList(Head(cfg.neck_channels, cfg.num_classes, cfg.reg_max, cfg.head_convs, cfg.separable)
                                   for _ in cfg.strides)
        points, strides, sizes = anchor_points(cfg.imgsz, cfg.strides)
        self.level_sizes = sizes
        # not in the state dict: they follow from imgsz and strides
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("point_strides", strides, persistent=False)
        self.register_buffer("project", torch.arange(cfg.reg_max + 1, dtype=torch.float32), persistent=False)
        self.mobilize_input_shapes = [(1, 3, cfg.imgsz, cfg.imgsz)]
        self.mobilize_input_names = ["image"]
        self.mobilize_output_names = ["boxes", "scores"]

    def _levels(self, x):
        feats = self.neck(self.backbone(x))
        return [head(f).flatten(2) for head, f in zip(self.heads, feats)]  # each [B, C + 4(R+1), HW]

    def forward_raw(self, x):
        """Class logits [B, N, C] and box-side logits [B, N, 4, R + 1], for the losses."""
        out = torch.cat(self._levels(x), 2).transpose(1, 2)
        b, n, _ = out.shape
        c = self.cfg.num_classes
        return out[..., :c], out[..., c:].reshape(b, n, 4, self.cfg.reg_max + 1)

    def forward(self, x):
        """boxes [B, N, 4] (x1, y1, x2, y2 in input pixels), scores [B, N, C] in [0, 1]."""
        out = torch.cat(self._levels(x), 2)  # [B, C + 4(R+1), N]
        b, _, n = out.shape
        c, r = self.cfg.num_classes, self.cfg.reg_max + 1
        scores = torch.sigmoid(out[:, :c])
        dist = F.softmax(out[:, c:].reshape(b, 4, r, n), dim=2)
        dist = (dist * self.project.reshape(1, 1, r, 1)).sum(2) * self.point_strides.reshape(1, 1, n)  # [B, 4, N]
        centre = self.points.t().reshape(1, 2, n)
        boxes = torch.cat([centre - dist[:, :2], centre + dist[:, 2:]], 1)
        return boxes.transpose(1, 2), scores.transpose(1, 2)


def build_detector(cfg: DetectorConfig | dict) -> Detector:
    if isinstance(cfg, dict):
        cfg = DetectorConfig.from_dict(cfg)
    return Detector(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, imgsz: int) -> int:
    """FLOPs of one forward pass at imgsz x imgsz, counted as 2 x multiply-accumulates."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, imgsz, imgsz))
    return int(counter.get_total_flops())
