"""Training the detector: the loss falls, eval runs, checkpoints are data, --resume continues
exactly, and the CLI answers bad input with exit code 2 and one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilize.cli import main
from mobilize.data.detection_synthetic import make_synthetic
from mobilize.errors import BadInput
from mobilize.models.detector import train as train_mod
from mobilize.models.detector.config import TrainConfig
from mobilize.models.detector.evaluate import EvalConfig, evaluate
from mobilize.models.detector.model import DetectorConfig, build_detector
from mobilize.models.detector.train import train

TINY = dict(imgsz=96, width=0.25, neck_channels=32, batch=8, threads=1, warmup=5)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("shapes"), "voc", train=32, val=8, size=96, seed=1)


def _cfg(data, out, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), **(TINY | kw))


def test_loss_decreases_and_eval_runs(shapes, tmp_path):
    summary = train(_cfg(shapes, tmp_path / "run", epochs=6, lr=5e-3))
    ckpt = torch.load(summary["last"], weights_only=True)  # a checkpoint is data
    losses = [h["loss"] for h in ckpt["meta"]["history"]]
    assert len(losses) == 6 and summary["steps"] == 24
    assert losses[-1] < 0.9 * losses[0] and losses[-1] == min(losses), losses
    best = torch.load(summary["best"], weights_only=True)
    assert best["family"] == "detector" and "optimizer" not in best and "optimizer" in ckpt
    assert best["meta"]["classes"] == ["circle", "square", "triangle"]
    metrics = evaluate(summary["best"], EvalConfig(data=str(shapes), split="val"))
    assert 0.0 <= metrics["map50_95"] <= metrics["map50"] <= 1.0
    assert {"ap50/circle", "ap50_95/triangle", "images", "detections"} <= set(metrics)
    assert metrics["images"] == 8
    assert Path(metrics["pr_curve"]).stat().st_size > 1000
    # the metric training recorded for best.pt is the metric eval computes for it
    assert best["metrics"]["map50"] == pytest.approx(metrics["map50"], abs=1e-9)


def test_resume_continues_exactly(shapes, tmp_path, monkeypatch):
    straight = train(_cfg(shapes, tmp_path / "a", epochs=2))

    calls = {"n": 0}
    real_barrier = train_mod.barrier

    def crash_after_first_epoch(env):
        real_barrier(env)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after last.pt of epoch 1 was written

    monkeypatch.setattr(train_mod, "barrier", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(shapes, tmp_path / "b", epochs=2))
    monkeypatch.setattr(train_mod, "barrier", real_barrier)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(BadInput, match="already holds a run"):
        train(_cfg(shapes, tmp_path / "b", epochs=2))
    resumed = train(_cfg(shapes, tmp_path / "b", epochs=2, resume=True))
    assert resumed["steps"] == straight["steps"] == 8
    a = torch.load(straight["last"], weights_only=True)
    b = torch.load(resumed["last"], weights_only=True)
    for key in ("model", "raw_model"):
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=0, atol=1e-6, msg=f"{key}.{name}")


def test_exported_graph_decodes_what_the_loss_trains():
    """forward() (the exported graph) = forward_raw() + the box decoding the loss uses."""
    torch.manual_seed(0)
    m = build_detector(DetectorConfig(num_classes=2, imgsz=64, width=0.25, neck_channels=16)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        boxes, scores = m(x)
        cls, reg = m.forward_raw(x)
    assert boxes.shape == (2, 64 + 16 + 4, 4) and scores.shape == (2, 84, 2)
    dist = (reg.softmax(-1) * torch.arange(reg.shape[-1])).sum(-1) * m.point_strides[:, None]
    expect = torch.cat([m.points - dist[..., :2], m.points + dist[..., 2:]], -1)
    torch.testing.assert_close(boxes, expect, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(scores, cls.sigmoid())
    assert m.points[0].tolist() == [4.0, 4.0] and m.points[63].tolist() == [60.0, 60.0]


# -- command line --------------------------------------------------------------------------
def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_bad_input(shapes, tmp_path, capsys):
    code, _, err = _cli(capsys, "train", "detector", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert code == 2 and "data path" in err and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "train", "detector", "--data", str(shapes), "--format", "xml", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown data format 'xml'" in err and "voc, coco, yolo" in err
    code, _, err = _cli(capsys, "train", "detector", "--data", str(shapes), "--imgsz", "100", "--out", str(tmp_path / "r"))
    assert code == 2 and "multiple of 32" in err
    code, _, err = _cli(capsys, "train", "detector", "--data", str(shapes), "--out", str(tmp_path / "r"), "--resume")
    assert code == 2 and "last.pt' does not exist" in err
    code, _, err = _cli(capsys, "eval", str(tmp_path / "nothing.pt"), "--data", str(shapes))
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "r").exists()  # bad input leaves nothing behind


def test_cli_train_and_eval_json(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", "detector", "--data", str(shapes), "--out", str(run), "--epochs", "1",
                          "--imgsz", "64", "--width", "0.25", "--neck-channels", "16", "--batch", "8", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 4 and Path(summary["best"]).is_file()
    code, out, err = _cli(capsys, "eval", summary["best"], "--data", str(shapes), "--split", "val", "--json",
                          "--plot", str(tmp_path / "pr.png"))
    assert code == 0, err
    metrics = json.loads(out)
    assert {"map50", "map50_95", "ap50/square"} <= set(metrics) and metrics["images"] == 8
    assert (tmp_path / "pr.png").is_file()
    code, _, err = _cli(capsys, "eval", summary["best"], "--data", str(shapes), "--target", "onnx")
    assert code == 2 and "needs an exported artifact" in err
