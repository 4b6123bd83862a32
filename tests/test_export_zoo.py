"""Every zoo architecture exports to all four targets, and each artifact matches PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mobilize
from mobilize.exporters import TARGETS
from mobilize.models.zoo import ZOO
from mobilize.spec import sha256_file


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_exports_everywhere_with_parity(name, tmp_path):
    out = tmp_path / name
    manifest = mobilize.export(f"mobilize.models.zoo:{name}", "all", out)

    assert manifest.location == out
    for target in TARGETS:
        rec = manifest.targets[target]
        assert rec.status == "ok", f"{target}: {rec.error}"
        assert rec.parity["passed"], rec.parity
        assert rec.parity["samples"] == 4
        for o in rec.parity["outputs"]:
            assert o["max_abs_err"] <= o["abs_bound"]
            assert o["cosine"] >= rec.parity["tolerance"]["min_cosine"]
        assert len(rec.io["inputs"]) == len(manifest.inputs)
        assert len(rec.io["outputs"]) == len(manifest.outputs)
        for f in rec.files:
            path = out / f.path
            assert path.stat().st_size == f.bytes
            assert sha256_file(path) == f.sha256

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest.to_dict()
    # nothing but the artifact's own files: no pnnx/onnx2tf intermediates
    listed = {"manifest.json"} | {f.path for t in manifest.targets.values() for f in t.files}
    listed |= {f["path"] for t in manifest.targets.values() for v in t.variants.values() for f in v["files"]}
    present = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert present == listed


def test_image_inputs_are_nhwc_in_tfjs_and_tflite_and_batchless_in_ncnn(tmp_path):
    m = mobilize.export("mobilize.models.zoo:two_inputs_three_outputs", "all", tmp_path / "a")
    for target in ("tfjs", "tflite"):
        image, vector = m.targets[target].io["inputs"]
        assert image["layout"] == "NHWC" and image["shape"] == [1, 32, 32, 3] and image["perm"] == [0, 2, 3, 1]
        assert vector["shape"] == [1, 8]
        seg = m.targets[target].io["outputs"][0]
        assert seg["shape"] == [1, 8, 8, 4] and seg["layout"] == "NHWC"
    ncnn_in = m.targets["ncnn"].io["inputs"]
    assert [e["shape"] for e in ncnn_in] == [[3, 32, 32], [8]]
    assert m.targets["onnx"].io["inputs"][0]["layout"] == "NCHW"
    assert [o["name"] for o in m.outputs] == ["segmentation", "logits", "gate"]


def test_artifact_runs_again_from_disk_with_same_numbers(tmp_path):
    """A fresh session on the written files reproduces the reference (what an app will do)."""
    from mobilize.models.zoo import build
    from mobilize.runtimes import open_predictor
    from mobilize.spec import run_torch_module

    out = tmp_path / "a"
    mobilize.export("mobilize.models.zoo:mobilenet_v3_block", ["ncnn", "tflite"], out)
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = run_torch_module(build("mobilenet_v3_block"), [x])[0]
    for target in ("ncnn", "tflite"):
        with open_predictor(out, target) as p:
            got = p.run([x])[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4
