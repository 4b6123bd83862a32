"""Layer-by-layer timing on this machine (mobilize/devices/kernels.py): what the host profile is
calibrated on. No timing is asserted, only that every working layer is timed on its own, in a
network ncnn accepts, with the options asked for."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mobilize.devices.graph import Layer, analyse, read_param
from mobilize.devices.kernels import KernelTimer, fastest_layer_ms, mini_param, signature, time_graph_layers

PARAM = """7767517
6 7
Input data 0 1 data 0=32 1=32 2=16
Convolution conv 1 1 data c 0=16 1=3 4=1 5=1 6=2304 9=1
Split split 1 2 c c0 c1
ConvolutionDepthWise dw 1 1 c0 d 0=16 1=3 4=1 5=1 6=144 7=16
BinaryOp add 2 1 d c1 s 0=0
Pooling gap 1 1 s out 0=1 4=1
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kernels") / "small.param"
    path.write_text(PARAM)
    return path


@pytest.fixture(scope="module")
def timer():
    t = KernelTimer(min_reps=2, max_reps=5, budget_s=0.01)
    yield t
    t.close()


def test_every_working_layer_is_timed_on_its_own(small, timer):
    graph = analyse(small)
    times = time_graph_layers(small, graph, timer)
    assert set(times) == {"conv", "dw", "add", "gap"}  # Input and Split move no data
    assert all(math.isfinite(v) and v >= 0.0 for v in times.values())
    assert timer.overhead_ms > 0.0


def test_a_layer_runs_alone_behind_one_input_per_bottom(small):
    import ncnn

    add = next(layer for layer in read_param(small) if layer.name == "add")
    text = mini_param(add, [[16, 32, 32], [16, 32, 32]])
    lines = text.splitlines()
    assert lines[0] == "7767517" and lines[1] == "3 3"
    assert lines[2] == "Input in0 0 1 b0 0=32 1=32 2=16"
    assert lines[3] == "Input in1 0 1 b1 0=32 1=32 2=16"
    assert lines[4] == "BinaryOp layer 2 1 b0 b1 t0 0=0"
    net = ncnn.Net()
    path = small.parent / "mini.param"
    path.write_text(text)
    assert net.load_param(str(path)) == 0


def test_a_layer_is_timed_once_per_shape(small, timer):
    conv = next(layer for layer in read_param(small) if layer.name == "conv")
    assert signature(conv, [[16, 32, 32]]) == signature(conv, [[16, 32, 32]])
    assert signature(conv, [[16, 32, 32]]) != signature(conv, [[16, 64, 64]])
    first = timer.time_layer(conv, [[16, 32, 32]])
    cached = dict(timer.cache)
    assert cached[signature(conv, [[16, 32, 32]])] == first
    assert timer.time_layer(conv, [[16, 32, 32]]) == first and timer.cache == cached  # cached, not re-timed


def test_ncnn_options_are_applied_and_a_misspelt_one_is_refused():
    conv = Layer("Convolution", "conv", ["b0"], ["t0"], {}, ["0=16", "1=3", "4=1", "5=1", "6=2304"])
    off = KernelTimer(min_reps=1, max_reps=2, budget_s=0.0, options={"use_winograd_convolution": False})
    try:
        net = off._net(mini_param(conv, [[16, 16, 16]]))
        assert net.opt.use_winograd_convolution is False and net.opt.use_fp16_storage is False
        net.clear()
        assert off.time_layer(conv, [[16, 16, 16]]) >= 0.0
    finally:
        off.close()
    with pytest.raises(ValueError, match=r"^ncnn.Option has no 'use_magic_convolution'$"):
        KernelTimer(options={"use_magic_convolution": True})


def test_fastest_layer_ms_times_each_pass_with_the_options_given_and_leaves_no_files(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    conv = Layer("Convolution", "conv", ["b0"], ["t0"], {}, ["0=16", "1=3", "4=1", "5=1", "6=2304"])
    ms = fastest_layer_ms(conv, [[16, 16, 16]], passes=2, options={"use_winograd_convolution": False})
    assert math.isfinite(ms) and ms >= 0.0
    with pytest.raises(ValueError, match=r"^ncnn.Option has no 'use_magic_convolution'$"):
        fastest_layer_ms(conv, [[16, 16, 16]], passes=1, options={"use_magic_convolution": True})
    assert list(tmp_path.iterdir()) == []  # every timer's folder removed, the refused one's too
