"""Browser latency side by side: one model at 1x, 4x and 10x CPU throttling, in TF.js (wasm,
webgl) and onnxruntime-web (wasm), in headless Chromium on this machine; and the wasm runtimes at
the rate `browser-lowend` calibrates here (its BenchmarkIndex target), with that rate.

The model is the zoo's MobileNetV2-style network at 224x224 (a realistic input size; about
the size of model the brief's 90 MFLOP example was). Without a GPU, webgl is SwiftShader.

    .venv/bin/python benchmarks/latency_browser.py  -> benchmarks/results/latency-browser.json
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

from mobilize import export  # noqa: E402
from mobilize.devices.browser import measure_artifact  # noqa: E402
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.host import cpu_name  # noqa: E402
from mobilize.devices.profiles import load_profile  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "latency-browser.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v2_tiny")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="independent browser sessions; medians kept per session")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mobilize-browser-bench-"))
    try:
        m = export(f"mobilize.models.zoo:{args.model}", ["onnx", "ncnn", "tfjs"], work / "a",
                   input_shape=[f"1,3,{args.size},{args.size}"])
        g = analyse(work / "a" / m.targets["ncnn"].io["model"],
                    {e["name"]: e["shape"] for e in m.targets["ncnn"].io["inputs"]})
        lowend_index = load_profile("browser-lowend").benchmark_index
        sessions = []
        for rep in range(args.repeats):
            rows = measure_artifact(work / "a", ["tfjs-wasm", "tfjs-webgl", "onnx"], throttle=[1, 4, 10],
                                    warmup=3, runs=args.runs, max_seconds=60)
            lowend = measure_artifact(work / "a", ["tfjs-wasm", "onnx"], warmup=3, runs=args.runs, max_seconds=60,
                                      target_index=lowend_index)
            rows += [r | {"calibrated": True} for r in lowend]
            sessions.append(rows)
            for r in rows:
                print(f"session {rep}: {r['runtime']:16s} {r['throttle']:4.1f}x  median {r.get('latency_ms', 'error')} "
                      f"p90 {r.get('p90_ms')} load {r.get('load_ms')} first {r.get('first_ms')}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table: dict = {}
    for rows in sessions:
        for r in rows:
            key = f"{r['runtime']}@{'browser-lowend' if r.get('calibrated') else format(r['throttle'], 'g') + 'x'}"
            table.setdefault(key, []).append({k: v for k, v in r.items() if k != "ms"})
    summary = {}
    for key, rs in table.items():
        ok = [r for r in rs if "latency_ms" in r]
        if ok:
            best = min(ok, key=lambda r: r["latency_ms"])
            summary[key] = {"latency_ms": best["latency_ms"], "p90_ms": best["p90_ms"], "load_ms": best["load_ms"],
                            "first_ms": best["first_ms"], "memory": best.get("memory"),
                            "sessions_latency_ms": [r["latency_ms"] for r in ok], "throttle": best["throttle"],
                            "sessions_throttle": [r["throttle"] for r in ok]}
    base = {rt: summary.get(f"{rt}@1x", {}).get("latency_ms") for rt in ("tfjs-wasm", "tfjs-webgl", "onnxruntime-web")}
    for key, s in summary.items():
        rt = key.split("@")[0]
        if base.get(rt):
            s["slowdown_vs_1x"] = round(s["latency_ms"] / base[rt], 2)
    result = {"what": "browser latency of one model: throttling and runtimes side by side",
              "model": f"{args.model} @ {args.size}x{args.size}", "macs": g.macs, "date": time.strftime("%Y-%m-%d"),
              "cpu": cpu_name(),
              "browser": sessions[0][0].get("browser") if sessions and sessions[0] else None,
              "note": "per key, the session with the lower median is kept (the machine is shared); webgl is SwiftShader",
              "summary": summary, "sessions": table}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
