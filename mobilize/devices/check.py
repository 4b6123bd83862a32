"""`mobilize.devices.check`: will this model meet its latency budget on that device?

The answer is one row per runtime the device runs: predicted (a phone, from the ncnn graph
alone) or measured (this machine, or Chromium on it). A measured row's verdict is on the
median; a predicted row's verdict is on the prediction, and is marked "marginal" when the
budget lies inside the prediction's error band, because then the true latency may fall on
either side. The check fails (exit code 1) when any row is over budget.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..errors import EXIT_CHECK_FAILED, EXIT_OK, BadInput
from ..manifest import MANIFEST, Manifest, is_artifact
from .graph import Graph, analyse, parse_shape
from .profiles import Profile, load_profile

PASS, FAIL = "pass", "FAIL"


@dataclass
class CheckResult:
    target: str
    device: str
    kind: str
    budget_ms: float | None
    rows: list[dict] = field(default_factory=list)
    description: str = ""

    @property
    def verdict(self) -> str | None:
        if self.budget_ms is None:
            return None
        return FAIL if any(r.get("verdict", "").startswith(FAIL) for r in self.rows) else PASS

    def exit_code(self) -> int:
        return EXIT_CHECK_FAILED if self.verdict == FAIL else EXIT_OK

    def to_dict(self) -> dict:
        runtimes = {}
        for r in self.rows:
            runtimes[r["runtime"]] = {k: v for k, v in r.items() if k not in ("runtime", "ms")}
        d = {"target": self.target, "device": self.device, "kind": self.kind, "budget_ms": self.budget_ms,
             "verdict": self.verdict, "runtimes": runtimes}
        return d


def budget_from(budget_ms: float | None, fps: float | None) -> float | None:
    if budget_ms is not None and fps is not None:
        raise BadInput("give either --budget-ms or --fps, not both")
    if fps is not None:
        if fps <= 0:
            raise BadInput("--fps must be positive")
        return 1000.0 / fps
    if budget_ms is not None and budget_ms <= 0:
        raise BadInput("--budget-ms must be positive")
    return budget_ms


# -- targets --------------------------------------------------------------------------------
def _ncnn_graph(target: Path, manifest: Manifest | None, input_shapes) -> Graph:
    if manifest is None:
        shapes = [parse_shape(s) if isinstance(s, str) else list(s) for s in input_shapes] if input_shapes else None
        return analyse(target, shapes, name=target.stem)
    record = manifest.targets.get("ncnn")
    if record is None or record.status != "ok":
        why = "has no ncnn target" if record is None else f"has an ncnn target that {record.status}: {record.error}"
        raise BadInput(f"'{target}' {why}; Android latency is predicted from the ncnn graph",
                       "export with --target ncnn")
    shapes = {e["name"]: [int(d) for d in e["shape"]] for e in record.io["inputs"]}
    return analyse(target / record.io["model"], shapes, name=manifest.name)


def predict_rows(profile: Profile, graph: Graph, top: int = 5) -> list[dict]:
    import math

    from .predictor import calibrated_range, layer_breakdown, predict_graph

    ms = predict_graph(profile.predictor, graph)
    band = profile.band
    breakdown = layer_breakdown(profile.predictor, graph)
    layers = sorted(breakdown, key=lambda r: -r["ms"])[:top]
    for r in layers:
        r["share"] = r["ms"] / ms if ms > 0 else 0.0
    row = {"runtime": "ncnn", "method": "predicted", "latency_ms": round(ms, 3),
           "low_ms": round(ms * math.exp(-band), 3), "high_ms": round(ms * math.exp(band), 3),
           "threads": profile.threads, "macs": graph.macs,
           "top_layers": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in layers]}
    span = calibrated_range(profile.predictor)
    notes = []
    if span:
        row["calibrated_range_ms"] = [round(span[0], 3), round(span[1], 3)]
        notes.append(extrapolation_note(ms, span))
    notes.append(evidence_note(profile.predictor, breakdown, ms))
    if any(notes):
        row["note"] = "; also ".join(n for n in notes if n)
    return [row]


THIN_SHARE = 0.2  # a prediction leaning this much on kinds few boards ran says so


def evidence_note(predictor: dict, breakdown: list[dict], ms: float) -> str | None:
    """Why a prediction that leans on kinds few boards behind the profile ran (`kinds_on_few_boards`:
    a transformer's GEMMs, which only QRB2210's published table has) deserves less trust."""
    few = predictor.get("kinds_on_few_boards") or {}
    shares: dict[str, float] = {}
    for r in breakdown:
        if r["kind"] in few and ms > 0:
            shares[r["kind"]] = shares.get(r["kind"], 0.0) + r["ms"] / ms
    if sum(shares.values()) < THIN_SHARE:
        return None
    parts = []
    for kind, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        boards = few[kind]
        who = f"of the boards behind this profile only {' and '.join(boards)} ran it" if boards \
            else "no board behind this profile ran it"
        borrowed = predictor.get("borrowed_prices", {}).get(kind)
        how = f", at its ratio to {borrowed['ratio_to']} there, x{borrowed['ratio']:g}" if borrowed and boards else ""
        parts.append(f"{kind} ({share:.0%}; {who}{how})" if len(shares) > 1 else f"{kind} ({who}{how})")
    return (f"{sum(shares.values()):.0%} of this prediction is priced as {' and '.join(parts)}: the band was measured "
            f"on models without it, so the error can be larger; measure a model like this one on the phone and "
            f"calibrate with it (mobilize device calibrate)")


def extrapolation_note(ms: float, span: tuple[float, float]) -> str | None:
    """Why a prediction outside the range of the models behind the profile deserves less trust."""
    lo, hi = span
    if ms < lo:
        return (f"extrapolated: below the fastest model this profile was calibrated on ({lo:.3g} ms); its band "
                f"was measured on larger models, and in a small one fixed per-layer costs weigh more, so the "
                f"error can be larger")
    if ms > hi:
        return f"extrapolated: above the slowest model this profile was calibrated on ({hi:.3g} ms)"
    return None


def _host_rows(profile: Profile, target: Path, manifest: Manifest | None, graph_shapes, threads, runtimes,
               log) -> list[dict]:
    from .host import measure_artifact, measure_param

    threads = threads or profile.threads
    if manifest is None:
        shapes = graph_shapes
        with log.step(f"host: ncnn, {threads} thread(s), empty weights"):
            r = measure_param(target, shapes, threads=threads, warmup=profile.warmup, runs=profile.runs,
                              min_seconds=min(profile.max_seconds, 2.0))
        return [_measured_row("ncnn", r)]
    rows = []
    wanted = runtimes or profile.runtimes
    for rt in wanted:
        rec = manifest.targets.get(rt)
        if rec is None or rec.status != "ok":
            continue
        with log.step(f"host: {rt}, {threads} thread(s)"):
            r = measure_artifact(target, rt, threads=threads, warmup=profile.warmup, runs=profile.runs,
                                 min_seconds=min(profile.max_seconds, 2.0))
        rows.append(_measured_row(rt, r))
    if not rows:
        raise BadInput(f"'{target}' has none of the targets {', '.join(wanted)} in a usable state")
    return rows


def _measured_row(runtime: str, r: dict) -> dict:
    keep = ("latency_ms", "p90_ms", "min_ms", "runs", "threads", "load_ms", "first_ms", "peak_rss_mb",
            "baseline_rss_mb", "tfjs_memory", "backend")
    return {"runtime": runtime, "method": "measured"} | {k: r[k] for k in keep if k in r}


def throttle_text(profile: Profile) -> str:
    """How a browser profile slows the CPU, in words."""
    if profile.benchmark_index:
        return f"CPU throttled to a BenchmarkIndex of {profile.benchmark_index:g} (calibrated here)"
    return f"CPU throttled {profile.throttle:g}x" if profile.throttle != 1 else "CPU not throttled"


def _browser_rows(profile: Profile, target: Path, manifest: Manifest | None, runtimes, log) -> list[dict]:
    from .browser import measure_artifact

    if manifest is None:
        raise BadInput(f"a browser runs an artifact's TF.js or ONNX files, not a bare .param ('{target}')",
                       "export with --target tfjs --target onnx and check the artifact directory")
    wanted = list(runtimes or profile.runtimes)
    with log.step(f"{profile.name}: Chromium, {throttle_text(profile)} ({', '.join(wanted)})"):
        results = measure_artifact(target, wanted, throttle=profile.throttle, warmup=profile.warmup,
                                   runs=profile.runs, max_seconds=profile.max_seconds,
                                   target_index=profile.benchmark_index)
    if results and results[0].get("calibration"):
        cal = results[0]["calibration"]
        log(f"{profile.name}: this machine's Chromium scores a BenchmarkIndex of {cal['host_index']:g}; "
            f"throttled {cal['rate']:g}x to score {cal['target_index']:g}")
    rows = []
    for r in results:
        row = {"method": "measured", "throttle": r["throttle"]} | {k: v for k, v in r.items() if k not in ("throttle",)}
        rows.append(row)
    return rows


def _verdicts(rows: list[dict], budget: float | None) -> None:
    for r in rows:
        if budget is None or "latency_ms" not in r:
            r["verdict"] = "-" if "error" not in r else "error"
            continue
        r["budget_ms"] = round(budget, 3)
        over = r["latency_ms"] > budget
        verdict = FAIL if over else PASS
        if r.get("method") == "predicted" and r["low_ms"] <= budget <= r["high_ms"]:
            verdict += " (marginal)"
        r["verdict"] = verdict


def check(target: str | Path, device: str | Path | Profile, budget_ms: float | None = None,
          fps: float | None = None, *, input_shapes: Sequence | None = None, threads: int | None = None,
          runtimes: Sequence[str] | None = None, store: bool = True, reporter=None) -> CheckResult:
    """Latency of TARGET (an artifact directory or an ncnn .param) on DEVICE, against a budget.

    Results are stored under `checks` in the artifact's manifest (one entry per device).
    """
    from .._ui import SILENT

    log = reporter or SILENT
    budget = budget_from(budget_ms, fps)
    profile = load_profile(device)
    path = Path(target)
    manifest = None
    if path.is_dir():
        if not is_artifact(path):
            raise BadInput(f"'{target}' is a directory but not a mobilize artifact (no {MANIFEST})",
                           "pass an artifact directory written by `mobilize export`, or an ncnn .param file")
        manifest = Manifest.load(path)
    elif not path.is_file():
        raise BadInput(f"'{target}' does not exist", "pass an artifact directory or an ncnn .param file")
    elif path.suffix != ".param":
        raise BadInput(f"'{target}' is neither an artifact directory nor an ncnn .param file")

    if profile.kind == "predicted":
        with log.step(f"{profile.name}: analysing the ncnn graph"):
            graph = _ncnn_graph(path, manifest, input_shapes)
        rows = predict_rows(profile, graph)
    elif profile.kind == "host":
        shapes = None
        if manifest is None:
            shapes = _ncnn_graph(path, None, input_shapes).input_shapes
        rows = _host_rows(profile, path, manifest, shapes, threads, runtimes, log)
    else:
        rows = _browser_rows(profile, path, manifest, runtimes, log)
    _verdicts(rows, budget)
    result = CheckResult(str(target), profile.name, profile.kind, budget, rows, profile.description)
    if manifest is not None and store:
        store_check(path, profile, result)
    return result


def store_check(directory: Path, profile: Profile, result: CheckResult) -> None:
    """Add the result under manifest["checks"][device], editing the JSON in place, atomically.

    The manifest is edited as JSON rather than round-tripped through `Manifest`, so fields
    this version of mobilize does not know survive.
    """
    path = Path(directory) / MANIFEST
    data = json.loads(path.read_text())
    entry = result.to_dict()
    entry.pop("target", None)
    entry |= {"profile": profile.path if profile.path else profile.name, "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "mobilize": __version__}
    data.setdefault("checks", {})[profile.name] = entry
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
