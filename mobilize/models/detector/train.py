"""`mobilize train detector`: GFL training on VOC / COCO / YOLO data, alone or under torchrun.

Why two processes train the same model as one:
- the global batch of each step is the same list of images (a permutation seeded by
  (seed, epoch)), and process r takes its contiguous share of it;
- each image's augmentation is seeded by (seed, epoch, position in the global batch), so it
  does not depend on which process draws it;
- BatchNorm statistics are summed over processes (`SyncBatchNorm2d`, differentiable), so each
  normalises with the whole batch's mean and variance;
- loss normalisers are summed over processes and each process scales its share by N; DDP's
  gradient average then gives the gradient of the whole batch's loss.
What remains is float rounding in the reductions (tested in tests/test_detector_ddp.py).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ...data.detection import BadBoxes, DetectionSet, load_detection, load_image
from ...data.detection_transforms import Augment, augment, normalize
from ...errors import BadInput
from ...train._common import (DistEnv, barrier, init_distributed, load_checkpoint, progress, save_checkpoint,
                              seed_everything, shutdown, unwrap, wrap_ddp)
from .deploy import check_imgsz
from .loss import GFLLoss
from .config import TrainConfig
from .model import DetectorConfig, build_detector, count_flops, count_params


# -- synchronised BatchNorm for CPU (torch's SyncBatchNorm needs a GPU) ----------------------
class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every process.

    The sums go through a differentiable all_reduce, so the backward pass is the backward of
    BatchNorm over the whole batch. Same parameters and buffers as BatchNorm2d: checkpoints
    load into the plain model.
    """

    def forward(self, x):
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        x64 = x.double()
        stats = torch.cat([x64.sum((0, 2, 3)), (x64 * x64).sum((0, 2, 3)),
                           x64.new_tensor([x.numel() / c])])
        stats = all_reduce(stats)
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(mean.float(), alpha=m)
            self.running_var.mul_(1 - m).add_((var * n / (n - 1).clamp(min=1)).float(), alpha=m)
            self.num_batches_tracked.add_(1)
        scale = (self.weight.double() / (var + self.eps).sqrt()) if self.affine else 1 / (var + self.eps).sqrt()
        shift = (self.bias.double() - mean * scale) if self.affine else -mean * scale
        return (x64 * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)).to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child)
    return module


class Reducer:
    """Sums a small tensor over processes (the loss normalisers)."""

    def __init__(self, env: DistEnv):
        self.world = env.world_size

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        import torch.distributed as dist

        t = t.clone()
        dist.all_reduce(t)
        return t


class EMA:
    """Weights averaged over the recent steps; the ramp keeps early averages short."""

    def __init__(self, model: nn.Module, max_decay: float = 0.9998):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0
        self.max_decay = max_decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.max_decay, (1 + self.updates) / (10 + self.updates))
        for e, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                e.copy_(v)


# -- data ----------------------------------------------------------------------------------
def epoch_batches(n: int, batch: int, seed: int, epoch: int) -> np.ndarray:
    """[steps, batch] image indices of one epoch; the last batch wraps around to stay full."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = max(1, math.ceil(n / batch))
    need = steps * batch
    return np.resize(perm, need).reshape(steps, batch)


class BatchLoader(torch.utils.data.Dataset):
    """Item k = this process's share of step k: (images [b, 3, S, S], targets)."""

    def __init__(self, data: DetectionSet, batches: np.ndarray, rank: int, world: int, imgsz: int, seed: int,
                 epoch: int, aug: Augment):
        self.data, self.batches, self.imgsz, self.seed, self.epoch, self.aug = data, batches, imgsz, seed, epoch, aug
        per = batches.shape[1] // world
        self.positions = range(rank * per, (rank + 1) * per)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, step: int):
        images, targets = [], []
        for pos in self.positions:
            s = self.data.samples[int(self.batches[step, pos])]
            rng = np.random.default_rng([self.seed, self.epoch, step, pos])
            keep = ~s.ignore
            img, boxes, labels = augment(load_image(s.image), s.boxes[keep], s.labels[keep], self.imgsz, rng, self.aug)
            images.append(normalize(img))
            targets.append((torch.from_numpy(boxes), torch.from_numpy(labels)))
        return torch.from_numpy(np.stack(images)), targets


