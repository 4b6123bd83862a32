"""Data cleaning for image-folder datasets: near-duplicates and per-class outliers.

Two planners and one mover, so a dry run and --apply share every decision:

- `plan_dedup`: perceptual difference hashes (dHash: 64 bits saying whether each pixel of a
  9x8 grey thumbnail is brighter than its right neighbour). Images within `threshold` bits
  are duplicates; each group keeps its first file (sorted relative path), the rest move.
  Groups that span splits (train/val leakage) or classes (label conflicts) are flagged.
- `plan_clean`: per SPLIT/CLASS folder, DBSCAN on the embeddings (cosine) finds the largest
  tight cluster; images outside it come back when they lie within `reclaim` of a cluster
  member; the remaining outliers move. A class where the cluster would lose more than
  `max_fraction` of its images is left alone (then the "cluster" is probably not the class).

Nothing is ever deleted: `apply_plan` moves files to ROOT/.quarantine/RUN/<relative path>
and writes RUN/moves.json (from, to, reason), which `restore` reads to move them back.
Readers skip dot-folders, so quarantined files drop out of training and evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import BadInput
from .retrieval import IMAGE_SUFFIXES

QUARANTINE = ".quarantine"
MOVES = "moves.json"


@dataclass
class Move:
    path: str  # relative to the dataset root
    reason: str
    detail: dict = field(default_factory=dict)


@dataclass
class Plan:
    kind: str  # dedup | clean
    root: str
    moves: list[Move] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    applied_to: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["count"] = len(self.moves)
        d["applied"] = self.applied_to is not None
        return d


def image_files(root: Path) -> list[Path]:
    """Every image under ROOT, skipping dot- and underscore-folders (the quarantine among them)."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"'{root}' is not a directory", "give a dataset root (SPLIT/CLASS/*.jpg) or a folder of images")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for f in sorted(filenames):
            if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."):
                out.append(Path(dirpath) / f)
    return out


# -- dHash duplicates -----------------------------------------------------------------------
def dhash(path: Path, size: int = 8) -> int:
    """64-bit difference hash: robust to resizing, re-encoding and small colour changes."""
    from PIL import Image

    with Image.open(path) as img:
        g = np.asarray(img.convert("L").resize((size + 1, size), Image.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0]) if size == 8 else int("".join("1" if b else "0" for b in bits), 2)


def hamming_pairs(hashes: Sequence[int], threshold: int, block: int = 2048) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j with Hamming distance <= threshold, in blocks (memory stays small)."""
    h = np.array(hashes, dtype=np.uint64)
    bits = np.unpackbits(h.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).astype(np.int16)
    out = []
    for s in range(0, len(bits), block):
        a = bits[s:s + block]
        dist = a @ (1 - bits).T + (1 - a) @ bits.T
        ii, jj = np.nonzero(dist <= threshold)
        for i, j in zip(ii + s, jj):
            if i < j:
                out.append((int(i), int(j), int(dist[i - s, j])))
    return out


def _groups(n: int, pairs) -> list[list[int]]:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _split_class(rel: Path) -> tuple[str, str]:
    parts = rel.parts
    if len(parts) >= 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return "", parts[0]
    return "", ""


def plan_dedup(root: str | Path, threshold: int = 4, reporter=None) -> Plan:
    root = Path(root)
    if not 0 <= threshold <= 32:
        raise BadInput(f"--threshold {threshold} is out of range", "use 0 (identical hashes) to 32 bits of 64")
    files = image_files(root)
    plan = Plan("dedup", str(root), stats={"images": len(files), "threshold_bits": threshold})
    it = files if reporter is None else reporter.bar(files, total=len(files), desc="hashing")
    hashes = []
    for f in it:
        try:
            hashes.append(dhash(f))
        except Exception as e:
            raise BadInput(f"cannot read image '{f}': {type(e).__name__}: {e}") from e
    pairs = hamming_pairs(hashes, threshold)
    dist = {(i, j): d for i, j, d in pairs}
    groups = _groups(len(files), pairs)
    cross_split = cross_class = 0
    for g in groups:
        rels = [files[i].relative_to(root) for i in g]
        keep = rels[0]
        splits = {_split_class(r)[0] for r in rels}
        classes = {_split_class(r)[1] for r in rels}
        cross_split += len(splits) > 1
        cross_class += len(classes) > 1
        for i, r in zip(g[1:], rels[1:]):
            d = dist.get((g[0], i), dist.get((i, g[0])))
            reason = "duplicate"
            if _split_class(r)[1] != _split_class(keep)[1]:
                reason = "duplicate with another class (label conflict)"
            elif _split_class(r)[0] != _split_class(keep)[0]:
                reason = "duplicate across splits (leakage)"
            plan.moves.append(Move(str(r), reason, {"of": str(keep), "bits": d}))
    plan.stats.update({"groups": len(groups), "cross_split_groups": cross_split, "cross_class_groups": cross_class})
    return plan


# -- embedding outliers ---------------------------------------------------------------------
def pixel_embedding(paths: Sequence[Path]) -> np.ndarray:
    """A weak, model-free descriptor (colour layout + colour histogram): catches gross outliers only."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as img:
            rgb = np.asarray(img.convert("RGB").resize((8, 8), Image.BILINEAR), np.float32) / 255.0
            hsv = np.asarray(img.convert("HSV").resize((32, 32), Image.BILINEAR), np.float32) / 255.0
        layout = (rgb - rgb.mean()).ravel()
        hist = np.concatenate([np.histogram(hsv[..., c], 8, (0, 1))[0] for c in range(3)]).astype(np.float32)
        hist = np.sqrt(hist / hist.sum() * 3)
        out.append(np.concatenate([layout / max(np.linalg.norm(layout), 1e-6), hist / max(np.linalg.norm(hist), 1e-6)]))
    return np.stack(out).astype(np.float32)


def model_embedding(source: str, target: str | None = None, reporter=None) -> Callable[[Sequence[Path]], np.ndarray]:
    """Embeddings from a retrieval checkpoint or artifact (any runtime), as `mobilize eval` computes them."""
    from ..runtimes import open_predictor

    predictor = open_predictor(source, target)
    if predictor.family not in (None, "retrieval"):
        raise BadInput(f"--model '{source}' is a {predictor.family} model", "give a retrieval checkpoint or artifact")

    def embed(paths):
        from ..models.retrieval.evaluate import embed_files

        return embed_files(predictor, list(paths))[0]

    embed.close = predictor.close  # type: ignore[attr-defined]
    return embed


def class_folders(root: Path) -> list[Path]:
    """SPLIT/CLASS folders (or CLASS folders when ROOT is a split) that hold images directly."""
    folders = sorted({f.parent for f in image_files(root)})
    if not folders:
        raise BadInput(f"'{root}' holds no images", "layout is ROOT/SPLIT/CLASS/*.jpg")
    return folders


def clean_class(emb: np.ndarray, eps: float, min_samples: int, reclaim: float) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, distance of each image to the nearest member of the largest cluster)."""
    from sklearn.cluster import DBSCAN

    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit(emb).labels_
    clusters = [c for c in np.unique(labels) if c >= 0]
    if not clusters:
        return np.ones(len(emb), bool), np.zeros(len(emb))
    sizes = [(int(np.sum(labels == c)), -int(c)) for c in clusters]
    main = -max(sizes)[1]
    members = labels == main
    dist = 1.0 - emb @ emb[members].T
    nearest = np.where(members, 0.0, dist.min(1))
    return members | (nearest <= reclaim), nearest


def plan_clean(root: str | Path, embed: Callable[[Sequence[Path]], np.ndarray] | None = None, eps: float = 0.25,
               min_samples: int = 3, reclaim: float = 0.35, max_fraction: float = 0.3, min_class_size: int = 5,
               reporter=None, embedding_name: str = "pixels") -> Plan:
    root = Path(root)
    if not 0 < eps < 2 or not 0 <= reclaim < 2:
        raise BadInput("--eps and --reclaim are cosine distances in (0, 2)")
    if min_samples < 1:
        raise BadInput("--min-samples must be at least 1")
    embed = embed or pixel_embedding
    folders = class_folders(root)
    plan = Plan("clean", str(root), stats={"classes": len(folders), "eps": eps, "min_samples": min_samples,
                                           "reclaim": reclaim, "max_fraction": max_fraction,
                                           "embedding": embedding_name})
    it = folders if reporter is None else reporter.bar(folders, total=len(folders), desc="clustering classes")
    images = 0
    for folder in it:
        files = [f for f in image_files(folder) if f.parent == folder]
        images += len(files)
        rel_folder = folder.relative_to(root)
        if len(files) < min_class_size:
            continue
        keep, nearest = clean_class(np.asarray(embed(files), np.float32), eps, min_samples, reclaim)
        drop = np.flatnonzero(~keep)
        if len(drop) == 0:
            continue
        if len(drop) > max_fraction * len(files):
            plan.notes.append(f"{rel_folder}: left alone: the largest cluster would drop {len(drop)} of "
                              f"{len(files)} images (more than --max-fraction {max_fraction})")
            continue
        for i in drop:
            plan.moves.append(Move(str(files[i].relative_to(root)), "outlier",
                                   {"distance": round(float(nearest[i]), 4)}))
    plan.stats["images"] = images
    return plan


# -- moving and restoring -------------------------------------------------------------------
def apply_plan(plan: Plan) -> Path | None:
    """Move the planned files into ROOT/.quarantine/<kind>-<time>/, logging every move first."""
    if not plan.moves:
        return None
    root = Path(plan.root)
    run = root / QUARANTINE / f"{plan.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    k = 1
    while run.exists():
        run = run.with_name(f"{run.name.split('+')[0]}+{k}")
        k += 1
    run.mkdir(parents=True)
    log = {"kind": plan.kind, "root": str(root.resolve()), "stats": plan.stats, "moves": []}
    for m in plan.moves:
        src = root / m.path
        if not src.is_file():
            raise BadInput(f"'{src}' vanished since the plan was made", "run the command again")
        log["moves"].append({"from": m.path, "to": str(Path(run.name) / m.path), "reason": m.reason, **m.detail})
    _write_json(run / MOVES, log)
    for m in plan.moves:
        dest = run / m.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(root / m.path), str(dest))
    plan.applied_to = str(run)
    return run


def plan_restore(root: str | Path) -> list[dict]:
    """Every quarantined file that can go back (its original place is free)."""
    root = Path(root)
    q = root / QUARANTINE
    out = []
    if not q.is_dir():
        return out
    for log_path in sorted(q.glob(f"*/{MOVES}")):
        log = json.loads(log_path.read_text())
        for m in log["moves"]:
            src = q / m["to"]
            if src.is_file():
                out.append({"from": str(Path(QUARANTINE) / m["to"]), "to": m["from"], "reason": m["reason"],
                            "blocked": (root / m["from"]).exists()})
    return out


def restore(root: str | Path, moves: list[dict]) -> int:
    root = Path(root)
    done = 0
    for m in moves:
        if m["blocked"]:
            continue
        dest = root / m["to"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(root / m["from"]), str(dest))
        done += 1
    for log_path in sorted((root / QUARANTINE).glob(f"*/{MOVES}")):
        run = log_path.parent
        if not any(p.is_file() and not p.name.startswith("moves") for p in run.rglob("*")):
            log_path.rename(run / "moves.restored.json")  # the log stays: nothing is deleted
    return done


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
