"""`mobilize check`: budgets, verdicts, exit codes, the manifest record, host measurement."""

from __future__ import annotations

import json
import math
import re

import pytest

from mobilize.devices import check, load_profile
from mobilize.devices.graph import analyse
from mobilize.devices.predictor import predict_graph
from mobilize.errors import BadInput

from test_devices import write_param


@pytest.fixture(scope="module")
def param(tmp_path_factory):
    return write_param(tmp_path_factory.mktemp("p") / "net.param", 96, [16, 32, 64], True, 10)


@pytest.fixture(scope="module")
def predicted_ms(param):
    return predict_graph(load_profile("android-lowend").predictor, analyse(param))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from mobilize import export

    out = tmp_path_factory.mktemp("a") / "mnv2"
    m = export("mobilize.models.zoo:mobilenet_v2_tiny", ["onnx", "ncnn"], out)
    assert m.exit_code() == 0
    return out


def test_within_budget_passes(param, predicted_ms, run_cli):
    code, out, _ = run_cli("check", param, "--device", "android-lowend", "--budget-ms", predicted_ms * 10)
    assert code == 0
    assert "android-lowend" in out and "pass" in out and "predicted" in out


def test_over_budget_fails_with_exit_1(param, predicted_ms, run_cli):
    code, out, _ = run_cli("check", param, "--device", "android-lowend", "--budget-ms", predicted_ms / 10)
    assert code == 1 and "FAIL" in out


def test_fps_budget_and_json(param, predicted_ms, run_cli):
    fps_ok = 1000.0 / (predicted_ms * 5)  # a budget five times the prediction
    code, out, _ = run_cli("check", param, "--device", "android-lowend-1t", "--fps", fps_ok, "--json")
    assert code == 0
    d = json.loads(out)
    row = d["runtimes"]["ncnn"]
    assert d["budget_ms"] == pytest.approx(predicted_ms * 5)
    assert row["latency_ms"] > 0 and row["low_ms"] < row["latency_ms"] < row["high_ms"]
    assert row["method"] == "predicted" and d["verdict"] == "pass"
    # one thread is slower than four on the same phone
    code, out4, _ = run_cli("check", param, "--device", "android-lowend", "--json")
    assert json.loads(out4)["runtimes"]["ncnn"]["latency_ms"] < row["latency_ms"]


def test_budget_inside_the_band_is_marginal(param, predicted_ms):
    band = load_profile("android-lowend").band
    r = check(param, "android-lowend", budget_ms=predicted_ms * math.exp(-band / 2))
    assert r.rows[0]["verdict"] == "FAIL (marginal)" and r.exit_code() == 1
    r = check(param, "android-lowend", budget_ms=predicted_ms * math.exp(band / 2))
    assert r.rows[0]["verdict"] == "pass (marginal)" and r.exit_code() == 0


def test_predicted_check_names_the_heaviest_layers(param, predicted_ms, run_cli):
    from mobilize.devices.predictor import layer_breakdown

    everything = layer_breakdown(load_profile("android-lowend").predictor, analyse(param))
    assert sum(r["ms"] for r in everything) == pytest.approx(predicted_ms)  # the layers add up to the model
    heaviest = max(everything, key=lambda r: r["ms"])
    code, out, _ = run_cli("check", param, "--device", "android-lowend", "--json")
    assert code == 0
    top = json.loads(out)["runtimes"]["ncnn"]["top_layers"]
    assert len(top) == 5 and top[0]["name"] == heaviest["name"]
    assert [r["ms"] for r in top] == sorted((r["ms"] for r in top), reverse=True)
    assert top[0]["share"] == pytest.approx(heaviest["ms"] / predicted_ms, abs=1e-3)
    code, out, _ = run_cli("check", param, "--device", "android-lowend")
    assert code == 0
    assert "heaviest layers (ncnn, predicted on android-lowend):" in out
    assert heaviest["name"] in out.split("heaviest layers")[1]


