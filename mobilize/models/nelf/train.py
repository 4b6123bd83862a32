"""`mobilize train nelf`: distill a NeRF teacher into a NeLF student, then fine-tune on real views.

R2L's two stages: (1) the student learns from pseudo-data the teacher renders at random
poses (many more views than the data set has), (2) it is fine-tuned on the real training
images, where it can correct what the teacher got wrong. With scale 1 a step is a batch of
random rays (R2L); with scale > 1 it is a batch of whole frames, since learned upsampling
needs neighbouring pixels (MobileR2L).

A run directory holds `model.pt` (final), `distilled.pt` (after stage 1), `last.pt` (for
--resume), `summary.json`, and the pseudo-data cache `pseudo/` unless --pseudo-dir says
otherwise (share one cache between students of the same teacher).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BadInput


@dataclass
class NelfTrainConfig:
    data: str = field(metadata={"help": "Blender NeRF data set the teacher was trained on", "metavar": "PATH"})
    teacher: str = field(metadata={"help": "teacher run directory (or its model.pt) from `mobilize train nerf`",
                                   "metavar": "RUN_DIR"})
    out: str = field(metadata={"help": "run directory to write (model.pt, distilled.pt, last.pt, summary.json)",
                               "metavar": "RUN_DIR"})
    pseudo_images: int = field(default=1000, metadata={"help": "teacher renders at random poses for stage 1"})
    pseudo_dir: str = field(default="", metadata={"help": "pseudo-data cache (default: RUN_DIR/pseudo)",
                                                  "metavar": "DIR"})
    distill_steps: int = field(default=3000, metadata={"help": "stage 1 steps (pseudo-data)"})
    finetune_steps: int = field(default=1000, metadata={"help": "stage 2 steps (real training images)"})
    batch_rays: int = field(default=4096, metadata={"help": "rays per step (scale > 1: whole frames of this many "
                                                            "low-resolution rays)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of stage 1 (decays 10x)"})
    finetune_lr: float = field(default=3e-4, metadata={"help": "Adam learning rate of stage 2 (decays 10x)"})
    points: int = field(default=16, metadata={"help": "points per ray (K)"})
    freqs: int = field(default=6, metadata={"help": "positional encoding frequencies (L)"})
    hidden: int = field(default=128, metadata={"help": "network width"})
    blocks: int = field(default=8, metadata={"help": "residual blocks (2 layers each)"})
    scale: int = field(default=1, metadata={"help": "compute at 1/scale resolution, learned upsampling x scale",
                                            "choices": [1, 2, 4, 8]})
    up_channels: int = field(default=32, metadata={"help": "channels of the first upsampling stage"})
    near: float = field(default=0.0, metadata={"help": "ray start (0: camera radius - sqrt(3) * bound)"})
    far: float = field(default=0.0, metadata={"help": "ray end (0: camera radius + sqrt(3) * bound)"})
    val_views: int = field(default=0, metadata={"help": "val views scored after each stage (0: all)"})
    ckpt_every: int = field(default=250, metadata={"help": "save last.pt every N steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda"})
    threads: int = field(default=0, metadata={"help": "CPU threads for PyTorch (0: its default)"})
    resume: bool = field(default=False, metadata={"help": "continue from RUN_DIR/last.pt"})


def resolve_teacher(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise BadInput(f"--teacher '{path}' has no model.pt" if Path(path).is_dir() else
                       f"--teacher '{path}' does not exist", "give the run directory of `mobilize train nerf`")
    return p


def load_teacher(path: Path):
    from ...sources import read_checkpoint
    from ..nerf.model import teacher_from_checkpoint

    ckpt = read_checkpoint(path)
    if ckpt.get("family") != "nerf":
        raise BadInput(f"--teacher '{path}' is a '{ckpt.get('family')}' checkpoint, not a nerf teacher",
                       "train one with `mobilize train nerf`")
    return teacher_from_checkpoint(ckpt), ckpt


def student_shape(config: NelfTrainConfig, data: dict, bound: float):
    from .model import StudentShape

    reach = math.sqrt(3) * bound
    near = config.near or max(data["radius"] - reach, 0.05)
    far = config.far or data["radius"] + reach
    if far <= near:
        raise BadInput(f"--far {far} must be larger than --near {near}")
    if data["height"] % config.scale or data["width"] % config.scale:
        raise BadInput(f"--scale {config.scale} does not divide the image size {data['width']}x{data['height']}",
                       "pick a scale that divides both sides")
    return StudentShape(height=data["height"], width=data["width"], focal=data["focal"], near=near, far=far,
                        bound=bound, points=config.points, freqs=config.freqs, hidden=config.hidden,
                        blocks=config.blocks, scale=config.scale, up_channels=config.up_channels)


class RayBatches:
    """Random batches from posed images: rays (scale 1) or whole frames (scale > 1)."""

    def __init__(self, images: np.ndarray, poses: np.ndarray, focal: float, scale: int, batch_rays: int,
                 device: str, seed: int):
        import torch

        from ...data.blender import camera_directions

        self.images = images  # [N, H, W, 3], float16 or float32, stays on the host
        self.n, self.h, self.w = images.shape[:3]
        self.poses = torch.from_numpy(poses.astype(np.float32)).to(device)
        self.dcam = torch.from_numpy(camera_directions(self.h, self.w, focal).reshape(-1, 3)).to(device)
        self.scale, self.device = scale, device
        low = (self.h // scale) * (self.w // scale)
        self.frames = max(1, batch_rays // low) if scale > 1 else 0
        self.rays = batch_rays
        self.rng = np.random.default_rng(seed)

    def next(self):
        import torch

        if self.scale > 1:
            idx = self.rng.integers(0, self.n, self.frames)
            target = torch.from_numpy(self.images[idx].astype(np.float32)).to(self.device)
            return ("frames", self.poses[idx, :3, :4]), target
        img = self.rng.integers(0, self.n, self.rays)
        pix = self.rng.integers(0, self.h * self.w, self.rays)
        target = torch.from_numpy(self.images.reshape(self.n, -1, 3)[img, pix].astype(np.float32)).to(self.device)
        img_t = torch.from_numpy(img).to(self.device)
        pix_t = torch.from_numpy(pix).to(self.device)
        rot = self.poses[img_t, :3, :3]
        dirs = torch.einsum("bij,bj->bi", rot, self.dcam[pix_t])
        origins = self.poses[img_t, :3, 3]
        return ("rays", origins, dirs), target


def predict(student, batch):
    if batch[0] == "frames":
        return student(batch[1])
    return student.render_rays(batch[1], batch[2])


def student_render_fn(student, device: str):
    import torch

    def render(pose):
        with torch.no_grad():
            p = torch.from_numpy(np.asarray(pose, np.float32)[None, :3, :4]).to(device)
            return student(p)[0].cpu().numpy()

    return render


def train(config: NelfTrainConfig, reporter=None) -> dict:
    import torch

    from ..._ui import SILENT
    from ...data.blender import load_blender
    from ...spec import sha256_file
    from ...train._common import load_checkpoint, save_checkpoint, seed_everything
    from ..nerf.evaluate import check_intrinsics, render_and_score
    from ..nerf.train import check_positive, pick_device, prepare_out, write_json_atomic
    from . import pseudo
    from .model import NeLF

    log = reporter or SILENT
    check_positive(config, ("pseudo_images", "batch_rays", "lr", "finetune_lr", "points", "freqs", "hidden",
                            "up_channels", "ckpt_every"))
    if config.blocks < 0 or config.distill_steps < 0 or config.finetune_steps < 0:
        raise BadInput("--blocks, --distill-steps and --finetune-steps must be zero or positive")
    if config.scale not in (1, 2, 4, 8):
        raise BadInput(f"--scale {config.scale} is not one of 1, 2, 4, 8")
    device = pick_device(config.device)
    teacher_path = resolve_teacher(config.teacher)
    teacher, tckpt = load_teacher(teacher_path)
    data = tckpt["config"]["data"]
    bound = float(tckpt["config"]["model"]["bound"])
    shape = student_shape(config, data, bound)
    train_views = load_blender(config.data, "train", data["background"])
    check_intrinsics(data, train_views, str(teacher_path))
    val_views = load_blender(config.data, "val", data["background"], limit=config.val_views or None)
    out = Path(config.out)
    prepare_out(out, config.resume)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)

    teacher_sha = sha256_file(teacher_path)
    pseudo_dir = Path(config.pseudo_dir) if config.pseudo_dir else out / "pseudo"
    pseudo_seconds = 0.0
    if config.distill_steps:
        start = time.perf_counter()
        with log.step(f"pseudo-data: {config.pseudo_images} teacher renders in {pseudo_dir}"):
            pseudo.generate(pseudo_dir, teacher, data, teacher_sha, config.pseudo_images, config.seed, device, log)
        pseudo_seconds = time.perf_counter() - start
        pseudo_images, pseudo_poses = pseudo.load(pseudo_dir, config.pseudo_images)
    del teacher

    student = NeLF(shape).to(device)
    opt = torch.optim.Adam(student.parameters(), lr=config.lr)
    meta = {**data, "near": shape.near, "far": shape.far, "bound": bound, "teacher_sha256": teacher_sha,
            "teacher_metrics": tckpt.get("metrics", {})}
    metrics: dict = {}
    done_stage, done_step, elapsed = None, 0, 0.0
    if config.resume:
        state = load_checkpoint(out / "last.pt")
        if state.get("family") != "nelf" or state["config"]["model"] != shape.to_dict():
            raise BadInput(f"--resume: '{out / 'last.pt'}' was trained with other model options",
                           "resume with the options of that run (see its summary.json)")
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        done_stage, done_step = state["meta"]["stage"], int(state["meta"]["stage_step"])
        elapsed, metrics = float(state["meta"].get("train_seconds", 0.0)), dict(state.get("metrics", {}))

    def snapshot(stage: str, stage_step: int, with_optimizer: bool) -> dict:
        return {"family": "nelf", "config": {"model": shape.to_dict(), "train": asdict(config), "data": meta},
                "model": {k: v.detach().cpu() for k, v in student.state_dict().items()},
                "optimizer": opt.state_dict() if with_optimizer else None, "step": stage_step, "epoch": 0,
                "metrics": dict(metrics), "meta": {"stage": stage, "stage_step": stage_step,
                                                   "train_seconds": elapsed + time.perf_counter() - t0}}

    stages = []
    if config.distill_steps:
        stages.append(("distill", config.distill_steps, pseudo_images, pseudo_poses, config.lr))
    stages.append(("finetune", config.finetune_steps, train_views.images, train_views.poses, config.finetune_lr))
    order = [s[0] for s in stages]
    t0 = time.perf_counter()
    for name, steps, images, poses, lr in stages:
        start = 0
        if done_stage in order:
            if order.index(name) < order.index(done_stage):
                continue  # finished before the interruption
            if name == done_stage:
                start = done_step
        batches = RayBatches(images, poses, data["focal"], shape.scale, config.batch_rays, device,
                             config.seed * 1000 + order.index(name) * 100 + start)
        student.train()
        losses = []
        bar = log.bar(range(start, steps), total=steps - start, desc=name, unit="step", mininterval=2.0)
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = lr * 0.1 ** (step / max(steps, 1))
            batch, target = batches.next()
            loss = torch.mean((predict(student, batch) - target) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if (step + 1) % 50 == 0:
                recent = float(np.mean(losses[-50:]))
                bar.set_postfix(loss=f"{recent:.5f}", psnr=f"{-10 * math.log10(max(recent, 1e-10)):.2f}")
            if (step + 1) % config.ckpt_every == 0 and step + 1 < steps:
                save_checkpoint(out / "last.pt", snapshot(name, step + 1, True))
        student.eval()
        if start < steps or f"{name}_val_psnr" not in metrics:
            with log.step(f"{name}: scoring {len(val_views)} val views"):
                scores = render_and_score(student_render_fn(student, device), val_views)
            metrics[f"{name}_val_psnr"] = scores["psnr"]
            metrics[f"{name}_val_ssim"] = scores["ssim"]
            if losses:
                metrics[f"{name}_train_loss"] = float(np.mean(losses[-50:]))
                metrics[f"{name}_loss_first"] = float(np.mean(losses[:10]))
                metrics[f"{name}_loss_last"] = float(np.mean(losses[-10:]))
            log(f"{name}: val PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}")
        save_checkpoint(out / "last.pt", snapshot(name, steps, True))
        if name == "distill":
            save_checkpoint(out / "distilled.pt", snapshot(name, steps, False))
    elapsed += time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics["val_psnr"] = metrics["finetune_val_psnr"]
    metrics["val_ssim"] = metrics["finetune_val_ssim"]
    final = snapshot("finetune", config.finetune_steps, False)
    save_checkpoint(out / "model.pt", final)
    cost = student.flops()
    summary = {
        "checkpoint": str(out / "model.pt"),
        "distilled_checkpoint": str(out / "distilled.pt") if config.distill_steps else None,
        "val_psnr_distilled": round(metrics["distill_val_psnr"], 3) if "distill_val_psnr" in metrics else None,
        "val_psnr": round(metrics["val_psnr"], 3), "val_ssim": round(metrics["val_ssim"], 4),
        "teacher_val_psnr": tckpt.get("metrics", {}).get("val_psnr"),
        "flops_per_pixel": round(cost["per_pixel"], 1), "flops_per_frame": cost["per_frame"],
        "parameters": student.parameter_count(), "weights_mb": round(student.parameter_count() * 4 / 2 ** 20, 3),
        "depth": shape.depth, "scale": shape.scale, "train_seconds": round(elapsed, 1),
        "pseudo_seconds": round(pseudo_seconds, 1),
        "pseudo_images": config.pseudo_images if config.distill_steps else 0, "device": device,
        **{k: v for k, v in metrics.items() if "_loss_" in k},
    }
    write_json_atomic(out / "summary.json", {**summary, "config": asdict(config)})
    return summary
