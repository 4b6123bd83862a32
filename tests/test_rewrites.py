"""Rewrites for converter bugs compute exactly what the original computes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper

from mobilize.exporters.onnx_rewrites import channel_shuffle_as_gather, erf_polynomial
from mobilize.exporters.rewrites import CeilModeAvgPool2d, apply_rewrites


@pytest.mark.parametrize("size", [7, 8, 9, 16, 17, 18])
@pytest.mark.parametrize("k, s, p, include_pad", [(3, 2, 0, True), (3, 2, 1, True), (3, 2, 1, False),
                                                  (2, 2, 0, True), (5, 3, 2, False), (3, 1, 1, True)])
def test_ceil_mode_avgpool_rewrite_is_exact(size, k, s, p, include_pad):
    pool = nn.AvgPool2d(k, s, p, ceil_mode=True, count_include_pad=include_pad)
    x = torch.randn(1, 4, size, size + 1)
    fixed = CeilModeAvgPool2d(pool, (size, size + 1))
    assert torch.allclose(fixed(x), pool(x), atol=1e-6)


def test_apply_rewrites_leaves_the_original_and_reports_names():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AvgPool2d(3, 2, ceil_mode=True))
    x = torch.randn(1, 3, 10, 10)
    new, applied = apply_rewrites(net, [x], "pnnx")
    assert applied == ["avgpool_ceil_mode"]
    assert isinstance(net[1], nn.AvgPool2d) and isinstance(new[1], CeilModeAvgPool2d)
    assert torch.allclose(new(x), net(x), atol=1e-6)
    same, none = apply_rewrites(net, [x], "torch.onnx")
    assert same is net and none == []


def _run(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_erf_polynomial_matches_erf_to_5e7_in_float32():
    from scipy.special import erf

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1000])
    model = helper.make_model(helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    assert erf_polynomial(model) == 1
    onnx.checker.check_model(model)
    assert "Erf" not in {n.op_type for n in model.graph.node}
    xs = np.linspace(-6, 6, 1000).astype(np.float32)
    assert np.abs(_run(model, {"x": xs}) - erf(xs.astype(np.float64))).max() < 5e-7  # A&S: 1.5e-7, plus float32 rounding


def test_channel_shuffle_becomes_gather_with_same_result(tmp_path):
    class Shuffle(nn.Module):
        def forward(self, x):
            b, c, h, w = x.shape
            return x.view(b, 4, c // 4, h, w).transpose(1, 2).reshape(b, c, h, w) * 2

    x = torch.randn(1, 12, 5, 6)
    path = str(tmp_path / "shuffle.onnx")
    torch.onnx.export(Shuffle(), (x,), path, dynamo=False, opset_version=17, input_names=["x"])
    model = onnx.load(path)
    assert channel_shuffle_as_gather(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "Gather" in ops and "Transpose" not in ops
    assert np.allclose(_run(model, {"x": x.numpy()}), Shuffle()(x).numpy())
