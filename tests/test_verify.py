"""The parity judge itself: metrics and tolerances."""

import numpy as np
import pytest

from mobilize.verify import TOLERANCES, compare, compare_output


def test_identical_outputs_pass_with_zero_error():
    x = np.linspace(-3, 3, 100, dtype=np.float32)
    r = compare_output(x, x.copy(), TOLERANCES["fp32"])
    assert r["passed"] and r["max_abs_err"] == 0 and r["cosine"] == pytest.approx(1.0)


def test_bound_scales_with_the_output():
    ref = np.full(10, 1000.0)
    got = ref + 0.5  # 5e-4 relative: inside fp32's 1e-4 + 1e-3 * 1000
    r = compare_output(ref, got, TOLERANCES["fp32"])
    assert r["abs_bound"] == pytest.approx(1.0001) and r["passed"]
    r = compare_output(ref, ref + 1.5, TOLERANCES["fp32"])
    assert not r["passed"] and r["max_abs_err"] == pytest.approx(1.5)


def test_fp16_tolerance_is_looser_than_fp32():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    got = ref + rng.standard_normal(1000) * 2e-3
    assert not compare_output(ref, got, TOLERANCES["fp32"])["passed"]
    assert compare_output(ref, got, TOLERANCES["fp16"])["passed"]


def test_relative_error_is_floored_near_zero():
    ref = np.array([1e-9, 1.0])
    got = np.array([1e-6, 1.0])
    r = compare_output(ref, got, TOLERANCES["fp32"])
    assert r["max_rel_err"] == pytest.approx((1e-6 - 1e-9) / 0.01)


def test_wrong_sign_fails_on_cosine_even_when_small():
    ref = np.array([1e-5, -1e-5, 2e-5])
    r = compare_output(ref, -ref, TOLERANCES["fp32"])
    assert r["max_abs_err"] < 1e-4 and r["cosine"] == pytest.approx(-1.0) and not r["passed"]


def test_nan_and_size_mismatch_fail():
    assert not compare_output(np.ones(3), np.array([1.0, np.nan, 1.0]), TOLERANCES["fp32"])["passed"]
    assert "values where the reference has" in compare_output(np.ones(3), np.ones(4), TOLERANCES["fp32"])["error"]


def test_compare_aggregates_samples_and_outputs():
    ref = [[np.ones(2), np.zeros(3)], [np.ones(2), np.zeros(3)]]
    got = [[np.ones(2), np.zeros(3)], [np.ones(2) * 1.5, np.zeros(3)]]
    p = compare(ref, got, ["a", "b"], "fp32")
    assert p["samples"] == 2 and not p["passed"]
    assert [o["passed"] for o in p["outputs"]] == [False, True]
    assert p["outputs"][0]["max_abs_err"] == pytest.approx(0.5)


def test_a_variant_that_misses_its_bound_is_named_under_the_export_table():
    """tflite's fp16 by-product can fail where the fp32 model passes: the summary says which file
    and by how much, and which model to ship instead."""
    import io

    from mobilize.commands._output import print_export_summary
    from mobilize.manifest import Manifest, TargetRecord

    rng = np.random.default_rng(0)
    ref = rng.random((1, 3, 8, 8)).astype(np.float32)
    fp32 = compare([[ref]], [[ref + 1e-6]], ["image"], "fp32")
    fp16 = compare([[ref]], [[ref + 0.05]], ["image"], "fp16")
    assert fp32["passed"] and not fp16["passed"]
    rec = TargetRecord(precision="fp32", io={"model": "model.tflite"}, parity=fp32,
                       variants={"fp16": {"files": [{"path": "model_fp16.tflite", "bytes": 10, "sha256": ""}],
                                          "io": {"model": "model_fp16.tflite"}, "precision": "fp16", "parity": fp16}})
    out = io.StringIO()
    print_export_summary(Manifest(name="m", source={}, inputs=[], outputs=[], targets={"tflite": rec}), out)
    o = fp16["outputs"][0]
    assert (f"tflite (fp16): model_fp16.tflite fails fp16 parity (output image differs from the reference: "
            f"max abs err 0.05 (bound {o['abs_bound']:.3g}), cosine {o['cosine']:.6f}); "
            "use model.tflite, which passed") in out.getvalue()
    out = io.StringIO()
    rec.variants["fp16"]["parity"] = fp32
    print_export_summary(Manifest(name="m", source={}, inputs=[], outputs=[], targets={"tflite": rec}), out)
    assert "fails" not in out.getvalue()
