"""Architectures written the way a new user would write them, from the papers.

mobilize's tests never saw these. Each exports with one command, e.g.

    mobilize export examples/new_user_models.py:resnet18 --input-shape 1,3,224,224 --target all --out /tmp/r18

(see docs/export.md for the results).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


# -- MobileNetV2 (Sandler et al., 2018), width 1.0, 224x224 --------------------------------
class Bottleneck(nn.Module):
    def __init__(self, inp, out, stride, t):
        super().__init__()
        hidden = inp * t
        layers = []
        if t != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=1000):
        super().__init__()
        layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
        inp = 32
        for t, c, n, s in self.cfg:
            for i in range(n):
                layers.append(Bottleneck(inp, c, s if i == 0 else 1, t))
                inp = c
        layers += [nn.Conv2d(inp, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def mobilenet_v2():
    torch.manual_seed(0)
    return MobileNetV2()


# -- ResNet-18 (He et al., 2016) --------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.down = None
        if stride != 1 or inp != out:
            self.down = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, inp = [], 64
        for out, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]:
            blocks.append(BasicBlock(inp, out, stride))
            inp = out
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18():
    torch.manual_seed(0)
    return ResNet18()


# -- A transformer block on [1, 16, 32] tokens ------------------------------------------------
class AttentionBlock(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


def attention_block():
    torch.manual_seed(0)
    return AttentionBlock()


# -- Dilated and grouped convolutions, PReLU, ceil-mode pooling -------------------------------
class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.act = nn.PReLU(32)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.dilated = nn.Conv2d(32, 32, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(32, 64, 3, padding=1, groups=4)
        self.act2 = nn.PReLU()
        self.avg = nn.AvgPool2d(3, 2, ceil_mode=True)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        x = self.pool(self.act(self.stem(x)))
        x = self.act2(self.grouped(F.relu(self.dilated(x))))
        return self.head(self.avg(x))


def dilated_grouped_prelu_ceil():
    torch.manual_seed(0)
    m = Mixed()
    with torch.no_grad():
        m.act.weight.uniform_(0.05, 0.5)
    return m
