"""--fp16, --calib, --no-verify, --json, --name, and the manifest contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import mobilize
from mobilize._export import image_to_input


def test_fp16_halves_weights_and_is_judged_with_fp16_tolerance(tmp_path):
    m32 = mobilize.export("mobilize.models.zoo:unet_tiny", "all", tmp_path / "a32")
    m16 = mobilize.export("mobilize.models.zoo:unet_tiny", "all", tmp_path / "a16", fp16=True)
    for t in ("onnx", "ncnn", "tfjs", "tflite"):
        r32, r16 = m32.targets[t], m16.targets[t]
        assert r16.status == "ok" and r16.precision == "fp16", (t, r16.error)
        assert r16.parity["tolerance"]["min_cosine"] == 0.999 and r32.parity["tolerance"]["min_cosine"] == 0.99999
        size32 = sum(f.bytes for f in r32.files)
        size16 = sum(f.bytes for f in r16.files)
        assert size16 < 0.7 * size32, (t, size16, size32)
    # tflite ships the other precision as a verified variant
    assert m32.targets["tflite"].variants["fp16"]["parity"]["passed"]
    assert m16.targets["tflite"].variants["fp32"]["parity"]["passed"]


def test_calib_images_join_the_verification_inputs(tmp_path, run_cli):
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(calib / f"img{i}.png")
    (calib / "notes.txt").write_text("ignored")
    code, out, _ = run_cli("export", "mobilize.models.zoo:mobilenet_v2_tiny", "-t", "onnx", "-t", "ncnn",
                           "--calib", calib, "--samples", "2", "--json", "--out", tmp_path / "a")
    assert code == 0
    manifest = json.loads(out)["manifest"]
    assert manifest["verification"]["samples"] == 5
    assert manifest["verification"]["calib"]["count"] == 3
    assert manifest["targets"]["ncnn"]["parity"]["samples"] == 5


def test_calib_rejects_an_empty_directory(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("export", "mobilize.models.zoo:mobilenet_v2_tiny", "--calib", tmp_path / "empty",
                           "--out", tmp_path / "a")
    assert code == 2 and "holds no images, .npy or .npz files" in err


def test_image_to_input_applies_the_manifest_preprocess():
    img = Image.fromarray(np.full((10, 20, 3), [255, 0, 51], dtype=np.uint8))
    x = image_to_input(img, (1, 3, 4, 8), {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.25, 0.1]})
    assert x.shape == (1, 3, 4, 8)
    assert np.allclose(x[0, :, 0, 0], [(1 - 0.5) / 0.5, (0 - 0.5) / 0.25, (0.2 - 0.5) / 0.1], atol=1e-5)


def test_no_verify_and_json_and_name(tmp_path, run_cli):
    code, out, _ = run_cli("export", "mobilize.models.zoo:batchnorm_stats", "-t", "onnx", "--no-verify",
                           "--name", "bn-demo", "--json", "--out", tmp_path / "a")
    assert code == 0
    result = json.loads(out)
    m = result["manifest"]
    assert result["exit_code"] == 0 and result["location"] == str(tmp_path / "a")
    assert m["name"] == "bn-demo" and m["verification"] == {"skipped": True}
    assert "parity" not in m["targets"]["onnx"]


def test_manifest_contract_fields(tmp_path):
    m = mobilize.export("mobilize.models.zoo:two_inputs_three_outputs", ["onnx", "tfjs"], tmp_path / "a")
    d = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert d["schema"] == "mobilize.manifest/1"
    assert d["source"]["kind"] == "callable" and len(d["source"]["sha256"]) == 64
    for tool in ("mobilize", "torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "tensorflowjs", "@tensorflow/tfjs"):
        assert d["tools"][tool], tool
    assert [i["name"] for i in d["inputs"]] == ["image", "vector"]
    assert d["inputs"][0] == {"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW"}
    assert [o["shape"] for o in d["outputs"]] == [[1, 4, 8, 8], [1, 5], [1, 32]]
    tfjs = d["targets"]["tfjs"]
    assert tfjs["status"] == "ok" and tfjs["precision"] == "fp32" and tfjs["runtime"].startswith("tfjs-node")
    assert {f["path"] for f in tfjs["files"]} == {"tfjs/model.json", "tfjs/group1-shard1of1.bin"}
    for f in tfjs["files"]:
        assert set(f) == {"path", "bytes", "sha256"}
    assert set(tfjs["parity"]) >= {"passed", "outputs", "tolerance", "precision", "samples"}
    assert set(tfjs["parity"]["outputs"][0]) >= {"name", "max_abs_err", "max_rel_err", "cosine", "passed"}
    assert [e["layout"] for e in tfjs["io"]["inputs"]] == ["NHWC", "NC"]
    # round trip
    from mobilize.manifest import Manifest

    assert Manifest.load(tmp_path / "a").to_dict() == d


@pytest.mark.parametrize("command", ["export", "demo", "train", "eval"])
def test_every_command_has_help_with_an_example(run_cli, command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0
    assert "example" in out and f"mobilize {command}" in out


def test_demo_export_stage(tmp_path, run_cli):
    code, out, _ = run_cli("demo", "--only", "export", "--out", tmp_path / "demo", "--quiet")
    assert code == 0
    for t in ("onnx", "ncnn", "tfjs", "tflite"):
        assert any(line.startswith(t) and line.rstrip().endswith("pass") for line in out.splitlines()), out
    assert (tmp_path / "demo" / "example" / "manifest.json").is_file()


def test_ncnn_input_consumed_in_place(tmp_path):
    from pathlib import Path

    models = Path(__file__).parent / "models_for_tests.py"
    m = mobilize.export(f"{models}:relu_first", "ncnn", tmp_path / "a", input_shape=["1,3,8,8"])
    assert m.targets["ncnn"].status == "ok" and m.targets["ncnn"].parity["passed"]
