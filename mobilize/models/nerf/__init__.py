"""Family "nerf": the NeRF teacher (multiresolution hash encoding + small MLP, volume rendering).

It exists to be distilled: `mobilize train nerf` fits it to a Blender NeRF data set,
`mobilize train nelf --teacher RUN_DIR` turns it into a NeLF student that phones can run.
`mobilize eval` scores it with the same code as its students (pose in, image out).
"""

from __future__ import annotations

from .._registry import Family, register_family
from .evaluate import ViewEvalConfig, evaluate_views
from .train import NerfTrainConfig, train


def spec_from_checkpoint(ckpt: dict, input_shapes=None):
    from ...errors import BadInput
    from ...spec import ModelSpec, SourceInfo, TensorSpec
    from .model import TeacherRenderer, sample_pose_inputs, teacher_from_checkpoint

    if input_shapes and [tuple(s) for s in input_shapes] != [(1, 3, 4)]:
        raise BadInput("a nerf checkpoint takes one input of shape 1,3,4 (a camera-to-world pose)")
    data = ckpt["config"]["data"]
    teacher = teacher_from_checkpoint(ckpt)
    module = TeacherRenderer(teacher, data["height"], data["width"], data["focal"], data["background"]).eval()
    metadata = {
        "kind": "nerf-teacher", "height": data["height"], "width": data["width"], "focal": data["focal"],
        "background": data["background"], "radius": data["radius"], "bound": ckpt["config"]["model"]["bound"],
        "pose_convention": "camera-to-world [R|t] rows 0-2, Blender/OpenGL camera (-z forward, +y up)",
        "metrics": ckpt.get("metrics", {}),
    }
    return ModelSpec(name="nerf", inputs=[TensorSpec("pose", (1, 3, 4), description="camera-to-world pose")],
                     source=SourceInfo("checkpoint"), module=module, output_names=["image"], family="nerf",
                     metadata=metadata, sample_inputs=sample_pose_inputs(data["radius"]))


def _evaluate(source, config, target=None, reporter=None):
    return evaluate_views(source, config, target, reporter)


FAMILY = register_family(Family(
    name="nerf",
    description="NeRF teacher: multiresolution hash encoding + small MLP, volume rendering with an occupancy "
                "grid. Trains on a Blender NeRF data set; distill it into a phone-sized NeLF with `train nelf`.",
    spec_from_checkpoint=spec_from_checkpoint,
    train_config=NerfTrainConfig,
    train=train,
    eval_config=ViewEvalConfig,
    evaluate=_evaluate,
    example="example:\n  mobilize train nerf --data data/lego --out runs/lego-nerf --steps 3000\n"
            "  mobilize eval runs/lego-nerf/model.pt --data data/lego --split val",
))
