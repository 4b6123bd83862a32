"""NeRF teacher -> NeLF students on lego-100 (100x100): quality, cost, speed, size.

    .venv/bin/python benchmarks/nelf_lego.py --work /tmp/nelf-lego      # everything (hours on a CPU)

Stages whose output already exists in WORK are reused, so an interrupted run continues and
the stages can be run one by one (`--only teacher`, ...). Writes
benchmarks/results/nelf-lego.json and the checkpoints benchmarks/results/nerf-lego.pt,
nelf-lego.pt and nelf-lego-lowres.pt (weights only). Everything runs on one CPU thread
(CUDA when present for training) and is seeded. Train on train, report on val.

What is measured (see docs/nelf.md for the summary):
- teacher: val PSNR / SSIM, training time, FLOPs per pixel (field FLOPs per sample x samples
  the occupancy grid lets through, measured on the val views; also the count without skipping),
  time to render one frame in PyTorch;
- students: val PSNR after distillation and after fine-tuning (PyTorch, and the exported
  artifact in ONNX Runtime, ncnn, TF.js and TFLite), FLOPs per pixel and per frame, weights,
  time per frame in PyTorch, ONNX Runtime, ncnn, TF.js (wasm, Node) and TFLite;
- the 30 FPS budget of a Snapdragon 410 from the published benchncnn latencies (nelf_budget.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DATA = REPO.parent / "shared" / "data" / "lego-100"

TEACHER = dict(steps=4000, batch_rays=2048, levels=12, log2_table=15, max_res=256, hidden=64, grid_res=64,
               max_samples=192, val_every=500)
PSEUDO_IMAGES = 1000
STUDENTS = {
    # quality-first: MobileR2L-style, rays at 50x50, x2 learned upsampling
    "student": dict(scale=2, hidden=128, blocks=8, points=16, freqs=6, up_channels=32, distill_steps=5000,
                    finetune_steps=1500, batch_rays=4096, lr=2e-3, finetune_lr=5e-4),
    # the phone variant: rays at 25x25, x4 upsampling, inside the Snapdragon 410 budget
    "student-lowres": dict(scale=4, hidden=96, blocks=6, points=8, freqs=6, up_channels=16, distill_steps=5000,
                           finetune_steps=1500, batch_rays=4096, lr=2e-3, finetune_lr=5e-4),
    # the FLOP goal: >= 25x fewer FLOPs per pixel than the teacher as it actually runs
    "student-tiny": dict(scale=4, hidden=64, blocks=3, points=8, freqs=5, up_channels=8, distill_steps=5000,
                         finetune_steps=1500, batch_rays=4096, lr=2e-3, finetune_lr=5e-4),
}
CHECKPOINT_NAMES = {"teacher": "nerf-lego.pt", "student": "nelf-lego.pt", "student-lowres": "nelf-lego-lowres.pt",
                    "student-tiny": "nelf-lego-tiny.pt"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_teacher(work: Path, data: Path, reporter) -> dict:
    from mobilize.models.nerf.train import NerfTrainConfig, train

    run = work / "teacher"
    if (run / "summary.json").is_file():
        return json.loads((run / "summary.json").read_text())
    resume = (run / "last.pt").is_file()
    return train(NerfTrainConfig(data=str(data), out=str(run), threads=1, resume=resume, **TEACHER), reporter)


def train_student(work: Path, data: Path, name: str, reporter) -> dict:
    from mobilize.models.nelf.train import NelfTrainConfig, train

    run = work / name
    if (run / "summary.json").is_file():
        return json.loads((run / "summary.json").read_text())
    resume = (run / "last.pt").is_file()
    return train(NelfTrainConfig(data=str(data), teacher=str(work / "teacher"), out=str(run),
                                 pseudo_images=PSEUDO_IMAGES, pseudo_dir=str(work / "pseudo"), threads=1,
                                 resume=resume, **STUDENTS[name]), reporter)


def export_student(work: Path, name: str, reporter):
    from mobilize._export import export
    from mobilize.manifest import Manifest

    art = work / f"{name}-artifact"
    if (art / "manifest.json").is_file():
        return Manifest.load(art)
    return export(work / name / "model.pt", "all", art, reporter=reporter, threads=1)


def median_ms(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def teacher_costs(work: Path, data: Path) -> dict:
    """FLOPs per pixel from the samples that reach the field on the val views, and render time."""
    import torch

    from mobilize.data.blender import camera_directions, load_blender
    from mobilize.models.nerf.model import teacher_from_checkpoint
    from mobilize.models.nerf.render import box_intersect
    from mobilize.sources import read_checkpoint

    ckpt = read_checkpoint(work / "teacher" / "model.pt")
    teacher = teacher_from_checkpoint(ckpt)
    d = ckpt["config"]["data"]
    views = load_blender(data, "val", d["background"])
    bg = torch.tensor(d["background"])
    evaluated, in_cube = 0, 0
    d_cam = torch.from_numpy(camera_directions(views.height, views.width, views.focal).reshape(-1, 3))
    for pose in views.poses:
        p = torch.from_numpy(pose)
        _, n = teacher.render_pose(p, views.height, views.width, views.focal, bg)
        evaluated += n
        dirs = d_cam @ p[:3, :3].T
        near, far = box_intersect(p[:3, 3].expand_as(dirs), dirs, teacher.sampler.bound)
        in_cube += int(torch.clamp(torch.ceil((far - near) / teacher.sampler.step), min=0).sum())
    pixels = len(views) * views.height * views.width
    per_sample = teacher.flops_per_sample()
    spr, dense_spr = evaluated / pixels, in_cube / pixels
    pose = torch.from_numpy(views.poses[0])
    ms = median_ms(lambda: teacher.render_pose(pose, views.height, views.width, views.focal, bg), runs=5)
    return {"flops_per_sample": per_sample, "samples_per_ray": round(spr, 3),
            "flops_per_pixel": round(per_sample * spr, 1),
            "flops_per_frame": int(per_sample * spr * views.height * views.width),
            "samples_per_ray_without_skipping": round(dense_spr, 2),
            "flops_per_pixel_without_skipping": round(per_sample * dense_spr, 1),
            "ms_per_frame_pytorch": round(ms, 2), "parameters": sum(p.numel() for p in teacher.field.parameters()),
            "checkpoint_mb": round((work / "teacher" / "model.pt").stat().st_size / 2 ** 20, 3)}


def score(source, data: Path, target: str | None, strip: Path) -> dict:
    from mobilize.models.nerf.evaluate import ViewEvalConfig, evaluate_views

    r = evaluate_views(str(source), ViewEvalConfig(data=str(data), split="val", strip=str(strip), threads=1), target)
    return {k: r[k] for k in ("psnr", "ssim", "views") if k in r} | (
        {"samples_per_ray": r["samples_per_ray"]} if "samples_per_ray" in r else {})


def student_timings(work: Path, name: str, manifest) -> dict:
    import torch

    from mobilize.models.nelf.model import student_from_checkpoint
    from mobilize.sources import read_checkpoint

    model = student_from_checkpoint(read_checkpoint(work / name / "model.pt"))
    pose = torch.zeros(1, 3, 4)
    pose[0, :3, :3] = torch.eye(3)
    pose[0, 2, 3] = 4.0
    with torch.no_grad():
        out = {"pytorch": round(median_ms(lambda: model(pose), runs=20, warmup=3), 3)}
    try:
        from mobilize.devices.host import measure_artifact
    except ImportError:  # the devices package is another issue's; without it only PyTorch is timed
        return out
    for target in ("onnx", "ncnn", "tfjs", "tflite"):
        rec = manifest.targets.get(target)
        if rec is None or rec.status != "ok":
            out[target] = None
            continue
        try:
            m = measure_artifact(manifest.location, target, threads=1, warmup=5, runs=30)
            out[target] = round(m["latency_ms"], 3)  # median
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            out[target] = f"failed: {e}"
    return out


def file_mb(path: Path) -> float:
    return round(path.stat().st_size / 2 ** 20, 3)


def weights_mb(manifest, target: str) -> float | None:
    rec = manifest.targets.get(target)
    if rec is None or rec.status != "ok":
        return None
    return round(sum(f.bytes for f in rec.files) / 2 ** 20, 3)


def cached(path: Path, compute) -> dict:
    """Report parts are slow (hundreds of renders): kept in WORK; delete the file to redo one."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value, indent=2, default=str))
    return value


