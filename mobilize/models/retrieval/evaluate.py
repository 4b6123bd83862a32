"""`mobilize eval` for retrieval: queries against a gallery, through any runtime.

The model comes from `open_predictor`, so a checkpoint (PyTorch) and an exported artifact
(onnx, ncnn, tfjs, tflite) go through the same code: same image decoding (the manifest's
preprocess, applied by `image_to_input`), same search, same metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BadInput


@dataclass
class EvalConfig:
    data: str = field(metadata={"help": "dataset root with SPLIT/CLASS/*.jpg", "metavar": "PATH"})
    query: str = field(default="val", metadata={"help": "query split(s), comma-separated"})
    gallery: str = field(default="train,catalog", metadata={
        "help": "gallery split(s), comma-separated; a missing 'catalog' is skipped"})
    rerank: bool = field(default=False, metadata={"help": "k-reciprocal re-ranking (Zhong et al. 2017)"})
    k1: int = field(default=20, metadata={"help": "re-ranking: k of the k-reciprocal sets"})
    k2: int = field(default=6, metadata={"help": "re-ranking: neighbours averaged in query expansion"})
    lambda_value: float = field(default=0.3, metadata={"help": "re-ranking: weight of the original distance"})
    vote_k: int = field(default=10, metadata={"help": "neighbours that vote for the category"})
    vote_temperature: float = field(default=0.1, metadata={"help": "voting weight exp((s - s_best) / T)"})
    backend: str = field(default="auto", metadata={"help": "exact search: numpy, faiss or auto (faiss when installed)",
                                                   "choices": ["auto", "numpy", "faiss"]})
    threads: int = field(default=0, metadata={"help": "runtime threads, torch's too for a checkpoint (0: default)"})
    target: str | None = field(default=None, metadata={"cli": False})


def embed_files(predictor, paths, reporter=None, desc: str = "embedding") -> tuple[np.ndarray, float]:
    """Embeddings of image files, preprocessed as the predictor's manifest says; (array, ms per image)."""
    from PIL import Image

    from ..._export import image_to_input

    shape = tuple(int(d) for d in predictor.inputs[0]["shape"])
    if len(shape) != 4 or shape[1] != 3:
        raise BadInput(f"the model's input {list(shape)} is not an image [N, 3, H, W]")
    one = (1,) + shape[1:]
    chunk = max(predictor.batch_size, 32)
    out, seconds = [], 0.0
    it = range(0, len(paths), chunk)
    if reporter is not None:
        it = reporter.bar(it, total=len(it), desc=desc, unit="batch")
    for s in it:
        batch = []
        for p in paths[s:s + chunk]:
            try:
                with Image.open(p) as img:
                    batch.append(image_to_input(img, one, predictor.preprocess)[0])
            except Exception as e:
                raise BadInput(f"cannot read image '{p}': {type(e).__name__}: {e}") from e
        t = time.perf_counter()
        out.append(predictor.predict(np.stack(batch))[0])
        seconds += time.perf_counter() - t
    emb = np.concatenate(out).astype(np.float32)
    return emb, 1000.0 * seconds / max(1, len(paths))


def coarse_classes(root: Path) -> dict[str, str]:
    """Optional ROOT/classes.csv with columns `class` and `coarse_class` (e.g. Granny-Smith -> Apple)."""
    import csv

    path = Path(root) / "classes.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "class" not in rows[0] or "coarse_class" not in rows[0]:
        return {}
    return {r["class"]: r["coarse_class"] for r in rows}


def evaluate(source, config: EvalConfig, target: str | None = None, reporter=None) -> dict:
    from ..._ui import SILENT
    from ...data.retrieval import read_splits
    from ...runtimes import open_predictor
    from .index import Index, merge_classes
    from .metrics import accuracy_calculator_metrics, embedding_metrics

    reporter = reporter or SILENT
    target = target or config.target
    root = Path(config.data)
    queries = read_splits(root, config.query)
    gallery = read_splits(root, config.gallery, optional=("catalog",))
    if config.vote_k < 1:
        raise BadInput("--vote-k must be at least 1")
    if config.rerank and (config.k1 < 1 or config.k2 < 1 or not 0 <= config.lambda_value <= 1):
        raise BadInput("re-ranking needs --k1 >= 1, --k2 >= 1 and --lambda-value in [0, 1]")
    with open_predictor(source, target, threads=config.threads or None) as predictor:
        if predictor.family not in (None, "retrieval"):
            raise BadInput(f"'{source}' is a {predictor.family} model, not a retrieval model")
        if config.threads and predictor.kind == "torch":
            import torch

            torch.set_num_threads(config.threads)
        q_emb, q_ms = embed_files(predictor, queries.paths, reporter, "embedding queries")
        g_emb, g_ms = embed_files(predictor, gallery.paths, reporter, "embedding gallery")
        kind = predictor.kind
    classes = merge_classes(queries.labels, gallery.labels)
    ql, gl = queries.label_ids(classes), gallery.label_ids(classes)

    t = time.perf_counter()
    metrics = embedding_metrics(q_emb, ql, g_emb, gl, rerank=config.rerank, k1=config.k1, k2=config.k2,
                                lambda_value=config.lambda_value, backend=config.backend)
    search_ms = 1000.0 * (time.perf_counter() - t) / max(1, len(q_emb))
    if not config.rerank:  # the reference implementation, where it applies
        metrics.update(accuracy_calculator_metrics(q_emb, ql, g_emb, gl))
    index = Index(g_emb, gl, classes)
    predicted, _ = index.predict(q_emb, config.vote_k, config.vote_temperature, config.backend)
    category = float(np.mean([p == t for p, t in zip(predicted, queries.labels)]))
    coarse = coarse_classes(root)
    result = {"recall@1": metrics["recall@1"], "recall@5": metrics["recall@5"], "recall@10": metrics["recall@10"],
              "map@r": metrics["map@r"], "category_accuracy": category,
              **({"coarse_category_accuracy": float(np.mean([coarse.get(p, p) == coarse.get(t, t) for p, t in
                                                             zip(predicted, queries.labels)]))} if coarse else {}),
              "queries": metrics["queries"], "queries_unmatched": metrics["queries_unmatched"],
              "gallery": len(gallery), "rerank": bool(config.rerank), "runtime": kind,
              "embed_ms_per_image": round((q_ms * len(q_emb) + g_ms * len(g_emb)) / max(1, len(q_emb) + len(g_emb)), 3),
              "search_ms_per_query": round(search_ms, 3)}
    if config.rerank:
        result["rerank_params"] = {"k1": config.k1, "k2": config.k2, "lambda": config.lambda_value}
    return result
