"""The retrieval family: "photograph a product, find the same item in the catalogue".

A compact embedding network (depthwise-separable backbone, GeM, BN-neck, L2-normalised
D-dim output), trained with ArcFace + batch-hard triplet on P x K batches; an exact cosine
index with k-reciprocal re-ranking and category voting. See docs/retrieval.md.

Imports here stay light (the CLI imports every family at start-up); torch loads on use.
"""

from __future__ import annotations

from .._registry import Family, register_family
from .evaluate import EvalConfig, evaluate
from .train import TrainConfig, train


def spec_from_checkpoint(ckpt: dict, input_shapes=None):
    import numpy as np

    from ...errors import BadInput
    from ...spec import ModelSpec, SourceInfo, TensorSpec
    from .model import NetConfig, build_net, count_parameters

    try:
        ncfg = NetConfig.from_dict(ckpt["config"]["net"])
        net = build_net(ncfg)
        net.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise BadInput(f"the retrieval checkpoint is incomplete or from another version: {str(e).splitlines()[0][:200]}") from e
    net.eval()
    shape = (1, 3, ncfg.input_size, ncfg.input_size)
    if input_shapes:
        if len(input_shapes) != 1 or len(input_shapes[0]) != 4 or input_shapes[0][1] != 3:
            raise BadInput("a retrieval model has one input [N, 3, H, W]", "e.g. --input-shape 1,3,160,160")
        shape = tuple(int(d) for d in input_shapes[0])
    preprocess = {"resize": "stretch to H x W", "channel_order": "RGB", "scale": 1 / 255,
                  "mean": list(ncfg.image_mean), "std": list(ncfg.image_std)}
    train_cfg = ckpt.get("config", {}).get("train", {})
    metadata = {
        "task": "retrieval",
        "embedding_dim": ncfg.embedding_dim,
        "embedding": "L2-normalised: similarity = dot product (cosine)",
        "input_size": shape[2],
        "backbone": ncfg.backbone,
        "width": ncfg.width,
        "attention": ncfg.attention,
        "parameters": count_parameters(net),
        "recipe": {k: train_cfg.get(k) for k in ("head", "arcface_scale", "arcface_margin", "triplet_weight",
                                                 "random_erasing", "mutual", "epochs", "pretrained") if k in train_cfg},
        "val_metrics": ckpt.get("metrics", {}),
        "index": {"file": "index.safetensors", "format": "mobilize.retrieval-index/1",
                  "build": "mobilize index ARTIFACT --data PATH --gallery train,catalog"},
    }

    mean = np.asarray(ncfg.image_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(ncfg.image_std, np.float32).reshape(1, 3, 1, 1)

    def sample_inputs(rng):
        """Smooth random pictures in the normalised range (pure noise is not what runs in the app)."""
        n, c, h, w = shape
        coarse = rng.uniform(0, 1, (n, c, max(1, h // 8), max(1, w // 8))).astype(np.float32)
        img = np.kron(coarse, np.ones((1, 1, 8, 8), np.float32))[:, :, :h, :w]
        img = np.pad(img, ((0, 0), (0, 0), (0, h - img.shape[2]), (0, w - img.shape[3])), mode="edge")
        img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)
        return [(img - mean) / std]

    def calib_inputs(img):
        from ..._export import image_to_input

        return [image_to_input(img, shape, preprocess)]

    return ModelSpec(name="retrieval", inputs=[TensorSpec("image", shape, "float32", "NCHW",
                                                          "RGB image, normalised as preprocess says")],
                     source=SourceInfo("checkpoint"), module=net, output_names=["embedding"],
                     preprocess=preprocess, labels=list(ckpt.get("classes", [])), family="retrieval",
                     metadata=metadata, sample_inputs=sample_inputs, calib_inputs=calib_inputs)


def demo(workdir, reporter):
    from .demo import run

    return run(workdir, reporter)


register_family(Family(
    name="retrieval",
    description="Product retrieval: an embedding network (ArcFace + triplet), exact index, re-ranking.",
    spec_from_checkpoint=spec_from_checkpoint,
    train_config=TrainConfig,
    train=train,
    eval_config=EvalConfig,
    evaluate=evaluate,
    demo=demo,
    demo_order=30,
    example="example: mobilize train retrieval --data data/grocery --out runs/ret --train-size 192",
))
