"""Retrieval data: image folders, an embedded synthetic product generator, P x K batches.

Layout read by every retrieval command (the common "ImageFolder" layout, one folder per split):

    ROOT/SPLIT/CLASS_NAME/*.jpg|png|...      e.g. train/, val/, and an optional catalog/

Folders whose names start with "." or "_" are skipped (the cleaning tools' quarantine lives
in ROOT/.quarantine). Labels are class *names*: two splits agree on a class when the folder
names agree, so a query split may hold classes the training split never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import BadInput

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class ImageSet:
    """Files with their class names, in a stable order (class, then file name)."""

    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def label_ids(self, classes: Sequence[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(c, -1) for c in self.labels], dtype=np.int64)

    def __add__(self, other: "ImageSet") -> "ImageSet":
        return ImageSet(self.paths + other.paths, self.labels + other.labels, self.splits + other.splits)


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_"))


def list_splits(root: str | Path) -> list[str]:
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p)) if root.is_dir() else []


def read_split(root: str | Path, split: str) -> ImageSet:
    """ROOT/SPLIT/CLASS/*.img. Raises BadInput when the split is missing or holds no images."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"--data '{root}' is not a directory", "give a folder with SPLIT/CLASS/*.jpg inside")
    folder = root / split
    if not folder.is_dir():
        have = ", ".join(list_splits(root)) or "none"
        raise BadInput(f"'{root}' has no split '{split}'", f"splits found: {have}; layout is ROOT/SPLIT/CLASS/*.jpg")
    out = ImageSet()
    for cls in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p)):
        for f in sorted(cls.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and _visible(f):
                out.paths.append(f)
                out.labels.append(cls.name)
                out.splits.append(split)
    if not out.paths:
        raise BadInput(f"split '{split}' of '{root}' holds no images",
                       "layout is ROOT/SPLIT/CLASS_NAME/*.jpg (one folder per class)")
    return out


def parse_splits(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else [s for t in text for s in str(t).split(",")]
    splits = [s.strip() for s in items if s.strip()]
    if not splits:
        raise BadInput("no split named", "e.g. --gallery train,catalog")
    return splits


def read_splits(root: str | Path, splits: str | Sequence[str], optional: Sequence[str] = ()) -> ImageSet:
    """Several splits joined; a split listed in `optional` is skipped when it does not exist."""
    out = ImageSet()
    for s in parse_splits(splits):
        if s in optional and not (Path(root) / s).is_dir():
            continue
        out = out + read_split(root, s)
    return out


# -- decoding -------------------------------------------------------------------------------
def load_image(path: Path, size: int) -> np.ndarray:
    """HxWx3 uint8, resized (stretched) to size x size exactly as `image_to_input` does for export."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize((size, size)), dtype=np.uint8)
    except Exception as e:
        raise BadInput(f"cannot read image '{path}': {type(e).__name__}: {e}") from e


def load_images(paths: Sequence[Path], size: int, reporter=None, desc: str = "decoding") -> np.ndarray:
    """N x 3 x size x size uint8 (kept as uint8: a few thousand photos fit in memory)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    it = range(len(paths))
    if reporter is not None:
        it = reporter.bar(it, total=len(paths), desc=desc)
    for i in it:
        out[i] = load_image(paths[i], size).transpose(2, 0, 1)
    return out


def normalize(images_u8, mean: Sequence[float], std: Sequence[float]):
    """uint8 NCHW (numpy or torch) -> float32 normalised like the manifest's preprocess."""
    import torch

    x = torch.as_tensor(images_u8).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


# -- P x K sampling -------------------------------------------------------------------------
class PKSampler:
    """Batches of P classes x K images each, so every anchor has positives and hard negatives.

    A class with fewer than K images is sampled with replacement. An epoch is about one pass
    over the images. Seeded per (seed, epoch): every DDP process draws the same global batches
    and takes its share with `rows_for`.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0):
        labels = np.asarray(labels)
        self.by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        self.classes = np.array(sorted(self.by_class))
        if len(self.classes) < 2:
            raise BadInput("retrieval training needs at least two classes", "add class folders to the training split")
        self.p = min(p, len(self.classes))
        self.k = k
        self.seed = seed
        self.batches_per_epoch = max(1, math.ceil(len(labels) / (self.p * self.k)))

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def epoch(self, epoch: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        for _ in range(self.batches_per_epoch):
            chosen = rng.choice(self.classes, self.p, replace=False)
            idx = []
            for c in chosen:
                members = self.by_class[int(c)]
                idx.append(rng.choice(members, self.k, replace=len(members) < self.k))
            yield np.concatenate(idx)

    def rows_for(self, rank: int, world: int) -> np.ndarray:
        """Rows of a global batch that process `rank` of `world` handles: whole classes, so its
        triplets still have positives (mining happens within each process's share)."""
        return np.concatenate([np.arange(c * self.k, (c + 1) * self.k) for c in range(rank, self.p, world)])


# -- augmentation on a batch (vectorised: per-image Python loops are slow on 2 cores) -------
@dataclass
class Augment:
    scale: tuple[float, float] = (0.35, 1.0)  # area of the random crop
    ratio: tuple[float, float] = (0.75, 1.333)
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.2
    colour_cast: float = 0.0  # per-channel gain in [1 - c, 1 + c]: another shop's lighting or white balance
    grayscale: float = 0.0  # probability of a grey image: shape and texture must carry it, not colour alone
    erasing: float = 0.5  # probability of random erasing per image (Zhong et al. 2020)
    erasing_area: tuple[float, float] = (0.02, 0.3)


def _draws(generator, n: int, rows=None, total: int | None = None):
    """Random numbers for the rows of a global batch: a DDP process that augments its share of
    the batch draws for the whole batch and keeps its rows, so each image gets the same
    augmentation whichever process handles it."""
    import torch

    total = total or n

    def rand():
        r = torch.rand(total, generator=generator)
        return r if rows is None else r[torch.as_tensor(rows)]

    return rand


def augment_batch(x, aug: Augment, generator, rows=None, total: int | None = None) -> "torch.Tensor":
    """x: float [N,3,H,W] in [0,1] -> augmented, same shape, still in [0,1] before erasing.

    `rows` (and `total`): x holds these rows of a global batch of `total` images.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    rand = _draws(generator, n, rows, total)

    def uniform(lo, hi):
        return rand() * (hi - lo) + lo

    # random resized crop + flip as one affine warp
    area = uniform(*aug.scale)
    logr = uniform(math.log(aug.ratio[0]), math.log(aug.ratio[1]))
    ratio = torch.exp(logr)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (rand() * 2 - 1) * (1 - sw)
    cy = (rand() * 2 - 1) * (1 - sh)
    flip = torch.where(rand() < 0.5, -1.0, 1.0) if aug.flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (n, 3, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    # colour: cast, brightness, contrast, saturation (no hue: colour tells apart Granny Smith and Golden)
    if aug.colour_cast > 0:  # drawn only when on, so runs without it keep their random stream
        gains = [uniform(1 - aug.colour_cast, 1 + aug.colour_cast) for _ in range(3)]
        x = x * torch.stack(gains, 1).view(n, 3, 1, 1)
    b = uniform(1 - aug.brightness, 1 + aug.brightness).view(n, 1, 1, 1)
    c = uniform(1 - aug.contrast, 1 + aug.contrast).view(n, 1, 1, 1)
    s = uniform(1 - aug.saturation, 1 + aug.saturation).view(n, 1, 1, 1)
    x = x * b
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    gray = _luma(x)
    x = ((x - gray) * s + gray).clamp(0, 1)
    if aug.grayscale > 0:  # drawn only when on, so runs without it keep their random stream
        grey = (rand() < aug.grayscale).view(n, 1, 1, 1)
        x = torch.where(grey, _luma(x).expand_as(x), x)
    return x


def _luma(x):
    """[N,3,H,W] RGB -> [N,1,H,W] luma (ITU-R BT.601 weights)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def random_erasing(x, aug: Augment, generator, rows=None, total: int | None = None):
    """Erase one random rectangle per image (with probability aug.erasing) with N(0, 1) noise."""
    import torch

    if aug.erasing <= 0:
        return x
    n, c, h, w = x.shape
    rand = _draws(generator, n, rows, total)
    do = rand() < aug.erasing
    area = rand() * (aug.erasing_area[1] - aug.erasing_area[0]) + aug.erasing_area[0]
    logr = rand() * (math.log(3.3) - math.log(0.3)) + math.log(0.3)
    r = torch.exp(logr)
    eh = (torch.sqrt(area * r) * h).clamp(1, h).long()
    ew = (torch.sqrt(area / r) * w).clamp(1, w).long()
    y0 = (rand() * (h - eh + 1).float()).long()
    x0 = (rand() * (w - ew + 1).float()).long()
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    mask = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1)) &
            (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)) & do.view(n, 1, 1))
    noise = torch.randn(((total or n),) + tuple(x.shape[1:]), generator=generator)
    if rows is not None:
        noise = noise[torch.as_tensor(rows)]
    return torch.where(mask.unsqueeze(1), noise, x)


# -- the embedded synthetic product generator -----------------------------------------------
_SHAPES = ("carton", "bottle", "jar", "fruit")


def _product_recipe(rng: np.random.Generator, family: dict | None) -> dict:
    """A product: shape and body colour (shared inside a 'brand'), label colour and pattern."""
    if family is None:
        family = {"shape": _SHAPES[int(rng.integers(len(_SHAPES)))],
                  "body": tuple(int(v) for v in rng.integers(30, 230, 3)),
                  "aspect": float(rng.uniform(0.45, 0.8))}
    return {**family,
            "label": tuple(int(v) for v in rng.integers(0, 256, 3)),
            "pattern": ["stripes", "dots", "band", "diagonal"][int(rng.integers(4))],
            "mark": tuple(int(v) for v in rng.integers(0, 256, 3)),
            "mark_sides": int(rng.integers(3, 7)),
            "phase": float(rng.uniform(0, 1))}


def _draw_product(recipe: dict, size: int):
    """RGBA image of the product, size x size, transparent outside it."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    w = int(size * recipe["aspect"])
    x0, x1 = (size - w) // 2, (size + w) // 2
    top, bottom = int(size * 0.12), int(size * 0.95)
    body = recipe["body"] + (255,)
    shape = recipe["shape"]
    if shape == "fruit":
        d.ellipse([x0 - w // 6, top + size // 8, x1 + w // 6, bottom], fill=body)
    elif shape == "bottle":
        neck = w // 3
        d.rectangle([size // 2 - neck // 2, top, size // 2 + neck // 2, top + size // 5], fill=body)
        d.rounded_rectangle([x0, top + size // 6, x1, bottom], radius=max(1, w // 5), fill=body)
    elif shape == "jar":
        d.rounded_rectangle([x0, top + size // 10, x1, bottom], radius=max(1, w // 3), fill=body)
        d.rectangle([x0 + w // 8, top, x1 - w // 8, top + size // 8], fill=(200, 200, 200, 255))
    else:  # carton with a gable top
        d.rectangle([x0, top + size // 8, x1, bottom], fill=body)
        d.polygon([(x0, top + size // 8), (size // 2, top), (x1, top + size // 8)], fill=body)
    # the label: where fine-grained classes differ
    ly0, ly1 = int(size * 0.45), int(size * 0.8)
    lx0, lx1 = x0 + w // 10, x1 - w // 10
    lab = recipe["label"] + (255,)
    mark = recipe["mark"] + (255,)
    pattern = recipe["pattern"]
    if pattern == "band":
        d.rectangle([lx0, ly0, lx1, ly1], fill=lab)
    elif pattern == "stripes":
        step = max(2, (ly1 - ly0) // 4)
        for k, y in enumerate(range(ly0, ly1, step)):
            if k % 2 == 0:
                d.rectangle([lx0, y, lx1, min(ly1, y + step - 1)], fill=lab)
    elif pattern == "dots":
        r = max(1, (lx1 - lx0) // 8)
        for yy in range(ly0 + r, ly1, 3 * r):
            for xx in range(lx0 + r, lx1, 3 * r):
                d.ellipse([xx - r, yy - r, xx + r, yy + r], fill=lab)
    else:  # diagonal stripes, clipped to the label area
        from PIL import ImageChops

        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        ld = ImageDraw.Draw(layer)
        step = max(3, (lx1 - lx0) // 3)
        for k in range(-3, 6):
            xs = lx0 + k * step + int(recipe["phase"] * step)
            ld.polygon([(xs, ly1), (xs + step // 2, ly1), (xs + step // 2 + (ly1 - ly0), ly0), (xs + (ly1 - ly0), ly0)],
                       fill=lab)
        clip = Image.new("L", (size, size), 0)
        ImageDraw.Draw(clip).rectangle([lx0, ly0, lx1, ly1], fill=255)
        img.paste(layer, (0, 0), ImageChops.multiply(layer.getchannel("A"), clip))
    # a logo mark: a small regular polygon
    cx, cy, r = size // 2, int(size * 0.32), max(2, w // 5)
    n = recipe["mark_sides"]
    pts = [(cx + r * math.cos(2 * math.pi * i / n + recipe["phase"]), cy + r * math.sin(2 * math.pi * i / n + recipe["phase"]))
           for i in range(n)]
    d.polygon(pts, fill=mark)
    return img


def _background(rng: np.random.Generator, size: int, plain: bool):
    from PIL import Image, ImageDraw

    if plain:
        return Image.new("RGB", (size, size), (250, 250, 250))
    base = tuple(int(v) for v in rng.integers(40, 200, 3))
    img = Image.new("RGB", (size, size), base)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):  # shelves and other products
        x0, y0 = rng.integers(-size // 4, size, 2)
        ww, hh = rng.integers(size // 8, size // 2, 2)
        d.rectangle([int(x0), int(y0), int(x0 + ww), int(y0 + hh)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def render_product(recipe: dict, rng: np.random.Generator, size: int, catalog: bool = False) -> np.ndarray:
    """One photo (cluttered shelf, random pose and light) or catalog shot (plain, centred)."""
    from PIL import Image, ImageFilter

    big = size * 2
    bg = _background(rng, big, plain=catalog)
    product = _draw_product(recipe, big)
    if catalog:
        bg.paste(product, (0, 0), product)
    else:
        copies = 1 if recipe["shape"] != "fruit" else int(rng.integers(1, 4))
        for _ in range(copies):
            scale = float(rng.uniform(0.55, 0.95))
            s = max(8, int(big * scale))
            p = product.resize((s, s)).rotate(float(rng.uniform(-20, 20)), expand=False)
            ox = int(rng.integers(-s // 5, big - s + s // 5 + 1))
            oy = int(rng.integers(-s // 5, big - s + s // 5 + 1))
            bg.paste(p, (ox, oy), p)
    img = bg.resize((size, size))
    if not catalog:
        if rng.random() < 0.5:
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.0))))
        x = np.asarray(img, np.float32)
        gain = rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)
        x = x * gain + rng.normal(0, 6, x.shape)
        return np.clip(x, 0, 255).astype(np.uint8)
    return np.asarray(img, np.uint8)


def make_synthetic_products(root: str | Path, classes: int = 12, train_per_class: int = 16, val_per_class: int = 4,
                            catalog: bool = True, size: int = 64, brands: int | None = None, seed: int = 0) -> Path:
    """Write a synthetic grocery set in the image-folder layout; the same seed gives the same files.

    Classes come in brands that share shape and body colour and differ by label and logo, so
    the task is fine-grained like real products. Written atomically (temp dir, then rename).
    """
    import os
    import shutil
    import tempfile

    from PIL import Image

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise BadInput(f"'{root}' exists and is not empty", "choose a new directory for the synthetic data")
    root.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        rng = np.random.default_rng(seed)
        brands = brands or max(1, classes // 3)
        families = [None] * brands
        recipes = []
        for c in range(classes):
            b = c % brands
            r = _product_recipe(rng, families[b])
            families[b] = {k: r[k] for k in ("shape", "body", "aspect")}
            recipes.append(r)
        for c, recipe in enumerate(recipes):
            name = f"product-{c:03d}"
            counts = {"train": train_per_class, "val": val_per_class, "catalog": 1 if catalog else 0}
            for split, count in counts.items():
                folder = stage / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    img = render_product(recipe, rng, size, catalog=split == "catalog")
                    Image.fromarray(img).save(folder / f"{name}_{i:03d}.png")
        if root.exists():
            os.rmdir(root)
        stage.rename(root)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return root
