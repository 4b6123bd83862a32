"""The Blender NeRF format (NeRF-Synthetic): `transforms_{split}.json` + RGBA PNGs, and its camera.

Camera convention (Blender / OpenGL, as in the NeRF papers): `transform_matrix` is
camera-to-world; the camera looks down its -z axis with +y up and +x right. Pixel (row j,
column i) is sampled at its centre, so its ray direction in camera space is
((i + 0.5 - W/2) / f, -(j + 0.5 - H/2) / f, -1); focal f = 0.5 W / tan(camera_angle_x / 2).
Pixel centres (not corners, as the original NeRF code uses) matter once images are
box-filtered down: the centre of a downsampled pixel is the centre of the block it averages.

RGBA images are composited on a background colour of the caller's choosing; the same colour
must be used to train and to evaluate (it goes into checkpoints and manifests).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput

SPLITS = ("train", "val", "test")
NAMED_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5)}


@dataclass
class Views:
    """Posed images of one split: everything a NeRF or NeLF needs to train or be judged."""

    images: np.ndarray  # [N, H, W, 3] float32 in [0, 1], composited on `background`
    poses: np.ndarray  # [N, 4, 4] float32 camera-to-world
    focal: float
    background: tuple[float, float, float]
    alpha: np.ndarray | None = None  # [N, H, W] float32 when the images had an alpha channel
    names: list[str] = field(default_factory=list)
    camera_angle_x: float | None = None

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def radius(self) -> float:
        """Mean distance of the cameras from the origin (R2L samples pseudo poses there)."""
        return float(np.linalg.norm(self.poses[:, :3, 3], axis=1).mean())


# -- backgrounds --------------------------------------------------------------------------
def parse_background(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'white' | 'black' | 'gray' | 'R,G,B' with components in [0, 1]."""
    if not isinstance(text, str):
        values = [float(v) for v in text]
    elif text.strip().lower() in NAMED_BACKGROUNDS:
        return NAMED_BACKGROUNDS[text.strip().lower()]
    else:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise BadInput(f"--background '{text}' is not a colour",
                       "use white, black, gray or three numbers in [0, 1] such as 1,1,1")
    return (values[0], values[1], values[2])


# -- camera -------------------------------------------------------------------------------
def focal_from_angle(width: int, camera_angle_x: float) -> float:
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def camera_directions(height: int, width: int, focal: float, normalize: bool = True) -> np.ndarray:
    """[H, W, 3] ray directions in camera space through each pixel centre."""
    i, j = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64), indexing="xy")
    d = np.stack([(i + 0.5 - 0.5 * width) / focal, -(j + 0.5 - 0.5 * height) / focal, -np.ones_like(i)], -1)
    if normalize:
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return d.astype(np.float32)


