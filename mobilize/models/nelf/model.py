"""The NeLF student (R2L / MobileR2L): a camera pose in, an image out, convolutions only.

Every pixel's ray is represented by K points between near and far, positionally encoded
and fed to a deep residual MLP that outputs the pixel's colour (R2L). The MLP is written
as 1x1 convolutions over the H x W grid of rays (MobileR2L), so the exported graph is a
plain CNN that ncnn and TF.js run fast. With `scale` > 1 the rays are computed at
H/scale x W/scale and learned upsampling (transposed convolution + 3x3 convolution per
factor 2) produces the full image, which divides the cost of the deep part by scale^2.

The ray encoding happens inside the graph, so an app passes only the pose. It is linear in
the pose up to the sin/cos: with prod = R (x) d_cam (the nine products R_ij * d_j per pixel,
from a constant grid of camera-space directions), every encoded coordinate is
  scale_m * (o_i + t_k * sum_j R_ij d_j),
i.e. one fixed 1x1 convolution of `prod` plus one of the origin; then sin and cos. Constant
weights, elementwise ops and convolutions: what every converter handles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...data.blender import camera_directions
from .._shape import ShapeConfig


@dataclass
class StudentShape(ShapeConfig):
    """Everything that defines the student's graph (stored as `config["model"]`)."""

    height: int
    width: int
    focal: float
    near: float
    far: float
    bound: float = 1.5
    points: int = 16
    freqs: int = 6
    hidden: int = 128
    blocks: int = 8
    scale: int = 1
    up_channels: int = 32

    @property
    def low_res(self) -> tuple[int, int, float]:
        return self.height // self.scale, self.width // self.scale, self.focal / self.scale

    @property
    def encoded_dim(self) -> int:
        return 3 * self.points * (2 * self.freqs + 1)

    @property
    def depth(self) -> int:
        """Layers on the ray path: input layer, two per residual block, output layer."""
        return 2 * self.blocks + 2


def sample_depths(near: float, far: float, points: int) -> np.ndarray:
    """Midpoints of K equal bins between near and far."""
    return near + (np.arange(points) + 0.5) * (far - near) / points


