"""Synthetic detection data: coloured shapes on textured backgrounds, drawn from a seed.

The demo and the tests need a detection set that exists everywhere, is learnable in a
minute on a CPU, and still needs shape (not colour) to tell the classes apart: every object
gets a random colour, and the backgrounds carry stripes, blotches and noise so that "find the
edge" is not enough. Written to disk in VOC, COCO or YOLO so it goes through the same readers
as a user's data.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .detection import DetectionSample, DetectionSet, write_coco, write_voc, write_yolo

SHAPES = ("circle", "square", "triangle", "cross", "ring")


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    from PIL import Image

    grid = rng.uniform(40, 215, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32)
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes at a random angle
        a = rng.uniform(0, np.pi)
        period = rng.uniform(6, 24)
        wave = np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period)
        img += wave[..., None] * rng.uniform(10, 35)
    elif kind == 1:  # checker
        cell = int(rng.integers(6, 20))
        img += (((xx // cell + yy // cell) % 2)[..., None] - 0.5) * rng.uniform(15, 40)
    img += rng.normal(0, rng.uniform(3, 12), size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(draw, shape: str, box: Sequence[float], colour: tuple, rng: np.random.Generator) -> list[float]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if shape == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=colour)
    elif shape == "square":
        draw.rectangle([x1, y1, x2, y2], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x1, y2), (x2, y2), ((x1 + x2) / 2, y1)], fill=colour)
    elif shape == "cross":
        t = 0.3
        draw.rectangle([x1, y1 + h * (0.5 - t / 2), x2, y1 + h * (0.5 + t / 2)], fill=colour)
        draw.rectangle([x1 + w * (0.5 - t / 2), y1, x1 + w * (0.5 + t / 2), y2], fill=colour)
    elif shape == "ring":
        draw.ellipse([x1, y1, x2, y2], outline=colour, width=max(2, int(min(w, h) * 0.18)))
    return [x1, y1, x2 + 1, y2 + 1]  # PIL fills the end pixel too


def render_scene(rng: np.random.Generator, width: int, height: int, classes: Sequence[str],
                 max_objects: int = 4, min_frac: float = 0.15, max_frac: float = 0.4):
    """(RGB uint8 image, boxes [K, 4] xyxy, labels [K]) for one scene."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_background(rng, width, height))
    draw = ImageDraw.Draw(img)
    boxes, labels = [], []
    n = int(rng.integers(1, max_objects + 1))
    short = min(width, height)
    for _ in range(n * 10):
        if len(boxes) == n:
            break
        side = rng.uniform(min_frac, max_frac) * short
        aspect = rng.uniform(0.75, 1.33)
        bw, bh = side * math.sqrt(aspect), side / math.sqrt(aspect)
        x1, y1 = rng.uniform(0, width - bw - 1), rng.uniform(0, height - bh - 1)
        cand = np.array([x1, y1, x1 + bw, y1 + bh])
        if any(_iou(cand, b) > 0.1 for b in boxes):
            continue
        k = int(rng.integers(len(classes)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        boxes.append(np.array(_draw(draw, classes[k], cand, colour, rng)))
        labels.append(k)
    return np.asarray(img), np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def synthetic_set(directory: Path, n: int, classes: Sequence[str], size: int, seed: int, prefix: str,
                  max_objects: int = 4) -> DetectionSet:
    """Render n images into `directory` (JPEG); image sizes vary to exercise the letterbox."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        w = int(size * rng.uniform(0.8, 1.25))
        h = int(size * rng.uniform(0.8, 1.25))
        img, boxes, labels = render_scene(rng, w, h, classes, max_objects)
        sid = f"{prefix}{i:05d}"
        path = directory / f"{sid}.jpg"
        Image.fromarray(img).save(path, quality=92)
        samples.append(DetectionSample(sid, str(path), w, h, boxes, labels))
    return DetectionSet(list(classes), samples, "synthetic", str(directory), prefix)


def make_synthetic(root: str | Path, format: str = "voc", classes: Sequence[str] = SHAPES[:3], train: int = 200,
                   val: int = 50, size: int = 160, seed: int = 0, max_objects: int = 4,
                   splits: bool = True) -> Path:
    """Write a synthetic data set in FORMAT under root, with train and val splits.

    splits=False writes one pool of images with no split information (the layout most users
    start from), so the readers' hash split is used.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown synthetic classes {unknown}; known: {SHAPES}")
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="mobilize-synth-") as tmp:
        parts = {"train": synthetic_set(Path(tmp), train, classes, size, seed, "train", max_objects),
                 "val": synthetic_set(Path(tmp), val, classes, size, seed + 1, "val", max_objects)}
        if not splits:
            parts = {"": DetectionSet(list(classes), parts["train"].samples + parts["val"].samples, "synthetic",
                                      tmp, "")}
        for split, ds in parts.items():
            if format == "voc":
                write_voc(ds, root, split or None)
            elif format == "coco":
                write_coco(ds, root, split or "all")
            elif format == "yolo":
                write_yolo(ds, root, split)  # split "" writes images/ and labels/ directly
            else:
                raise ValueError(f"unknown format {format}")
    return root


def sample_input(rng: np.random.Generator, imgsz: int) -> np.ndarray:
    """One normalised [1, 3, S, S] input that looks like a letterboxed photo (for verification)."""
    from .detection_transforms import letterbox, normalize

    w = int(imgsz * rng.uniform(0.7, 1.3))
    h = int(imgsz * rng.uniform(0.7, 1.3))
    img, _, _ = render_scene(rng, w, h, SHAPES, max_objects=5)
    canvas, _ = letterbox(img, imgsz)
    return normalize(canvas)[None]