def test_no_budget_is_a_report(param, run_cli):
    code, out, _ = run_cli("check", param, "--device", "android-lowend", "--json")
    assert code == 0 and json.loads(out)["verdict"] is None


def test_bad_inputs_exit_2(param, tmp_path, run_cli):
    assert run_cli("check", param, "--device", "android-lowend", "--budget-ms", 5, "--fps", 30)[0] == 2
    code, _, err = run_cli("check", tmp_path / "missing.param", "--device", "android-lowend")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli("check", param, "--device", "browser-lowend")
    assert code == 2 and "not a bare .param" in err
    code, _, err = run_cli("check", param, "--device", "android-lowend", "--budget-ms", -1)
    assert code == 2
    (tmp_path / "notart").mkdir()
    code, _, err = run_cli("check", tmp_path / "notart", "--device", "android-lowend")
    assert code == 2 and "not a mobilize artifact" in err
    with pytest.raises(BadInput, match="either --budget-ms or --fps"):
        check(param, "android-lowend", budget_ms=1, fps=1)


def test_artifact_check_is_stored_in_the_manifest(artifact, run_cli):
    before = json.loads((artifact / "manifest.json").read_text())
    code, out, _ = run_cli("check", artifact, "--device", "android-lowend", "--fps", 30, "--json")
    assert code == 0
    after = json.loads((artifact / "manifest.json").read_text())
    entry = after["checks"]["android-lowend"]
    assert entry["verdict"] == "pass" and entry["budget_ms"] == pytest.approx(1000 / 30)
    assert entry["runtimes"]["ncnn"]["latency_ms"] == json.loads(out)["runtimes"]["ncnn"]["latency_ms"]
    assert after["targets"] == before["targets"]  # nothing else touched
    # a second device adds an entry; a failing budget is recorded as such
    code, _, _ = run_cli("check", artifact, "--device", "android-lowend-1t", "--budget-ms", 0.001)
    assert code == 1
    checks = json.loads((artifact / "manifest.json").read_text())["checks"]
    assert set(checks) >= {"android-lowend", "android-lowend-1t"} and checks["android-lowend-1t"]["verdict"] == "FAIL"


def test_host_measures_each_runtime(artifact):
    r = check(artifact, "host", budget_ms=10_000, runtimes=["ncnn", "onnx"], store=False)
    rows = {row["runtime"]: row for row in r.rows}
    assert set(rows) == {"ncnn", "onnx"}
    for row in rows.values():
        assert row["method"] == "measured" and row["runs"] >= 30
        assert 0 < row["min_ms"] <= row["latency_ms"] <= row["p90_ms"]
        assert row["peak_rss_mb"] > row["baseline_rss_mb"] > 0
    assert r.exit_code() == 0
    r = check(artifact, "host", budget_ms=1e-6, runtimes=["onnx"], store=False)
    assert r.exit_code() == 1


def test_host_on_a_bare_param_measures_ncnn(param):
    r = check(param, "host", threads=1)
    assert r.rows[0]["runtime"] == "ncnn" and r.rows[0]["p90_ms"] >= r.rows[0]["latency_ms"] > 0


