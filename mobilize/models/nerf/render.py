"""Volume rendering with occupancy-aware sampling, and the occupancy grid that drives it.

Samples sit at a fixed step along each ray inside the scene cube. The occupancy grid (a
coarse voxel grid of the largest density seen in each cell) marks where the field can be
non-empty; only samples in occupied cells reach the network, which is where a CPU spends
its time. The grid starts from space carving of the training views' alpha masks when they
have one (a cell that projects onto background in any view is empty), otherwise all
occupied, and is refreshed from the field's own density during training. At inference rays
are marched in segments and stop once their transmittance is spent (early termination).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def box_intersect(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (-bound - origins) * inv, (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


class OccupancyGrid(nn.Module):
    def __init__(self, resolution: int = 64, bound: float = 1.5):
        super().__init__()
        self.resolution, self.bound = int(resolution), float(bound)
        r = self.resolution
        self.register_buffer("density", torch.full((r, r, r), 1e3))  # all occupied until told otherwise
        self.register_buffer("mask", torch.ones(r, r, r, dtype=torch.bool))
        self.register_buffer("carved", torch.ones(r, r, r, dtype=torch.bool))  # True: not ruled out by masks
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64), persistent=False)

    @property
    def cell(self) -> float:
        return 2 * self.bound / self.resolution

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        i = ((x + self.bound) / self.cell).floor().long().clamp(0, self.resolution - 1)
        return (i[..., 0] * self.resolution + i[..., 1]) * self.resolution + i[..., 2]

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.reshape(-1)[self.cell_index(x)]

    def cell_centers(self) -> torch.Tensor:
        r = self.resolution
        ax = (torch.arange(r, dtype=torch.float32, device=self.mask.device) + 0.5) * self.cell - self.bound
        g = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)
        return g.reshape(-1, 3)

    @torch.no_grad()
    def carve(self, poses: np.ndarray, alpha: np.ndarray, focal: float, threshold: float = 0.01) -> float:
        """Rule out cells that project onto clear background in any view; returns the kept fraction."""
        centers = self.cell_centers().cpu().numpy().astype(np.float64)
        keep = np.ones(len(centers), bool)
        n, h, w = alpha.shape
        half_diag = 0.5 * math.sqrt(3) * self.cell
        for pose, a in zip(poses.astype(np.float64), alpha):
            rel = centers - pose[:3, 3]
            cam = rel @ pose[:3, :3]  # world -> camera (rotation is orthonormal)
            depth = -cam[:, 2]
            front = depth > 1e-3
            u = np.where(front, cam[:, 0] / np.maximum(depth, 1e-3) * focal + 0.5 * w, -1e9)
            v = np.where(front, -cam[:, 1] / np.maximum(depth, 1e-3) * focal + 0.5 * h, -1e9)
            inside = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            radius = int(min(8, math.ceil(half_diag * focal / max(depth[front].min(initial=1e9), 0.5)) + 1))
            t = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
            dilated = F.max_pool2d(t, 2 * radius + 1, 1, radius)[0, 0].numpy()
            ui = np.clip(u.astype(np.int64), 0, w - 1)
            vi = np.clip(v.astype(np.int64), 0, h - 1)
            empty = inside & (dilated[vi, ui] < threshold)
            keep &= ~empty
        r = self.resolution
        self.carved.copy_(torch.from_numpy(keep.reshape(r, r, r)))
        self.density.masked_fill_(~self.carved, 0.0)
        self.mask.copy_(self.carved)
        return float(keep.mean())

    @torch.no_grad()
    def update(self, field, threshold: float, decay: float = 0.95, chunk: int = 65536) -> float:
        """Refresh from the field: the density at a random point of each cell, decayed max.

        The first refresh replaces the placeholder density (everything occupied) outright."""
        centers = self.cell_centers()
        idx = torch.nonzero(self.carved.reshape(-1)).squeeze(1)
        new = torch.zeros_like(self.density).reshape(-1)
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            x = centers[part] + (torch.rand(len(part), 3, device=centers.device) - 0.5) * self.cell
            new[part] = field.density(x)[0]
        old = self.density.reshape(-1) * decay if int(self.updates) else torch.zeros_like(new)
        dens = torch.maximum(old, new)
        self.updates += 1
        self.density.copy_(dens.reshape(self.density.shape))
        self.mask.copy_((self.density > threshold) & self.carved)
        return float(self.mask.float().mean())


def composite(sigma: torch.Tensor, rgb: torch.Tensor, step: float, background: torch.Tensor,
              transmittance0: torch.Tensor | None = None):
    """Alpha compositing of [R, S] densities and [R, S, 3] colours; returns (color, acc, T_end)."""
    alpha = 1.0 - torch.exp(-sigma * step)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], 1), 1)
    if transmittance0 is not None:
        trans = trans * transmittance0[:, None]
    weights = alpha * trans[:, :-1]
    color = (weights[..., None] * rgb).sum(1)
    return color, weights.sum(1), trans[:, -1]


class Sampler:
    """Fixed-step samples along rays within the scene cube."""

    def __init__(self, bound: float, max_samples: int):
        self.bound = float(bound)
        self.max_samples = int(max_samples)
        self.step = 2 * math.sqrt(3) * self.bound / self.max_samples

    def points(self, origins, dirs, start: int, count: int, jitter: bool):
        near, far = box_intersect(origins, dirs, self.bound)
        k = torch.arange(start, start + count, device=origins.device, dtype=origins.dtype)
        offset = torch.rand(origins.shape[0], 1, device=origins.device) if jitter else 0.5
        t = near[:, None] + (k[None, :] + offset) * self.step
        valid = t < far[:, None]
        pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]
        return pts, valid


def render_rays(field, grid: OccupancyGrid, sampler: Sampler, origins: torch.Tensor, dirs: torch.Tensor,
                background: torch.Tensor, jitter: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Differentiable rendering of all occupied samples: (rgb [R, 3], acc [R], samples evaluated)."""
    pts, valid = sampler.points(origins, dirs, 0, sampler.max_samples, jitter)
    valid = valid & grid.occupied(pts)
    sel = valid.nonzero(as_tuple=True)
    r, s = valid.shape
    sigma = torch.zeros(r, s, device=origins.device)
    rgb = torch.zeros(r, s, 3, device=origins.device)
    if sel[0].numel():
        sig, col = field(pts[sel], dirs[sel[0]])
        sigma = sigma.index_put(sel, sig)
        rgb = rgb.index_put(sel, col)
    color, acc, _ = composite(sigma, rgb, sampler.step, background)
    return color + (1.0 - acc)[:, None] * background, acc, int(sel[0].numel())