def _loader(ds: BatchLoader, workers: int):
    if workers <= 0:
        return (ds[k] for k in range(len(ds)))
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                                            persistent_workers=False))


# -- optimisation --------------------------------------------------------------------------
def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on BatchNorm and biases
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))


def auto_epochs(steps_per_epoch: int, target_steps: int = 1200) -> int:
    """Enough passes for a from-scratch detector: ~1200 steps, between 100 and 300 epochs."""
    return int(min(300, max(100, math.ceil(target_steps / steps_per_epoch))))


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine down to 5 % of the peak."""
    warmup = min(warmup, max(1, total // 5))
    if step < warmup:
        return peak * (0.1 + 0.9 * step / warmup)
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# -- the run -------------------------------------------------------------------------------
def train(config: TrainConfig, reporter=None) -> dict:
    env = init_distributed(config.device)
    try:
        return _train(config, reporter, env)
    finally:
        shutdown(env)


def _check(config: TrainConfig, env: DistEnv) -> None:
    check_imgsz(config.imgsz)
    if config.epochs < 0:
        raise BadInput("--epochs must be positive (or 0: chosen from the data set size)")
    if config.batch < 1 or config.batch % env.world_size:
        raise BadInput(f"--batch {config.batch} cannot be split over {env.world_size} processes",
                       f"use a multiple of {env.world_size}")
    if config.best_metric not in ("map50", "map50_95"):
        raise BadInput(f"--best-metric '{config.best_metric}' is not a metric", "use map50_95 or map50")
    if not 0 < config.scale_min <= config.scale_max:
        raise BadInput("--scale-min must be positive and at most --scale-max")


def _load_data(config: TrainConfig, env: DistEnv, log) -> tuple[DetectionSet, DetectionSet]:
    """Both splits; their skipped boxes are reported in one line (the readers' warnings, merged)."""
    from ...data.detection import BadBoxWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BadBoxWarning)
        train_set = load_detection(config.data, config.format, "train", config.val_fraction)
        if train_set.num_boxes == 0:
            raise BadInput(f"the training split of '{config.data}' holds no usable boxes")
        val_set = load_detection(config.data, train_set.format, "val", config.val_fraction, train_set.classes)
    for w in caught:
        if not issubclass(w.category, BadBoxWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    bad = [d.bad_boxes for d in (train_set, val_set) if d.bad_boxes.total]
    if bad and env.is_main:
        merged = BadBoxes()
        for b in bad:
            merged.degenerate += b.degenerate
            merged.outside += b.outside
            merged.unknown_class += b.unknown_class
            merged.examples += b.examples
        log("warning: " + merged.message(f"data '{config.data}' (train + val)"))
    return train_set, val_set


def _train(config: TrainConfig, reporter, env: DistEnv) -> dict:
    from ..._ui import SILENT
    from .evaluate import coco_metrics, detect

    log = (reporter or SILENT) if env.is_main else SILENT
    _check(config, env)
    out = Path(config.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if config.resume and not last_path.is_file():
        raise BadInput(f"--resume: '{last_path}' does not exist", "start a new run without --resume")
    if not config.resume and last_path.exists():
        raise BadInput(f"'{out}' already holds a run", "pass --resume to continue it, or choose a new --out")
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    train_set, val_set = _load_data(config, env, log)
    classes = train_set.classes
    log(f"data: {len(train_set)} training images ({train_set.num_boxes} boxes), {len(val_set)} validation images, "
        f"{len(classes)} class{'es' if len(classes) != 1 else ''}: {', '.join(classes[:10])}"
        + (" (split by image-id hash)" if train_set.split_rule == "hash" else ""))

    mcfg = DetectorConfig(num_classes=len(classes), imgsz=config.imgsz, width=config.width,
                          neck_channels=config.neck_channels, separable=config.separable)
    model = build_detector(mcfg)
    params, flops = count_params(model), count_flops(model, config.imgsz)
    model.train()
    if env.distributed:
        model = convert_sync_batchnorm(model)
    # not channels_last: faster on CPU, but torch's channels-last BatchNorm backward loses
    # precision (gradients 50 % off a float64 reference at 320 px, vs 2 % contiguous)
    model.to(env.device)
    ema = EMA(model) if config.ema and env.is_main else None
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    steps_per_epoch = len(epoch_batches(len(train_set), config.batch, config.seed, 0))
    ckpt = load_checkpoint(last_path) if config.resume else None
    if not config.epochs and ckpt is not None:
        config = replace(config, epochs=int(ckpt["config"]["train"]["epochs"]))
    if not config.epochs:
        config = replace(config, epochs=auto_epochs(steps_per_epoch))
        log(f"epochs: {config.epochs} ({steps_per_epoch} steps each)")
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    start_epoch, step, best, history, elapsed = 0, 0, {"metric": config.best_metric, "value": -1.0, "epoch": None}, [], 0.0
    resumed_metrics: dict = {}
    if ckpt is not None:
        if ckpt.get("family") != "detector" or ckpt["config"]["model"] != mcfg.to_dict():
            raise BadInput(f"'{last_path}' was trained with another model configuration or data",
                           "resume with the same --data, --imgsz, --width and --neck-channels")
        unwrap(model).load_state_dict(ckpt["raw_model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["model"])
            ema.updates = int(ckpt["meta"].get("ema_updates", ckpt["step"]))
        start_epoch, step, best = int(ckpt["epoch"]), int(ckpt["step"]), dict(ckpt["best"])
        resumed_metrics = dict(ckpt.get("metrics") or {})
        history = list(ckpt["meta"].get("history", []))
        elapsed = float(ckpt["meta"].get("train_seconds", 0.0))
        log(f"resuming {out} at epoch {start_epoch + 1} (step {step})")
    ddp = wrap_ddp(model, env)
    loss_fn = GFLLoss(len(classes), mcfg.reg_max, unwrap(model).points, unwrap(model).point_strides,
                      unwrap(model).level_sizes)
    reducer = Reducer(env)
    aug = Augment(scale=(config.scale_min, config.scale_max), hflip=config.hflip, vflip=config.vflip)

    meta = {"name": config.name, "classes": classes, "params": params, "flops": flops,
            "bad_boxes": {"train": train_set.bad_boxes.to_dict(), "val": val_set.bad_boxes.to_dict()},
            "data": {"path": str(config.data), "format": train_set.format, "train_images": len(train_set),
                     "val_images": len(val_set), "split_rule": train_set.split_rule, "val_fraction": config.val_fraction}}
    bar = progress(log, None, total=total_steps - step, desc="train", env=env) if step < total_steps else None
    t0 = time.perf_counter() - elapsed
    epoch = start_epoch
    metrics: dict = resumed_metrics
    while epoch < config.epochs and step < total_steps:
        batches = epoch_batches(len(train_set), config.batch, config.seed, epoch)
        ds = BatchLoader(train_set, batches, env.rank, env.world_size, config.imgsz, config.seed, epoch, aug)
        running, count = 0.0, 0
        model.train()
        for images, targets in _loader(ds, config.workers):
            if step >= total_steps:
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, total_steps, config.lr, config.warmup)
            images = images.to(env.device)
            targets = [(b.to(env.device), l.to(env.device)) for b, l in targets]
            cls_logits, reg_logits = _forward_raw(ddp, images)
            loss, parts = loss_fn(cls_logits, reg_logits, targets, reducer)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            if ema is not None:
                ema.update(unwrap(model))
            step += 1
            running += loss.item()  # this process's share x N: an estimate of the whole batch's loss
            count += 1
            if bar is not None:
                bar.update(1)
                bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
                bar.set_postfix(loss=f"{running / count:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        epoch += 1
        last = epoch >= config.epochs or step >= total_steps
        # the whole batch's loss is the sum of the shares, i.e. the mean of (share x N)
        record = {"epoch": epoch, "step": step, "loss": round(_mean_over(running / max(count, 1), env), 5)}
        if env.is_main and (epoch % config.eval_interval == 0 or last):
            eval_model = (ema.module if ema is not None else unwrap(model)).eval()
            metrics = _validate(eval_model, val_set, config.imgsz, env.device, detect, coco_metrics)
            record.update({k: round(metrics[k], 5) for k in ("map50", "map50_95")})
            if metrics[config.best_metric] > best["value"]:
                best = {"metric": config.best_metric, "value": metrics[config.best_metric], "epoch": epoch}
                _save(best_path, model, ema, None, mcfg, config, epoch, step, metrics, best,
                      meta | {"history": history + [record], "train_seconds": time.perf_counter() - t0}, env)
            msg = (f"epoch {epoch}: loss {record['loss']:.4f}  val mAP@0.5 {metrics['map50']:.4f}  "
                   f"mAP@0.5:0.95 {metrics['map50_95']:.4f}")
            if bar is not None and not log.quiet:
                bar.write(msg, file=log.stream)
            else:
                log(msg)
        history.append(record)
        _save(last_path, model, ema, optimizer, mcfg, config, epoch, step, metrics, best,
              meta | {"history": history, "train_seconds": time.perf_counter() - t0,
                      "ema_updates": ema.updates if ema is not None else step}, env)
        barrier(env)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    return {"run": str(out), "best": str(best_path), "last": str(last_path), "epochs": epoch, "steps": step,
            "best_epoch": best["epoch"], f"best_{config.best_metric}": round(best["value"], 5),
            "map50": _round(metrics.get("map50")), "map50_95": _round(metrics.get("map50_95")),
            "params": params, "flops": flops, "train_seconds": round(seconds, 1), "processes": env.world_size}


def _round(v):
    return None if v is None else round(float(v), 5)


def _forward_raw(model, images):
    """forward_raw, through DDP when wrapped (DDP hooks only `forward`: swap it in for the call)."""
    inner = getattr(model, "module", None)
    if inner is None:
        return model.forward_raw(images)
    original = inner.forward
    inner.forward = inner.forward_raw
    try:
        return model(images)
    finally:
        inner.forward = original


def _mean_over(value: float, env: DistEnv) -> float:
    from ...train._common import all_reduce_mean

    return all_reduce_mean(value, env)


@torch.no_grad()
def _validate(model, val_set, imgsz, device, detect, coco_metrics) -> dict:
    def predict(x):
        boxes, scores = model(torch.from_numpy(x).to(device))
        return [boxes.cpu().numpy(), scores.cpu().numpy()]

    dets = detect(predict, val_set.samples, imgsz, 0.01, 0.6, 100, batch=8)
    m = coco_metrics(val_set.samples, val_set.classes, dets)
    m.pop("_pr")
    return m


def _save(path, model, ema, optimizer, mcfg, config, epoch, step, metrics, best, meta, env) -> None:
    if not env.is_main:
        return
    deploy = ema.module if ema is not None else unwrap(model)
    state = {"family": "detector", "config": {"model": mcfg.to_dict(), "train": asdict(config)},
             "model": _plain_state(deploy), "epoch": epoch, "step": step,
             "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None},
             "best": best, "meta": meta}
    if optimizer is not None:  # last.pt: everything --resume needs; best.pt: only what deploys
        state.update({"raw_model": _plain_state(unwrap(model)), "optimizer": optimizer.state_dict(), "scheduler": None})
    save_checkpoint(path, state, env)


def _plain_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
