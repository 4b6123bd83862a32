"""From checkpoint to ModelSpec, and from model outputs to detections (the Python post-processing).

The spec's module is `Detector` in eval mode, whose forward ends in decoded boxes and scores;
the manifest records how to feed it (letterbox, mean/std, RGB) and how to read it (output
layout, thresholds), so an app can reproduce `postprocess` exactly.
"""

from __future__ import annotations

import numpy as np

from ...data.detection_transforms import letterbox, normalize, preprocess_record
from ...errors import BadInput
from ...spec import ModelSpec, SourceInfo, TensorSpec

SCORE_THRESHOLD = 0.3  # for apps; evaluation uses a lower one (mAP integrates over all scores)
IOU_THRESHOLD = 0.6
MAX_DETECTIONS = 100


def model_from_checkpoint(ckpt: dict, imgsz: int | None = None):
    from .model import DetectorConfig, build_detector

    try:
        cfg = DetectorConfig.from_dict(dict(ckpt["config"]["model"]))
    except (KeyError, TypeError) as e:
        raise BadInput("the detector checkpoint has no model configuration (config.model)") from e
    if imgsz is not None:
        cfg.imgsz = int(imgsz)
    model = build_detector(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        raise BadInput(f"the detector checkpoint's weights do not fit its configuration: {str(e).splitlines()[0][:200]}") from e
    return model.eval()


def check_imgsz(imgsz: int) -> int:
    if imgsz < 64 or imgsz % 32:
        raise BadInput(f"input size {imgsz} is not usable", "use a multiple of 32, at least 64 (e.g. 320)")
    return imgsz


def spec_from_checkpoint(ckpt: dict, input_shapes=None) -> ModelSpec:
    imgsz, batch = None, 1
    if input_shapes:
        shape = tuple(input_shapes[0])
        if len(input_shapes) != 1 or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise BadInput(f"the detector takes one input [N, 3, S, S]; got {','.join(map(str, shape))}")
        batch, imgsz = int(shape[0]), check_imgsz(int(shape[2]))
    model = model_from_checkpoint(ckpt, imgsz)
    cfg = model.cfg
    s = cfg.imgsz
    meta = dict(ckpt.get("meta") or {})
    labels = list(meta.get("classes") or [f"class{k}" for k in range(cfg.num_classes)])
    n = int(model.points.shape[0])
    metadata = {
        "task": "detection",
        "input_size": [s, s],
        "num_classes": cfg.num_classes,
        "score_threshold": float(meta.get("score_threshold", SCORE_THRESHOLD)),
        "iou_threshold": float(meta.get("iou_threshold", IOU_THRESHOLD)),
        "max_detections": MAX_DETECTIONS,
        "output_layout": {
            "boxes": f"[{batch}, {n}, 4]: x1, y1, x2, y2 in input pixels; divide by the letterbox scale for image pixels",
            "scores": f"[{batch}, {n}, {cfg.num_classes}]: per-class probability (sigmoid), in labels order",
            "locations": f"{n} = sum over strides {cfg.strides} of (S / stride)^2, row-major, finest level first",
        },
        "postprocess": "keep scores >= score_threshold; per-class NMS at iou_threshold; keep the max_detections best",
        "architecture": {k: v for k, v in cfg.to_dict().items() if k != "num_classes"},
    }
    trained_size = int(ckpt["config"]["model"].get("imgsz", s))
    for key in ("params", "flops", "metrics"):
        if key in meta and (key != "flops" or trained_size == s):  # FLOPs were counted at the training size
            metadata[key] = meta[key]

    def sample_inputs(rng):
        from ...data.detection_synthetic import sample_input

        return [np.concatenate([sample_input(rng, s) for _ in range(batch)])]

    def calib_inputs(image):
        canvas, _ = letterbox(np.asarray(image.convert("RGB")), s)
        return [np.repeat(normalize(canvas)[None], batch, 0)]

    return ModelSpec(
        name=str(meta.get("name") or "detector"),
        inputs=[TensorSpec("image", (batch, 3, s, s), "float32", "NCHW", "letterboxed, normalised RGB image")],
        source=SourceInfo("checkpoint"),
        module=model,
        output_names=["boxes", "scores"],
        preprocess=preprocess_record(s),
        labels=labels,
        family="detector",
        metadata=metadata,
        sample_inputs=sample_inputs,
        calib_inputs=calib_inputs,
    )


# -- post-processing -----------------------------------------------------------------------
def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def postprocess(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
                max_detections: int = MAX_DETECTIONS, scale: tuple[float, float] = (1.0, 1.0),
                image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's outputs ([N, 4], [N, C]) -> (boxes [D, 4] in image pixels, scores [D], labels [D]).

    Every (location, class) pair above the threshold is a candidate, as in COCO practice, and
    NMS runs per class (boxes offset by class so one call does all classes).
    """
    loc, cls = np.nonzero(scores >= score_threshold)
    b = boxes[loc].astype(np.float64)
    s = scores[loc, cls].astype(np.float64)
    if len(s) > 20 * max_detections:  # bound the NMS work; the low scores would not survive anyway
        top = np.argsort(-s, kind="stable")[:20 * max_detections]
        b, s, cls = b[top], s[top], cls[top]
    b = b / np.array([scale[0], scale[1], scale[0], scale[1]])
    if image_size is not None:
        w, h = image_size
        b = np.clip(b, 0, [w, h, w, h])
    offset = cls[:, None] * (b.max() + 1.0 if len(b) else 0.0)
    keep = nms(b + offset, s, iou_threshold)[:max_detections]
    return b[keep].astype(np.float32), s[keep].astype(np.float32), cls[keep].astype(np.int64)


def image_input(image: np.ndarray, imgsz: int) -> tuple[np.ndarray, tuple[float, float]]:
    canvas, scale = letterbox(image, imgsz)
    return normalize(canvas), scale
