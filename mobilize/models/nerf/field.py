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
        if any(dense[k] and not all(dense[:k]) for k in range(levels)):
            raise ValueError("dense levels must come first")  # holds: resolutions grow with the level
        self.dense_levels = sum(dense)
        mult = [[1, r + 1, (r + 1) ** 2] for r in res]
        self.register_buffer("dense_mult", torch.tensor(mult, dtype=torch.int64), persistent=False)
        self.register_buffer("primes", torch.tensor(PRIMES, dtype=torch.int64), persistent=False)
        corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64)
        self.register_buffer("corners", corners, persistent=False)
        self.table = nn.Parameter(torch.empty(offsets[-1], features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 3] world points (inside the cube [-bound, bound]^3) -> [N, levels * features].

        Tensors are laid out [..., level, point] so every elementwise op runs along the long,
        contiguous point axis (a CPU vectorises that; it cannot vectorise axes of size 2).
        """
        u = ((x.T + self.bound) / (2 * self.bound)).clamp(0.0, 1.0)  # [3, N]
        pos = u[:, None, :] * self.res[None, :, None]  # [3, L, N]
        p0 = torch.minimum(pos.floor(), (self.res - 1)[None, :, None])  # u = 1 lands in the last cell
        frac = pos - p0
        lo = p0.long()
        corner = torch.stack([lo, lo + 1], 1)  # [3, 2, L, N]: the two corner coordinates per axis
        nd = self.dense_levels  # coarse levels (a prefix) are indexed densely, the rest hashed
        parts = []
        if nd:
            a = corner[:, :, :nd] * self.dense_mult.T[:, None, :nd, None]
            parts.append((a[0][:, None, None] + a[1][None, :, None] + a[2][None, None, :]).reshape(8, nd, -1))
        if nd < self.levels:
            a = corner[:, :, nd:] * self.primes[:, None, None, None]
            h = a[0][:, None, None] ^ a[1][None, :, None] ^ a[2][None, None, :]
            parts.append((h & (self.table_size - 1)).reshape(8, self.levels - nd, -1))
        idx = (parts[0] if len(parts) == 1 else torch.cat(parts, 1)) + self.offsets[None, :, None]  # [8, L, N]
        wa = torch.stack([1.0 - frac, frac], 1)  # [3, 2, L, N]
        w = (wa[0][:, None, None] * wa[1][None, :, None] * wa[2][None, None, :]).reshape(8, self.levels, -1)
        return _Interpolate.apply(self.table, idx, w)

    def flops_per_point(self) -> int:
        """Arithmetic per point (interpolation weights + weighted sum), gathers not counted."""
        per_level = 3 * 4 + 8 * 2 + 8 * self.features * 2  # coords, corner weights, weighted sum
        return self.levels * per_level


class _Interpolate(torch.autograd.Function):
    """out[n, l*F + f] = sum_c table[idx[c, l, n], f] * w[c, l, n]; the backward is an index_add
    per feature (PyTorch's embedding backward is several times slower on a CPU)."""

    @staticmethod
    def forward(ctx, table, idx, w):
        ctx.save_for_backward(idx, w)
        ctx.rows = table.shape[0]
        cols = table.T.contiguous()  # [F, rows]
        flat = idx.reshape(-1)
        out = torch.stack([(col[flat].view_as(w) * w).sum(0) for col in cols], 1)  # [L, F, N]
        return out.reshape(-1, out.shape[-1]).T

    @staticmethod
    def backward(ctx, grad):
        idx, w = ctx.saved_tensors
        levels, n = w.shape[1], w.shape[2]
        g = grad.T.reshape(levels, -1, n)  # [L, F, N]
        flat = idx.reshape(-1)
        cols = torch.zeros(g.shape[1], ctx.rows, dtype=grad.dtype, device=grad.device)
        for f in range(g.shape[1]):
            cols[f].index_add_(0, flat, (w * g[None, :, f]).reshape(-1))
        return cols.T, None, None


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
