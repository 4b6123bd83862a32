"""Family "nelf": a neural light field student (R2L / MobileR2L) distilled from a NeRF teacher.

The exported graph takes a camera-to-world pose [1, 3, 4] and returns the image
[1, H, W, 3] (RGB in [0, 1], rows top to bottom). Ray generation, point sampling and the
positional encoding run inside the graph; the camera it was trained for (size, focal,
near/far) and the background colour are in the manifest's metadata.
"""

from __future__ import annotations

from .._registry import Family, register_family
from ..nerf.evaluate import ViewEvalConfig, evaluate_views
from .train import NelfTrainConfig, train

POSE_CONVENTION = ("camera-to-world [R|t] (rows 0-2 of the 4x4 Blender transform_matrix); Blender/OpenGL "
                   "camera: looks down -z, +y up, +x right; pixels sampled at their centres")


def spec_from_checkpoint(ckpt: dict, input_shapes=None):
    from ...errors import BadInput
    from ...spec import ModelSpec, SourceInfo, TensorSpec
    from ..nerf.model import sample_pose_inputs
    from .model import student_from_checkpoint

    if input_shapes and [tuple(s) for s in input_shapes] != [(1, 3, 4)]:
        raise BadInput("a nelf checkpoint takes one input of shape 1,3,4 (a camera-to-world pose)",
                       "drop --input-shape: the image size is fixed by training")
    model = student_from_checkpoint(ckpt)
    s = model.shape
    data = ckpt["config"]["data"]
    cost = model.flops()
    metadata = {
        "kind": "nelf-student", "height": s.height, "width": s.width, "focal": s.focal,
        "camera_angle_x": data.get("camera_angle_x"), "near": s.near, "far": s.far,
        "background": list(data["background"]), "radius": data["radius"], "bound": s.bound,
        "points_per_ray": s.points, "encoding_frequencies": s.freqs, "hidden": s.hidden, "depth": s.depth,
        "compute_scale": s.scale, "pose_convention": POSE_CONVENTION,
        "output": "image [1, H, W, 3], RGB in [0, 1], row 0 at the top",
        "flops_per_frame": cost["per_frame"], "flops_per_pixel": cost["per_pixel"],
        "parameters": model.parameter_count(), "metrics": ckpt.get("metrics", {}),
        "teacher_sha256": data.get("teacher_sha256"),
    }
    return ModelSpec(name="nelf", inputs=[TensorSpec("pose", (1, 3, 4), description="camera-to-world pose")],
                     source=SourceInfo("checkpoint"), module=model, output_names=["image"], family="nelf",
                     metadata=metadata, sample_inputs=sample_pose_inputs(data["radius"]))


def _evaluate(source, config, target=None, reporter=None):
    return evaluate_views(source, config, target, reporter)


def _demo(workdir, reporter):
    from .demo import demo

    return demo(workdir, reporter)


FAMILY = register_family(Family(
    name="nelf",
    description="NeLF student (R2L / MobileR2L): distills a nerf teacher into a deep residual network of 1x1 "
                "convolutions that renders a camera pose to an image, with optional low-resolution compute "
                "and learned upsampling. Exports to ONNX, ncnn, TF.js and TFLite.",
    spec_from_checkpoint=spec_from_checkpoint,
    train_config=NelfTrainConfig,
    train=train,
    eval_config=ViewEvalConfig,
    evaluate=_evaluate,
    demo=_demo,
    demo_order=50,
    example="example:\n  mobilize train nelf --data data/lego --teacher runs/lego-nerf --out runs/lego-nelf\n"
            "  mobilize export runs/lego-nelf/model.pt --target all --out artifacts/lego-nelf\n"
            "  mobilize eval artifacts/lego-nelf --target ncnn --data data/lego --split val --json",
))
