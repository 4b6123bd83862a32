"""Which kernel ncnn runs for a convolution with few channels on this machine, and what it costs.

The host predictor misses `grouped_dilated_prelu` at 224x224 by about -48% (docs/devices-validation.md): its
dilated 16-channel convolution and its 4-group convolution take about twice the predicted time.
This times 3x3 convolutions with 3-32 channels alone (1 thread, fp32, fastest of `--passes`, as
the calibration layers), each as ncnn picks and with winograd, then also im2col + GEMM, switched
off (ncnn.Option flags), so the timings say which path runs (x86: winograd for a 3x3 stride-1
convolution when either side has more than 8 channels; a packed direct convolution, no im2col,
when neither side has more than 16), and puts each next to the host profile's prediction for it.
It also times the dilated and grouped layers of `grouped_dilated_prelu` beside their plain
counterparts: dilation 2 against dilation 1 without winograd, 4 groups of 4 -> 8 channels against
one 4 -> 8 convolution.

    .venv/bin/python benchmarks/latency_host_small_convs.py [--passes 3]
        -> benchmarks/results/latency-host-small-convs.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilize.devices.graph import Layer, analyse  # noqa: E402
from mobilize.devices.kernels import fastest_layer_ms, mini_param  # noqa: E402
from mobilize.devices.predictor import layer_breakdown, predict_graph  # noqa: E402
from mobilize.devices.profiles import load_profile  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "latency-host-small-convs.json"
PATHS = {"as ncnn picks": {}, "winograd off": {"use_winograd_convolution": False},
         "winograd and im2col off": {"use_winograd_convolution": False, "use_sgemm_convolution": False}}
PAIRS = [(3, 16), (4, 8), (4, 16), (8, 8), (8, 16), (16, 8), (12, 12), (16, 16), (24, 24), (32, 32)]


def conv(cin: int, cout: int, dilation: int = 1, group: int = 1) -> Layer:
    raw = [f"0={cout}", "1=3", f"2={dilation}", "3=1", f"4={dilation}", "5=1", f"6={cin * cout * 9 // group}", "9=1"]
    if group > 1:
        raw.append(f"7={group}")
    return Layer("ConvolutionDepthWise" if group > 1 else "Convolution", "conv", ["b0"], ["t0"], {}, raw)


def predicted(predictor: dict, layer: Layer, shape: list[int], work: Path) -> tuple[float, str, float]:
    """The host profile's prediction for the layer alone, the kind it prices it as, and its MACs."""
    path = work / "one.param"
    path.write_text(mini_param(layer, [shape]))
    graph = analyse(path, {"b0": shape})
    row = next(r for r in layer_breakdown(predictor, graph) if r["type"] == layer.type)
    return predict_graph(predictor, graph), row["kind"], row["macs"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    host = load_profile("host").predictor
    work = Path(tempfile.mkdtemp(prefix="mobilize-small-convs-"))
    try:
        rows = measure(host, work, args.passes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"what": "3x3 convolutions with few channels timed alone on this machine (1 thread, fp32, fastest of "
                      "the passes), as ncnn picks the kernel and with winograd / im2col switched off, beside the "
                      "host profile's prediction",
              "date": time.strftime("%Y-%m-%d"), "passes": args.passes, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def measure(host: dict, work: Path, passes: int) -> list[dict]:
    cases = [(f"{cin} -> {cout}", conv(cin, cout), cin) for cin, cout in PAIRS]
    cases += [("16 -> 16, dilation 2", conv(16, 16, dilation=2), 16),
              ("16 -> 32, 4 groups of 4 -> 8", conv(16, 32, group=4), 16)]
    rows = []
    for hw in (56, 112, 224):
        for label, layer, cin in cases:
            shape = [cin, hw, hw]
            pred, kind, macs = predicted(host, layer, shape, work)
            row = {"layer": label, "hw": hw, "macs": int(macs), "priced_as": kind, "predicted_ms": round(pred, 4)}
            for path, options in PATHS.items():
                ms = fastest_layer_ms(layer, [shape], passes, options)
                row[f"{path} ms"] = round(ms, 4)
            row["ps_per_mac"] = round(row["as ncnn picks ms"] * 1e9 / macs, 1)
            row["error_pct"] = round((pred / row["as ncnn picks ms"] - 1) * 100, 1)
            rows.append(row)
            print(f"{hw:3d}x{hw:<3d} {label:30s} " + "  ".join(f"{p}: {row[p + ' ms']:.3f}" for p in PATHS)
                  + f"  predicted {pred:.3f} ({kind}, {row['error_pct']:+.0f}%)", flush=True)
    return rows


if __name__ == "__main__":
    main()
