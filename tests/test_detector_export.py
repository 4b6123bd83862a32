"""The new user's path, end to end, with the documented commands and default settings:
a small single-class VOC set with no split files -> `mobilize train detector` -> `mobilize
export --target all` -> `mobilize eval` on every artifact, which must score what the
checkpoint scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mobilize.cli import main
from mobilize.data.detection_synthetic import make_synthetic
from mobilize.manifest import Manifest
from mobilize.models.detector.evaluate import EvalConfig, evaluate

TARGETS = ("onnx", "ncnn", "tfjs", "tflite")


def _cli(capsys, *argv) -> dict:
    code = main([str(a) for a in argv] + ["--json"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return json.loads(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Default settings except --epochs and --imgsz, which only shorten the run for CI (the
    defaults at full size are what the BCCD benchmark trains), and --threads 1 (CI machines
    are shared: two spinning threads there are slower than one)."""
    root = tmp_path_factory.mktemp("user")
    data = make_synthetic(root / "circles", "voc", classes=("circle",), train=56, val=8, size=96, seed=4,
                          splits=False)
    code = main(["train", "detector", "--data", str(data), "--out", str(root / "run"), "--epochs", "40",
                 "--imgsz", "96", "--threads", "1", "--quiet"])
    assert code == 0
    code = main(["export", str(root / "run" / "best.pt"), "--target", "all", "--out", str(root / "artifact"), "--quiet"])
    assert code == 0
    ref = evaluate(str(root / "run" / "best.pt"), EvalConfig(data=str(data), plot="none"))
    return data, root / "run" / "best.pt", root / "artifact", ref


@pytest.mark.slow
def test_new_user_single_class_gets_a_working_detector(trained, capsys):
    data, best, artifact, ref = trained
    metrics = _cli(capsys, "eval", best, "--data", data, "--split", "val", "--plot", "none")
    assert metrics["map50"] == ref["map50"]  # CLI and Python API agree
    assert metrics["map50"] > 0.5, metrics
    assert set(metrics) >= {"map50", "map50_95", "ap50/circle", "ap50_95/circle"}
    manifest = Manifest.load(artifact)
    assert manifest.ok and manifest.family == "detector" and manifest.labels == ["circle"]
    assert manifest.preprocess["resize"] == "letterbox" and manifest.preprocess["channel_order"] == "RGB"
    meta = manifest.metadata
    assert meta["input_size"] == [96, 96] and 0 < meta["score_threshold"] < 1 and 0 < meta["iou_threshold"] < 1
    assert [o["name"] for o in manifest.outputs] == ["boxes", "scores"]
    assert manifest.outputs[0]["shape"] == [1, 12 * 12 + 6 * 6 + 3 * 3, 4]
    assert "x1, y1, x2, y2" in meta["output_layout"]["boxes"]


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_eval_on_artifact_equals_eval_on_checkpoint(trained, target, capsys, tmp_path):
    data, best, artifact, ref = trained
    got = _cli(capsys, "eval", artifact, "--target", target, "--data", data, "--split", "val",
               "--plot", tmp_path / "pr.png")
    assert got["runtime"] == target and ref["runtime"] == "torch"
    assert got["images"] == ref["images"] and got["boxes"] == ref["boxes"]
    # the same detections up to float rounding of the runtime: mAP equal to 1e-3
    assert abs(got["detections"] - ref["detections"]) <= max(2, 0.01 * ref["detections"])
    for key in ("map50", "map50_95", "ap50/circle"):
        assert got[key] == pytest.approx(ref[key], abs=1e-3), key
    assert Path(got["pr_curve"]).is_file()


@pytest.mark.slow
def test_bench_metric_column_is_the_family_metric_per_format(trained, capsys, tmp_path):
    """`mobilize bench ARTIFACT --data DATA`: the metric column is each format's own mAP@0.5,
    which equals the checkpoint's (the same runtimes as `eval`)."""
    data, best, artifact, ref = trained
    result = _cli(capsys, "bench", artifact, "--data", data, "--device", "android-lowend", "--out", tmp_path)
    rows = {r["format"]: r for r in result["rows"]}
    assert set(rows) >= set(TARGETS)
    for target in TARGETS:
        assert rows[target]["status"] == "ok", rows[target]
        assert rows[target]["metric_name"] == "map50"
        assert rows[target]["metric"] == pytest.approx(ref["map50"], abs=1e-3), target
    assert rows["ncnn"]["latency_ms"]["android-lowend"] > 0
    assert "map50" in (tmp_path / "bench.md").read_text()
