"""Bad input, unsupported ops, parity failures: exit codes, one-line messages, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mobilize
from mobilize.exporters import rewrites

HERE = Path(__file__).parent
MODELS = HERE / "models_for_tests.py"


def one_line_error(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.startswith("mobilize: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_source(run_cli, tmp_path):
    code, out, err = run_cli("export", tmp_path / "nope.onnx", "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert one_line_error(err) == f"mobilize: error: source '{tmp_path / 'nope.onnx'}' does not exist"


def test_corrupt_onnx(run_cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    code, _, err = run_cli("export", bad, "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert one_line_error(err).startswith(f"mobilize: error: '{bad}' is not a valid ONNX model:")


def test_corrupt_torch_file(run_cli, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a zip and not a pickle")
    code, _, err = run_cli("export", bad, "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert "is neither TorchScript nor a mobilize checkpoint" in one_line_error(err)


def test_checkpoint_without_family(run_cli, tmp_path):
    ckpt = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    code, _, err = run_cli("export", ckpt, "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert "is not a mobilize checkpoint (it has no 'family' entry)" in one_line_error(err)


def test_checkpoint_that_would_run_code_is_refused(run_cli, tmp_path):
    """weights_only=True: a pickle that names arbitrary objects is not loaded."""
    ckpt = tmp_path / "evil.pt"
    torch.save({"family": "detector", "obj": Path("/tmp")}, ckpt)
    code, _, err = run_cli("export", ckpt, "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert "is not a loadable checkpoint" in one_line_error(err)


@pytest.mark.parametrize("ref, message", [
    ("nosuchpkg.models:build", "mobilize: error: cannot import 'nosuchpkg.models:build': "
                               "ModuleNotFoundError: No module named 'nosuchpkg'"),
    (f"{MODELS}:nope", f"mobilize: error: cannot import '{MODELS}:nope': '{MODELS}' has no attribute 'nope'"),
    (f"{MODELS}:not_a_module", f"mobilize: error: '{MODELS}:not_a_module' returned int, not a torch.nn.Module"),
    (f"{MODELS}:broken", f"mobilize: error: calling '{MODELS}:broken' failed: RuntimeError: weights file missing"),
])
def test_callable_that_cannot_be_used(run_cli, tmp_path, ref, message):
    code, _, err = run_cli("export", ref, "--input-shape", "1,16", "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert one_line_error(err) == message


def test_input_shape_is_required_and_checked(run_cli, tmp_path):
    code, _, err = run_cli("export", f"{MODELS}:needs_shape", "--out", tmp_path / "a", "--quiet")
    assert code == 2
    assert one_line_error(err) == ("mobilize: error: 'needs_shape' needs its input shape "
                                   "(pass --input-shape 1,3,224,224 (once per input))")
    code, _, err = run_cli("export", f"{MODELS}:needs_shape", "--input-shape", "1,x,3", "--out", tmp_path / "a")
    assert code == 2
    assert one_line_error(err).startswith("mobilize: error: --input-shape '1,x,3' is not a shape")
    code, _, err = run_cli("export", f"{MODELS}:needs_shape", "--input-shape", "1,3,8,8", "--out", tmp_path / "a")
    assert code == 2
    assert one_line_error(err).startswith("mobilize: error: the model does not run on input shape 1,3,8,8: ")
    assert not (tmp_path / "a").exists()


def test_unsupported_op_names_op_and_target(run_cli, tmp_path):
    code, out, err = run_cli("export", f"{MODELS}:cumprod", "--input-shape", "1,4,8", "--out", tmp_path / "a",
                             "--quiet")
    assert code == 2, out + err
    assert "onnx unsupported: the op aten::cumprod cannot be exported to ONNX (opset 17)" in out
    assert "ncnn unsupported: the op torch.cumprod has no ncnn layer" in out
    assert "tfjs unsupported: the op aten::cumprod" in out
    assert "tflite unsupported: the op aten::cumprod" in out
    assert not (tmp_path / "a").exists()  # nothing usable, nothing written


def test_parity_failure_is_caught_and_exit_1(run_cli, tmp_path, monkeypatch):
    """Without our rewrite, ncnn's ceil-mode average pool differs from PyTorch: verification must say so."""
    monkeypatch.setattr(rewrites, "REWRITES", [])
    out_dir = tmp_path / "a"
    code, out, _ = run_cli("export", f"{MODELS}:ceil_pool", "--input-shape", "1,3,18,18", "--target", "all",
                           "--out", out_dir, "--quiet")
    assert code == 1
    manifest = json.loads((out_dir / "manifest.json").read_text())
    ncnn = manifest["targets"]["ncnn"]
    assert ncnn["status"] == "failed" and ncnn["error_kind"] == "parity"
    assert ncnn["parity"]["passed"] is False
    assert ncnn["parity"]["outputs"][0]["max_abs_err"] > 0.1
    assert ncnn["error"].startswith("output output differs from the reference: max abs err")
    for t in ("onnx", "tfjs", "tflite"):  # a failing target does not stop the others
        assert manifest["targets"][t]["status"] == "ok"
    assert "ncnn failed: output output differs" in out


