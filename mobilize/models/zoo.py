"""Small reference architectures: the export test zoo and the demo's example network.

Each constructor is registered with `@zoo_model` and returns an nn.Module in eval mode with
seeded weights and non-trivial BatchNorm statistics (so a converter that folds BatchNorm
wrongly is caught). Every module carries `mobilize_input_shapes`, so
`mobilize export mobilize.models.zoo:mobilenet_v2_tiny --target all` needs no --input-shape.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ZOO: dict[str, Callable[[], nn.Module]] = {}


def zoo_model(*input_shapes: tuple[int, ...], input_names=None, output_names=None):
    def wrap(fn):
        def build(seed: int = 0) -> nn.Module:
            torch.manual_seed(seed)
            m = fn()
            if not getattr(m, "custom_batchnorm", False):
                randomize_batchnorm(m, seed)
            m.mobilize_input_shapes = [tuple(s) for s in input_shapes]
            if input_names:
                m.mobilize_input_names = list(input_names)
            if output_names:
                m.mobilize_output_names = list(output_names)
            return m.eval()

        build.__name__ = fn.__name__
        build.__doc__ = fn.__doc__
        ZOO[fn.__name__] = build
        return build

    return wrap


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed + 1)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)


def conv_bn(cin, cout, k=3, s=1, groups=1, act: type[nn.Module] | None = nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# -- MobileNetV2 style ----------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn(cin, mid, 1),
            conv_bn(mid, mid, 3, stride, groups=mid),
            conv_bn(mid, cout, 1, act=None),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV2Tiny(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        w = width
        self.stem = conv_bn(3, w, 3, 2)
        self.blocks = nn.Sequential(
            InvertedResidual(w, w, 1, 1),
            InvertedResidual(w, w * 3 // 2, 2, 6),
            InvertedResidual(w * 3 // 2, w * 3 // 2, 1, 6),
            InvertedResidual(w * 3 // 2, w * 2, 2, 6),
            InvertedResidual(w * 2, w * 2, 1, 6),
        )
        self.head = conv_bn(w * 2, w * 8, 1)
        self.classifier = nn.Linear(w * 8, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))


@zoo_model((1, 3, 64, 64))
def mobilenet_v2_tiny():
    """MobileNetV2 style: inverted residuals, ReLU6, depthwise convolutions."""
    return MobileNetV2Tiny()


# -- ShuffleNetV2 style ---------------------------------------------------------------------
def channel_shuffle(x, groups: int):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None), conv_bn(cin, half, 1, act=nn.ReLU))
            src = cin
        else:
            self.branch1 = None
            src = cin // 2
        self.branch2 = nn.Sequential(
            conv_bn(src, half, 1, act=nn.ReLU),
            conv_bn(half, half, 3, stride, groups=half, act=None),
            conv_bn(half, half, 1, act=nn.ReLU),
        )

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Tiny(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = conv_bn(3, 24, 3, 2, act=nn.ReLU)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x):
        x = self.stages(self.pool(self.stem(x)))
        return self.fc(x.mean((2, 3)))


@zoo_model((1, 3, 64, 64))
def shufflenet_v2_tiny():
    """ShuffleNetV2 style: channel split, concat and channel shuffle."""
    return ShuffleNetV2Tiny()


# -- U-Net style ----------------------------------------------------------------------------
class UNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = conv_bn(3, 16, act=nn.ReLU)
        self.enc2 = conv_bn(16, 32, s=2, act=nn.ReLU)
        self.enc3 = conv_bn(32, 64, s=2, act=nn.ReLU)
        self.up_t = nn.ConvTranspose2d(64, 32, 2, 2)
        self.dec2 = conv_bn(64, 32, act=nn.ReLU)
        self.dec1 = conv_bn(32 + 16, 16, act=nn.ReLU)
        self.to_ps = nn.Conv2d(16, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat((self.up_t(e3), e2), 1))
        up = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat((up, e1), 1))
        return self.shuffle(self.to_ps(d1))


@zoo_model((1, 3, 32, 32))
def unet_tiny():
    """U-Net style: bilinear upsampling, skip concat, transposed conv and pixel shuffle."""
    return UNetTiny()


# -- MLP on a vector ------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, dim=64, hidden=128, out=16):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x):
        return self.fc2(self.act(self.norm(self.fc1(x))))


@zoo_model((1, 64))
def mlp_layernorm_gelu():
    """An MLP on a [1, 64] vector with LayerNorm and GELU."""
    m = MLP()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.uniform_(-0.2, 0.2)
    return m


# -- MobileNetV3 style block ----------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class MobileNetV3Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish)
        self.expand = conv_bn(16, 64, 1, act=nn.Hardswish)
        self.dw = conv_bn(64, 64, 5, 1, groups=64, act=nn.Hardswish)
        self.se = SqueezeExcite(64)
        self.project = conv_bn(64, 16, 1, act=None)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.project(self.se(self.dw(self.expand(x))))
        return self.head((x + y).mean((2, 3)))


@zoo_model((1, 3, 64, 64))
def mobilenet_v3_block():
    """A MobileNetV3 block: squeeze-excite, hardswish, 5x5 depthwise."""
    return MobileNetV3Block()


# -- Two inputs, three outputs --------------------------------------------------------------
class TwoInThreeOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.ReLU), conv_bn(16, 32, 3, 2, act=nn.ReLU))
        self.vector = nn.Linear(8, 32)
        self.seg = nn.Conv2d(32, 4, 1)
        self.cls = nn.Linear(64, 5)

    def forward(self, image, vector):
        f = self.image(image)
        v = torch.relu(self.vector(vector))
        pooled = f.mean((2, 3))
        return self.seg(f), self.cls(torch.cat((pooled, v), 1)), torch.sigmoid(pooled * v)


@zoo_model((1, 3, 32, 32), (1, 8), input_names=["image", "vector"], output_names=["segmentation", "logits", "gate"])
def two_inputs_three_outputs():
    """Two inputs (an image and a vector), three outputs of ranks 4, 2 and 2."""
    return TwoInThreeOut()


# -- Non-trivial BatchNorm ------------------------------------------------------------------
class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.bn1d = nn.BatchNorm1d(4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.bn2(self.conv2(x))  # no activation: BN output flows straight on
        return self.bn1d(self.fc(x.mean((2, 3))))


@zoo_model((1, 3, 16, 16))
def batchnorm_stats():
    """BatchNorm2d and BatchNorm1d with far-from-identity running statistics."""
    m = BatchNormNet()
    randomize_batchnorm(m, 7)
    with torch.no_grad():  # shift the statistics further so folding errors show
        m.bn.running_mean.add_(3.0)
        m.bn.running_var.mul_(10.0)
        m.bn1d.running_mean.sub_(2.0)
    m.custom_batchnorm = True
    return m


# -- Residual blocks (ResNet style) --------------------------------------------------------
class ResidualBlock(nn.Module):
    """Pre-activation residual block: the second conv has no bias and feeds the add directly."""

    def __init__(self, c):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.conv1 = conv_bn(c, c, 3, act=nn.ReLU)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(self.conv1(F.relu(self.bn(x)))) + x  # conv first: the order that triggered the bug


class ResNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.ReLU)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.blocks = nn.Sequential(ResidualBlock(16), ResidualBlock(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(F.relu(self.blocks(self.pool(self.stem(x)))).mean((2, 3)))


@zoo_model((1, 3, 48, 48))
def resnet_tiny():
    """ResNet style: residual adds after conv+BN (TF.js's converter once fused them as biases)."""
    return ResNetTiny()


# -- Grouped and dilated convolutions, PReLU, ceil-mode pooling ---------------------------
class GroupedDilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.PReLU(16)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.act2 = nn.PReLU()
        self.pool = nn.AvgPool2d(3, 2, ceil_mode=True)
        self.head = nn.Conv2d(32, 6, 1)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.act2(self.grouped(F.relu(self.dilated(x))))
        return self.head(self.pool(x))


@zoo_model((1, 3, 26, 26))
def grouped_dilated_prelu():
    """Grouped (not depthwise) and dilated convs, PReLU, AvgPool2d(ceil_mode=True)."""
    m = GroupedDilated()
    with torch.no_grad():
        m.act.weight.uniform_(0.05, 0.5)
    return m


def example_network():
    """The demo's example: a small MobileNetV2-style classifier."""
    return mobilenet_v2_tiny()


def build(name: str, seed: int = 0) -> nn.Module:
    return ZOO[name](seed)
