"""Every kind of SOURCE a user can give: ONNX, TorchScript, a callable, an nn.Module, a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mobilize
from mobilize.models import Family, register_family
from mobilize.models.zoo import build
from mobilize.sources import load_source
from mobilize.spec import ModelSpec, TensorSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _onnx_file(tmp_path, name="mobilenet_v2_tiny", dynamic_batch=False):
    model = build(name)
    path = tmp_path / f"{name}.onnx"
    kwargs = {"dynamic_axes": {"x": {0: "batch"}}} if dynamic_batch else {}
    torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], **kwargs)
    return path


def test_onnx_source_exports_everywhere_against_onnxruntime_reference(tmp_path):
    src = _onnx_file(tmp_path)
    m = mobilize.export(src, "all", tmp_path / "a")
    assert m.source["kind"] == "onnx" and len(m.source["sha256"]) == 64
    assert [i["name"] for i in m.inputs] == ["x"] and [o["name"] for o in m.outputs] == ["logits"]
    for t, rec in m.targets.items():
        assert rec.status == "ok" and rec.parity["passed"], (t, rec.error)


def test_onnx_source_with_dynamic_batch_needs_input_shape(tmp_path, run_cli):
    src = _onnx_file(tmp_path, dynamic_batch=True)
    code, _, err = run_cli("export", src, "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert "input 'x' has a dynamic shape [?,3,64,64]" in err
    code, _, err = run_cli("export", src, "--input-shape", "1,3,32,32", "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert "--input-shape 1,3,32,32 does not fit input 'x' of shape [?,3,64,64]" in err
    code, out, _ = run_cli("export", src, "--input-shape", "1,3,64,64", "-t", "onnx", "-t", "ncnn",
                           "--out", tmp_path / "a", "--quiet")
    assert code == 0, out


def test_torchscript_source(tmp_path):
    model = build("unet_tiny")
    path = tmp_path / "unet.ts"
    torch.jit.trace(model, torch.randn(1, 3, 32, 32)).save(str(path))
    spec = load_source(str(path), ["1,3,32,32"])
    assert spec.source.kind == "torchscript"
    m = mobilize.export(path, "all", tmp_path / "a", input_shape=["1,3,32,32"])
    for t, rec in m.targets.items():
        assert rec.status == "ok" and rec.parity["passed"], (t, rec.error)


def test_module_object_from_python(tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.sigmoid(self.conv(x))

    torch.manual_seed(0)
    m = mobilize.export(Tiny(), ["onnx", "ncnn"], tmp_path / "a", input_shape=[(1, 3, 16, 16)], name="tiny")
    assert m.name == "tiny" and m.source["kind"] == "module" and len(m.source["sha256"]) == 64
    assert m.ok


# -- checkpoints of a registered family -----------------------------------------------------
def _toy_spec(ckpt: dict, shapes) -> ModelSpec:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    net.load_state_dict(ckpt["model"])
    return ModelSpec(name="toy", inputs=[TensorSpec("image", (1, 3, 16, 16), layout="NCHW")], source=None,
                     module=net.eval(), labels=["a", "b"], preprocess={"mean": [0.5] * 3, "std": [0.25] * 3},
                     metadata={"toy": {"answer": 42}})


register_family(Family(name="toyfamily_for_tests", description="test only", spec_from_checkpoint=_toy_spec))


def test_checkpoint_source_through_the_family_registry(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    ckpt = tmp_path / "best.pt"
    torch.save({"family": "toyfamily_for_tests", "model": net.state_dict()}, ckpt)
    m = mobilize.export(ckpt, ["onnx", "tflite"], tmp_path / "a")
    assert m.family == "toyfamily_for_tests"
    assert m.source["kind"] == "checkpoint" and m.source["path"] == "best.pt"
    assert m.labels == ["a", "b"] and m.metadata == {"toy": {"answer": 42}}
    assert m.preprocess == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert m.ok
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    from mobilize.runtimes import open_predictor

    with open_predictor(tmp_path / "a", "tflite") as p:
        assert np.abs(p.run([x])[0] - ref).max() < 1e-5
    with open_predictor(ckpt) as p:
        assert p.kind == "torch" and np.abs(p.predict(x)[0] - ref).max() < 1e-6


@pytest.mark.parametrize("module, cls, required", [
    ("mobilize.models.detector.model", "DetectorConfig", {"num_classes": 3}),
    ("mobilize.models.retrieval.model", "NetConfig", {}),
    ("mobilize.models.nelf.model", "StudentShape", {"height": 8, "width": 8, "focal": 10.0, "near": 2.0, "far": 6.0}),
    ("mobilize.models.nerf.model", "TeacherShape", {}),
])
def test_shape_configs_round_trip_and_ignore_unknown_keys(module, cls, required):
    """A checkpoint's network shape reads back equal, and one written with a key this version
    does not know (a newer mobilize) still loads."""
    import importlib

    shape_cls = getattr(importlib.import_module(module), cls)
    shape = shape_cls(**required)
    assert shape_cls.from_dict(shape.to_dict()) == shape
    assert shape_cls.from_dict({**shape.to_dict(), "added_in_a_later_version": 1}) == shape
