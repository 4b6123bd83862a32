"""The retrieval network: image -> L2-normalised embedding, built from converter-friendly ops.

A backbone, either EfficientNet-Lite0's first blocks (inverted residuals, ReLU6, no SE; loaded
with ImageNet weights by `pretrained.py`) or a depthwise-separable MobileNetV1 layout (width
multiplier, residual adds where the shape allows: from-scratch training on a few thousand photos
converges faster with them), then optional attention on the last feature map, GeM pooling, a
BN-neck and a linear projection.
The deployed graph ends in the normalised embedding, so the app only takes dot products.

Every op here is known to convert to ONNX, ncnn (pnnx), TF.js and TFLite (onnx2tf): Conv,
BatchNorm, ReLU, ReLU6 (Clip), Add, Mul, Sigmoid, Clip, Pow, ReduceMean, ReduceMax, MatMul, Sqrt, Div.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._shape import ShapeConfig

# (output channels at width 1.0, stride) after the stem; MobileNetV1's 13 blocks
_LAYOUT = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
           (512, 1), (512, 1), (1024, 2), (1024, 1))
ATTENTIONS = ("none", "spatial", "channel")
BACKBONES = ("mobilenet_v1", "efficientnet_lite0")
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on pixels mapped to [-1, 1] (TensorFlow's lite preprocessing)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
# EfficientNet-Lite0's MBConv stages: (repeats, kernel, stride, expansion, output channels)
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


@dataclass
class NetConfig(ShapeConfig):
    """What the checkpoint records to rebuild the network (plain data)."""

    width: float = 0.5
    embedding_dim: int = 128
    attention: str = "spatial"
    gem_p: float = 3.0
    input_size: int = 224
    stem: int = 32
    # 1 keeps the last stage at twice the resolution ("last stride 1", Luo et al. 2019); 2 here, so
    # checkpoints written before the option rebuild as trained (training's default is 1)
    last_stride: int = 2
    # "mobilenet_v1" (width multiplier, trained from scratch) or "efficientnet_lite0" (its first
    # `lite_blocks` MBConv blocks, ImageNet weights with `--pretrained`; `width` and `stem` unused)
    backbone: str = "mobilenet_v1"
    lite_blocks: int = 13
    # efficientnet_lite0: channels of the 1x1 head after the last block (512 before the option existed)
    head_channels: int = 512

    @property
    def image_mean(self) -> tuple:
        return LITE_MEAN if self.backbone == "efficientnet_lite0" else IMAGE_MEAN

    @property
    def image_std(self) -> tuple:
        return LITE_STD if self.backbone == "efficientnet_lite0" else IMAGE_STD


def _ch(c: float, width: float) -> int:
    return max(8, int(math.ceil(c * width / 8) * 8))


def conv_bn_relu(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.pw = conv_bn_relu(cin, cout, 1, 1, act=False)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.pw(self.dw(x))
        return self.act(x + y if self.residual else y)


class Backbone(nn.Module):
    def __init__(self, width: float = 1.0, stem: int = 32, last_stride: int = 2):
        super().__init__()
        c = _ch(stem, width)
        layers: list[nn.Module] = [conv_bn_relu(3, c, 3, 2)]
        last_stage = max(i for i, (_, s) in enumerate(_LAYOUT) if s == 2)  # the block entering the last stage
        for i, (cout, s) in enumerate(_LAYOUT):
            cout = _ch(cout, width)
            layers.append(DepthwiseSeparable(c, cout, last_stride if i == last_stage else s))
            c = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x):
        return self.features(x)


def conv_bn_relu6(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=1e-3)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation (EfficientNet-Lite): 1x1 expand, k x k
    depthwise, 1x1 project, identity add when the shape allows."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.expand = conv_bn_relu6(cin, mid, 1, 1) if expansion != 1 else nn.Identity()
        self.dw = conv_bn_relu6(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn_relu6(mid, cout, 1, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class LiteBackbone(nn.Module):
    """EfficientNet-Lite0's stem and first `blocks` MBConv blocks (16 in all), then a 1x1
    convolution to `head` channels (the network's own head is 320 -> 1280: too many parameters
    for a phone-sized embedder). `last_stride` 1 keeps the last stage it reaches at the previous
    one's resolution, as for the MobileNet backbone."""

    def __init__(self, blocks: int = 13, head: int = 512, last_stride: int = 2):
        super().__init__()
        if not 1 <= blocks <= sum(r for r, *_ in LITE0_STAGES):
            raise ValueError(f"lite_blocks must be in 1..16, not {blocks}")
        self.stem = conv_bn_relu6(3, 32, 3, 2)
        layers: list[nn.Module] = []
        c, last_down = 32, None
        for repeats, k, s, e, cout in LITE0_STAGES:
            for i in range(repeats):
                if len(layers) == blocks:
                    break
                if i == 0 and s == 2:
                    last_down = len(layers)
                layers.append(MBConv(c, cout, k, s if i == 0 else 1, e))
                c = cout
        if last_stride == 1 and last_down is not None:
            layers[last_down].dw[0].stride = (1, 1)
        self.blocks = nn.Sequential(*layers)
        self.head = conv_bn_relu6(c, head, 1, 1)
        self.out_channels = head

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class SpatialAttention(nn.Module):
    """CBAM-style: a map from the channel mean and max re-weights positions (starts as ~identity)."""

    def __init__(self, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=True)
        nn.init.zeros_(self.conv.weight)
        nn.init.constant_(self.conv.bias, 3.0)  # sigmoid(3) ~ 0.95: training starts near "no attention"

    def forward(self, x):
        a = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)
        return x * torch.sigmoid(self.conv(a))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation on the last feature map."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, max(8, channels // reduction), 1)
        self.fc2 = nn.Conv2d(max(8, channels // reduction), channels, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, 3.0)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al.): p = 1 is average, p -> inf is max pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x):
        p = self.p.clamp(1.0, 8.0)
        return x.clamp(min=self.eps).pow(p).mean((2, 3)).pow(1.0 / p)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / ||x|| written with Mul/ReduceSum/Sqrt/Div, which every converter handles."""
    return x / (x * x).sum(1, keepdim=True).clamp(min=eps).sqrt()


class EmbeddingNet(nn.Module):
    """image [N, 3, S, S] (normalised as the manifest says) -> embedding [N, D], unit length."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        if cfg.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, not {cfg.attention!r}")
        if cfg.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, not {cfg.backbone!r}")
        self.cfg = cfg
        if cfg.backbone == "efficientnet_lite0":
            self.backbone = LiteBackbone(cfg.lite_blocks, cfg.head_channels, cfg.last_stride)
        else:
            self.backbone = Backbone(cfg.width, cfg.stem, cfg.last_stride)
        c = self.backbone.out_channels
        self.attention = {"none": nn.Identity(), "spatial": SpatialAttention(),
                          "channel": ChannelAttention(c)}[cfg.attention]
        self.pool = GeM(cfg.gem_p)
        self.neck = nn.BatchNorm1d(c)
        self.neck.bias.requires_grad_(False)  # BNNeck (Luo et al.): no shift before the projection
        self.proj = nn.Linear(c, cfg.embedding_dim, bias=False)
        self.mobilize_input_shapes = [(1, 3, cfg.input_size, cfg.input_size)]
        self.mobilize_input_names = ["image"]
        self.mobilize_output_names = ["embedding"]
        self._init()

    def _init(self):
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # zero-init the last BN of each residual block: the block starts as identity
        for m in self.backbone.modules():
            if isinstance(m, DepthwiseSeparable) and m.residual:
                nn.init.zeros_(m.pw[1].weight)
            if isinstance(m, MBConv) and m.residual:
                nn.init.zeros_(m.project[1].weight)
        nn.init.normal_(self.proj.weight, std=0.01)

    def features(self, x, dropout: float = 0.0):
        """Pre-normalisation embedding (the projection output), for losses that want it; `dropout`
        (training only, never in the exported graph) drops pooled channels before the BN-neck."""
        f = self.pool(self.attention(self.backbone(x)))
        if dropout > 0:
            f = F.dropout(f, dropout, self.training)
        return self.proj(self.neck(f))

    def forward(self, x):
        return l2_normalize(self.features(x))


def build_net(cfg: NetConfig) -> EmbeddingNet:
    return EmbeddingNet(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