def camera_rays(c2w: np.ndarray, height: int, width: int, focal: float,
                normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """World-space (origins, directions), each [H, W, 3], of one camera-to-world pose."""
    c2w = np.asarray(c2w, np.float64)
    d_cam = camera_directions(height, width, focal, normalize).astype(np.float64)
    dirs = d_cam @ c2w[:3, :3].T
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
    return origins.astype(np.float32), dirs.astype(np.float32)


def pose_spherical(theta_deg: float, phi_deg: float, radius: float) -> np.ndarray:
    """Camera-to-world pose on a sphere looking at the origin, as NeRF's `pose_spherical`.

    theta is the azimuth; phi the elevation *below* the horizon, so phi in [-90, 0] puts the
    camera on the upper hemisphere (phi = -90: straight down from above). The Blender world
    is z-up; the camera's up vector stays in the vertical plane through it.
    """
    th, ph = math.radians(theta_deg), math.radians(phi_deg)
    trans = np.eye(4)
    trans[2, 3] = radius
    rot_phi = np.array([[1, 0, 0, 0], [0, math.cos(ph), -math.sin(ph), 0],
                        [0, math.sin(ph), math.cos(ph), 0], [0, 0, 0, 1]])
    rot_theta = np.array([[math.cos(th), 0, -math.sin(th), 0], [0, 1, 0, 0],
                          [math.sin(th), 0, math.cos(th), 0], [0, 0, 0, 1]])
    blender = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    return (blender @ rot_theta @ rot_phi @ trans).astype(np.float32)


def random_poses(rng: np.random.Generator, count: int, radius: float,
                 theta_range: tuple[float, float] = (-180.0, 180.0),
                 phi_range: tuple[float, float] = (-90.0, 0.0)) -> np.ndarray:
    """[count, 4, 4] poses with theta and phi uniform in their ranges (R2L's pseudo-data)."""
    th = rng.uniform(*theta_range, size=count)
    ph = rng.uniform(*phi_range, size=count)
    return np.stack([pose_spherical(t, p, radius) for t, p in zip(th, ph)]).astype(np.float32)


def ray_box(origins: np.ndarray, dirs: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances of rays through the cube [-bound, bound]^3 (exit < entry: miss)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
        t0, t1 = (-bound - origins) * inv, (bound - origins) * inv
    near = np.maximum(np.minimum(t0, t1).max(-1), 0.0)
    far = np.maximum(t0, t1).min(-1)
    return near, far


# -- reading ------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"'{path}' is not valid JSON: {e.msg} at line {e.lineno}") from e
    if not isinstance(meta, dict) or "frames" not in meta or "camera_angle_x" not in meta:
        raise BadInput(f"'{path}' is not a Blender NeRF transforms file",
                       "it needs 'camera_angle_x' and a list of 'frames' with 'file_path' and 'transform_matrix'")
    return meta


def _image_path(root: Path, file_path: str) -> Path:
    p = (root / file_path).resolve()
    if p.suffix == "":
        p = p.with_suffix(".png")
    return p


def load_blender(root: str | Path, split: str = "train", background: str | Sequence[float] = "white",
                 limit: int | None = None) -> Views:
    """Read one split of a Blender NeRF data set; RGBA is composited on `background`."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"--data '{root}' is not a directory",
                       "give a Blender NeRF data set (a folder with transforms_train.json)")
    if split not in SPLITS:
        raise BadInput(f"--split '{split}' is not one of {', '.join(SPLITS)}")
    meta_path = root / f"transforms_{split}.json"
    if not meta_path.is_file():
        have = sorted(p.name for p in root.glob("transforms_*.json"))
        raise BadInput(f"'{root}' has no transforms_{split}.json",
                       f"it has: {', '.join(have)}" if have else "is it a Blender NeRF data set?")
    meta = _read_json(meta_path)
    frames = meta["frames"][: limit if limit else None]
    if not frames:
        raise BadInput(f"'{meta_path}' lists no frames")
    bg = np.asarray(parse_background(background), np.float32)
    images, alphas, poses, names = [], [], [], []
    has_alpha = True
    size = None
    for fr in frames:
        path = _image_path(root, fr["file_path"])
        if not path.is_file():
            raise BadInput(f"image '{path}' listed in {meta_path.name} does not exist")
        try:
            img = Image.open(path)
            img.load()
        except Exception as e:
            raise BadInput(f"cannot read image '{path}': {e}") from e
        rgba = np.asarray(img.convert("RGBA"), np.float32) / 255.0
        has_alpha &= img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
        if size is None:
            size = rgba.shape[:2]
        elif rgba.shape[:2] != size:
            raise BadInput(f"'{path.name}' is {rgba.shape[1]}x{rgba.shape[0]} but the first image is "
                           f"{size[1]}x{size[0]}", "all views of a split must have the same size")
        a = rgba[..., 3:]
        images.append(rgba[..., :3] * a + bg * (1.0 - a))
        alphas.append(rgba[..., 3])
        pose = np.asarray(fr.get("transform_matrix"), np.float32)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise BadInput(f"frame '{fr.get('file_path')}' in {meta_path.name} has no valid 4x4 transform_matrix")
        poses.append(pose)
        names.append(str(fr["file_path"]))
    angle = float(meta["camera_angle_x"])
    width = size[1]
    return Views(images=np.stack(images).astype(np.float32), poses=np.stack(poses),
                 focal=focal_from_angle(width, angle), background=tuple(float(v) for v in bg),
                 alpha=np.stack(alphas) if has_alpha else None, names=names, camera_angle_x=angle)


def check_data_dir(root: str | Path, split: str = "train") -> Path:
    """Fail early (before a long job) when --data is not a Blender data set with this split."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"--data '{root}' is not a directory",
                       "give a Blender NeRF data set (a folder with transforms_train.json)")
    if not (root / f"transforms_{split}.json").is_file():
        raise BadInput(f"'{root}' has no transforms_{split}.json", "is it a Blender NeRF data set?")
    return root


# -- writing ------------------------------------------------------------------------------
def write_blender(root: str | Path, split: str, rgba: np.ndarray, poses: np.ndarray,
                  camera_angle_x: float) -> Path:
    """Write one split (images [N, H, W, 4] in [0, 1]) in the Blender format; JSON last and atomic."""
    from PIL import Image

    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for k, (img, pose) in enumerate(zip(rgba, poses)):
        name = f"r_{k}"
        data = np.clip(np.round(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)
        tmp = root / split / f".{name}.png.tmp"
        Image.fromarray(data, "RGBA").save(tmp, format="PNG")
        os.replace(tmp, root / split / f"{name}.png")
        frames.append({"file_path": f"./{split}/{name}", "transform_matrix": np.asarray(pose, float).tolist()})
    meta = {"camera_angle_x": float(camera_angle_x), "frames": frames}
    fd, tmp = tempfile.mkstemp(prefix=f".transforms_{split}.", dir=root)
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, root / f"transforms_{split}.json")
    return root
