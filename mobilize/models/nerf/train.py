"""`mobilize train nerf`: fit the hash-grid teacher to a Blender NeRF data set.

A run directory holds `model.pt` (the final weights: what eval and `train nelf --teacher`
read), `last.pt` (weights + optimizer, for --resume) and `summary.json`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BadInput


@dataclass
class NerfTrainConfig:
    data: str = field(metadata={"help": "Blender NeRF data set (folder with transforms_train.json)", "metavar": "PATH"})
    out: str = field(metadata={"help": "run directory to write (model.pt, last.pt, summary.json)", "metavar": "RUN_DIR"})
    steps: int = field(default=3000, metadata={"help": "optimisation steps"})
    batch_rays: int = field(default=2048, metadata={"help": "rays per step"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (decays 10x over the run)"})
    background: str = field(default="white", metadata={"help": "colour the RGBA images are composited on"})
    bound: float = field(default=1.5, metadata={"help": "half-size of the scene cube centred at the origin"})
    levels: int = field(default=12, metadata={"help": "hash encoding levels"})
    log2_table: int = field(default=15, metadata={"help": "log2 of the hash table size per level"})
    max_res: int = field(default=256, metadata={"help": "finest hash grid resolution"})
    hidden: int = field(default=64, metadata={"help": "MLP width"})
    grid_res: int = field(default=64, metadata={"help": "occupancy grid resolution"})
    max_samples: int = field(default=192, metadata={"help": "samples along a ray crossing the whole cube"})
    val_views: int = field(default=0, metadata={"help": "val views for the final PSNR (0: all)"})
    val_every: int = field(default=1000, metadata={"help": "report PSNR on 4 val views every N steps (0: never)"})
    ckpt_every: int = field(default=250, metadata={"help": "save last.pt every N steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda"})
    threads: int = field(default=0, metadata={"help": "CPU threads for PyTorch (0: its default)"})
    resume: bool = field(default=False, metadata={"help": "continue from RUN_DIR/last.pt"})


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for but PyTorch sees no CUDA device", "use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise BadInput(f"--device '{name}' is not a device", "use auto, cpu or cuda")
    return name


def prepare_out(out: Path, resume: bool) -> None:
    """Never overwrite a finished or running run unless resuming it."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out '{out}' exists and is a file", "choose a directory path")
    if resume:
        if not (out / "last.pt").is_file():
            raise BadInput(f"--resume: '{out}' has no last.pt to continue from", "drop --resume to start a new run")
        return
    if out.is_dir() and any(out.iterdir()):
        raise BadInput(f"--out '{out}' is not empty", "choose a new directory, or pass --resume to continue that run")
    out.mkdir(parents=True, exist_ok=True)


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def check_positive(config, names: tuple[str, ...]) -> None:
    for n in names:
        if getattr(config, n) <= 0:
            raise BadInput(f"--{n.replace('_', '-')} must be positive (got {getattr(config, n)})")


def data_meta(views, background) -> dict:
    return {"height": views.height, "width": views.width, "focal": float(views.focal),
            "camera_angle_x": views.camera_angle_x, "background": list(background), "radius": views.radius}


def all_rays(views):
    """Origins, directions and colours of every pixel of every view, as [N*H*W, 3] tensors."""
    import torch

    from ...data.blender import camera_directions

    d_cam = camera_directions(views.height, views.width, views.focal).reshape(-1, 3)
    dirs = np.einsum("pj,nij->npi", d_cam, views.poses[:, :3, :3]).reshape(-1, 3)
    origins = np.repeat(views.poses[:, :3, 3], views.height * views.width, 0)
    colors = views.images.reshape(-1, 3)
    return (torch.from_numpy(origins.astype(np.float32)), torch.from_numpy(dirs.astype(np.float32)),
            torch.from_numpy(colors.astype(np.float32)))


