"""Small models the tests export as path/to/file.py:callable, the way a user would."""

import torch
import torch.nn as nn


class CeilPool(nn.Module):
    """AvgPool2d(3, 2, ceil_mode=True): pnnx/ncnn computes its edge windows differently."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pool = nn.AvgPool2d(3, 2, ceil_mode=True)

    def forward(self, x):
        return self.pool(self.conv(x))


class CumProd(nn.Module):
    """torch.cumprod has no ONNX export and no ncnn layer."""

    def forward(self, x):
        return torch.cumprod(x, dim=-1)


class NoShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x)


def ceil_pool():
    torch.manual_seed(0)
    return CeilPool()


def cumprod():
    return CumProd()


def needs_shape():
    return NoShape()


def not_a_module():
    return 42


def broken():
    raise RuntimeError("weights file missing")


def relu_first():
    """The first layer works in place on the input (ncnn crashed on a Mat that wrapped numpy)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.ReLU(), nn.Conv2d(3, 8, 3))
