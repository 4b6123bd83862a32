"""The host profile's predictor on models it has never seen: the export test zoo.

Each zoo model is exported to ncnn (at its own input size, and the image models also at
224x224, so the check covers the sizes apps use), measured on this machine the benchncnn way
(1 thread, each layer alone, its fastest run over several passes kept: on a shared machine other
jobs only ever add time; the host profile was calibrated on the same statistic), and predicted by
the host profile, which was calibrated on the benchncnn architectures only. With
../shared/data/benchncnn present, each architecture is also predicted by a host predictor
calibrated on benchncnn plus the other zoo architectures (`with_other_zoo_models`). Run it right after
latency_host_kernels.py and fit_profiles.py: timings on this shared machine drift between hours.

    .venv/bin/python benchmarks/latency_host_zoo.py [--passes 6] [--rounds 3]
        -> benchmarks/results/latency-host-zoo.json

On another machine, validate the profile fitted there (fit_profiles.py --only host --host-out)
without touching the shipped one: --profile PATH.json --kernels PATH.json --out PATH.json.

--interleave times the benchncnn layers in the same passes as the zoo's (each pass: the zoo, then
benchncnn), writes them to --kernels, refits the host predictor from them (as fit_profiles.py
does) and validates that instead of --profile: calibration and validation then see the same
machine. Run apart, minutes apart, they need not (on 2026-12-04 the benchncnn layers timed 13-14%
faster 20 minutes after the calibration run; refitted on those, most zoo predictions moved 8-26 points).

--sampled (with --interleave) also times nn-Meter-style sampled convolutions (latency_host_sampled.py,
--seed) in the same passes, stores them with the benchncnn layers and reports a second refit with them
(`with_sampled`) beside the first: what covering the shapes benchncnn lacks is worth.
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
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.host import cpu_name, measure_param  # noqa: E402
from mobilize.devices.fit import LAYER_FLOOR_MS, fit_predictor  # noqa: E402
from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.kernels import KernelTimer, time_graph_layers  # noqa: E402
from mobilize.devices.predictor import error_summary, predict_graph  # noqa: E402
from mobilize.devices.profiles import load_profile  # noqa: E402
from latency_host_kernels import fit_host, kernels_record, shown  # noqa: E402
from latency_host_sampled import SEED, write_bundles  # noqa: E402
from mobilize.models.zoo import ZOO  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "latency-host-zoo.json"
KERNELS = ROOT / "benchmarks" / "results" / "latency-host-kernels.json"
BENCHNCNN = ROOT.parent / "shared" / "data" / "benchncnn"
REPEATABLE_PCT = 10  # models whose measurement repeats worse than this are reported apart


def fastest(passes: list[dict[str, float]]) -> dict[str, float]:
    """Each layer's fastest run over the passes."""
    return {name: min(p[name] for p in passes) for name in passes[0]}


def layer_sum(passes: list[dict[str, float]]) -> float:
    """Sum over layers of each layer's fastest run over the passes (a layer at or below the empty
    network's overhead counts as LAYER_FLOOR_MS, as in calibration)."""
    return sum(max(v, LAYER_FLOOR_MS) for v in fastest(passes).values())


def repeatability(passes: list[dict[str, float]]) -> float:
    """How far apart two independent estimates of the measured statistic are (%): the layer sum
    over the first half of the passes against the one over the second half."""
    half = max(1, len(passes) // 2)
    a, b = layer_sum(passes[:half]), layer_sum(passes[half:])
    return round((max(a, b) / min(a, b) - 1) * 100, 1)


def with_other_zoo_models(graphs: dict, measured: dict[str, float], layer_ms: dict[str, dict[str, float]],
                          kernels: Path = KERNELS) -> dict:
    """The remedy docs/devices.md offers for unseen shapes, tried here: calibrate with models like
    the ones predicted. Each zoo architecture (both its sizes) is predicted by a host predictor
    fitted as the shipped one (benchncnn whole models and layers) plus the other zoo
    architectures' models and layers. Needs ../shared/data/benchncnn."""
    kern = json.loads(kernels.read_text())
    bench = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in sorted(BENCHNCNN.glob("*.param"))}
    bench = {m: g for m, g in bench.items() if kern["sum_ms"].get(m, 0) > 0}
    predicted = {}
    for arch in sorted({label.split("@")[0] for label in graphs}):
        others = {k: g for k, g in graphs.items() if k.split("@")[0] != arch}
        record = fit_predictor(bench | others, {m: kern["sum_ms"][m] for m in bench} | {k: measured[k] for k in others},
                               cache_bytes=kern["l2_cache_bytes"], loo=False,
                               layer_ms={m: kern["layer_ms"][m] for m in bench} | {k: layer_ms[k] for k in others})
        for label in graphs:
            if label.split("@")[0] == arch:
                predicted[label] = predict_graph(record, graphs[label])
    return predicted


