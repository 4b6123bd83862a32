"""Object-detection data: Pascal VOC, COCO JSON and YOLO txt, read into one in-memory form.

Every reader returns a `DetectionSet`: class names plus one `DetectionSample` per image with
boxes as float32 [K, 4] xyxy in pixels of the original image. Bad boxes (degenerate, or with
no overlap with the image) are skipped and counted, and each read reports them in ONE
warning, because real data sets carry a few (BCCD has two) and a training run must not die
on them; boxes that stick out of the image are clipped (annotation tools round off the edge).

Splits: VOC `ImageSets/Main/<split>.txt`, COCO `annotations/instances_<split>*.json` (or
`<split>.json`, or `<split>/_annotations.coco.json`), YOLO `images/<split>` + `labels/<split>`
(or `<split>/images` + `<split>/labels`). A data set without splits is split by a hash of each
image's id, so train and val are disjoint, stable, and the same in `train` and `eval`.

Writers for all three formats exist so that the synthetic data (and tests) go through the
same readers a user's data does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import BadInput

FORMATS = ("voc", "coco", "yolo")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class BadBoxWarning(UserWarning):
    """Some annotations were skipped; the message says how many of each kind, and where."""


@dataclass
class DetectionSample:
    id: str
    image: str  # path to the image file
    width: int
    height: int
    boxes: np.ndarray  # float32 [K, 4] xyxy, pixels of the original image
    labels: np.ndarray  # int64 [K], index into DetectionSet.classes
    ignore: np.ndarray | None = None  # bool [K]: VOC "difficult" / COCO crowd; not counted in eval

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if self.ignore is None:
            self.ignore = np.zeros(len(self.labels), bool)
        self.ignore = np.asarray(self.ignore, bool).reshape(-1)


@dataclass
class BadBoxes:
    """Counts of skipped annotations, with the first few places they were found."""

    degenerate: int = 0  # xmax <= xmin or ymax <= ymin (or not finite)
    outside: int = 0  # no overlap with the image
    unknown_class: int = 0  # a class id the data set does not name
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.degenerate + self.outside + self.unknown_class

    def add(self, kind: str, where: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 3:
            self.examples.append(where)

    def message(self, what: str) -> str:
        parts = [f"{self.degenerate} degenerate (xmax <= xmin or ymax <= ymin)",
                 f"{self.outside} outside the image"]
        if self.unknown_class:
            parts.append(f"{self.unknown_class} with an unknown class")
        return (f"{what}: skipped {self.total} bad box{'es' if self.total != 1 else ''}: " + ", ".join(parts)
                + f"; e.g. {'; '.join(self.examples)}")

    def to_dict(self) -> dict:
        return {"degenerate": self.degenerate, "outside": self.outside, "unknown_class": self.unknown_class}


@dataclass
class DetectionSet:
    classes: list[str]
    samples: list[DetectionSample]
    format: str
    root: str
    split: str
    bad_boxes: BadBoxes = field(default_factory=BadBoxes)
    split_rule: str = "given"  # "given" by the data set, or "hash" (see split_by_hash)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_boxes(self) -> int:
        return int(sum(len(s.labels) for s in self.samples))


# -- box hygiene ---------------------------------------------------------------------------
def clean_box(box: Sequence[float], width: int, height: int, bad: BadBoxes, where: str) -> list[float] | None:
    """Clip a box to the image; None (and counted) when nothing sensible remains."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        bad.add("degenerate", where)
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        bad.add("outside", where)
        return None
    return [cx1, cy1, cx2, cy2]


def _warn(dataset: DetectionSet) -> None:
    if dataset.bad_boxes.total:
        warnings.warn(dataset.bad_boxes.message(f"{dataset.format} data '{dataset.root}' ({dataset.split})"),
                      BadBoxWarning, stacklevel=3)


