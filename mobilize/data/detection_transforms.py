"""Image -> model input for detection: the letterbox rule, normalisation and training augmentation.

The letterbox rule is part of the artifact contract (it goes into the manifest), so it is
the simplest one an app can reproduce: scale the longer side to S keeping the aspect ratio,
bilinear, place the image at the top-left of an S x S canvas filled with PAD_VALUE. A box in
the model's input maps back to the original image by dividing by the scale; no offset.

Training augmentation draws every random number from a generator seeded by
(seed, epoch, image index), so a sample looks the same whichever process loads it: that is
what lets two torchrun processes train the same model as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114
MEAN = (0.485, 0.456, 0.406)  # RGB, after scaling pixels to [0, 1]
STD = (0.229, 0.224, 0.225)


def preprocess_record(imgsz: int) -> dict:
    """The manifest's `preprocess`: everything an app needs to feed the model."""
    return {
        "resize": "letterbox",
        "letterbox": {"size": [imgsz, imgsz], "scale": "min(size / width, size / height)",
                      "interpolation": "bilinear", "align": "top-left", "pad_value": [PAD_VALUE] * 3},
        "channel_order": "RGB", "layout": "NCHW", "scale": 1 / 255, "mean": list(MEAN), "std": list(STD),
        "formula": "x = (pixel / 255 - mean) / std",
    }


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """(size x size x 3 uint8 canvas, (x scale, y scale) from original pixels to input pixels)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    resized = image if (nw, nh) == (w, h) else np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    canvas[:nh, :nw] = resized
    return canvas, (nw / w, nh / h)


def normalize(canvas: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32, as `preprocess_record` says."""
    x = canvas.astype(np.float32) / 255.0
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def denormalize(x: np.ndarray) -> np.ndarray:
    """CHW float32 -> HWC uint8 (for looking at what the model saw)."""
    img = x.transpose(1, 2, 0) * np.asarray(STD, np.float32) + np.asarray(MEAN, np.float32)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Augment:
    scale: tuple[float, float] = (0.6, 1.5)  # zoom relative to the letterbox scale (log-uniform)
    hflip: float = 0.5
    vflip: float = 0.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue: float = 0.02  # fraction of the colour wheel
    min_visible: float = 0.35  # a box cut by the crop stays when this much of its area is left


def augment(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator,
            cfg: Augment) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random scale + crop/pad to size x size, flips and colour jitter; boxes follow."""
    from PIL import Image

    h, w = image.shape[:2]
    lo, hi = np.log(cfg.scale[0]), np.log(cfg.scale[1])
    s = size / max(w, h) * float(np.exp(rng.uniform(lo, hi)))
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    sx, sy = nw / w, nh / h
    # offset of the resized image on the canvas: negative = cropped, positive = padded
    ox = int(rng.integers(min(0, size - nw), max(0, size - nw) + 1))
    oy = int(rng.integers(min(0, size - nh), max(0, size - nh) + 1))
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    x0, y0 = max(0, -ox), max(0, -oy)
    x1, y1 = min(nw, size - ox), min(nh, size - oy)
    canvas[y0 + oy:y1 + oy, x0 + ox:x1 + ox] = resized[y0:y1, x0:x1]

    b = boxes.astype(np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)
    b += np.array([ox, oy, ox, oy], np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = np.clip(b, 0, size)
    visible = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    keep = (visible >= cfg.min_visible * np.maximum(area, 1e-6)) & (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
    b, labels = c[keep], labels[keep]

    if rng.random() < cfg.hflip:
        canvas = canvas[:, ::-1]
        b = np.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], 1)
    if rng.random() < cfg.vflip:
        canvas = canvas[::-1]
        b = np.stack([b[:, 0], size - b[:, 3], b[:, 2], size - b[:, 1]], 1)
    canvas = colour_jitter(np.ascontiguousarray(canvas), rng, cfg)
    return canvas, b.astype(np.float32).reshape(-1, 4), labels


def colour_jitter(img: np.ndarray, rng: np.random.Generator, cfg: Augment) -> np.ndarray:
    x = img.astype(np.float32)
    # order fixed (not shuffled) so that the draw count, and so the stream, is fixed too
    x *= 1 + rng.uniform(-cfg.brightness, cfg.brightness)
    mean = x.mean()
    x = (x - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey[..., None]) * (1 + rng.uniform(-cfg.saturation, cfg.saturation)) + grey[..., None]
    hue = rng.uniform(-cfg.hue, cfg.hue)
    if abs(hue) > 1e-4:
        x = _rotate_hue(x, hue * 2 * np.pi)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _rotate_hue(x: np.ndarray, angle: float) -> np.ndarray:
    """Rotate colours about the grey axis (a cheap, smooth hue shift)."""
    c, s = np.cos(angle), np.sin(angle)
    k = 1 / 3
    sq = np.sqrt(k)
    m = np.array([[c + (1 - c) * k, k * (1 - c) - sq * s, k * (1 - c) + sq * s],
                  [k * (1 - c) + sq * s, c + k * (1 - c), k * (1 - c) - sq * s],
                  [k * (1 - c) - sq * s, k * (1 - c) + sq * s, c + k * (1 - c)]], np.float32)
    return x @ m.T
