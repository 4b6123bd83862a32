"""Export benchmark: for each zoo model and target, export wall time, artifact size and
inference latency in the target's runtime, with PyTorch eager as the reference column.

All runtimes use 1 thread. Latencies are medians over interleaved rounds (each round runs
every runtime in turn), so background load on this shared machine hits all columns alike;
read the ratios to PyTorch, not the absolute numbers.

    .venv/bin/python benchmarks/export_zoo.py [--repeats 3] [--rounds 5] [--iters 10]

Writes benchmarks/results/export-zoo.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mobilize
from mobilize.exporters import TARGETS
from mobilize.models.zoo import ZOO, build
from mobilize.runtimes import open_session
from mobilize.runtimes.tfjs import TFJSSession

RESULTS = Path(__file__).parent / "results" / "export-zoo.json"


def time_export(name: str, target: str, repeats: int, workdir: Path) -> tuple[float, dict]:
    times, manifest = [], None
    for r in range(repeats):
        out = workdir / f"{name}-{target}-{r}"
        start = time.perf_counter()
        manifest = mobilize.export(f"mobilize.models.zoo:{name}", target, out, verify=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times), manifest


def latency_rounds(runners: dict, rounds: int, iters: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():  # warm-up: TF.js's wasm kernels need a few runs to settle
        fn(20)
    for _ in range(rounds):
        for key, fn in runners.items():
            samples[key].extend(fn(iters))
    return {k: statistics.median(v) * 1000 for k, v in samples.items()}


def python_timer(run, inputs):
    def timed(n):
        out = []
        for _ in range(n):
            s = time.perf_counter()
            run(inputs)
            out.append(time.perf_counter() - s)
        return out

    return timed


def tfjs_timer(session: TFJSSession, inputs):
    def timed(n):
        session.run(inputs, repeat=n)
        return [ms / 1000 for ms in session.last_ms]

    return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="exports per model and target")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--models", nargs="*", default=sorted(ZOO))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows, tools = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.models:
            entry = {"model": name, "targets": {}}
            model = build(name)
            inputs = [np.random.default_rng(0).standard_normal(s).astype(np.float32)
                      for s in model.mobilize_input_shapes]
            tensors = [torch.from_numpy(x) for x in inputs]
            entry["params"] = sum(p.numel() for p in model.parameters())

            def torch_run(_, m=model, t=tensors):
                with torch.no_grad():
                    m(*t)

            runners = {"pytorch": python_timer(torch_run, inputs)}
            sessions = []
            for target in TARGETS:
                seconds, manifest = time_export(name, target, args.repeats, workdir)
                rec = manifest.targets[target]
                tools |= manifest.tools
                entry["targets"][target] = {"status": rec.status, "export_s": round(seconds, 2),
                                            "bytes": sum(f.bytes for f in rec.files)}
                if rec.status != "ok":
                    continue
                session = open_session(manifest.location, target, threads=1)
                sessions.append(session)
                if isinstance(session, TFJSSession):
                    runners[target] = tfjs_timer(session, inputs)
                else:
                    runners[target] = python_timer(session.run, inputs)
            lat = latency_rounds(runners, args.rounds, args.iters)
            entry["pytorch_ms"] = round(lat.pop("pytorch"), 3)
            for target, ms in lat.items():
                entry["targets"][target]["latency_ms"] = round(ms, 3)
                entry["targets"][target]["vs_pytorch"] = round(ms / entry["pytorch_ms"], 2)
            for s in sessions:
                s.close()
            rows.append(entry)
            print(json.dumps(entry), flush=True)
    result = {
        "benchmark": "export-zoo",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "settings": {"threads": 1, "repeats": args.repeats, "rounds": args.rounds, "iters": args.iters,
                     "tfjs_backend": "wasm (Node)"},
        "tools": tools,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    head = "| model | params | PyTorch ms | " + " | ".join(
        f"{t} export s | {t} KB | {t} ms (×PT)" for t in TARGETS) + " |"
    sep = "|" + "---|" * (3 + 3 * len(TARGETS))
    lines = [head, sep]
    for r in result["rows"]:
        cells = [r["model"], f"{r['params'] / 1e3:.0f}k", f"{r['pytorch_ms']:.2f}"]
        for t in TARGETS:
            e = r["targets"][t]
            if e["status"] != "ok":
                cells += [e["status"], "-", "-"]
                continue
            cells += [f"{e['export_s']:.1f}", f"{e['bytes'] / 1024:.0f}",
                      f"{e['latency_ms']:.2f} ({e['vs_pytorch']:.2f}×)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
