"""Why wide maps are predicted too fast on this machine: 3x3 convolutions timed alone by map size.

The host predictor misses the zoo's 3x3 convolutions with few channels on 224x224 maps by
30-50% (docs/devices-validation.md). This times 3x3 stride-1 convolutions with 16-64 channels in and out
at 56x56, 112x112 and 224x224 (each alone, fastest of `--passes` timings, as the calibration
layers), and the 48-to-16 channel layer of `unet_tiny` at 224x224 with each of ncnn's winograd
variants switched off in turn, to tell the map size from the kernel ncnn picks.

    .venv/bin/python benchmarks/latency_host_wide_maps.py [--passes 2]
        -> benchmarks/results/latency-host-wide-maps.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilize.devices.graph import Layer  # noqa: E402
from mobilize.devices.kernels import fastest_layer_ms  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "latency-host-wide-maps.json"
SIZES, CHANNELS = (56, 112, 224), (16, 32, 48, 64)
WINOGRAD = ("use_winograd23_convolution", "use_winograd43_convolution", "use_winograd63_convolution")


def conv3x3(cin: int, cout: int) -> Layer:
    raw = [f"0={cout}", "1=3", "3=1", "4=1", "5=1", f"6={cin * cout * 9}", "9=1"]  # 3x3, stride 1, pad 1, ReLU
    return Layer("Convolution", "conv", ["b0"], ["t0"], {}, raw)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    grid = []
    for hw in SIZES:
        for cin in CHANNELS:
            for cout in (16, 32, 64):
                ms = fastest_layer_ms(conv3x3(cin, cout), [[cin, hw, hw]], args.passes)
                macs = cin * cout * 9 * hw * hw
                grid.append({"hw": hw, "cin": cin, "cout": cout, "ms": round(ms, 4),
                             "ps_per_mac": round(ms * 1e9 / macs, 2), "input_mb": round(cin * hw * hw * 4 / 1e6, 2)})
                print(f"{hw:3d}x{hw:<3d} {cin:2d} -> {cout:2d}: {ms:7.3f} ms, {grid[-1]['ps_per_mac']:5.2f} ps/MAC", flush=True)
    variants = {"as ncnn picks": {}, **{f"{w} off": {w: False} for w in WINOGRAD},
                "winograd off": {"use_winograd_convolution": False}}
    unet = {}
    for label, options in variants.items():
        unet[label] = round(fastest_layer_ms(conv3x3(48, 16), [[48, 224, 224]], args.passes, options), 4)
        print(f"unet_tiny 48 -> 16 at 224x224, {label}: {unet[label]:.3f} ms", flush=True)
    result = {"what": "3x3 stride-1 convolutions timed alone on this machine (1 thread, fp32, fastest of the passes)",
              "date": time.strftime("%Y-%m-%d"), "passes": args.passes, "grid": grid,
              "unet_tiny_48_to_16_at_224_ms": unet}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
