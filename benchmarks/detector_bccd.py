"""BCCD detector benchmark: train on train, report on val, side by side.

    .venv/bin/python benchmarks/detector_bccd.py train     # both trainings (hours on 2 shared cores)
    .venv/bin/python benchmarks/detector_bccd.py report    # eval, export, artifact mAP, latency
        -> benchmarks/results/detector-bccd.json, detector-bccd.pt, detector-bccd-pr.png

`train` runs, for the depthwise-separable model and for the same architecture with standard
convolutions (`--no-separable`):

    mobilize train detector --data ../shared/data/bccd --epochs 70 --imgsz 320 --width 0.5 \\
        --neck-channels 96 --batch 16 --vflip 0.5 --threads 1 --eval-interval 2 --out runs/detector-bccd-{sep,std}

(the separable one under `torchrun --nproc_per_node 2`, which trains the same model; see
tests/test_detector_ddp.py). An interrupted run is continued with --resume.

`report` evaluates best.pt in PyTorch, exports it to ONNX, ncnn, TF.js and TFLite, evaluates
every artifact in its own runtime, and times both models (ONNX Runtime and ncnn, 1 thread,
interleaved rounds) on this machine. FLOPs are 2 x multiply-accumulates of convolutions and
matrix products, counted by torch.utils.flop_counter at 320 x 320; element-wise ops are not
counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "bccd"
RUNS = ROOT / "runs"
RESULTS = ROOT / "benchmarks" / "results"
GOAL = {"map50": 0.85, "params": 1.0e6, "flops": 1.0e9}
TRAIN_ARGS = ["--epochs", "70", "--imgsz", "320", "--width", "0.5", "--neck-channels", "96", "--batch", "16",
              "--vflip", "0.5", "--threads", "1", "--eval-interval", "2", "--name", "detector-bccd"]
VARIANTS = {"separable": ("detector-bccd-sep", [], 2), "standard": ("detector-bccd-std", ["--no-separable"], 1)}


def train_command(variant: str) -> list[str]:
    run, extra, procs = VARIANTS[variant]
    out = RUNS / run
    cmd = ["train", "detector", "--data", str(DATA), *TRAIN_ARGS, *extra, "--out", str(out)]
    if (out / "last.pt").exists():
        cmd.append("--resume")
    if procs > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                "-m", "mobilize", *cmd]
    return [sys.executable, "-m", "mobilize", *cmd]


def finished(variant: str) -> bool:
    import torch

    last = RUNS / VARIANTS[variant][0] / "last.pt"
    if not last.exists():
        return False
    ckpt = torch.load(last, weights_only=True)
    return ckpt["epoch"] >= ckpt["config"]["train"]["epochs"]


def train(args) -> None:
    """Both trainings at once (each is single-threaded; two shared cores)."""
    procs = []
    for v in VARIANTS:
        if finished(v):
            print(f"{v}: finished already")
            continue
        log = open(RUNS / f"{VARIANTS[v][0]}.log", "a")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        print(" ".join(train_command(v)))
        procs.append(subprocess.Popen(train_command(v), stdout=log, stderr=subprocess.STDOUT, env=env))
    for p in procs:
        p.wait()


# -- report --------------------------------------------------------------------------------
def describe(best: Path, processes: int) -> dict:
    import torch

    from mobilize.models.detector.deploy import model_from_checkpoint
    from mobilize.models.detector.model import count_flops, count_params

    ckpt = torch.load(best, weights_only=True)
    model = model_from_checkpoint(ckpt, 320)
    params = count_params(model)
    flops = count_flops(model, 320)
    last = torch.load(best.parent / "last.pt", weights_only=True)
    return {"checkpoint": str(best.relative_to(ROOT)), "params": params, "flops_320": flops, "macs_320": flops // 2,
            "weights_fp32_bytes": params * 4, "best_epoch": ckpt["epoch"], "epochs": last["epoch"],
            "train_seconds": round(float(last["meta"]["train_seconds"]), 1),
            "train_processes": processes, "architecture": ckpt["config"]["model"]}


def evaluate_on(source, target=None, plot="none") -> dict:
    from mobilize.models.detector.evaluate import EvalConfig, evaluate

    m = evaluate(str(source), EvalConfig(data=str(DATA), split="val", plot=str(plot)), target)
    keep = ("map50", "map50_95", "images", "boxes", "detections", "runtime", "pr_curve")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()
            if k in keep or k.startswith("ap50")}


def latency(artifacts: dict[str, Path], targets=("onnx", "ncnn"), rounds: int = 7, runs: int = 15) -> dict:
    """Median (and fastest) ms per image, 1 thread, the variants interleaved round by round."""
    import numpy as np

    from mobilize.runtimes import open_session

    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320)).astype(np.float32)
    out = {}
    for target in targets:
        sessions = {name: open_session(path, target, threads=1) for name, path in artifacts.items()}
        times = {name: [] for name in sessions}
        try:
            for s in sessions.values():
                for _ in range(3):
                    s.run([x])
            for _ in range(rounds):
                for name, s in sessions.items():
                    for _ in range(runs):
                        t = time.perf_counter()
                        s.run([x])
                        times[name].append((time.perf_counter() - t) * 1000)
        finally:
            for s in sessions.values():
                s.close()
        out[target] = {name: {"median_ms": round(statistics.median(t), 2), "min_ms": round(min(t), 2),
                              "samples": len(t)} for name, t in times.items()}
    return out


def report(args) -> None:
    from mobilize import export

    work = RUNS / "detector-bccd-artifacts"
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    sep_best, std_best = (RUNS / VARIANTS[v][0] / "best.pt" for v in ("separable", "standard"))
    result = {"data": "BCCD (Pascal VOC): train 205 images, val 87 images; 3 classes",
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_average_at_start": os.getloadavg(), "python": platform.python_version()},
              "flops_note": "FLOPs = 2 x MACs of convolutions and matrix products at 320 x 320 "
                            "(torch.utils.flop_counter); element-wise ops not counted",
              "train_commands": {v: " ".join(train_command(v)).replace(str(ROOT) + "/", "").replace(" --resume", "")
                                 for v in VARIANTS},
              "goal": {"map50": ">= 0.85", "params": "<= 1.0 M", "flops_320": "<= 1.0 G"}}
    print("separable: eval in PyTorch")
    sep = describe(sep_best, VARIANTS["separable"][2]) | {"pytorch": evaluate_on(sep_best, plot=RESULTS / "detector-bccd-pr.png")}
    sep["pytorch"]["pr_curve"] = "benchmarks/results/detector-bccd-pr.png"
    print("separable: export to every target")
    manifest = export(str(sep_best), "all", work / "separable", name="detector-bccd")
    sep["export"] = {t: {"status": r.status, "parity": bool(r.parity and r.parity["passed"]),
                         "bytes": sum(f.bytes for f in r.files)} for t, r in manifest.targets.items()}
    sep["artifacts"] = {}
    for t in ("onnx", "ncnn", "tfjs", "tflite"):
        print(f"separable: eval on {t}")
        m = evaluate_on(manifest.location, t)
        m["delta_map50_points"] = round(100 * (m["map50"] - sep["pytorch"]["map50"]), 3)
        m["delta_map50_95_points"] = round(100 * (m["map50_95"] - sep["pytorch"]["map50_95"]), 3)
        sep["artifacts"][t] = m
    print("standard: eval in PyTorch, export to ONNX and ncnn")
    std = describe(std_best, VARIANTS["standard"][2]) | {"pytorch": evaluate_on(std_best)}
    std_manifest = export(str(std_best), ["onnx", "ncnn"], work / "standard", name="detector-bccd-standard")
    std["export"] = {t: {"status": r.status, "bytes": sum(f.bytes for f in r.files)}
                     for t, r in std_manifest.targets.items()}
    print("latency: separable vs standard")
    lat = latency({"separable": manifest.location, "standard": std_manifest.location})
    result.update({"separable": sep, "standard": std, "latency_ms_1_thread": lat})
    result["comparison"] = {
        "flops_saved": round(1 - sep["flops_320"] / std["flops_320"], 3),
        "params_saved": round(1 - sep["params"] / std["params"], 3),
        "latency_ratio_std_over_sep": {t: round(lat[t]["standard"]["median_ms"] / lat[t]["separable"]["median_ms"], 2)
                                       for t in lat},
        "map50_cost_points": round(100 * (std["pytorch"]["map50"] - sep["pytorch"]["map50"]), 2),
        "map50_95_cost_points": round(100 * (std["pytorch"]["map50_95"] - sep["pytorch"]["map50_95"]), 2),
    }
    result["goal_met"] = {"map50": sep["pytorch"]["map50"] >= GOAL["map50"], "params": sep["params"] <= GOAL["params"],
                          "flops_320": sep["flops_320"] <= GOAL["flops"],
                          "artifacts_within_0.5_points": all(abs(a["delta_map50_points"]) <= 0.5 and
                                                             abs(a["delta_map50_95_points"]) <= 0.5
                                                             for a in sep["artifacts"].values())}
    dest = RESULTS / "detector-bccd.pt"
    shutil.copyfile(sep_best, dest)
    result["committed_checkpoint"] = {"path": "benchmarks/results/detector-bccd.pt", "bytes": dest.stat().st_size}
    tmp = RESULTS / ".detector-bccd.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(RESULTS / "detector-bccd.json")
    print(json.dumps({"separable": {k: sep[k] for k in ("params", "flops_320", "train_seconds")} | sep["pytorch"],
                      "artifacts": {t: (a["map50"], a["map50_95"]) for t, a in sep["artifacts"].items()},
                      "standard": {k: std[k] for k in ("params", "flops_320", "train_seconds")} | std["pytorch"],
                      "latency": lat, "goal_met": result["goal_met"]}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["train", "report"])
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    RUNS.mkdir(exist_ok=True)
    {"train": train, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
