"""Build the gallery index from a model (any runtime) and record it in the artifact's manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ...errors import BadInput
from .index import FORMAT, INDEX_FILE, Index


def build_index(source: str, data: str, gallery: str = "train,catalog", target: str | None = None,
                out: str | None = None, fp16: bool = False, reporter=None) -> dict:
    from ...data.retrieval import read_splits
    from ...manifest import Manifest, is_artifact
    from ...runtimes import open_predictor
    from ...spec import sha256_file
    from .evaluate import embed_files

    src = Path(source)
    artifact = src.is_dir() and is_artifact(src)
    if out is None:
        if not artifact:
            raise BadInput("--out is needed when SOURCE is a checkpoint", "e.g. --out gallery.safetensors")
        out_path = src / INDEX_FILE
    else:
        out_path = Path(out)
        if out_path.is_dir():
            raise BadInput(f"--out '{out}' is a directory", "name the index file, e.g. --out index.safetensors")
    items = read_splits(data, gallery, optional=("catalog",))
    with open_predictor(source, target) as predictor:
        if predictor.family not in (None, "retrieval"):
            raise BadInput(f"'{source}' is a {predictor.family} model, not a retrieval model")
        emb, _ = embed_files(predictor, items.paths, reporter, "embedding gallery")
        runtime = predictor.kind
    classes = items.classes
    root = Path(data)
    rel = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in items.paths]
    model_sha = None
    if artifact:
        model_sha = Manifest.load(src).source.get("sha256")
    elif src.is_file():
        model_sha = sha256_file(src)
    index = Index(emb, items.label_ids(classes), classes, rel,
                  {"model_sha256": model_sha or "", "runtime": runtime, "gallery": gallery})
    index.save(out_path, fp16=fp16)
    result = {"file": str(out_path), "count": len(index), "dim": index.dim, "classes": len(classes),
              "bytes": out_path.stat().st_size, "runtime": runtime, "format": FORMAT}
    if artifact and out_path.resolve().parent == src.resolve():
        manifest = Manifest.load(src)
        manifest.metadata["index"] = {"file": out_path.name, "format": FORMAT, "count": len(index), "dim": index.dim,
                                      "dtype": "float16" if fp16 else "float32", "gallery": gallery,
                                      "sha256": sha256_file(out_path), "built_with": runtime}
        manifest.save(src)
        result["manifest"] = str(src / "manifest.json")
    return result


def lookup(source: str, index_file: str, images: Sequence[str], target: str | None = None, k: int = 5) -> list[dict]:
    """Top-k gallery matches and the voted category for a few image files."""
    from ...runtimes import open_predictor
    from .evaluate import embed_files

    for im in images:
        if not Path(im).is_file():
            raise BadInput(f"--query image '{im}' does not exist")
    index = Index.load(index_file)
    with open_predictor(source, target) as predictor:
        q, _ = embed_files(predictor, [Path(i) for i in images])
    scores, idx = index.search(q, k)
    categories, conf = index.predict(q, k=max(k, 10))
    out = []
    for i, im in enumerate(images):
        matches = [{"item": index.items[j] if index.items else int(j), "label": index.classes[index.labels[j]],
                    "score": float(s)} for s, j in zip(scores[i], idx[i])]
        out.append({"image": im, "category": categories[i], "confidence": float(conf[i]), "matches": matches})
    return out