@torch.no_grad()
def render_rays_inference(field, grid: OccupancyGrid, sampler: Sampler, origins, dirs, background,
                          segment: int = 32, min_transmittance: float = 1e-4) -> tuple[torch.Tensor, int]:
    """Segment-by-segment marching; rays whose transmittance is spent stop. (rgb, samples evaluated)."""
    r = origins.shape[0]
    color = torch.zeros(r, 3, device=origins.device)
    trans = torch.ones(r, device=origins.device)
    active = torch.arange(r, device=origins.device)
    evaluated = 0
    for start in range(0, sampler.max_samples, segment):
        if active.numel() == 0:
            break
        o, d = origins[active], dirs[active]
        count = min(segment, sampler.max_samples - start)
        pts, valid = sampler.points(o, d, start, count, jitter=False)
        if not valid.any():
            break  # every remaining ray has left the cube (samples are ordered along t)
        valid = valid & grid.occupied(pts)
        sel = valid.nonzero(as_tuple=True)
        if sel[0].numel() == 0:
            continue
        sigma = torch.zeros(valid.shape, device=o.device)
        rgb = torch.zeros(*valid.shape, 3, device=o.device)
        sig, col = field(pts[sel], d[sel[0]])
        sigma[sel], rgb[sel] = sig, col
        evaluated += int(sel[0].numel())
        c, _, t_end = composite(sigma, rgb, sampler.step, background, trans[active])
        color[active] += c
        trans[active] = t_end
        active = active[t_end > min_transmittance]
    return color + trans[:, None] * background, evaluated