def cases() -> list[tuple[str, str, list | None]]:
    out = []
    for name, build in ZOO.items():
        shapes = build().mobilize_input_shapes
        out.append((f"{name}@native", name, None))
        if len(shapes[0]) == 4 and name not in ("batchnorm_stats",):
            big = [(1, 3, 224, 224)] + [tuple(s) for s in shapes[1:]]
            out.append((f"{name}@224", name, [",".join(map(str, s)) for s in big]))
    return out


def export_case(work: Path, label: str, name: str, shape) -> tuple[Path, object] | None:
    """One zoo case exported to ncnn (unverified: only its graph and timing matter here):
    (param file, analysed graph), or None when the export failed (said on stdout)."""
    m = export(f"mobilize.models.zoo:{name}", "ncnn", work / label.replace("@", "_"), input_shape=shape, verify=False)
    rec = m.targets["ncnn"]
    if rec.status != "ok":
        print(f"{label}: ncnn export {rec.status}: {rec.error}")
        return None
    param = Path(m.location) / rec.io["model"]
    return param, analyse(param, {e["name"]: e["shape"] for e in rec.io["inputs"]}, name=label)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=6, help="layer-timing passes; the fastest is kept")
    ap.add_argument("--rounds", type=int, default=3, help="whole-model rounds, kept for context")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--profile", default="host", help="the host profile to validate (a name or a .json path)")
    ap.add_argument("--kernels", type=Path, default=KERNELS,
                    help="this machine's benchncnn layer timings, for the 'with the other zoo models' refits")
    ap.add_argument("--interleave", action="store_true",
                    help="time the benchncnn layers in the same passes, write them to --kernels, refit and validate that")
    ap.add_argument("--sampled", action="store_true",
                    help="with --interleave: also time the sampled convolutions (latency_host_sampled.py), store them "
                         "with the benchncnn layers and validate a refit with them beside the refit without")
    ap.add_argument("--seed", type=int, default=SEED, help="the sampled convolutions' seed")
    args = ap.parse_args()
    if args.sampled and not args.interleave:
        ap.error("--sampled needs --interleave: the sampled layers join a refit on layers timed in the same passes")
    if args.passes < 2:
        ap.error("--passes must be at least 2: repeatability compares the first half of the passes with the second")
    if args.interleave and not BENCHNCNN.is_dir():
        raise SystemExit(f"{BENCHNCNN} is missing: --interleave times the benchncnn architectures")
    bench = {p.stem: (p, analyse(p, benchncnn_input_shapes(p))) for p in sorted(BENCHNCNN.glob("*.param"))} \
        if args.interleave else {}
    bench_best: dict[str, dict[str, float]] = {}
    sampled_best: dict[str, dict[str, float]] = {}
    predictor = load_profile(args.profile).predictor
    work = Path(tempfile.mkdtemp(prefix="mobilize-zoo-"))
    graphs, params = {}, {}
    try:
        bundles = write_bundles(work / "sampled", args.seed) if args.sampled else {}
        for label, name, shape in cases():
            case = export_case(work, label, name, shape)
            if case is None:
                continue
            params[label], graphs[label] = case
            print(f"exported {label}: {graphs[label].macs / 1e6:.1f} MMAC", flush=True)
        layer_passes: dict[str, list[dict[str, float]]] = {k: [] for k in graphs}
        for p_ in range(args.passes):  # independent passes, a fresh timer each (other jobs only ever add time)
            timer = KernelTimer()
            for label, g in graphs.items():
                layer_passes[label].append(time_graph_layers(params[label], g, timer))
            for best, models in ((bench_best, bench), (sampled_best, bundles)):
                for m, (path, g) in models.items():
                    for layer, ms in time_graph_layers(path, g, timer).items():
                        prev = best.setdefault(m, {}).get(layer)
                        best[m][layer] = ms if prev is None else min(prev, ms)
            timer.close()
            print(f"layer pass {p_ + 1}/{args.passes} done", flush=True)
        # each layer's fastest run over the passes, summed, as in calibration (latency_host_kernels.py)
        kernel_sum = {k: layer_sum(v) for k, v in layer_passes.items()}
        rounds: dict[str, list[float]] = {k: [] for k in graphs}
        for r in range(args.rounds):
            for label, g in graphs.items():
                res = measure_param(params[label], g.input_shapes, threads=1, warmup=5, runs=20, min_seconds=0.3,
                                    isolated=False)
                rounds[label].append(res["min_ms"])
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if bench:  # calibrate on the benchncnn layers timed alongside the zoo's, as fit_profiles.py does
        kern = kernels_record(bench_best, args.passes)
        if sampled_best:
            kern["sampled"] = {"seed": args.seed, "layer_ms": {m: {k: round(v, 5) for k, v in d.items()}
                                                          for m, d in sampled_best.items()}}
        args.kernels.write_text(json.dumps(kern, indent=0) + "\n")
        bench_graphs = {m: g for m, (_, g) in bench.items()}
        predictor = fit_host(kern, bench_graphs)
        loo = predictor["error_band"]["loo"]
        print(f"refitted on the interleaved benchncnn layers ({args.kernels}): leave-one-model-out median "
              f"{loo['median_abs_pct']}%, p90 {loo['p90_abs_pct']}%", flush=True)
        if sampled_best:
            with_sampled = fit_host(kern, bench_graphs, sampled=True)
            loo = with_sampled["error_band"]["loo"]
            print(f"and with the sampled convolutions: leave-one-model-out median {loo['median_abs_pct']}%, "
                  f"p90 {loo['p90_abs_pct']}%", flush=True)
    layer_ms = {k: fastest(v) for k, v in layer_passes.items()}
    others = with_other_zoo_models(graphs, kernel_sum, layer_ms, args.kernels) if BENCHNCNN.is_dir() else {}
    rows = {}
    for label, g in graphs.items():
        measured = kernel_sum[label]
        predicted = predict_graph(predictor, g)
        rows[label] = {"macs": g.macs, "measured_ms": round(measured, 4), "predicted_ms": round(predicted, 4),
                       "error_pct": round((predicted / measured - 1) * 100, 1),
                       "repeatability_pct": repeatability(layer_passes[label]),
                       "whole_model_fastest_ms": round(min(rounds[label]), 4), "whole_model_rounds_ms": rounds[label],
                       "layer_ms": {k: round(v, 5) for k, v in layer_ms[label].items()}}
        if sampled_best:
            ps = predict_graph(with_sampled, g)
            rows[label]["with_sampled"] = {"predicted_ms": round(ps, 4), "error_pct": round((ps / measured - 1) * 100, 1)}
        if label in others:
            rows[label]["with_other_zoo_models"] = {"predicted_ms": round(others[label], 4),
                                                    "error_pct": round((others[label] / measured - 1) * 100, 1)}
        print(f"{label:36s} measured {measured:8.3f} ms  predicted {predicted:8.3f} ms  "
              f"{rows[label]['error_pct']:+6.1f}%")
    labels = sorted(rows)
    summary = error_summary([rows[k]["predicted_ms"] for k in labels], [rows[k]["measured_ms"] for k in labels])
    big = [k for k in labels if rows[k]["measured_ms"] >= 1.0]
    summary_big = error_summary([rows[k]["predicted_ms"] for k in big], [rows[k]["measured_ms"] for k in big]) if big else {}
    # a model whose measurement does not repeat within REPEATABLE_PCT cannot be judged at +-20%
    rep = [k for k in labels if rows[k]["repeatability_pct"] <= REPEATABLE_PCT]
    summary_rep = error_summary([rows[k]["predicted_ms"] for k in rep], [rows[k]["measured_ms"] for k in rep]) if rep else {}
    result = {"what": "host profile's ncnn predictor vs measurement on the export test zoo (unseen architectures)",
              "cpu": cpu_name(), "profile": "refitted on benchncnn layers timed in the same passes" if bench else args.profile,
              "date": time.strftime("%Y-%m-%d"), "statistic": "sum of per-layer fastest runs, 1 thread, fp32 (as the host profile's calibration)",
              "summary": summary, "summary_models_over_1ms": summary_big,
              f"summary_repeatable_within_{REPEATABLE_PCT}pct": summary_rep, "unrepeatable": sorted(set(labels) - set(rep)),
              "models": rows}
    if bench:
        result["kernels"] = shown(args.kernels)
        result["host_predictor"] = predictor
    if sampled_best:
        result["summary_with_sampled"] = error_summary([rows[k]["with_sampled"]["predicted_ms"] for k in labels],
                                                       [rows[k]["measured_ms"] for k in labels])
        result["with_sampled"] = ("each model predicted by the host predictor refitted on the same benchncnn layers plus "
                                  "the sampled convolutions (latency_host_sampled.py, seed %d)" % args.seed)
        result["host_predictor_with_sampled"] = with_sampled
        print("with the sampled convolutions in calibration:", json.dumps(result["summary_with_sampled"]))
    if others:
        result["summary_with_other_zoo_models"] = error_summary([others[k] for k in labels], [rows[k]["measured_ms"] for k in labels])
        result["with_other_zoo_models"] = ("each architecture (both sizes) predicted by a host predictor calibrated on "
                                     "benchncnn plus the other zoo architectures (whole models and layers)")
        print("with the other zoo models in calibration:", json.dumps(result["summary_with_other_zoo_models"]))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary), json.dumps(summary_big), json.dumps(summary_rep))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