def teacher_report(work: Path, data: Path) -> dict:
    t_summary = json.loads((work / "teacher" / "summary.json").read_text())
    t_costs = teacher_costs(work, data)
    t_scores = score(work / "teacher" / "model.pt", data, None, work / "teacher-val.png")
    return {"config": TEACHER, "val_psnr": t_scores["psnr"], "val_ssim": t_scores["ssim"],
            "train_seconds": t_summary["train_seconds"], **t_costs}


def student_report(work: Path, data: Path, name: str, teacher: dict, sd410: dict, reporter) -> dict:
    s = json.loads((work / name / "summary.json").read_text())
    manifest = export_student(work, name, reporter)
    distilled = score(work / name / "distilled.pt", data, None, work / f"{name}-distilled-val.png")
    final = score(work / name / "model.pt", data, None, work / f"{name}-val.png")
    per_runtime = {}
    for target in ("onnx", "ncnn", "tfjs", "tflite"):
        rec = manifest.targets.get(target)
        if rec is not None and rec.ok:
            per_runtime[target] = score(manifest.location, data, target, work / f"{name}-val-{target}.png")["psnr"]
        else:
            per_runtime[target] = f"{rec.status}: {rec.error}" if rec else "not exported"
    return {
        "config": STUDENTS[name], "pseudo_images": PSEUDO_IMAGES, "depth": s["depth"],
        "val_psnr_distilled": distilled["psnr"], "val_ssim_distilled": distilled["ssim"],
        "val_psnr": final["psnr"], "val_ssim": final["ssim"], "val_psnr_by_runtime": per_runtime,
        "psnr_minus_teacher": round(final["psnr"] - teacher["val_psnr"], 3),
        "flops_per_pixel": s["flops_per_pixel"], "flops_per_frame": s["flops_per_frame"],
        "teacher_over_student_flops_per_pixel": round(teacher["flops_per_pixel"] / s["flops_per_pixel"], 2),
        "teacher_over_student_flops_without_skipping": round(
            teacher["flops_per_pixel_without_skipping"] / s["flops_per_pixel"], 2),
        "fits_snapdragon410_30fps": s["flops_per_frame"] <= sd410["budget_flops_per_frame"],
        "share_of_snapdragon410_budget": round(s["flops_per_frame"] / sd410["budget_flops_per_frame"], 3),
        "parameters": s["parameters"], "weights_mb_fp32": s["weights_mb"],
        "artifact_mb": {t: weights_mb(manifest, t) for t in ("onnx", "ncnn", "tfjs", "tflite")},
        "parity": {t: (r.parity or {}).get("passed") for t, r in manifest.targets.items()},
        "train_seconds": s["train_seconds"], "pseudo_seconds": s.get("pseudo_seconds"),
        "ms_per_frame": student_timings(work, name, manifest),
    }


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/nelf-lego", help="working directory (runs, pseudo-data, artifacts)")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--only", choices=["teacher", *STUDENTS, "report"], action="append")
    p.add_argument("--smoke", action="store_true", help="tiny settings, to check this script in minutes "
                   "(results go to WORK only, never to benchmarks/results)")
    args = p.parse_args(argv)
    if args.smoke:
        global PSEUDO_IMAGES, RESULTS
        TEACHER.update(steps=60, val_every=0)
        PSEUDO_IMAGES = 50
        for cfg in STUDENTS.values():
            cfg.update(distill_steps=30, finetune_steps=10, hidden=16, blocks=1)
        RESULTS = Path(args.work) / "results"
    data, work = Path(args.data), Path(args.work)
    if not data.is_dir():
        print(f"no data at {data}", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mobilize._ui import Reporter

    reporter = Reporter()
    only = set(args.only or ["teacher", *STUDENTS, "report"])
    if "teacher" in only:
        log("teacher")
        train_teacher(work, data, reporter)
    for name in STUDENTS:
        if name in only:
            log(name)
            train_student(work, data, name, reporter)
            export_student(work, name, reporter)
    if "report" not in only:
        return 0

    sys.path.insert(0, str(HERE))
    from nelf_budget import budget

    log("report: teacher")
    result = {"data": "lego-100 (100x100; train 100 views, val 100 views)", "machine": {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads_used": 1,
        "torch": torch.__version__, "note": "2 cores shared with other jobs: times are upper bounds"}}
    result["teacher"] = cached(work / "teacher-report.json", lambda: teacher_report(work, data))
    sd410 = budget()
    result["budget_snapdragon410_30fps"] = {k: v for k, v in sd410.items() if k != "networks"} | {
        "networks": [{k: r[k] for k in ("network", "ms", "gflops", "gflops_per_s")} for r in sd410["networks"]]}
    result["students"] = {}
    for name in STUDENTS:
        if (work / name / "summary.json").is_file():
            log(f"report: {name}")
            result["students"][name] = cached(work / f"{name}-report.json",
                                              lambda: student_report(work, data, name, result["teacher"], sd410,
                                                                     reporter))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, file in CHECKPOINT_NAMES.items():
        src = work / name / "model.pt"
        if src.is_file():
            shutil.copyfile(src, RESULTS / file)
            result.setdefault("checkpoints", {})[file] = file_mb(RESULTS / file)
    out = RESULTS / "nelf-lego.json"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