def test_bench_table_saved_as_json_and_markdown(artifact, tmp_path, run_cli):
    code, out, err = run_cli("bench", artifact, "--device", "android-lowend", "--device", "host", "--out", tmp_path,
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = {r["format"]: r for r in result["rows"]}
    assert rows["ncnn"]["status"] == "ok" and rows["tfjs"]["status"] == "missing"
    assert rows["ncnn"]["latency_ms"]["android-lowend"] > 0 and rows["ncnn"]["latency_ms"]["host"] > 0
    assert rows["onnx"]["latency_ms"]["host"] > 0 and "android-lowend" not in rows["onnx"]["latency_ms"]
    assert rows["onnx"]["size_mb"] > 0 and rows["onnx"]["metric"] is None  # no family, no metric
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == result["rows"]
    md = (tmp_path / "bench.md").read_text()
    assert "| format | status | size MB |" in md and "android-lowend ms (pred.)" in md
    # a 64x64 network is far below the fastest model android-lowend was calibrated on: the bench says so
    note = rows["ncnn"]["notes"]["android-lowend"]
    assert note.startswith("extrapolated: below the fastest model this profile was calibrated on")
    assert f"Note, ncnn on android-lowend: {note}" in md and "host" not in rows["ncnn"].get("notes", {})


def test_prediction_outside_the_calibrated_range_says_so(tmp_path, run_cli):
    from mobilize.devices.check import extrapolation_note
    from mobilize.devices.predictor import calibrated_range

    from test_devices import write_param

    profile = load_profile("android-lowend")
    lo, hi = calibrated_range(profile.predictor)
    models = profile.predictor["calibration"]["models"]
    assert (lo, hi) == (min(m["measured_ms"] for m in models.values()), max(m["measured_ms"] for m in models.values()))
    tiny = write_param(tmp_path / "tiny.param", 32, [8, 8], True, 4)
    large = write_param(tmp_path / "large.param", 224, [32, 64, 128], False, 1000)
    assert predict_graph(profile.predictor, analyse(tiny)) < lo / 5
    assert lo * 2 < predict_graph(profile.predictor, analyse(large)) < hi / 2

    code, out, _ = run_cli("check", tiny, "--device", "android-lowend", "--json")
    row = json.loads(out)["runtimes"]["ncnn"]
    assert code == 0 and row["calibrated_range_ms"] == [round(lo, 3), round(hi, 3)]
    assert row["note"].startswith(f"extrapolated: below the fastest model this profile was calibrated on ({lo:.3g} ms)")
    code, out, _ = run_cli("check", tiny, "--device", "android-lowend")
    assert code == 0 and f"note (ncnn): {row['note']}" in out
    code, out, _ = run_cli("check", large, "--device", "android-lowend", "--json")
    assert code == 0 and "note" not in json.loads(out)["runtimes"]["ncnn"]
    assert extrapolation_note(2 * hi, (lo, hi)) == f"extrapolated: above the slowest model this profile was calibrated on ({hi:.3g} ms)"
    assert extrapolation_note((lo + hi) / 2, (lo, hi)) is None


def test_cli_shows_what_was_measured_beyond_latency(artifact, run_cli):
    """Host rows list runs, load and first-inference time and the process's peak RSS under the
    verdict table (the issue asks for memory; it was in --json only)."""
    code, out, _ = run_cli("check", artifact, "--device", "host", "--runtime", "onnx", "--no-store", "--quiet")
    assert code == 0
    section = out.split("measured (host):\n", 1)[1].splitlines()
    assert section[0].split() == ["runtime", "runs", "load", "ms", "first", "inference", "ms", "memory"]
    onnx = section[2]
    assert re.fullmatch(r"onnx\s+\d+\s+\d+\s+[\d.]+\s+peak RSS \d+ MB \(\+\d+\)", onnx.strip()), onnx


def test_memory_text_names_each_runtimes_memory():
    from mobilize.commands.check import memory_text

    assert memory_text({"peak_rss_mb": 66.4, "baseline_rss_mb": 28.0}) == "peak RSS 66 MB (+38)"
    webgl = {"memory": {"num_bytes": 226128, "num_tensors": 41, "num_bytes_in_gpu": 269648},
             "js_heap_used_bytes": 7369696}
    assert memory_text(webgl) == "0.23 MB in 41 tensors, 0.27 MB on the GPU; JS heap 7.4 MB"
    assert memory_text({"memory": {"js_heap_bytes": 8610347}, "js_heap_used_bytes": 6721056}) == "JS heap 6.7 MB"
    assert memory_text({}) == "-"
