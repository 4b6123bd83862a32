"""The gallery index: exact cosine k-NN, category voting, and the file the app loads.

Search is exact (the embeddings are unit length, so cosine similarity is a dot product):
NumPy in blocks by default, faiss's IndexFlatIP when faiss is installed and asked for (or
"auto"). Both give the same neighbours up to ties.

File format (`*.safetensors`, readable by any safetensors reader, and by hand in a few lines
of Kotlin or JavaScript):

    8 bytes   little-endian uint64 N: length of the JSON header
    N bytes   JSON header (UTF-8, padded with spaces to a multiple of 8)
    data      raw little-endian tensors at the byte offsets the header gives

    header = {
      "embeddings": {"dtype": "F32" | "F16", "shape": [count, dim], "data_offsets": [a, b]},
      "labels":     {"dtype": "I32", "shape": [count], "data_offsets": [b, c]},
      "__metadata__": {"format": "mobilize.retrieval-index/1", "dim": "...", "count": "...",
                       "metric": "cosine", "classes": JSON list of class names (labels index it),
                       "items": JSON list of item ids (gallery file paths), "model": model sha256,
                       "vote_k": "...", "vote_temperature": "..."}
    }

Rows of "embeddings" are L2-normalised; query with the model's output and take dot products.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import BadInput, MissingDependency

FORMAT = "mobilize.retrieval-index/1"
INDEX_FILE = "index.safetensors"
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I32": np.dtype("<i4")}


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def have_faiss() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def search(queries: np.ndarray, gallery: np.ndarray, k: int, backend: str = "auto",
           block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities and gallery indices, best first: ([Q, k], [Q, k])."""
    q = np.ascontiguousarray(queries, np.float32)
    g = np.ascontiguousarray(gallery, np.float32)
    k = int(min(k, len(g)))
    if k <= 0:
        raise BadInput("the gallery is empty", "add images to the gallery splits")
    if backend == "faiss" or (backend == "auto" and have_faiss()):
        try:
            import faiss
        except ImportError as e:
            raise MissingDependency("faiss-cpu", "--backend faiss") from e
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g)
        scores, idx = index.search(q, k)
        return scores, idx.astype(np.int64)
    if backend not in ("auto", "numpy"):
        raise BadInput(f"unknown search backend '{backend}'", "use numpy, faiss or auto")
    scores = np.empty((len(q), k), np.float32)
    idx = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), block):
        sim = q[s:s + block] @ g.T
        if k < sim.shape[1]:
            part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(sim.shape[1]), sim.shape).copy()
        ps = np.take_along_axis(sim, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        idx[s:s + block] = np.take_along_axis(part, order, 1)
        scores[s:s + block] = np.take_along_axis(ps, order, 1)
    return scores, idx


def vote(scores: np.ndarray, neighbour_labels: np.ndarray, num_classes: int,
         temperature: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-NN voting: each neighbour votes exp((s - s_best) / T) for its class.

    A small T trusts the closest neighbours (T -> 0 is 1-NN); a large T is a plain majority.
    Returns (predicted class [Q], confidence = winning share of the vote [Q]).
    """
    scores = np.asarray(scores, np.float64)
    w = np.exp((scores - scores[:, :1]) / max(temperature, 1e-6))
    votes = np.zeros((len(scores), num_classes))
    rows = np.repeat(np.arange(len(scores)), scores.shape[1])
    np.add.at(votes, (rows, neighbour_labels.ravel()), w.ravel())
    pred = votes.argmax(1)
    return pred, votes[np.arange(len(pred)), pred] / votes.sum(1)


@dataclass
class Index:
    embeddings: np.ndarray  # [N, D] float32, unit rows
    labels: np.ndarray  # [N] int, indexes `classes`
    classes: list[str]
    items: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.embeddings = l2n(self.embeddings)
        self.labels = np.asarray(self.labels, np.int64)
        if len(self.labels) != len(self.embeddings):
            raise ValueError("one label per embedding")

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def search(self, queries: np.ndarray, k: int = 10, backend: str = "auto"):
        return search(l2n(queries), self.embeddings, k, backend)

    def predict(self, queries: np.ndarray, k: int = 10, temperature: float = 0.1, backend: str = "auto"):
        """Category of each query by weighted voting of its k nearest gallery items."""
        scores, idx = self.search(queries, k, backend)
        pred, conf = vote(scores, self.labels[idx], len(self.classes), temperature)
        return [self.classes[p] for p in pred], conf

    # -- file -------------------------------------------------------------------------------
    def save(self, path: str | Path, fp16: bool = False) -> Path:
        """Atomic write of the safetensors-layout file described in the module docstring."""
        path = Path(path)
        emb = self.embeddings.astype("<f2" if fp16 else "<f4")
        lab = self.labels.astype("<i4")
        a, b = emb.nbytes, emb.nbytes + lab.nbytes
        meta = {"format": FORMAT, "dim": str(self.dim), "count": str(len(self)), "metric": "cosine",
                "classes": json.dumps(self.classes), "items": json.dumps(self.items)}
        meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in self.metadata.items()})
        header = {"embeddings": {"dtype": "F16" if fp16 else "F32", "shape": list(emb.shape), "data_offsets": [0, a]},
                  "labels": {"dtype": "I32", "shape": [len(lab)], "data_offsets": [a, b]},
                  "__metadata__": meta}
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            f.write(emb.tobytes())
            f.write(lab.tobytes())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Index":
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"index '{path}' does not exist", "build one with `mobilize index SOURCE --data PATH`")
        try:
            raw = path.read_bytes()
            (n,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8:8 + n])
            meta = header.pop("__metadata__")
            if meta.get("format") != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT}")
            body = raw[8 + n:]

            def tensor(name):
                h = header[name]
                a, b = h["data_offsets"]
                return np.frombuffer(body[a:b], _DTYPES[h["dtype"]]).reshape(h["shape"])

            emb = tensor("embeddings").astype(np.float32)
            labels = tensor("labels").astype(np.int64)
        except BadInput:
            raise
        except Exception as e:
            raise BadInput(f"'{path}' is not a mobilize retrieval index: {type(e).__name__}: {e}") from e
        classes = json.loads(meta.pop("classes"))
        items = json.loads(meta.pop("items", "[]"))
        for k in ("format", "dim", "count", "metric"):
            meta.pop(k, None)
        extra = {}
        for k, v in meta.items():
            try:
                extra[k] = json.loads(v)
            except (json.JSONDecodeError, TypeError):
                extra[k] = v
        return cls(emb, labels, classes, items, extra)


def merge_classes(*name_lists: Sequence[str]) -> list[str]:
    return sorted(set().union(*[set(n) for n in name_lists]))
