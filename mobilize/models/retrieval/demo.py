"""`mobilize demo` stage: synthetic products -> train (about a minute on CPU) -> export -> eval.

Shows the whole retrieval path on data mobilize draws itself: the metrics of the checkpoint
in PyTorch and of each exported artifact in its own runtime, computed by the same code.
"""

from __future__ import annotations

from pathlib import Path

# MobileNet from scratch (not the default ImageNet-initialised backbone): the demo shows the whole path on
# synthetic products in about a minute and needs no weights
DEMO_TRAIN = dict(backbone="mobilenet_v1", pretrained="none", input_size=64, width=0.5, epochs=30,
                  classes_per_batch=8, samples_per_class=4, eval_every=0, lr=3e-3, warmup_epochs=1.0)


def run(workdir: Path, reporter) -> dict:
    from ..._export import export
    from ..._ui import table
    from ...data.retrieval import make_synthetic_products
    from .build_index import build_index
    from .evaluate import EvalConfig, evaluate
    from .train import TrainConfig, train

    workdir = Path(workdir)
    data = workdir / "products"
    if not data.exists():
        make_synthetic_products(data, classes=12, train_per_class=16, val_per_class=4, size=64, seed=0)
    run_dir = workdir / "run"
    if (run_dir / "model.pt").exists():
        ckpt = run_dir / "model.pt"
    else:
        summary = train(TrainConfig(data=str(data), out=str(run_dir), resume=(run_dir / "last.pt").exists(),
                                    **DEMO_TRAIN), reporter)
        ckpt = Path(summary["checkpoint"])
    manifest = export(str(ckpt), "all", workdir / "artifact", reporter=reporter)
    cfg = EvalConfig(data=str(data))
    rows = []
    reference = evaluate(str(ckpt), cfg, None, reporter)
    rows.append(["pytorch (checkpoint)", reference["recall@1"], reference["recall@5"], reference["map@r"], "-"])
    agree = True
    for target, record in manifest.targets.items():
        if record.status != "ok" or manifest.location is None:
            rows.append([target, None, None, None, record.status])
            continue
        m = evaluate(str(manifest.location), cfg, target, reporter)
        same = abs(m["recall@1"] - reference["recall@1"]) <= 0.005 and abs(m["map@r"] - reference["map@r"]) <= 0.005
        agree = agree and same
        rows.append([target, m["recall@1"], m["recall@5"], m["map@r"], "same" if same else "DIFFERS"])
    index = None
    if manifest.location is not None and "onnx" in manifest.targets and manifest.targets["onnx"].ok:
        index = build_index(str(manifest.location), str(data), target="onnx", reporter=reporter)
    reranked = evaluate(str(ckpt), EvalConfig(data=str(data), rerank=True, k1=8, k2=3), None, reporter)
    rows.append(["pytorch + re-ranking", reranked["recall@1"], reranked["recall@5"], reranked["map@r"], "-"])
    return {"title": "retrieval: synthetic products (12 classes, 64 px), train -> export -> eval in each runtime",
            "table": table(rows, ["model", "recall@1", "recall@5", "map@r", "vs checkpoint"]),
            "ok": bool(manifest.ok and agree), "artifact": str(manifest.location) if manifest.location else None,
            "index": index["file"] if index else None}