def train(config: NerfTrainConfig, reporter=None) -> dict:
    import torch

    from ..._ui import SILENT
    from ...data.blender import load_blender, parse_background
    from ...train._common import load_checkpoint, save_checkpoint, seed_everything
    from .evaluate import render_and_score
    from .model import Teacher, TeacherShape
    from .render import render_rays

    log = reporter or SILENT
    check_positive(config, ("steps", "batch_rays", "lr", "bound", "levels", "log2_table", "max_res", "hidden",
                            "grid_res", "max_samples", "ckpt_every"))
    background = parse_background(config.background)
    device = pick_device(config.device)
    out = Path(config.out)
    train_views = load_blender(config.data, "train", background)
    val_views = load_blender(config.data, "val", background, limit=config.val_views or None)
    prepare_out(out, config.resume)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)

    shape = TeacherShape(levels=config.levels, log2_table=config.log2_table, max_res=config.max_res,
                         hidden=config.hidden, bound=config.bound, grid_res=config.grid_res,
                         max_samples=config.max_samples)
    teacher = Teacher(shape)
    start_step, elapsed = 0, 0.0
    opt = torch.optim.Adam([
        {"params": [teacher.field.encoding.table], "weight_decay": 0.0},
        {"params": [p for n, p in teacher.field.named_parameters() if not n.startswith("encoding.")],
         "weight_decay": 1e-6},
    ], lr=config.lr, betas=(0.9, 0.99), eps=1e-15)
    if config.resume:
        state = load_checkpoint(out / "last.pt")
        if state.get("family") != "nerf" or state["config"]["model"] != shape.to_dict():
            raise BadInput(f"--resume: '{out / 'last.pt'}' was trained with other model options",
                           "resume with the options of that run (see its summary.json)")
        teacher.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_step, elapsed = int(state["step"]), float(state["meta"].get("train_seconds", 0.0))
        seed_everything(config.seed + start_step)
    else:
        if train_views.alpha is not None:
            with log.step("occupancy grid: carving the training views' alpha masks"):
                kept = teacher.grid.carve(train_views.poses, train_views.alpha, train_views.focal)
            log(f"occupancy grid: {kept:.1%} of the cube may hold the scene")
    teacher.to(device)
    origins, dirs, colors = (t.to(device) for t in all_rays(train_views))
    bg = torch.tensor(background, device=device)
    meta = data_meta(train_views, background)
    threshold = 1e-3 / teacher.sampler.step  # occupied where one step absorbs >= 0.1% of the light

    def state(step: int, with_optimizer: bool, metrics: dict) -> dict:
        return {"family": "nerf", "config": {"model": shape.to_dict(), "train": asdict(config), "data": meta},
                "model": {k: v.detach().cpu() for k, v in teacher.state_dict().items()},
                "optimizer": opt.state_dict() if with_optimizer else None, "step": step, "epoch": 0,
                "metrics": metrics, "meta": {"train_seconds": elapsed}}

    gen = torch.Generator(device="cpu").manual_seed(config.seed + start_step)
    bar = log.bar(range(start_step, config.steps), total=config.steps - start_step, desc="nerf", unit="step", mininterval=2.0)
    losses, samples = [], []
    t0 = time.perf_counter()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = config.lr * 0.1 ** (step / config.steps)
        idx = torch.randint(0, origins.shape[0], (config.batch_rays,), generator=gen).to(device)
        teacher.train()
        rgb, _, n = render_rays(teacher.field, teacher.grid, teacher.sampler, origins[idx], dirs[idx], bg, jitter=True)
        loss = torch.mean((rgb - colors[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        samples.append(n / config.batch_rays)
        if step >= 64 and step % 16 == 0:
            teacher.grid.update(teacher.field, threshold)
        if (step + 1) % 50 == 0:
            recent = float(np.mean(losses[-50:]))
            bar.set_postfix(loss=f"{recent:.4f}", psnr=f"{-10 * math.log10(max(recent, 1e-10)):.2f}",
                            spr=f"{np.mean(samples[-50:]):.1f}")
        if config.val_every and (step + 1) % config.val_every == 0 and step + 1 < config.steps:
            teacher.eval()
            quick = render_and_score(teacher_render_fn(teacher, val_views, bg), val_views, limit=4)
            log(f"step {step + 1}: val PSNR {quick['psnr']:.2f} dB on 4 views")
        if (step + 1) % config.ckpt_every == 0 or step + 1 == config.steps:
            elapsed_now = elapsed + time.perf_counter() - t0
            snapshot = state(step + 1, True, {"train_loss": float(np.mean(losses[-50:]))})
            snapshot["meta"]["train_seconds"] = elapsed_now
            save_checkpoint(out / "last.pt", snapshot)
    elapsed += time.perf_counter() - t0
    teacher.eval()
    with log.step(f"rendering {len(val_views)} val views"):
        scores = render_and_score(teacher_render_fn(teacher, val_views, bg), val_views)
    metrics = {"val_psnr": scores["psnr"], "val_ssim": scores["ssim"], "val_views": len(val_views),
               "samples_per_ray": scores.get("samples_per_ray"),
               "train_loss": float(np.mean(losses[-50:])) if losses else None}
    final = state(config.steps, False, metrics)
    save_checkpoint(out / "model.pt", final)
    summary = {"checkpoint": str(out / "model.pt"), "steps": config.steps, "val_psnr": round(scores["psnr"], 3),
               "val_ssim": round(scores["ssim"], 4), "val_views": len(val_views),
               "train_seconds": round(elapsed, 1), "samples_per_ray": round(scores.get("samples_per_ray", 0.0), 2),
               "device": device, "occupied": round(float(teacher.grid.mask.float().mean()), 4),
               "loss_first": float(np.mean(losses[:10])) if losses else None,
               "loss_last": float(np.mean(losses[-10:])) if losses else None}
    write_json_atomic(out / "summary.json", {**summary, "config": asdict(config)})
    return summary


def teacher_render_fn(teacher, views, bg):
    """pose [4, 4] -> (image [H, W, 3] numpy, samples evaluated): what render_and_score calls."""
    import torch

    def render(pose):
        img, n = teacher.render_pose(torch.from_numpy(np.asarray(pose, np.float32)), views.height, views.width,
                                     views.focal, bg)
        return img.cpu().numpy(), n

    return render
