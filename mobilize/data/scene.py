"""An embedded procedural scene: a few analytic shapes, ray-traced by mobilize itself.

The demo and the tests need posed images without downloading anything. The scene mimics
NeRF-Synthetic's set-up at a small scale: an object inside [-1, 1]^3 on a transparent
background, seen from the upper hemisphere at radius 4, rendered as RGBA with 2x2
supersampling (so edges are box-filtered like the downsampled lego). Shading is Lambertian
with a fixed light, so colours do not depend on the view and a small NeRF learns it quickly;
the checkered base gives it some high-frequency detail to get wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blender import Views, camera_rays, parse_background, pose_spherical, write_blender

RADIUS = 4.0
CAMERA_ANGLE_X = 0.6911112070083618  # lego's field of view
LIGHT = np.array([0.4, -0.5, 0.75]) / np.linalg.norm([0.4, -0.5, 0.75])


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    color: tuple[float, float, float]
    checker: float = 0.0  # square size of a darker checker pattern on it (0: plain)


SHAPES = (
    Box((0.0, 0.0, -0.55), (0.9, 0.9, 0.1), (0.85, 0.75, 0.35), checker=0.3),
    Sphere((0.35, 0.25, -0.05), 0.4, (0.85, 0.2, 0.15)),
    Sphere((-0.45, -0.35, -0.2), 0.25, (0.15, 0.35, 0.85)),
    Box((-0.35, 0.4, -0.15), (0.2, 0.2, 0.3), (0.2, 0.7, 0.3)),
    Sphere((0.1, -0.2, 0.45), 0.15, (0.9, 0.9, 0.9)),
)


def _hit_sphere(o, d, s: Sphere):
    oc = o - np.asarray(s.center)
    b = np.sum(oc * d, -1)
    c = np.sum(oc * oc, -1) - s.radius ** 2
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
    ts = np.where(np.isfinite(t), t, 0.0)
    n = (o + ts[..., None] * d - np.asarray(s.center)) / s.radius
    return t, n


def _hit_box(o, d, s: Box):
    lo, hi = np.asarray(s.center) - s.half, np.asarray(s.center) + s.half
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
    near, far = tmin.max(-1), tmax.min(-1)
    t = np.where((near <= far) & (near > 1e-6), near, np.inf)
    axis = np.argmax(tmin, -1)
    n = np.zeros_like(o)
    sign = -np.sign(np.take_along_axis(d, axis[..., None], -1))[..., 0]
    np.put_along_axis(n, axis[..., None], sign[..., None], -1)
    return t, n


def _shade(o, d):
    """RGBA of rays [..., 3] against SHAPES."""
    best = np.full(o.shape[:-1], np.inf)
    rgb = np.zeros(o.shape)
    for s in SHAPES:
        t, n = (_hit_sphere if isinstance(s, Sphere) else _hit_box)(o, d, s)
        closer = t < best
        if not closer.any():
            continue
        best = np.where(closer, t, best)
        albedo = np.broadcast_to(np.asarray(s.color), o.shape).copy()
        if isinstance(s, Box) and s.checker:
            p = o + np.where(np.isfinite(t), t, 0.0)[..., None] * d
            parity = (np.floor(p[..., 0] / s.checker) + np.floor(p[..., 1] / s.checker)) % 2
            albedo = albedo * np.where(parity[..., None] > 0, 0.55, 1.0)
        light = 0.3 + 0.7 * np.clip(np.sum(n * LIGHT, -1), 0.0, 1.0)
        rgb = np.where(closer[..., None], albedo * light[..., None], rgb)
    alpha = np.isfinite(best).astype(np.float64)
    return np.concatenate([rgb * alpha[..., None], alpha[..., None]], -1)


def render_rgba(c2w: np.ndarray, size: int, camera_angle_x: float = CAMERA_ANGLE_X, supersample: int = 2) -> np.ndarray:
    """[size, size, 4] RGBA (alpha premultiplied out: rgb is the surface colour where alpha > 0)."""
    s = supersample
    focal = 0.5 * size * s / math.tan(0.5 * camera_angle_x)
    o, d = camera_rays(c2w, size * s, size * s, focal)
    rgba = _shade(o.astype(np.float64), d.astype(np.float64))
    rgba = rgba.reshape(size, s, size, s, 4).mean((1, 3))
    a = rgba[..., 3:]
    rgb = np.where(a > 0, rgba[..., :3] / np.maximum(a, 1e-8), 0.0)
    return np.concatenate([rgb, a], -1).astype(np.float32)


def scene_poses(split: str, count: int, seed: int = 0) -> np.ndarray:
    """Seeded poses on the upper hemisphere; train, val and test draw from different streams."""
    rng = np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2}[split]])
    theta = rng.uniform(-180, 180, count)
    phi = -np.degrees(np.arcsin(rng.uniform(0.05, 0.95, count)))  # uniform in area over the cap
    return np.stack([pose_spherical(t, p, RADIUS) for t, p in zip(theta, phi)]).astype(np.float32)


def scene_views(split: str = "train", count: int = 40, size: int = 48, background="white", seed: int = 0) -> Views:
    """The procedural scene as Views (images composited on `background`), without touching disk."""
    poses = scene_poses(split, count, seed)
    rgba = np.stack([render_rgba(p, size) for p in poses])
    bg = np.asarray(parse_background(background), np.float32)
    a = rgba[..., 3:]
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    return Views(images=(rgba[..., :3] * a + bg * (1 - a)).astype(np.float32), poses=poses, focal=focal,
                 background=tuple(float(v) for v in bg), alpha=rgba[..., 3].copy(),
                 names=[f"./{split}/r_{k}" for k in range(count)], camera_angle_x=CAMERA_ANGLE_X)


def write_scene(root: str | Path, train: int = 40, val: int = 8, size: int = 48, seed: int = 0) -> Path:
    """Write the scene as a Blender NeRF data set (train + val + test) that `--data` can read."""
    root = Path(root)
    for split, count in (("train", train), ("val", val), ("test", val)):
        poses = scene_poses(split, count, seed)
        write_blender(root, split, np.stack([render_rgba(p, size) for p in poses]), poses, CAMERA_ANGLE_X)
    return root
