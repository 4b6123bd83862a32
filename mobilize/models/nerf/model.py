"""The NeRF teacher: hash field + occupancy grid + sampler, and its pose -> image renderer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ...data.blender import camera_directions
from .._shape import ShapeConfig
from .field import HashField
from .render import OccupancyGrid, Sampler, render_rays_inference


@dataclass
class TeacherShape(ShapeConfig):
    """What defines the teacher's tensors (stored in checkpoints as `config["model"]`)."""

    levels: int = 16
    log2_table: int = 15
    features: int = 2
    base_res: int = 16
    max_res: int = 512
    hidden: int = 64
    bound: float = 1.5
    grid_res: int = 64
    max_samples: int = 192


class Teacher(nn.Module):
    def __init__(self, shape: TeacherShape):
        super().__init__()
        self.shape = shape
        self.field = HashField(shape.levels, shape.log2_table, shape.features, shape.base_res, shape.max_res,
                               shape.bound, shape.hidden)
        self.grid = OccupancyGrid(shape.grid_res, shape.bound)
        self.sampler = Sampler(shape.bound, shape.max_samples)

    @torch.no_grad()
    def render_pose(self, c2w: torch.Tensor, height: int, width: int, focal: float, background: torch.Tensor,
                    chunk: int = 8192) -> tuple[torch.Tensor, int]:
        """[H, W, 3] image of one camera-to-world pose ([3, 4] or [4, 4]); also samples evaluated."""
        device = self.field.encoding.table.device
        d_cam = torch.from_numpy(camera_directions(height, width, focal)).to(device).reshape(-1, 3)
        c2w = c2w.to(device=device, dtype=torch.float32)
        dirs = d_cam @ c2w[:3, :3].T
        origins = c2w[:3, 3].expand_as(dirs)
        out, evaluated = [], 0
        for s in range(0, dirs.shape[0], chunk):
            rgb, n = render_rays_inference(self.field, self.grid, self.sampler, origins[s:s + chunk],
                                           dirs[s:s + chunk], background.to(device))
            out.append(rgb)
            evaluated += n
        return torch.cat(out).reshape(height, width, 3), evaluated

    def flops_per_sample(self) -> int:
        return self.field.flops_per_point()


class TeacherRenderer(nn.Module):
    """The teacher behind the family interface: pose [1, 3, 4] -> image [1, H, W, 3].

    Volume rendering with data-dependent sample selection cannot become a fixed graph; the
    teacher is a training-time model (export its NeLF student instead).
    """

    def __init__(self, teacher: Teacher, height: int, width: int, focal: float, background):
        super().__init__()
        self.teacher = teacher
        self.height, self.width, self.focal = int(height), int(width), float(focal)
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32))
        self.last_samples = 0

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            from ...errors import Unsupported

            raise Unsupported("the NeRF teacher cannot be exported (its sampling depends on the data); "
                              "distill it with `mobilize train nelf` and export the student")
        images = []
        for p in pose:
            img, n = self.teacher.render_pose(p, self.height, self.width, self.focal, self.background)
            self.last_samples = n
            images.append(img.to(pose.device))
        return torch.stack(images)


def teacher_from_checkpoint(ckpt: dict) -> Teacher:
    shape = TeacherShape.from_dict(ckpt["config"]["model"])
    teacher = Teacher(shape)
    teacher.load_state_dict(ckpt["model"])
    return teacher.eval()


def sample_pose_inputs(radius: float):
    """A spec's `sample_inputs`: valid camera poses (R2L's ranges) as [1, 3, 4] float32."""
    from ...data.blender import random_poses

    def draw(rng: np.random.Generator) -> list[np.ndarray]:
        return [random_poses(rng, 1, radius)[:, :3, :4].astype(np.float32)]

    return draw
