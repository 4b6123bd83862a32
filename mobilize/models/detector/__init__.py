"""The detector family: a depthwise-separable single-stage detector (NanoDet / GFL style).

    mobilize train detector --data DATA --out runs/det            # VOC, COCO or YOLO data
    mobilize eval runs/det/best.pt --data DATA --split val
    mobilize export runs/det/best.pt --target all --out artifacts/det
    mobilize eval artifacts/det --target ncnn --data DATA --split val

Modules: model (backbone, PAN neck, GFL head; the exported graph decodes boxes), loss (ATSS,
quality focal, GIoU, distribution focal), train, evaluate (pycocotools), deploy (spec and
post-processing), demo. Heavy imports wait until a command needs them.
"""

from __future__ import annotations

from .._registry import Family, register_family
from .deploy import spec_from_checkpoint
from .evaluate import EvalConfig
from .config import TrainConfig


def _train(config, reporter=None) -> dict:
    from .train import train

    return train(config, reporter)


def _evaluate(source, config, target=None, reporter=None) -> dict:
    from .evaluate import evaluate

    return evaluate(source, config, target, reporter)


def _demo(workdir, reporter=None) -> dict:
    from .demo import demo

    return demo(workdir, reporter)


register_family(Family(
    name="detector",
    description="Depthwise-separable single-stage detector (MobileNetV2-style backbone, PAN neck, GFL head). "
                "Trains on Pascal VOC, COCO JSON or YOLO txt data; exports with box decoding in the graph.",
    spec_from_checkpoint=spec_from_checkpoint,
    train_config=TrainConfig,
    train=_train,
    eval_config=EvalConfig,
    evaluate=_evaluate,
    demo=_demo,
    demo_order=10,
    example="example:\n  mobilize train detector --data data/voc --out runs/det --epochs 100\n"
            "  torchrun --nproc_per_node 2 -m mobilize train detector --data data/voc --out runs/det",
))
