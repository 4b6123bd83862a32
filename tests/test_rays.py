"""Camera rays of the Blender NeRF convention, against cases worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilize.data.blender import (camera_directions, camera_rays, focal_from_angle, load_blender, pose_spherical,
                                   random_poses, ray_box)

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lego-100"


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_focal_from_the_field_of_view():
    # tan(angle / 2) = 0.5 puts the image edge at half the width: focal = width
    assert focal_from_angle(100, 2 * math.atan(0.5)) == pytest.approx(100.0)
    assert focal_from_angle(64, math.pi / 2) == pytest.approx(32.0)


def test_directions_go_through_pixel_centres():
    d = camera_directions(2, 2, focal=1.0, normalize=False)
    # pixel (row 0, col 0) is the top-left one: centre at x = 0.5 - 1 = -0.5, y = +(1 - 0.5) = 0.5
    np.testing.assert_allclose(d[0, 0], [-0.5, 0.5, -1.0])
    np.testing.assert_allclose(d[0, 1], [0.5, 0.5, -1.0])
    np.testing.assert_allclose(d[1, 0], [-0.5, -0.5, -1.0])
    np.testing.assert_allclose(d[1, 1], [0.5, -0.5, -1.0])
    n = camera_directions(2, 2, focal=1.0)
    np.testing.assert_allclose(n[0, 0], unit([-0.5, 0.5, -1.0]), atol=1e-7)


def test_centre_pixel_of_an_odd_image_looks_down_minus_z():
    d = camera_directions(3, 5, focal=2.0, normalize=False)
    np.testing.assert_allclose(d[1, 2], [0.0, 0.0, -1.0])
    np.testing.assert_allclose(d[1, 4], [1.0, 0.0, -1.0])  # two pixels right of centre at focal 2


def test_pose_rotates_directions_and_sets_origins():
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90 degrees about z
    c2w[:3, 3] = [1, 2, 3]
    o, d = camera_rays(c2w, 3, 3, focal=1.0, normalize=False)
    np.testing.assert_allclose(o[0, 0], [1, 2, 3])
    np.testing.assert_allclose(o[2, 1], [1, 2, 3])
    # camera-space (1, 0, -1) (right of centre) becomes world (0, 1, -1)
    np.testing.assert_allclose(d[1, 2], [0, 1, -1], atol=1e-7)
    # camera-space (0, 1, -1) (above centre) becomes world (-1, 0, -1)
    np.testing.assert_allclose(d[0, 1], [-1, 0, -1], atol=1e-7)


def test_spherical_poses_look_at_the_origin_with_z_up():
    top = pose_spherical(0, -90, 4.0)
    np.testing.assert_allclose(top[:3, 3], [0, 0, 4], atol=1e-6)
    _, d = camera_rays(top, 3, 3, 1.0)
    np.testing.assert_allclose(d[1, 1], [0, 0, -1], atol=1e-6)
    for theta in (0, 45, 170, -120):
        side = pose_spherical(theta, 0, 2.5)
        pos = side[:3, 3]
        assert np.linalg.norm(pos) == pytest.approx(2.5, rel=1e-6)
        assert pos[2] == pytest.approx(0, abs=1e-6)
        _, d = camera_rays(side, 3, 3, 1.0)
        np.testing.assert_allclose(d[1, 1], -pos / 2.5, atol=1e-6)
        np.testing.assert_allclose(side[:3, 1], [0, 0, 1], atol=1e-6)  # camera up is world up
    # phi = -30: 30 degrees above the horizon
    p = pose_spherical(10, -30, 4.0)
    assert p[2, 3] == pytest.approx(4.0 * math.sin(math.radians(30)), rel=1e-6)


def test_random_poses_cover_the_upper_hemisphere():
    poses = random_poses(np.random.default_rng(0), 200, 3.0)
    heights = poses[:, 2, 3] / 3.0
    assert poses.shape == (200, 4, 4)
    assert heights.min() >= -1e-6 and heights.max() <= 1 + 1e-6
    assert heights.min() < 0.1 and heights.max() > 0.9
    np.testing.assert_allclose(np.linalg.norm(poses[:, :3, 3], axis=1), 3.0, rtol=1e-5)
    for p in poses[:5]:
        np.testing.assert_allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-5)


def test_ray_box_intersection():
    near, far = ray_box(np.array([[0, 0, 4.0]]), np.array([[0, 0, -1.0]]), 1.5)
    assert near[0] == pytest.approx(2.5) and far[0] == pytest.approx(5.5)
    near, far = ray_box(np.array([[0, 0, 4.0]]), np.array([[1.0, 0, 0]]), 1.5)
    assert far[0] < near[0]  # parallel to the cube, above it: a miss
    near, far = ray_box(np.array([[0, 0, 0.0]]), np.array([[0, 1.0, 0]]), 1.5)
    assert near[0] == 0 and far[0] == pytest.approx(1.5)  # starts inside


def test_student_graph_generates_the_same_points_as_camera_rays():
    """The exported graph builds rays from the pose itself; they must be the data's rays."""
    from mobilize.models.nelf.model import RayEncoder, StudentShape, sample_depths

    shape = StudentShape(height=6, width=8, focal=7.0, near=2.0, far=6.0, bound=1.5, points=4, freqs=2)
    enc = RayEncoder(shape)
    pose = pose_spherical(33, -41, 4.0)
    with torch.no_grad():
        out = enc(torch.from_numpy(pose[None, :3, :4]))[0].numpy()  # [C, H, W]
    o, d = camera_rays(pose, 6, 8, 7.0)
    t = sample_depths(2.0, 6.0, 4)
    for k in range(4):
        expect = (o + t[k] * d) / 1.5
        np.testing.assert_allclose(out[3 * k:3 * k + 3].transpose(1, 2, 0), expect, atol=1e-5)
    # next come sin and cos of pi * x (the first frequency)
    np.testing.assert_allclose(out[12:15].transpose(1, 2, 0), np.sin(np.pi * (o + t[0] * d) / 1.5), atol=1e-5)


@pytest.mark.skipif(not LEGO.is_dir(), reason="../shared/data/lego-100 is not there")
def test_lego_cameras_look_at_the_scene():
    meta = json.loads((LEGO / "transforms_train.json").read_text())
    views = load_blender(LEGO, "train", "white", limit=5)
    assert views.focal == pytest.approx(0.5 * 100 / math.tan(0.5 * meta["camera_angle_x"]))
    assert views.focal == pytest.approx(138.8889, rel=1e-4)
    for pose in views.poses:
        o, d = camera_rays(pose, 100, 100, views.focal)
        centre_o, centre_d = o[50, 50].astype(np.float64), d[50, 50].astype(np.float64)
        # distance from the origin to the line through the image centre
        miss = np.linalg.norm(np.cross(-centre_o, centre_d))
        assert miss < 0.05
        assert np.dot(-centre_o, centre_d) > 0.99 * np.linalg.norm(centre_o)  # towards it, not away
    # the object is in the middle of every view, the corners are background
    assert views.alpha[:, 45:55, 45:55].mean() > 0.5
    assert views.alpha[:, :3, :3].max() == 0