# -- splitting -----------------------------------------------------------------------------
def split_by_hash(image_id: str, val_fraction: float) -> str:
    """'val' or 'train' from a hash of the id: stable across runs, machines and added images."""
    h = int(hashlib.sha1(image_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def _select_split(ids: list[str], split: str, val_fraction: float) -> list[str]:
    if split not in ("train", "val"):
        raise BadInput(f"the data set has no split files, so split '{split}' does not exist",
                       "use --split train or --split val (taken by a hash of the image id)")
    chosen = [i for i in ids if split_by_hash(i, val_fraction) == split]
    if not chosen and ids:  # tiny data set: keep at least one image in each split
        chosen = [ids[0]] if split == "val" else ids[1:] or ids
    return chosen


# -- Pascal VOC ----------------------------------------------------------------------------
def read_voc(root: str | Path, split: str = "train", classes: Sequence[str] | None = None,
             val_fraction: float = 0.15) -> DetectionSet:
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise BadInput(f"'{root}' is not a Pascal VOC data set: it has no Annotations/ folder")
    all_ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not all_ids:
        raise BadInput(f"'{ann_dir}' holds no .xml annotations")
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if split_file.is_file():
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        rule = "given"
    elif (root / "ImageSets" / "Main").is_dir() and any((root / "ImageSets" / "Main").glob("*.txt")):
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
        raise BadInput(f"'{root}' has no split '{split}' (ImageSets/Main/{split}.txt)", f"splits: {', '.join(have)}")
    else:
        ids, rule = _select_split(all_ids, split, val_fraction), "hash"
    parsed = {}
    names = set()
    for i in (all_ids if classes is None else ids):
        parsed[i] = _parse_voc_xml(ann_dir / f"{i}.xml")
        names.update(o[0] for o in parsed[i]["objects"])
    classes = list(classes) if classes is not None else _voc_classes(root, names)
    index = {c: k for k, c in enumerate(classes)}
    bad = BadBoxes()
    samples = []
    for i in ids:
        if i not in parsed:
            if not (ann_dir / f"{i}.xml").is_file():
                raise BadInput(f"'{split_file}' names '{i}' but Annotations/{i}.xml does not exist")
            parsed[i] = _parse_voc_xml(ann_dir / f"{i}.xml")
        a = parsed[i]
        image = _find_image(img_dir, a["filename"], i)
        w, h = a["width"], a["height"]
        if not w or not h:
            w, h = _image_size(image)
        boxes, labels, ignore = [], [], []
        for name, box, difficult in a["objects"]:
            if name not in index:
                bad.add("unknown_class", f"{i}.xml: '{name}'")
                continue
            b = clean_box(box, w, h, bad, f"{i}.xml")
            if b is not None:
                boxes.append(b)
                labels.append(index[name])
                ignore.append(difficult)
        samples.append(DetectionSample(i, str(image), w, h, np.array(boxes, np.float32), labels, ignore))
    ds = DetectionSet(classes, samples, "voc", str(root), split, bad, rule)
    _warn(ds)
    return ds


def _voc_classes(root: Path, names: set[str]) -> list[str]:
    for f in ("labels.txt", "classes.txt"):
        if (root / f).is_file():
            return [c.strip() for c in (root / f).read_text().splitlines() if c.strip()]
    return sorted(names)


def _parse_voc_xml(path: Path) -> dict:
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise BadInput(f"'{path}' is not valid XML: {e}") from e
    size = tree.find("size")

    def num(node, tag, default=0.0):
        el = node.find(tag) if node is not None else None
        try:
            return float(el.text) if el is not None and el.text is not None else default
        except ValueError:
            return float("nan")

    objects = []
    for o in tree.iter("object"):
        name = (o.findtext("name") or "").strip()
        bb = o.find("bndbox")
        box = [num(bb, t, float("nan")) for t in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((name, box, (o.findtext("difficult") or "0").strip() == "1"))
    return {"filename": (tree.findtext("filename") or "").strip(), "objects": objects,
            "width": int(num(size, "width")), "height": int(num(size, "height"))}


def write_voc(dataset: DetectionSet, root: str | Path, split: str | None = None) -> Path:
    """Add `dataset` to a VOC tree at root (images copied; split file appended when given).

    labels.txt records the class order (VOC itself has none; without it the reader sorts)."""
    root = Path(root)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for s in dataset.samples:
        name = s.id + Path(s.image).suffix
        _copy_image(s.image, root / "JPEGImages" / name)
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = "JPEGImages"
        ET.SubElement(ann, "filename").text = name
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", s.width), ("height", s.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(v)
        for box, label, ign in zip(s.boxes, s.labels, s.ignore):
            o = ET.SubElement(ann, "object")
            ET.SubElement(o, "name").text = dataset.classes[int(label)]
            ET.SubElement(o, "difficult").text = "1" if ign else "0"
            bb = ET.SubElement(o, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bb, tag).text = _num_text(v)
        ET.indent(ann)
        ET.ElementTree(ann).write(root / "Annotations" / f"{s.id}.xml", encoding="unicode")
    _write_text(root / "labels.txt", "".join(f"{c}\n" for c in dataset.classes))  # the class order
    if split:
        sets = root / "ImageSets" / "Main"
        sets.mkdir(parents=True, exist_ok=True)
        with open(sets / f"{split}.txt", "a") as f:
            f.writelines(f"{s.id}\n" for s in dataset.samples)
    return root


# -- COCO JSON -----------------------------------------------------------------------------
def _coco_json(path: Path, split: str) -> tuple[Path | None, bool]:
    """(annotation file, whether it is specific to the split)."""
    if path.is_file():
        return path, False
    patterns = [f"annotations/instances_{split}*.json", f"annotations/{split}*.json", f"{split}.json",
                f"{split}/_annotations.coco.json", f"{split}/annotations.json"]
    for pat in patterns:
        found = sorted(path.glob(pat))
        if found:
            return found[0], True
    single = sorted(path.glob("annotations/*.json")) + sorted(path.glob("*.json"))
    if len(single) == 1:
        return single[0], False
    return None, False


def read_coco(path: str | Path, split: str = "train", val_fraction: float = 0.15) -> DetectionSet:
    path = Path(path)
    ann_file, per_split = _coco_json(path, split)
    if ann_file is None:
        raise BadInput(f"found no COCO annotation file for split '{split}' under '{path}'",
                       f"expected annotations/instances_{split}.json, {split}.json or {split}/_annotations.coco.json")
    try:
        data = json.loads(ann_file.read_text())
        cats = sorted(data["categories"], key=lambda c: c["id"])
        images = data["images"]
        anns = data.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise BadInput(f"'{ann_file}' is not COCO JSON: {type(e).__name__}: {e}") from e
    classes = [str(c["name"]) for c in cats]
    cat_index = {c["id"]: k for k, c in enumerate(cats)}
    root = path if path.is_dir() else path.parent
    stem = ann_file.stem.removeprefix("instances_")  # instances_val2017.json -> val2017/
    image_dirs = _unique([ann_file.parent, ann_file.parent.parent / stem, ann_file.parent.parent / split,
                          root / split, root / "images" / split,
                          root / "images", root, ann_file.parent.parent / "images"])
    by_image: dict = {im["id"]: [] for im in images}
    for a in anns:
        by_image.setdefault(a.get("image_id"), []).append(a)
    ids = [str(Path(im["file_name"]).with_suffix("")) for im in images]  # file names: stable, readable
    chosen = set(ids) if per_split else set(_select_split(ids, split, val_fraction))
    bad = BadBoxes()
    samples = []
    for sid, im in zip(ids, images):
        if sid not in chosen:
            continue
        image = _resolve_image(image_dirs, im["file_name"])
        w, h = int(im.get("width") or 0), int(im.get("height") or 0)
        if not w or not h:
            w, h = _image_size(image)
        boxes, labels, ignore = [], [], []
        where = f"{ann_file.name}: image {im['id']}"
        for a in by_image.get(im["id"], []):
            if a.get("category_id") not in cat_index:
                bad.add("unknown_class", f"{where}: category {a.get('category_id')}")
                continue
            x, y, bw, bh = (float(v) for v in (a.get("bbox") or [float("nan")] * 4))
            b = clean_box([x, y, x + bw, y + bh], w, h, bad, where)
            if b is not None:
                boxes.append(b)
                labels.append(cat_index[a["category_id"]])
                ignore.append(bool(a.get("iscrowd", 0)))
        samples.append(DetectionSample(sid, str(image), w, h, np.array(boxes, np.float32), labels, ignore))
    ds = DetectionSet(classes, samples, "coco", str(path), split, bad, "given" if per_split else "hash")
    _warn(ds)
    return ds


def write_coco(dataset: DetectionSet, root: str | Path, split: str) -> Path:
    """Write `<root>/<split>/` images and `<root>/annotations/instances_<split>.json`."""
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for k, s in enumerate(dataset.samples, 1):
        name = s.id + Path(s.image).suffix
        _copy_image(s.image, root / split / name)
        images.append({"id": k, "file_name": name, "width": s.width, "height": s.height})
        for box, label, ign in zip(s.boxes, s.labels, s.ignore):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(label) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": int(ign)})
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(dataset.classes)]
    out = root / "annotations" / f"instances_{split}.json"
    _write_text(out, json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return out


# -- YOLO txt ------------------------------------------------------------------------------
def _yolo_dirs(root: Path, split: str) -> tuple[Path, Path, bool] | None:
    for images, labels in ((root / "images" / split, root / "labels" / split),
                           (root / split / "images", root / split / "labels")):
        if images.is_dir():
            return images, labels, True
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return root / "images", root / "labels", False
    return None


def yolo_classes(root: Path) -> list[str] | None:
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (root / name).is_file():
            names = _yaml_names((root / name).read_text())
            if names:
                return names
    for name in ("classes.txt", "obj.names", "labels.txt"):
        if (root / name).is_file():
            return [c.strip() for c in (root / name).read_text().splitlines() if c.strip()]
    return None


def _yaml_names(text: str) -> list[str] | None:
    try:
        import yaml

        names = (yaml.safe_load(text) or {}).get("names")
    except ImportError:  # a flow list on one line is all we need to understand without PyYAML
        m = re.search(r"^names:\s*\[(.*)\]\s*$", text, re.M)
        names = [n.strip().strip("'\"") for n in m.group(1).split(",")] if m else None
    except Exception:
        return None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return [str(n) for n in names] if names else None


def read_yolo(root: str | Path, split: str = "train", val_fraction: float = 0.15) -> DetectionSet:
    root = Path(root)
    dirs = _yolo_dirs(root, split)
    if dirs is None:
        raise BadInput(f"found no YOLO images for split '{split}' under '{root}'",
                       f"expected images/{split}/ and labels/{split}/ (or {split}/images and {split}/labels)")
    img_dir, lbl_dir, per_split = dirs
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not per_split:
        keep = set(_select_split([p.stem for p in files], split, val_fraction))
        files = [p for p in files if p.stem in keep]
    classes = yolo_classes(root)
    rows: dict[str, list[list[float]]] = {}
    for p in files:
        txt = lbl_dir / f"{p.stem}.txt"
        rows[p.stem] = []
        if txt.is_file():
            for line in txt.read_text().splitlines():
                parts = line.split()
                if parts:
                    try:
                        rows[p.stem].append([float(v) for v in parts[:5]] + [float("nan")] * (5 - len(parts[:5])))
                    except ValueError:
                        rows[p.stem].append([float("nan")] * 5)
    if classes is None:  # no names file: number the classes
        top = max((int(r[0]) for rr in rows.values() for r in rr if np.isfinite(r[0])), default=0)
        classes = [f"class{k}" for k in range(top + 1)]
    bad = BadBoxes()
    samples = []
    for p in files:
        w, h = _image_size(p)
        boxes, labels = [], []
        for c, cx, cy, bw, bh in rows[p.stem]:
            where = f"labels/{p.stem}.txt"
            if not np.isfinite(c) or int(c) != c or not 0 <= int(c) < len(classes):
                bad.add("unknown_class", f"{where}: class {c:g}")
                continue
            b = clean_box([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], w, h, bad, where)
            if b is not None:
                boxes.append(b)
                labels.append(int(c))
        samples.append(DetectionSample(p.stem, str(p), w, h, np.array(boxes, np.float32), labels))
    ds = DetectionSet(classes, samples, "yolo", str(root), split, bad, "given" if per_split else "hash")
    _warn(ds)
    return ds


def write_yolo(dataset: DetectionSet, root: str | Path, split: str) -> Path:
    """Write `images/<split>/`, `labels/<split>/` and `data.yaml` (names) under root."""
    root = Path(root)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for s in dataset.samples:
        _copy_image(s.image, root / "images" / split / (s.id + Path(s.image).suffix))
        lines = []
        for (x1, y1, x2, y2), label in zip(s.boxes, s.labels):
            cx, cy = (x1 + x2) / 2 / s.width, (y1 + y2) / 2 / s.height
            lines.append(f"{int(label)} {cx:.8f} {cy:.8f} {(x2 - x1) / s.width:.8f} {(y2 - y1) / s.height:.8f}\n")
        _write_text(root / "labels" / split / f"{s.id}.txt", "".join(lines))
    names = ", ".join(json.dumps(c) for c in dataset.classes)
    _write_text(root / "data.yaml", f"path: .\ntrain: images/train\nval: images/val\nnames: [{names}]\n")
    return root


# -- one entry point -----------------------------------------------------------------------
def detect_format(path: Path) -> str | None:
    if path.is_file():
        return "coco" if path.suffix.lower() == ".json" else None
    if (path / "Annotations").is_dir():
        return "voc"
    if (path / "labels").is_dir() or any((path / s / "labels").is_dir() for s in ("train", "val", "valid")):
        return "yolo"
    if any(path.glob("annotations/*.json")) or any(path.glob("*.json")) or any(path.glob("*/_annotations.coco.json")):
        return "coco"
    return None


def load_detection(data: str | Path, format: str = "auto", split: str = "train", val_fraction: float = 0.15,
                   classes: Sequence[str] | None = None) -> DetectionSet:
    """Read SPLIT of the data set at DATA; `classes` fixes the class order (e.g. a model's)."""
    if format not in FORMATS + ("auto",):
        raise BadInput(f"unknown data format '{format}'", f"use one of: auto, {', '.join(FORMATS)}")
    path = Path(data)
    if not path.exists():
        raise BadInput(f"data path '{data}' does not exist", "pass --data DIR (a VOC, COCO or YOLO data set)")
    if format == "auto":
        format = detect_format(path) or ""
        if not format:
            raise BadInput(f"cannot tell the format of the data at '{data}'",
                           "pass --format voc|coco|yolo (VOC: Annotations/ + JPEGImages/; COCO: annotations/*.json; "
                           "YOLO: images/ + labels/)")
    if format == "voc":
        ds = read_voc(path, split, classes, val_fraction)
    elif format == "coco":
        ds = read_coco(path, split, val_fraction)
    else:
        ds = read_yolo(path, split, val_fraction)
    if classes is not None and format != "voc":
        ds = _remap_classes(ds, list(classes))
    if not ds.samples:
        raise BadInput(f"split '{split}' of '{data}' holds no images")
    return ds


def _remap_classes(ds: DetectionSet, classes: list[str]) -> DetectionSet:
    if ds.classes == classes:
        return ds
    missing = [c for c in ds.classes if c not in classes]
    if missing:
        raise BadInput(f"the data has classes the model does not know: {', '.join(missing[:5])}",
                       f"the model's classes: {', '.join(classes)}")
    lut = np.array([classes.index(c) for c in ds.classes], np.int64)
    for s in ds.samples:
        s.labels = lut[s.labels] if len(s.labels) else s.labels
    ds.classes = classes
    return ds


# -- helpers -------------------------------------------------------------------------------
def _unique(paths: Iterable[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def _find_image(img_dir: Path, filename: str, image_id: str) -> Path:
    if filename and (img_dir / filename).is_file():
        return img_dir / filename
    for suf in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        if (img_dir / f"{image_id}{suf}").is_file():
            return img_dir / f"{image_id}{suf}"
    raise BadInput(f"no image for annotation '{image_id}' in '{img_dir}'")


def _resolve_image(dirs: list[Path], file_name: str) -> Path:
    for d in dirs:
        if (d / file_name).is_file():
            return d / file_name
    raise BadInput(f"COCO image '{file_name}' is in none of: {', '.join(str(d) for d in dirs[:4])}")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise BadInput(f"cannot read image '{path}': {type(e).__name__}") from e


def _copy_image(src: str, dest: Path) -> None:
    if Path(src).resolve() != dest.resolve():
        shutil.copyfile(src, dest)


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _num_text(v: float) -> str:
    v = float(v)
    return str(int(v)) if v == int(v) else f"{v:.2f}"


def load_image(path: str) -> np.ndarray:
    """RGB uint8 [H, W, 3]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
