"""The NeRF teacher's parts: hash encoding, compositing, occupancy carving, data reading, CLI errors.

Training the teacher end to end (loss falls, PSNR floor) is in test_nelf.py, which needs a
trained teacher anyway and trains it once for both.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from mobilize.data.blender import load_blender, parse_background, write_blender
from mobilize.errors import BadInput
from mobilize.models.nerf.field import PRIMES, HashEncoding, HashField
from mobilize.models.nerf.render import OccupancyGrid, Sampler, composite, render_rays, render_rays_inference


def naive_encoding(enc: HashEncoding, x: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation corner by corner, level by level: the definition, slowly."""
    outs = []
    for lv in range(enc.levels):
        r = int(enc.res_int[lv])
        u = ((x + enc.bound) / (2 * enc.bound)).clamp(0, 1) * r
        p0 = torch.minimum(u.floor(), torch.tensor(r - 1.0))
        f = u - p0
        p0 = p0.long()
        acc = 0
        for cx, cy, cz in itertools.product((0, 1), repeat=3):
            c = p0 + torch.tensor([cx, cy, cz])
            if bool(enc.dense[lv]):
                i = c[:, 0] + c[:, 1] * (r + 1) + c[:, 2] * (r + 1) ** 2
            else:
                i = ((c[:, 0] * PRIMES[0]) ^ (c[:, 1] * PRIMES[1]) ^ (c[:, 2] * PRIMES[2])) % enc.table_size
            w = (f[:, 0] if cx else 1 - f[:, 0]) * (f[:, 1] if cy else 1 - f[:, 1]) * (f[:, 2] if cz else 1 - f[:, 2])
            acc = acc + enc.table[int(enc.offsets[lv]) + i] * w[:, None]
        outs.append(acc)
    return torch.cat(outs, 1)


def test_hash_encoding_is_trilinear_interpolation_of_its_table():
    torch.manual_seed(0)
    enc = HashEncoding(levels=6, log2_table=12, base_res=4, max_res=64, bound=1.5)
    assert enc.dense.tolist() == [True, True, True, False, False, False]  # both kinds of level are covered
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    x = torch.rand(300, 3) * 3 - 1.5
    x[0] = torch.tensor([1.5, 1.5, 1.5])  # the far corner of the cube
    x[1] = torch.tensor([-1.5, 0.0, 1.5])
    fast, slow = enc(x), naive_encoding(enc, x)
    assert fast.shape == (300, 12)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    g = torch.randn_like(fast)
    (ga,) = torch.autograd.grad((fast * g).sum(), enc.table)
    (gb,) = torch.autograd.grad((naive_encoding(enc, x) * g).sum(), enc.table)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)
    assert ga.abs().sum() > 0


def test_encoding_is_continuous_across_cell_borders():
    torch.manual_seed(1)
    enc = HashEncoding(levels=4, log2_table=10, base_res=8, max_res=40)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    edge = 1.5 * (2 * 3 / 8 - 1)  # a cell border of the coarsest level (x = 3/8 of the cube)
    a = enc(torch.tensor([[edge - 1e-5, 0.1, 0.2]]))
    b = enc(torch.tensor([[edge + 1e-5, 0.1, 0.2]]))
    assert (a - b).abs().max() < 1e-2


def test_compositing_hand_computed():
    bg = torch.tensor([1.0, 1.0, 1.0])
    red = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    # an opaque first sample hides the second and the background
    color, acc, t_end = composite(torch.tensor([[1e4, 1e4]]), red, 0.1, bg)
    torch.testing.assert_close(color, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-5, rtol=0)
    assert float(acc) == pytest.approx(1.0, abs=1e-5)
    # empty space: nothing accumulated, all light passes
    color, acc, t_end = composite(torch.zeros(1, 2), red, 0.1, bg)
    assert float(acc) == 0 and float(t_end) == pytest.approx(1.0, abs=1e-6)
    # two half-transparent samples: alpha = 0.5 each -> weights 0.5 and 0.25
    sigma = torch.full((1, 2), float(np.log(2.0) / 0.1))
    color, acc, t_end = composite(sigma, red, 0.1, bg)
    torch.testing.assert_close(color, torch.tensor([[0.5, 0.0, 0.25]]), atol=1e-5, rtol=0)
    assert float(acc) == pytest.approx(0.75, abs=1e-5) and float(t_end) == pytest.approx(0.25, abs=1e-5)


class Ball(torch.nn.Module):
    """A field with a solid green ball of radius 0.5 at the origin: rendering is predictable."""

    def density(self, x):
        return torch.where(x.norm(dim=-1) < 0.5, 50.0, 0.0), None

    def forward(self, x, d):
        sigma, _ = self.density(x)
        return sigma, torch.tensor([0.0, 1.0, 0.0]).expand(x.shape[0], 3)


