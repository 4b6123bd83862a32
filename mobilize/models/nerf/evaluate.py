"""Evaluation shared by the NeRF teacher and the NeLF student: render posed views, score them.

Both families expose the same interface (pose [1, 3, 4] -> image [1, H, W, 3]), so one
function scores a teacher checkpoint, a student checkpoint, or a student artifact in any
runtime through `open_predictor`. PSNR and SSIM come from scikit-image; PSNR is averaged
over views (the NeRF papers' convention), SSIM is computed per view on RGB in [0, 1].
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import BadInput


@dataclass
class ViewEvalConfig:
    data: str = field(metadata={"help": "Blender NeRF data set (folder with transforms_SPLIT.json)", "metavar": "PATH"})
    split: str = field(default="val", metadata={"help": "split to score", "choices": ["train", "val", "test"]})
    limit: int = field(default=0, metadata={"help": "score only the first N views (0: all)"})
    strip: str = field(default="", metadata={"help": "PNG of rendered (top) vs ground truth (bottom); default: "
                                                     "next to SOURCE", "metavar": "PNG"})
    strip_views: int = field(default=4, metadata={"help": "views in the strip"})
    threads: int = field(default=0, metadata={"help": "runtime threads (0: its default)"})
    target: str | None = field(default=None, metadata={"cli": False})


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(np.clip(gt, 0, 1).astype(np.float64),
                                         np.clip(pred, 0, 1).astype(np.float64), data_range=1.0))


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.clip(gt, 0, 1).astype(np.float64), np.clip(pred, 0, 1).astype(np.float64),
                                       channel_axis=2, data_range=1.0))


def render_and_score(render: Callable, views, limit: int | None = None, keep: int = 0, bar=None) -> dict:
    """render(pose [4, 4]) -> image [H, W, 3] or (image, samples evaluated)."""
    n = min(len(views), limit) if limit else len(views)
    psnrs, ssims, kept, samples, seconds = [], [], [], 0, 0.0
    it = range(n) if bar is None else bar(range(n), total=n, desc="rendering", unit="view")
    for k in it:
        start = time.perf_counter()
        out = render(views.poses[k])
        seconds += time.perf_counter() - start
        img, used = out if isinstance(out, tuple) else (out, None)
        img = np.asarray(img, np.float32).reshape(views.height, views.width, 3)
        if used is not None:
            samples += used
        psnrs.append(psnr(img, views.images[k]))
        ssims.append(ssim(img, views.images[k]))
        if k < keep:
            kept.append(img)
    result = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "views": n,
              "psnr_per_view": [round(p, 3) for p in psnrs], "ms_per_frame": 1000 * seconds / n, "images": kept}
    if samples:
        result["samples_per_ray"] = samples / (n * views.height * views.width)
    return result


def save_strip(path: Path, rendered: list[np.ndarray], truth: list[np.ndarray]) -> Path:
    """Rendered views on top, ground truth below; written atomically."""
    from PIL import Image

    top = np.concatenate(rendered, 1)
    bottom = np.concatenate(truth, 1)
    img = (np.clip(np.concatenate([top, bottom], 0), 0, 1) * 255 + 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(img).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def default_strip_path(source: str, split: str, target: str | None) -> Path:
    p = Path(source)
    stem = p.name if p.is_dir() else p.stem
    suffix = f"-{target}" if target else ""
    return p.parent / f"{stem}-{split}{suffix}.png"


def check_intrinsics(meta: dict, views, source: str) -> None:
    h, w, f = int(meta["height"]), int(meta["width"]), float(meta["focal"])
    if (views.height, views.width) != (h, w) or abs(views.focal - f) > 1e-3 * f:
        raise BadInput(f"'{source}' renders {w}x{h} at focal {f:.2f} px but the data is {views.width}x{views.height} "
                       f"at focal {views.focal:.2f} px", "evaluate on data with the camera the model was trained for")


def evaluate_views(source: str, config: ViewEvalConfig, target: str | None = None, reporter=None) -> dict:
    """PSNR / SSIM of SOURCE (teacher or student checkpoint, or student artifact) on a split."""
    from ..._ui import SILENT
    from ...data.blender import load_blender
    from ...runtimes import open_predictor

    log = reporter or SILENT
    if config.limit < 0 or config.strip_views < 0:
        raise BadInput("--limit and --strip-views must be zero or positive")
    target = target or config.target
    with log.step(f"loading {source}" + (f" ({target})" if target else "")):
        predictor = open_predictor(source, target, config.threads or None)
    try:
        meta = predictor.metadata or {}
        if "focal" not in meta or "background" not in meta:
            raise BadInput(f"'{source}' has no camera metadata (focal, background)",
                           "evaluate a nerf or nelf checkpoint, or an artifact exported from one")
        views = load_blender(config.data, config.split, meta["background"], limit=config.limit or None)
        check_intrinsics(meta, views, source)
        module = predictor.module

        def render(pose):
            out = predictor.run([np.asarray(pose, np.float32)[None, :3, :4]])[0][0]
            used = getattr(module, "last_samples", None) if module is not None else None
            return (out, used) if used else out

        scores = render_and_score(render, views, keep=config.strip_views, bar=log.bar)
    finally:
        predictor.close()
    strip = Path(config.strip) if config.strip else default_strip_path(source, config.split, target)
    images = scores.pop("images")
    if images:
        save_strip(strip, images, list(views.images[: len(images)]))
    result = {"psnr": round(scores["psnr"], 3), "ssim": round(scores["ssim"], 4), "views": scores["views"],
              "split": config.split, "source": str(source), "runtime": target or "torch",
              "family": predictor.family, "ms_per_frame": round(scores["ms_per_frame"], 2),
              "strip": str(strip) if images else None, "psnr_per_view": scores["psnr_per_view"]}
    if "samples_per_ray" in scores:
        result["samples_per_ray"] = round(scores["samples_per_ray"], 2)
    return result
