"""The options of `mobilize train detector` (kept free of torch so the CLI starts fast)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    data: str = field(metadata={"help": "data set: a VOC, COCO or YOLO directory (or a COCO .json)", "metavar": "PATH"})
    out: str = field(metadata={"help": "run directory: last.pt every epoch, best.pt by validation mAP",
                               "metavar": "RUN_DIR"})
    format: str = field(default="auto", metadata={"help": "data format: auto, voc, coco or yolo"})
    epochs: int = field(default=0, metadata={"help": "passes over the training images (0: auto, about 1200 steps: "
                                                      "100 to 300 passes, so small data sets get enough steps)"})
    imgsz: int = field(default=320, metadata={"help": "input size S (the model takes S x S; multiple of 32)"})
    width: float = field(default=0.5, metadata={"help": "backbone width multiplier"})
    neck_channels: int = field(default=96, metadata={"help": "channels of the neck and head"})
    separable: bool = field(default=True, metadata={"help": "depthwise-separable convolutions (--no-separable: "
                                                              "standard ones, for comparison)"})
    batch: int = field(default=16, metadata={"help": "images per step, over all processes"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup: int = field(default=300, metadata={"help": "linear warm-up steps (at most a fifth of the run)"})
    scale_min: float = field(default=0.6, metadata={"help": "augmentation: smallest zoom vs the letterbox scale"})
    scale_max: float = field(default=1.5, metadata={"help": "augmentation: largest zoom"})
    hflip: float = field(default=0.5, metadata={"help": "augmentation: horizontal flip probability"})
    vflip: float = field(default=0.0, metadata={"help": "augmentation: vertical flip probability (0.5 for "
                                                         "top-down views: microscopy, aerial)"})
    ema: bool = field(default=True, metadata={"help": "evaluate and export an exponential moving average of the weights"})
    val_fraction: float = field(default=0.15, metadata={"help": "share of images held out for validation when the "
                                                                 "data has no split files"})
    eval_interval: int = field(default=1, metadata={"help": "validate every N epochs (and after the last)"})
    best_metric: str = field(default="map50_95", metadata={"help": "what picks best.pt: map50_95 or map50"})
    seed: int = field(default=0, metadata={"help": "random seed (data order, augmentation, initial weights)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from its last.pt"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps in all (0: no limit; for smoke tests)"})
    workers: int = field(default=0, metadata={"help": "data-loading processes (0: load in the training process)"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice; "
                                                                 "1 is fastest on a busy machine)"})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda when present)"})
    name: str = field(default="detector", metadata={"help": "model name recorded in the checkpoint and manifest"})