class RayEncoder(nn.Module):
    """pose [N, 3, 4] -> encoded rays [N, 3K(2L+1), h, w] (see the module docstring)."""

    def __init__(self, shape: StudentShape):
        super().__init__()
        h, w, f = shape.low_res
        self.points, self.freqs = shape.points, shape.freqs
        d = camera_directions(h, w, f)  # [h, w, 3]
        # channel 4i+j of the flattened pose is R_ij (j < 3) or o_i (j = 3): pair it with d_j or 1
        basis = np.stack([d[..., j] if j < 3 else np.ones((h, w), np.float32) for i in range(3) for j in range(4)], 0)
        self.register_buffer("basis", torch.from_numpy(basis[None].astype(np.float32)), persistent=False)
        t = sample_depths(shape.near, shape.far, shape.points)

        def weights(scales) -> torch.Tensor:
            w = np.zeros((len(scales) * shape.points * 3, 12), np.float64)
            for m, s in enumerate(scales):
                for k in range(shape.points):
                    for i in range(3):
                        r = (m * shape.points + k) * 3 + i
                        w[r, 4 * i:4 * i + 3] = s * t[k]
                        w[r, 4 * i + 3] = s
            return torch.from_numpy(w.astype(np.float32))[..., None, None]

        self.register_buffer("w_point", weights([1.0 / shape.bound]), persistent=False)
        self.register_buffer("w_arg", weights([(2.0 ** l) * math.pi / shape.bound for l in range(shape.freqs)]),
                             persistent=False)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        terms = pose.reshape(pose.shape[0], 12, 1, 1) * self.basis  # [N, 12, h, w]
        x = F.conv2d(terms, self.w_point)
        arg = F.conv2d(terms, self.w_arg)
        return torch.cat([x, torch.sin(arg), torch.cos(arg)], 1)

    def encode_rays(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """The same encoding for arbitrary world-space rays ([N, 3] each) -> [N, 3K(2L+1)]."""
        out = []
        for wt in (self.w_point, self.w_arg):
            w = wt[:, :, 0, 0].reshape(-1, 3, 4)  # [rows, axis i, (R_i0..R_i2 weights, o_i weight)]
            axis = (w[:, :, 3] != 0).to(dirs.dtype)  # the axis each row encodes (one-hot)
            coef_d, coef_o = w[:, :, 0].sum(1), w[:, :, 3].sum(1)  # s * t_k and s
            out.append((dirs @ axis.T) * coef_d + (origins @ axis.T) * coef_o)
        x, arg = out
        return torch.cat([x, torch.sin(arg), torch.cos(arg)], 1)

    def flops_per_ray(self) -> int:
        rows = self.w_point.shape[0] + self.w_arg.shape[0]
        # 12 products, a 12-tap projection per row, then one sin or cos per argument (twice)
        return 12 + rows * 2 * 12 + 2 * self.w_arg.shape[0]


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 1)
        self.conv2 = nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.conv2.bias)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)  # near-identity blocks keep a deep stack trainable from the start

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class Upsampler(nn.Module):
    """x2 per stage: transposed conv (k=2, s=2) then a 3x3 conv, both with ReLU."""

    def __init__(self, cin: int, channels: int, factor: int):
        super().__init__()
        stages, c = [], cin
        for s in range(int(round(math.log2(factor)))):
            cout = max(channels // (2 ** s), 8)
            stages += [nn.ConvTranspose2d(c, cout, 2, stride=2), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
            c = cout
        self.body = nn.Sequential(*stages)
        self.out_channels = c

    def forward(self, x):
        return self.body(x)


class NeLF(nn.Module):
    """Encoded ray grid -> RGB grid; `forward(pose)` is the deployable graph (pose -> [N, H, W, 3])."""

    def __init__(self, shape: StudentShape):
        super().__init__()
        if shape.scale not in (1, 2, 4, 8):
            raise ValueError("scale must be 1, 2, 4 or 8")
        if shape.height % shape.scale or shape.width % shape.scale:
            raise ValueError(f"the image size {shape.width}x{shape.height} is not divisible by scale {shape.scale}")
        self.shape = shape
        self.encoder = RayEncoder(shape)
        self.input = nn.Conv2d(shape.encoded_dim, shape.hidden, 1)
        self.blocks = nn.Sequential(*[ResBlock(shape.hidden) for _ in range(shape.blocks)])
        if shape.scale > 1:
            self.upsample = Upsampler(shape.hidden, shape.up_channels, shape.scale)
            self.head = nn.Conv2d(self.upsample.out_channels, 3, 1)
        else:
            self.upsample = nn.Identity()
            self.head = nn.Conv2d(shape.hidden, 3, 1)

    def body(self, enc: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] encoded rays -> [N, 3, H, W] colours in [0, 1]."""
        x = F.relu(self.input(enc))
        x = self.blocks(x)
        return torch.sigmoid(self.head(self.upsample(x)))

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        return self.body(self.encoder(pose)).permute(0, 2, 3, 1)

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Colours [N, 3] of arbitrary rays (scale 1 only): R2L's ray-batch training."""
        enc = self.encoder.encode_rays(origins, dirs)  # [N, C]
        x = enc.T.reshape(1, enc.shape[1], enc.shape[0], 1)
        return self.body(x)[0, :, :, 0].T

    # -- cost ---------------------------------------------------------------------------
    def flops(self) -> dict:
        """FLOPs of one frame (a multiply-add counts 2, a bias 1; activations not counted)."""
        s = self.shape
        h, w, _ = s.low_res
        enc = self.encoder.flops_per_ray() * h * w
        net = 0
        size = (h, w)
        for m in [self.input, *self.blocks.modules(), *self.upsample.modules(), self.head]:
            if isinstance(m, nn.ConvTranspose2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                net += (2 * m.in_channels * m.out_channels * k // (m.stride[0] * m.stride[1]) + m.out_channels) \
                    * size[0] * size[1] * m.stride[0] * m.stride[1]
                size = (size[0] * m.stride[0], size[1] * m.stride[1])
            elif isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                net += (2 * m.in_channels * m.out_channels * k + m.out_channels) * size[0] * size[1]
        frame = enc + net
        pixels = s.height * s.width
        return {"per_frame": int(frame), "per_pixel": frame / pixels, "encoding_per_frame": int(enc),
                "network_per_frame": int(net)}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def student_from_checkpoint(ckpt: dict) -> NeLF:
    model = NeLF(StudentShape.from_dict(ckpt["config"]["model"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()
