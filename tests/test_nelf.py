"""NeRF teacher -> NeLF student on the embedded procedural scene, end to end.

One module-scoped pipeline trains a tiny teacher and a tiny student (one CPU thread, seeded)
and exports the student; the tests read what it produced. PSNR floors are relative to the
trivial answer: an image of only the background colour, which on these val views scores
about 9 dB (the objects cover much of the frame). A model that learned where the objects are
and what colour they are does much better; the floors below leave room for run-to-run
noise but fail a model that learned nothing or renders with the wrong camera.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilize.data.blender import load_blender, pose_spherical
from mobilize.data.scene import write_scene
from mobilize.models.nelf.model import NeLF, StudentShape

SIZE = 32


def background_psnr(views) -> float:
    bg = np.asarray(views.background, np.float32)
    return float(np.mean([-10 * np.log10(np.mean((img - bg) ** 2)) for img in views.images]))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from mobilize._export import export
    from mobilize.models.nelf.train import NelfTrainConfig
    from mobilize.models.nelf.train import train as train_nelf
    from mobilize.models.nerf.train import NerfTrainConfig
    from mobilize.models.nerf.train import train as train_nerf

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and kind to a shared CI machine
    try:
        root = tmp_path_factory.mktemp("nelf")
        data = write_scene(root / "scene", train=30, val=6, size=SIZE)
        teacher = train_nerf(NerfTrainConfig(
            data=str(data), out=str(root / "teacher"), steps=120, batch_rays=1024, levels=8, log2_table=14,
            max_res=64, max_samples=64, val_every=0, ckpt_every=1000))
        student = train_nelf(NelfTrainConfig(
            data=str(data), teacher=str(root / "teacher"), out=str(root / "student"), pseudo_images=50,
            pseudo_dir=str(root / "pseudo"), distill_steps=150, finetune_steps=60, batch_rays=1024, lr=2e-3,
            finetune_lr=1e-3, hidden=32, blocks=2, points=8, freqs=4, scale=2, up_channels=16))
        manifest = export(student["checkpoint"], "all", root / "artifact")
    finally:
        torch.set_num_threads(threads)
    views = load_blender(data, "val", "white")
    return {"root": root, "data": data, "teacher": teacher, "student": student, "manifest": manifest,
            "views": views, "floor": background_psnr(views)}


@pytest.mark.slow
def test_teacher_learns_the_scene(pipeline):
    t = pipeline["teacher"]
    assert 8 < pipeline["floor"] < 10  # the trivial answer, for scale
    assert t["loss_last"] < 0.3 * t["loss_first"]
    # 120 steps reach about 19 dB here; 15 is 6 dB above background-only
    assert t["val_psnr"] > pipeline["floor"] + 6
    assert t["samples_per_ray"] < 40  # occupancy skipping works (64 samples cross the whole cube)
    ckpt = torch.load(t["checkpoint"], weights_only=True)
    assert ckpt["family"] == "nerf" and ckpt["optimizer"] is None
    assert (Path(t["checkpoint"]).parent / "last.pt").is_file()


@pytest.mark.slow
def test_student_distills_then_finetunes(pipeline):
    s = pipeline["student"]
    assert s["distill_loss_last"] < 0.5 * s["distill_loss_first"]
    assert s["finetune_loss_last"] < s["distill_loss_first"]
    # about 15 dB after 210 steps of a 2-block net; 12.5 is 3.5 dB above background-only
    assert s["val_psnr"] > pipeline["floor"] + 3.5
    assert s["val_psnr_distilled"] > pipeline["floor"] + 2
    assert Path(s["distilled_checkpoint"]).is_file() and Path(s["checkpoint"]).is_file()
    assert len(list((pipeline["root"] / "pseudo").glob("chunk_*.npz"))) == 1  # 50 images, one chunk
    ckpt = torch.load(s["checkpoint"], weights_only=True)
    assert ckpt["family"] == "nelf" and ckpt["config"]["model"]["scale"] == 2


@pytest.mark.slow
def test_exported_student_renders_what_its_checkpoint_renders(pipeline):
    """PSNR between each runtime's image and PyTorch's >= 40 dB on every val pose."""
    from mobilize.runtimes import open_predictor

    manifest = pipeline["manifest"]
    art = manifest.location
    assert art is not None
    for t in ("onnx", "ncnn", "tfjs", "tflite"):
        rec = manifest.targets[t]
        assert rec.status == "ok" and rec.parity["passed"], (t, rec.error)
    meta = json.loads((art / "manifest.json").read_text())
    assert meta["inputs"][0]["shape"] == [1, 3, 4]
    assert meta["outputs"][0]["shape"] == [1, SIZE, SIZE, 3]
    for key in ("focal", "near", "far", "background", "height", "width"):
        assert key in meta["metadata"]
    poses = [v[:3, :4][None] for v in pipeline["views"].poses]
    with open_predictor(pipeline["student"]["checkpoint"]) as ref:
        expected = [ref.run([p])[0] for p in poses]
    assert np.std(expected) > 0.05  # the images have content: a constant output would prove nothing
    for t in ("onnx", "ncnn", "tfjs", "tflite"):
        with open_predictor(art, t) as pred:
            for p, e in zip(poses, expected):
                got = pred.run([p])[0]
                assert got.shape == e.shape
                mse = float(np.mean((got - e) ** 2))
                assert mse == 0 or -10 * np.log10(mse) >= 40, t


@pytest.mark.slow
def test_eval_cli_on_checkpoints_and_artifacts(pipeline, run_cli, tmp_path):
    data = pipeline["data"]
    code, out, err = run_cli("eval", pipeline["student"]["checkpoint"], "--data", data, "--split", "val", "--json",
                             "--strip", tmp_path / "strip.png", "--strip-views", "3")
    assert code == 0, err
    ckpt = json.loads(out)
    assert {"psnr", "ssim", "views"} <= set(ckpt)
    assert ckpt["views"] == 6 and 0 < ckpt["ssim"] <= 1
    assert ckpt["psnr"] == pytest.approx(pipeline["student"]["val_psnr"], abs=0.01)
    from PIL import Image

    with Image.open(tmp_path / "strip.png") as im:
        assert im.size == (3 * SIZE, 2 * SIZE)  # three views, rendered above ground truth
    code, out, err = run_cli("eval", pipeline["manifest"].location, "--target", "ncnn", "--data", data, "--json",
                             "--strip", tmp_path / "ncnn.png")
    assert code == 0, err
    assert json.loads(out)["psnr"] == pytest.approx(ckpt["psnr"], abs=0.05)
    code, out, err = run_cli("eval", pipeline["teacher"]["checkpoint"], "--data", data, "--json", "--limit", "2",
                             "--strip", tmp_path / "teacher.png")
    assert code == 0, err
    teacher = json.loads(out)
    assert teacher["views"] == 2 and teacher["psnr"] > pipeline["floor"] + 6 and teacher["samples_per_ray"] > 0


@pytest.mark.slow
def test_eval_refuses_data_of_another_camera(pipeline, run_cli, tmp_path):
    other = write_scene(tmp_path / "big", train=1, val=1, size=SIZE * 2)
    code, out, err = run_cli("eval", pipeline["student"]["checkpoint"], "--data", other)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # progress lines come first on stderr; the error is one line
    assert last.startswith("mobilize: error:") and "renders 32x32" in last and "64x64" in last
    code, out, err = run_cli("eval", pipeline["manifest"].location, "--data", pipeline["data"])
    assert code == 2 and "--target" in err


@pytest.mark.slow
def test_ray_batch_student_and_resume(pipeline, tmp_path):
    """Scale 1 trains on random rays (R2L); an interrupted run resumes where it stopped."""
    from mobilize.errors import BadInput
    from mobilize.models.nelf.train import NelfTrainConfig, train

    torch.set_num_threads(1)
    common = dict(data=str(pipeline["data"]), teacher=str(pipeline["root"] / "teacher"), out=str(tmp_path / "s1"),
                  pseudo_images=50, pseudo_dir=str(pipeline["root"] / "pseudo"), batch_rays=512, lr=2e-3,
                  hidden=16, blocks=1, points=4, freqs=3, scale=1, ckpt_every=20)
    first = train(NelfTrainConfig(**common, distill_steps=60, finetune_steps=0))
    assert first["distill_loss_last"] < 0.7 * first["distill_loss_first"]
    state = torch.load(tmp_path / "s1" / "last.pt", weights_only=True)
    assert state["meta"]["stage"] == "finetune" and state["meta"]["stage_step"] == 0
    resumed = train(NelfTrainConfig(**common, distill_steps=60, finetune_steps=20, resume=True))
    assert resumed["val_psnr_distilled"] == first["val_psnr_distilled"]  # stage 1 was not redone
    assert "finetune_loss_first" in resumed
    with pytest.raises(BadInput, match="other model options"):
        train(NelfTrainConfig(**{**common, "hidden": 8}, distill_steps=60, finetune_steps=20, resume=True))
    with pytest.raises(BadInput, match="not empty"):
        train(NelfTrainConfig(**common, distill_steps=60, finetune_steps=20))


@pytest.mark.slow
def test_pseudo_cache_is_reused_and_guarded(pipeline):
    from mobilize._ui import SILENT
    from mobilize.errors import BadInput
    from mobilize.models.nelf import pseudo
    from mobilize.models.nelf.train import load_teacher
    from mobilize.spec import sha256_file

    path = pipeline["root"] / "teacher" / "model.pt"
    teacher, ckpt = load_teacher(path)
    root = pipeline["root"] / "pseudo"
    chunk = root / "chunk_00000.npz"
    before = chunk.stat().st_mtime_ns
    pseudo.generate(root, teacher, ckpt["config"]["data"], sha256_file(path), 50, 0, "cpu", SILENT)
    assert chunk.stat().st_mtime_ns == before  # nothing re-rendered
    images, poses = pseudo.load(root, 50)
    assert images.shape == (50, SIZE, SIZE, 3) and poses.shape == (50, 4, 4)
    heights = poses[:, 2, 3] / np.linalg.norm(poses[:, :3, 3], axis=1)
    assert heights.min() >= -1e-5  # R2L's phi in [-90, 0]: the upper hemisphere
    with pytest.raises(BadInput, match="another teacher"):
        pseudo.generate(root, teacher, ckpt["config"]["data"], "0" * 64, 50, 0, "cpu", SILENT)


def test_train_nelf_bad_input(run_cli, tmp_path):
    data = write_scene(tmp_path / "scene", train=2, val=1, size=8)
    code, _, err = run_cli("train", "nelf", "--data", data, "--teacher", tmp_path / "nothing", "--out", tmp_path / "o")
    assert code == 2 and "--teacher" in err
    other = tmp_path / "other.pt"
    torch.save({"family": "detector", "model": {}}, other)
    code, _, err = run_cli("train", "nelf", "--data", data, "--teacher", other, "--out", tmp_path / "o")
    assert code == 2 and "not a nerf teacher" in err
    code, _, err = run_cli("train", "nelf", "--data", data, "--teacher", other, "--out", tmp_path / "o",
                           "--scale", "3")
    assert code == 2 and "--scale" in err
    assert not (tmp_path / "o").exists()


# -- the student graph itself (no training) ---------------------------------------------------
def test_ray_batches_and_the_pose_graph_compute_the_same_colours():
    torch.manual_seed(0)
    shape = StudentShape(height=12, width=10, focal=11.0, near=2.0, far=6.0, points=4, freqs=3, hidden=16, blocks=2)
    model = NeLF(shape).eval()
    for b in model.blocks:  # give the residual branches weight, so the check is not about near-identities
        torch.nn.init.normal_(b.conv2.weight, std=0.3)
    pose = pose_spherical(-70, -20, 4.0)
    from mobilize.data.blender import camera_rays

    o, d = camera_rays(pose, 12, 10, 11.0)
    with torch.no_grad():
        image = model(torch.from_numpy(pose[None, :3, :4]))[0]
        rays = model.render_rays(torch.from_numpy(o.reshape(-1, 3)), torch.from_numpy(d.reshape(-1, 3)))
    assert image.shape == (12, 10, 3)
    assert float(image.std()) > 0.01
    torch.testing.assert_close(rays.reshape(12, 10, 3), image, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_flop_count_agrees_with_pytorch_flop_counter(scale):
    from torch.utils.flop_counter import FlopCounterMode

    shape = StudentShape(height=16, width=16, focal=20.0, near=2.0, far=6.0, points=4, freqs=3, hidden=24,
                         blocks=3, scale=scale, up_channels=16)
    model = NeLF(shape).eval()
    x = model.encoder(torch.from_numpy(pose_spherical(0, -45, 4.0)[None, :3, :4]))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.body(x)
    biases = sum(m.out_channels * out_hw for m, out_hw in _conv_output_sizes(model, x))
    assert model.flops()["network_per_frame"] == counter.get_total_flops() + biases
    assert model.flops()["per_pixel"] == pytest.approx(model.flops()["per_frame"] / 256)


def _conv_output_sizes(model, x):
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append((m, o.shape[-1] * o.shape[-2])))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model.body(x)
    for h in hooks:
        h.remove()
    return sizes


def test_student_rejects_a_scale_that_does_not_divide_the_image():
    with pytest.raises(ValueError, match="divisible"):
        NeLF(StudentShape(height=30, width=30, focal=20.0, near=2.0, far=6.0, scale=4))
