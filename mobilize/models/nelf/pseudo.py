"""Pseudo-data: the teacher renders random poses around the scene; cached on disk in chunks.

R2L's recipe: poses with azimuth theta in [-180, 180] deg and elevation phi in [-90, 0] deg
(the upper hemisphere) at the radius of the training cameras. Each chunk (`chunk_00000.npz`:
float16 images [n, H, W, 3] + poses [n, 4, 4]) is drawn from its own seeded stream and
written atomically, so an interrupted run resumes at the first missing chunk and every
chunk is the same whichever run wrote it. `meta.json` ties the cache to the teacher's
sha256 and the camera; a cache made by another teacher or camera is refused, not mixed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...errors import BadInput

CHUNK = 50


def cache_meta(teacher_sha: str, data: dict, seed: int) -> dict:
    return {"format": "mobilize-nelf-pseudo/1", "teacher_sha256": teacher_sha, "height": data["height"],
            "width": data["width"], "focal": data["focal"], "radius": data["radius"],
            "background": list(data["background"]), "seed": seed, "chunk": CHUNK,
            "theta_range": [-180.0, 180.0], "phi_range": [-90.0, 0.0]}


def _chunk_path(root: Path, k: int) -> Path:
    return root / f"chunk_{k:05d}.npz"


def generate(root: Path, teacher, data: dict, teacher_sha: str, count: int, seed: int, device: str,
             reporter, descending: bool = False) -> Path:
    """Make sure `root` holds at least `count` pseudo images; render what is missing.

    A chunk another process finished meanwhile is skipped, so two processes (one with
    `descending=True`) can fill one cache from both ends."""
    import torch

    from ...data.blender import random_poses

    root.mkdir(parents=True, exist_ok=True)
    meta = cache_meta(teacher_sha, data, seed)
    meta_path = root / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: v for k, v in old.items() if k != "count"} != meta:
            raise BadInput(f"the pseudo-data cache '{root}' was made by another teacher, camera or seed",
                           "pass another --pseudo-dir, or delete that one")
    chunks = (count + CHUNK - 1) // CHUNK
    missing = [k for k in range(chunks) if not _chunk_path(root, k).is_file()]
    if descending:
        missing.reverse()
    tmp_meta = meta_path.with_name(f".meta.json.tmp-{os.getpid()}")
    tmp_meta.write_text(json.dumps({**meta, "count": max(count, _count_on_disk(root))}, indent=2))
    tmp_meta.replace(meta_path)
    if not missing:
        return root
    bg = torch.tensor(data["background"], dtype=torch.float32, device=device)
    teacher.to(device).eval()
    total = len(missing) * CHUNK
    bar = reporter.bar(total=total, iterable=None, desc="pseudo-data", unit="img", mininterval=2.0)
    try:
        for k in missing:
            if _chunk_path(root, k).is_file():
                bar.update(CHUNK)
                continue
            rng = np.random.default_rng([seed, k])
            poses = random_poses(rng, CHUNK, data["radius"])
            images = []
            for p in poses:
                img, _ = teacher.render_pose(torch.from_numpy(p), data["height"], data["width"], data["focal"], bg)
                images.append(img.cpu().numpy().astype(np.float16))
                bar.update(1)
            path = _chunk_path(root, k)
            tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
            np.savez(tmp, images=np.stack(images), poses=poses)
            tmp.replace(path)
    finally:
        bar.close()
    return root


def _count_on_disk(root: Path) -> int:
    return len(list(root.glob("chunk_*.npz"))) * CHUNK


def load(root: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` pseudo images (float16 [n, H, W, 3]) and poses ([n, 4, 4])."""
    images, poses = [], []
    chunks = (count + CHUNK - 1) // CHUNK
    for k in range(chunks):
        with np.load(_chunk_path(root, k)) as z:
            images.append(z["images"])
            poses.append(z["poses"])
    return np.concatenate(images)[:count], np.concatenate(poses)[:count].astype(np.float32)
