"""`mobilize demo` stage for the detector: synthetic shapes -> train (about a minute on a CPU)
-> export to every target -> evaluate one artifact against its checkpoint.

The point is the whole path on data that exists everywhere, not a good detector: the mAP is
whatever a minute of training gives; what must hold is that the artifact scores what the
checkpoint scores.
"""

from __future__ import annotations

from pathlib import Path

DEMO_TARGET = "ncnn"  # the phone runtime; the others are verified by the export's parity table


def demo(workdir: Path, reporter=None) -> dict:
    import shutil

    from ..._export import export
    from ..._ui import SILENT, table
    from ...commands._output import verification_table
    from ...data.detection_synthetic import make_synthetic
    from .config import TrainConfig
    from .evaluate import EvalConfig, evaluate
    from .train import train

    log = reporter or SILENT
    workdir = Path(workdir)
    if workdir.exists():  # a demo always starts from scratch
        shutil.rmtree(workdir)
    data = make_synthetic(workdir / "data", "voc", train=160, val=40, size=160, seed=0)
    log("detector: training on synthetic shapes (circle, square, triangle)")
    summary = train(TrainConfig(data=str(data), out=str(workdir / "run"), epochs=30, imgsz=160, width=0.5,
                                neck_channels=64, batch=16, warmup=40, eval_interval=5, threads=1,
                                name="detector-demo"), log)
    manifest = export(summary["best"], "all", workdir / "artifact", reporter=log)
    rows = []
    cfg = EvalConfig(data=str(data), split="val", plot="none")
    ref = evaluate(summary["best"], cfg, None, log)
    rows.append(["checkpoint (pytorch)", ref["map50"], ref["map50_95"]])
    got = None
    if manifest.location and manifest.targets[DEMO_TARGET].ok:
        got = evaluate(str(manifest.location), cfg, DEMO_TARGET, log)
        rows.append([f"artifact ({DEMO_TARGET})", got["map50"], got["map50_95"]])
    same = got is not None and abs(got["map50"] - ref["map50"]) < 0.005 and abs(got["map50_95"] - ref["map50_95"]) < 0.005
    text = (verification_table(manifest) + "\n\n" + table(rows, ["evaluated on val", "mAP@0.5", "mAP@0.5:0.95"]))
    return {"title": "detector: train on synthetic shapes (160 px, 30 epochs), export, evaluate artifact vs checkpoint",
            "table": text, "ok": bool(manifest.ok and same),
            "params": summary["params"], "train_seconds": summary["train_seconds"],
            "artifact": str(manifest.location) if manifest.location else None}
