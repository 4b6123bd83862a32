"""The teacher's radiance field: Instant-NGP's multiresolution hash encoding + two small MLPs.

Pure PyTorch (no CUDA extension), so it trains on a CPU and runs on CUDA when present. All
levels are encoded in one vectorised pass: the corner indices of every level are computed at
once and the features gathered from one flat table with `F.embedding`, whose backward is a
scatter-add, which CPUs do well. Coarse levels whose grid fits the table are indexed densely
(no collisions); finer ones are hashed with the primes of Müller et al. 2022.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIMES = (1, 2654435761, 805459861)


class HashEncoding(nn.Module):
    def __init__(self, levels: int = 16, log2_table: int = 15, features: int = 2, base_res: int = 16,
                 max_res: int = 512, bound: float = 1.5):
        super().__init__()
        self.levels, self.features, self.bound = levels, features, float(bound)
        self.table_size = 1 << log2_table
        growth = math.exp((math.log(max_res) - math.log(base_res)) / max(levels - 1, 1))
        res, sizes, dense = [], [], []
        for lv in range(levels):
            r = int(math.floor(base_res * growth ** lv))
            n = (r + 1) ** 3
            res.append(r)
            dense.append(n <= self.table_size)
            sizes.append(min(n, self.table_size))
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.register_buffer("res", torch.tensor(res, dtype=torch.float32), persistent=False)
        self.register_buffer("res_int", torch.tensor(res, dtype=torch.int64), persistent=False)
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64)
        self.register_buffer("corners", corners, persistent=False)
        self.table = nn.Parameter(torch.empty(offsets[-1], features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 3] world points (inside the cube [-bound, bound]^3) -> [N, levels * features]."""
        n = x.shape[0]
        u = ((x + self.bound) / (2 * self.bound)).clamp(0.0, 1.0)
        pos = u[:, None, :] * self.res[None, :, None]  # [N, L, 3]
        p0 = torch.minimum(pos.floor(), (self.res - 1)[None, :, None])  # u = 1 lands in the last cell
        frac = pos - p0
        lo = p0.long()
        # per-axis terms for the two corner coordinates, combined over the 8 corners by broadcasting
        ax = torch.stack([lo, lo + 1], -1)  # [N, L, 3, 2]
        stride = (self.res_int + 1)[None, :, None]
        dx, dy, dz = ax[:, :, 0], ax[:, :, 1] * stride, ax[:, :, 2] * stride * stride
        hx, hy, hz = ax[:, :, 0] * PRIMES[0], ax[:, :, 1] * PRIMES[1], ax[:, :, 2] * PRIMES[2]
        dense_idx = (dx[..., :, None, None] + dy[..., None, :, None] + dz[..., None, None, :]).reshape(n, -1, 8)
        hashed = (hx[..., :, None, None] ^ hy[..., None, :, None] ^ hz[..., None, None, :]).reshape(n, -1, 8)
        idx = torch.where(self.dense[None, :, None], dense_idx, hashed & (self.table_size - 1))
        idx = idx + self.offsets[None, :, None]
        wa = torch.stack([1.0 - frac, frac], -1)  # [N, L, 3, 2]
        w = (wa[:, :, 0, :, None, None] * wa[:, :, 1, None, :, None] * wa[:, :, 2, None, None, :]).reshape(n, -1, 8)
        return _Interpolate.apply(self.table, idx, w).reshape(n, -1)

    def flops_per_point(self) -> int:
        """Arithmetic per point (interpolation weights + weighted sum), gathers not counted."""
        per_level = 3 * 4 + 8 * 2 + 8 * self.features * 2  # coords, corner weights, weighted sum
        return self.levels * per_level


class _Interpolate(torch.autograd.Function):
    """sum_c table[idx[..., c]] * w[..., c]; the backward is one index_add (no dense embedding grad)."""

    @staticmethod
    def forward(ctx, table, idx, w):
        ctx.save_for_backward(idx, w)
        ctx.rows = table.shape[0]
        return torch.einsum("nlcf,nlc->nlf", table[idx], w)

    @staticmethod
    def backward(ctx, grad):
        idx, w = ctx.saved_tensors
        contrib = (w[..., None] * grad[:, :, None, :]).reshape(-1, grad.shape[-1])
        g = torch.zeros(ctx.rows, grad.shape[-1], dtype=grad.dtype, device=grad.device)
        g.index_add_(0, idx.reshape(-1), contrib)
        return g, None, None


def sh_encoding(d: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics up to degree 3 (16 values) of unit directions [N, 3]."""
    x, y, z = d.unbind(-1)
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * zz - 0.31539156525251999,
        -1.0925484305920792 * xz, 0.54627421529603959 * (xx - yy),
        0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
        0.59004358992664352 * x * (-xx + 3.0 * yy),
    ], -1)


SH_DIM = 16
SH_FLOPS = 40


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1])


class HashField(nn.Module):
    """Density from position, colour from position features + view direction."""

    def __init__(self, levels=16, log2_table=15, features=2, base_res=16, max_res=512, bound=1.5,
                 hidden=64, geo_features=15):
        super().__init__()
        self.encoding = HashEncoding(levels, log2_table, features, base_res, max_res, bound)
        self.density_net = _mlp([self.encoding.out_dim, hidden, 1 + geo_features])
        self.color_net = _mlp([geo_features + SH_DIM, hidden, hidden, 3])
        self.bound = float(bound)

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.density_net(self.encoding(x))
        # a shifted exponential (Instant-NGP's trunc_exp) with its argument clamped for stability
        sigma = torch.exp(h[:, 0].clamp(max=15.0) - 1.0)
        return sigma, h[:, 1:]

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, geo = self.density(x)
        rgb = torch.sigmoid(self.color_net(torch.cat([geo, sh_encoding(d)], -1)))
        return sigma, rgb

    def flops_per_point(self) -> int:
        """A multiply-add counts 2, a bias 1; activations are not counted (as for the student)."""
        total = self.encoding.flops_per_point() + SH_FLOPS
        for net in (self.density_net, self.color_net):
            for m in net:
                if isinstance(m, nn.Linear):
                    total += 2 * m.in_features * m.out_features + m.out_features
        return total
