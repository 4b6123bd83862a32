"""A FLOP budget for 30 frames per second on a Snapdragon-410-class phone, from published latencies.

The ncnn project publishes benchncnn latencies for low-end Cortex-A53 boards
(../shared/data/benchncnn/published_lowend.json) together with the architectures
(*.param). Each .param line carries its output shape (`-23330=4,3,W,H,C`) and its weight
count (`6=`), so a convolution's multiply-accumulates are weights x output pixels
(a deconvolution's: weights x input pixels; a fully connected layer's: weights). That gives
each network's FLOPs (2 per MAC) and, with the published milliseconds, the throughput ncnn
sustains on that board. The budget for one frame is throughput x 33.3 ms.

Which throughput: the NeLF student is 1x1 convolutions (GEMMs) plus a few 3x3 convolutions,
the workload of MobileNet v1 (95% of its MACs are 1x1) and of the plain-convolution
networks, which reach the highest rates; depthwise-heavy networks (MobileNet v2/v3,
ShuffleNet, EfficientNet) are bound by memory and reach less. We take the median over the
fp32 networks, which is lower than MobileNet v1's rate, so the budget errs on the safe side.

    python benchmarks/nelf_budget.py            # prints the table and the budget
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchncnn"
DEVICE = "Snapdragon 410"
CONV = {"Convolution", "ConvolutionDepthWise", "Convolution1D"}
DECONV = {"Deconvolution", "DeconvolutionDepthWise"}


def _params(tokens: list[str]) -> dict[str, str]:
    out = {}
    for t in tokens:
        if "=" in t:
            k, v = t.split("=", 1)
            out[k] = v
    return out


def _spatial(shape_hint: str | None) -> int | None:
    if not shape_hint:
        return None
    vals = [int(v) for v in shape_hint.split(",")]
    dims = vals[1:]  # vals[0] counts what follows
    rank = dims[0]
    if rank == 1:
        return 1
    if rank == 2:
        return dims[1] * dims[2]  # w x h of a 2-D blob
    return dims[1] * dims[2] * (dims[4] if rank == 4 else 1)  # w x h (x d)


def network_macs(param: Path) -> dict:
    """MACs of the convolution and fully connected layers; None when the file has no shape hints."""
    lines = param.read_text().split("\n")[2:]
    out_pixels: dict[str, int | None] = {}
    macs, counted, missing = 0, 0, 0
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        ltype, nb, nt = parts[0], int(parts[2]), int(parts[3])
        bottoms, tops = parts[4:4 + nb], parts[4 + nb:4 + nb + nt]
        p = _params(parts[4 + nb + nt:])
        pix = _spatial(p.get("-23330"))
        for t in tops:
            out_pixels[t] = pix
        weights = int(p.get("6", 0))
        if ltype in CONV:
            if pix is None:
                missing += 1
                continue
            macs += weights * pix
            counted += 1
        elif ltype in DECONV:
            src = out_pixels.get(bottoms[0])
            if src is None:
                missing += 1
                continue
            macs += weights * src
            counted += 1
        elif ltype == "InnerProduct":
            macs += weights
            counted += 1
    return {"macs": macs if counted and not missing else None, "layers": counted, "missing": missing}


def throughput_table(data: Path = DATA, device: str = DEVICE, threads: int = 4) -> list[dict]:
    published = json.loads((data / "published_lowend.json").read_text())
    dev = next(d for d in published["devices"] if device in d["device"])
    run = next(r for r in dev["runs"] if r["cfg"]["num_threads"] == threads)
    rows = []
    for name, ms in sorted(run["res"].items()):
        param = data / f"{name}.param"
        if not param.is_file():
            continue
        m = network_macs(param)
        if m["macs"] is None:
            rows.append({"network": name, "ms": ms, "gflops": None, "gflops_per_s": None,
                         "note": "no shape hints in the .param"})
            continue
        gflops = 2 * m["macs"] / 1e9
        rows.append({"network": name, "ms": ms, "gflops": round(gflops, 4),
                     "gflops_per_s": round(gflops / (ms / 1000), 3), "int8": name.endswith("_int8")})
    return rows


def budget(data: Path = DATA, device: str = DEVICE, threads: int = 4, fps: float = 30.0) -> dict:
    rows = throughput_table(data, device, threads)
    fp32 = [r["gflops_per_s"] for r in rows if r["gflops_per_s"] and not r.get("int8")]
    median = statistics.median(fp32)
    mobilenet = next(r["gflops_per_s"] for r in rows if r["network"] == "mobilenet")
    frame_ms = 1000.0 / fps
    return {
        "device": next(d["device"] for d in json.loads((data / "published_lowend.json").read_text())["devices"]
                       if device in d["device"]),
        "threads": threads, "fps": fps, "frame_ms": round(frame_ms, 2),
        "median_fp32_gflops_per_s": round(median, 3), "mobilenet_v1_gflops_per_s": mobilenet,
        "fp32_networks": len(fp32),
        "budget_flops_per_frame": int(median * 1e9 * frame_ms / 1000),
        "rule": "budget = median fp32 throughput (FLOPs / published ms) x 33.3 ms; FLOPs = 2 x MACs of the "
                "convolution and fully connected layers, from each .param's weight counts and output shapes",
        "networks": rows,
    }


if __name__ == "__main__":
    b = budget(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
    for r in b["networks"]:
        print(f"{r['network']:22s} {r['ms']:8.1f} ms  {r['gflops'] or '-':>8} GFLOP  {r['gflops_per_s'] or '-':>7} GFLOP/s")
    print({k: v for k, v in b.items() if k != "networks"})
