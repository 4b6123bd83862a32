"""The `mobilize demo` stage for NeRF -> NeLF: the whole pipeline on the embedded scene.

Render the procedural scene as a Blender data set, train a tiny teacher and a tiny student
(about a minute each on one CPU core), export the student to every target with
verification, and score the checkpoints and each artifact on the val views.
"""

from __future__ import annotations

from pathlib import Path

from ..._ui import table

SIZE = 48


def demo(workdir: Path, reporter) -> dict:
    import shutil

    from ..._export import export
    from ...commands._output import verification_table
    from ...data.scene import write_scene
    from ..nerf.evaluate import ViewEvalConfig, evaluate_views
    from ..nerf.train import NerfTrainConfig
    from ..nerf.train import train as train_nerf
    from .train import NelfTrainConfig
    from .train import train as train_nelf

    workdir = Path(workdir)
    for sub in ("teacher", "student"):  # a rerun starts over: the demo is cheap, stale runs confuse
        shutil.rmtree(workdir / sub, ignore_errors=True)
    data = workdir / "scene"
    if not (data / "transforms_val.json").is_file():
        with reporter.step(f"rendering the procedural scene ({SIZE}x{SIZE}, 40 + 8 views)"):
            write_scene(data, train=40, val=8, size=SIZE)
    teacher = train_nerf(NerfTrainConfig(data=str(data), out=str(workdir / "teacher"), steps=400, batch_rays=1024,
                                         levels=8, log2_table=14, max_res=128, max_samples=96, val_every=0,
                                         ckpt_every=200), reporter)
    student = train_nelf(NelfTrainConfig(data=str(data), teacher=str(workdir / "teacher"),
                                         out=str(workdir / "student"), pseudo_images=100, distill_steps=600,
                                         finetune_steps=200, batch_rays=2048, lr=2e-3, finetune_lr=1e-3, hidden=64,
                                         blocks=4, points=8, freqs=5, ckpt_every=200), reporter)
    manifest = export(student["checkpoint"], "all", workdir / "artifact", reporter=reporter)
    cfg = ViewEvalConfig(data=str(data), split="val")
    rows = []
    for label, source, target in [("teacher (nerf)", teacher["checkpoint"], None),
                                  ("student (nelf)", student["checkpoint"], None)] + \
            [("student artifact", str(manifest.location), t) for t, rec in manifest.targets.items()
             if rec.ok and manifest.location]:
        cfg.strip = str(workdir / f"strip-{label.split()[0]}-{target or 'torch'}.png")
        r = evaluate_views(source, cfg, target, reporter)
        rows.append([label, target or "pytorch", r["psnr"], r["ssim"], r["ms_per_frame"]])
    student_psnr = rows[1][2]
    artifact_psnrs = [r[2] for r in rows[2:]]
    ok = bool(manifest.ok and artifact_psnrs and all(abs(p - student_psnr) < 0.05 for p in artifact_psnrs))
    text = table(rows, ["model", "runtime", "val PSNR dB", "SSIM", "ms/frame"])
    text += "\n\n" + verification_table(manifest)
    text += (f"\n\nstudent: {student['flops_per_pixel']:.0f} FLOPs/pixel, {student['parameters']} parameters; "
             f"PSNR after distillation {student['val_psnr_distilled']} dB, after fine-tuning {student['val_psnr']} dB")
    return {"title": f"nerf -> nelf: teacher, student and its artifacts on the procedural scene ({SIZE}x{SIZE})",
            "table": text, "ok": ok, "artifact": str(manifest.location) if manifest.location else None}