def test_rendering_training_and_inference_paths_agree_and_skip_empty_space():
    field, grid, sampler = Ball(), OccupancyGrid(32, 1.5), Sampler(1.5, 128)
    origins = torch.tensor([[0.0, 0.0, 4.0], [1.2, 0.0, 4.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])  # through the ball; past it
    bg = torch.tensor([1.0, 1.0, 1.0])
    rgb, acc, n_all = render_rays(field, grid, sampler, origins, dirs, bg)
    torch.testing.assert_close(rgb, torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]), atol=1e-3, rtol=0)
    rgb2, n_inf = render_rays_inference(field, grid, sampler, origins, dirs, bg)
    torch.testing.assert_close(rgb2, rgb, atol=1e-3, rtol=0)
    assert n_inf < n_all  # the ray through the ball stops once it is opaque
    grid.update(field, threshold=1.0)
    assert 0 < grid.mask.float().mean() < 0.1
    rgb3, _, n_grid = render_rays(field, grid, sampler, origins, dirs, bg)
    torch.testing.assert_close(rgb3, rgb, atol=1e-3, rtol=0)
    assert n_grid < n_all / 3  # samples in empty cells never reach the field


def test_carving_keeps_the_object_and_removes_empty_corners():
    from mobilize.data.scene import SHAPES, scene_views

    views = scene_views("train", 12, 32)
    grid = OccupancyGrid(32, 1.5)
    kept = grid.carve(views.poses, views.alpha, views.focal)
    assert 0.02 < kept < 0.5
    centers = torch.tensor([s.center for s in SHAPES])
    assert bool(grid.occupied(centers).all())
    corners = torch.tensor([[1.45, 1.45, 1.45], [-1.45, -1.45, 1.45], [1.45, -1.45, 1.2]])
    assert not bool(grid.occupied(corners).any())


def test_field_counts_its_flops():
    f = HashField(levels=4, log2_table=10, features=2, max_res=64, hidden=16, geo_features=7)
    mlp = 2 * (8 * 16 + 16 * 8 + (7 + 16) * 16 + 16 * 16 + 16 * 3) + (16 + 8 + 16 + 16 + 3)
    assert f.flops_per_point() == mlp + f.encoding.flops_per_point() + 40


def test_blender_reader_composites_alpha_on_the_background(tmp_path):
    rgba = np.zeros((2, 4, 6, 4), np.float32)
    rgba[:, :, :3] = [1.0, 0.0, 0.0, 1.0]  # opaque red left half
    rgba[:, :, 3:] = [0.0, 0.0, 1.0, 0.0]  # transparent right half
    poses = np.stack([np.eye(4), np.eye(4)]).astype(np.float32)
    write_blender(tmp_path, "train", rgba, poses, camera_angle_x=1.0)
    v = load_blender(tmp_path, "train", "0.2,0.4,0.6")
    assert v.images.shape == (2, 4, 6, 3) and len(v) == 2
    np.testing.assert_allclose(v.images[0, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(v.images[0, 0, 5], [0.2, 0.4, 0.6], atol=1e-6)
    assert v.alpha is not None and v.alpha[0, 0, 5] == 0
    assert v.focal == pytest.approx(3.0 / np.tan(0.5))


@pytest.mark.parametrize("text", ["blue", "1,1", "0,0,2", "a,b,c"])
def test_bad_backgrounds(text):
    with pytest.raises(BadInput):
        parse_background(text)


def test_reader_errors(tmp_path):
    with pytest.raises(BadInput, match="not a directory"):
        load_blender(tmp_path / "missing", "train")
    with pytest.raises(BadInput, match="transforms_train.json"):
        load_blender(tmp_path, "train")
    (tmp_path / "transforms_train.json").write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        load_blender(tmp_path, "train")
    (tmp_path / "transforms_train.json").write_text(json.dumps(
        {"camera_angle_x": 0.7, "frames": [{"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}]}))
    with pytest.raises(BadInput, match="does not exist"):
        load_blender(tmp_path, "train")


# -- CLI: bad input is exit code 2 with one line --------------------------------------------
def test_train_nerf_bad_data(run_cli, tmp_path):
    code, out, err = run_cli("train", "nerf", "--data", tmp_path / "nope", "--out", tmp_path / "run")
    assert code == 2
    assert "is not a directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_nerf_bad_options(run_cli, tmp_path):
    from mobilize.data.scene import write_scene

    data = write_scene(tmp_path / "scene", train=2, val=1, size=8)
    code, _, err = run_cli("train", "nerf", "--data", data, "--out", tmp_path / "run", "--steps", "0")
    assert code == 2 and "--steps must be positive" in err
    code, _, err = run_cli("train", "nerf", "--data", data, "--out", tmp_path / "run", "--background", "teal")
    assert code == 2 and "--background" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, _, err = run_cli("train", "nerf", "--data", data, "--out", tmp_path / "busy")
    assert code == 2 and "not empty" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    code, _, err = run_cli("train", "nerf", "--data", data, "--out", tmp_path / "fresh", "--resume")
    assert code == 2 and "no last.pt" in err
    code, _, err = run_cli("train", "nerf", "--out", tmp_path / "run")
    assert code == 2 and "--data" in err  # argparse: the required option is named


def test_eval_rejects_what_is_not_a_checkpoint(run_cli, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = run_cli("eval", junk, "--data", tmp_path)
    assert code == 2 and "checkpoint" in err