def test_ceil_mode_rewrite_fixes_ncnn(tmp_path):
    m = mobilize.export(f"{MODELS}:ceil_pool", "ncnn", tmp_path / "a", input_shape=["1,3,18,18"])
    rec = m.targets["ncnn"]
    assert rec.status == "ok" and rec.parity["passed"]
    assert rec.rewrites == ["avgpool_ceil_mode"]
    assert rec.parity["outputs"][0]["max_abs_err"] < 1e-5


def test_failing_run_never_replaces_a_good_artifact(run_cli, tmp_path, monkeypatch):
    out_dir = tmp_path / "a"
    code, _, _ = run_cli("export", f"{MODELS}:ceil_pool", "--input-shape", "1,3,18,18", "-t", "ncnn",
                         "--out", out_dir, "--quiet")
    assert code == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    monkeypatch.setattr(rewrites, "REWRITES", [])
    code, _, err = run_cli("export", f"{MODELS}:ceil_pool", "--input-shape", "1,3,18,18", "-t", "ncnn",
                           "--out", out_dir)
    assert code == 1
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    failed = tmp_path / "a.failed"
    assert json.loads((failed / "manifest.json").read_text())["targets"]["ncnn"]["status"] == "failed"
    assert f"kept the existing {out_dir}" in err


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    from mobilize.exporters.onnx import OnnxExporter

    def interrupted(self, ctx, stage):
        (stage / "model.onnx").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(OnnxExporter, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mobilize.export("mobilize.models.zoo:batchnorm_stats", "onnx", tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_write_into_a_foreign_directory(run_cli, tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "cat.jpg").write_bytes(b"meow")
    code, _, err = run_cli("export", "mobilize.models.zoo:batchnorm_stats", "--out", target, "--quiet")
    assert code == 2
    assert "is a non-empty directory that is not a mobilize artifact" in one_line_error(err)
    assert [p.name for p in target.iterdir()] == ["cat.jpg"]


def test_unknown_target(run_cli, tmp_path):
    code, _, err = run_cli("export", "mobilize.models.zoo:batchnorm_stats", "--target", "coreml", "--out", tmp_path)
    assert code == 2
    assert one_line_error(err) == "mobilize: error: unknown target 'coreml' (choose from: onnx, ncnn, tfjs, tflite, all)"


def test_tool_failure_is_exit_3_with_debug_hint(run_cli, tmp_path, monkeypatch):
    from mobilize.exporters.ncnn import NcnnExporter

    def crash(self, ctx, stage):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(NcnnExporter, "export", crash)
    code, out, err = run_cli("export", "mobilize.models.zoo:batchnorm_stats", "-t", "ncnn", "-t", "onnx",
                             "--out", tmp_path / "a", "--quiet")
    assert code == 3
    assert "ncnn failed: RuntimeError: converter exploded" in out
    assert "rerun with --debug" in err
    code, out, err = run_cli("export", "mobilize.models.zoo:batchnorm_stats", "-t", "ncnn",
                             "--out", tmp_path / "b", "--debug")
    assert code == 3
    assert "Traceback" in err
