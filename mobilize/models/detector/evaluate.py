"""COCO-style evaluation (pycocotools) of a checkpoint or of an artifact in any runtime.

One code path: a `predict(batch) -> [boxes, scores]` function, from
`mobilize.runtimes.open_predictor` for `mobilize eval` (PyTorch for a checkpoint, the target's
runtime for an artifact) or from the model in training, then the same letterbox,
post-processing and pycocotools run. So "eval on the artifact equals eval on the checkpoint"
compares runtimes, not code.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...data.detection import DetectionSample, load_detection, load_image
from ...errors import BadInput
from .deploy import IOU_THRESHOLD, MAX_DETECTIONS, image_input, postprocess

EVAL_SCORE_THRESHOLD = 0.01


@dataclass
class EvalConfig:
    data: str = field(metadata={"help": "data set directory (or COCO .json file)", "metavar": "PATH"})
    format: str = field(default="auto", metadata={"help": "auto, voc, coco or yolo"})
    split: str = field(default="val", metadata={"help": "which split to evaluate"})
    target: str | None = field(default=None, metadata={"help": "runtime for an artifact", "cli": False})
    score_threshold: float = field(default=EVAL_SCORE_THRESHOLD,
                                   metadata={"help": "drop detections below this score (low: mAP integrates over scores)"})
    iou_threshold: float = field(default=IOU_THRESHOLD, metadata={"help": "NMS IoU threshold"})
    max_detections: int = field(default=MAX_DETECTIONS, metadata={"help": "detections kept per image"})
    val_fraction: float = field(default=0.15, metadata={"help": "share of images in val when the data has no split "
                                                                 "files (must match training)"})
    plot: str = field(default="auto", metadata={"help": "precision-recall PNG: a path, 'auto' (next to SOURCE) or 'none'"})
    threads: int | None = field(default=None, metadata={"help": "runtime threads"})


def detect(predict: Callable[[np.ndarray], Sequence[np.ndarray]], samples: Sequence[DetectionSample], imgsz: int,
           score_threshold: float, iou_threshold: float, max_detections: int, batch: int = 1,
           bar=None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per sample: (boxes [D, 4] image pixels, scores [D], labels [D])."""
    results = []
    it = range(0, len(samples), batch)
    for start in (bar(it, total=len(it), desc="detect") if bar else it):
        part = samples[start:start + batch]
        inputs, scales = zip(*(image_input(load_image(s.image), imgsz) for s in part))
        boxes, scores = predict(np.stack(inputs))[:2]
        for k, s in enumerate(part):
            results.append(postprocess(boxes[k], scores[k], score_threshold, iou_threshold, max_detections,
                                       scales[k], (s.width, s.height)))
    return results


def coco_metrics(samples: Sequence[DetectionSample], classes: Sequence[str], detections, max_detections: int = 100) -> dict:
    """mAP@0.5, mAP@0.5:0.95 and per-class AP from pycocotools; `pr` is COCOeval's precision at IoU 0.5."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for k, (s, (boxes, scores, labels)) in enumerate(zip(samples, detections), 1):
        images.append({"id": k, "width": s.width, "height": s.height, "file_name": Path(s.image).name})
        for (x1, y1, x2, y2), label, ign in zip(s.boxes.tolist(), s.labels.tolist(), s.ignore.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": int(ign)})
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            dets.append({"image_id": k, "category_id": label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(classes)]
    out = {"map50": 0.0, "map50_95": 0.0, "images": len(samples), "boxes": len(anns), "detections": len(dets)}
    per_class = {c: {"ap50": None, "ap50_95": None} for c in classes}
    pr = None
    if dets and anns:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; --json owns stdout
            gt = COCO()
            gt.dataset = {"images": images, "annotations": anns, "categories": cats}
            gt.createIndex()
            dt = gt.loadRes(dets)
            ev = COCOeval(gt, dt, "bbox")
            ev.params.maxDets = [1, 10, max_detections]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out["map50_95"], out["map50"] = float(ev.stats[0]), float(ev.stats[1])
        precision = ev.eval["precision"]  # [IoU, recall, class, area, maxDets]
        pr = precision[0, :, :, 0, -1]
        for k, c in enumerate(classes):
            p50, p = precision[0, :, k, 0, -1], precision[:, :, k, 0, -1]
            if (p50 > -1).any():
                per_class[c] = {"ap50": float(p50[p50 > -1].mean()), "ap50_95": float(p[p > -1].mean())}
    for c, v in per_class.items():
        out[f"ap50/{c}"] = v["ap50"]
        out[f"ap50_95/{c}"] = v["ap50_95"]
    out["_pr"] = pr
    return out


def save_pr_plot(pr: np.ndarray | None, classes: Sequence[str], metrics: dict, path: Path, title: str) -> Path:
    """Precision-recall curves at IoU 0.5, one per class; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = np.linspace(0, 1, 101)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for k, c in enumerate(classes):
        if pr is not None and (pr[:, k] > -1).any():
            ax.plot(recall, np.clip(pr[:, k], 0, None), label=f"{c} (AP50 {metrics[f'ap50/{c}']:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{title}\nmAP@0.5 {metrics['map50']:.3f}   mAP@0.5:0.95 {metrics['map50_95']:.3f}")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _plot_path(source: str, target: str | None, split: str, plot: str) -> Path | None:
    if plot == "none":
        return None
    if plot != "auto":
        return Path(plot)
    src = Path(source)
    if src.is_dir():
        return src.parent / f"{src.name}-{target}-pr-{split}.png"
    return src.with_name(f"{src.stem}-pr-{split}.png")


def evaluate(source: str, config: EvalConfig, target: str | None = None, reporter=None) -> dict:
    from ...runtimes import open_predictor
    from ..._ui import SILENT

    log = reporter or SILENT
    target = target or config.target
    start = time.perf_counter()
    with open_predictor(source, target, config.threads) as predictor:
        if predictor.family != "detector":
            raise BadInput(f"'{source}' is not a detector (family: {predictor.family})")
        imgsz = int(predictor.metadata["input_size"][0])
        classes = list(predictor.labels)
        data = load_detection(config.data, config.format, config.split, config.val_fraction, classes)
        detections = detect(predictor.predict, data.samples, imgsz, config.score_threshold, config.iou_threshold,
                            config.max_detections, batch=8 if predictor.kind == "torch" else predictor.batch_size,
                            bar=log.bar)
        kind = predictor.kind
    metrics = coco_metrics(data.samples, classes, detections, config.max_detections)
    pr = metrics.pop("_pr")
    result = {"source": str(source), "runtime": kind, "split": config.split, "data": str(config.data), **metrics}
    path = _plot_path(str(source), kind, config.split, config.plot)
    if path is not None:
        result["pr_curve"] = str(save_pr_plot(pr, classes, metrics, path, f"{Path(source).name} ({kind}) on {config.split}"))
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result
