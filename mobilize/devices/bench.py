"""`mobilize bench`: one table per model, Ultralytics-style: every format, its size, its metric
on real data, and its latency on each device profile.

A SOURCE that is not an artifact yet is exported first (all targets). Each format is matched
to what each device runs: a phone predicts ncnn; the host measures ncnn, ONNX Runtime, LiteRT
and TF.js under Node; a browser measures TF.js (its backends) and ONNX (onnxruntime-web).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ..errors import BadInput, MobilizeError
from ..manifest import Manifest, is_artifact
from .check import check
from .profiles import load_profile

DEFAULT_DEVICES = ("host", "android-lowend", "browser-lowend")
FORMATS = ("onnx", "ncnn", "tfjs", "tflite")
# format -> the runtime name each kind of device reports it under
BROWSER_RUNTIMES = {"onnx": ["onnx"], "tfjs": ["tfjs-wasm", "tfjs-webgl"]}


def _row_key(fmt: str, runtime: str) -> str:
    if runtime in ("tfjs-wasm", fmt, "ncnn", "onnxruntime-web"):
        return fmt
    return f"{fmt} ({runtime.split('-', 1)[1]})" if runtime.startswith("tfjs-") else fmt


def _metric(manifest: Manifest, directory: Path, fmt: str, data: str | None, reporter) -> tuple[str | None, float | None]:
    """The family's first metric for this format, or (None, None) when there is nothing to evaluate."""
    if not data or not manifest.family:
        return None, None
    from ..models import get_family

    family = get_family(manifest.family)
    if family.evaluate is None or family.eval_config is None:
        return None, None
    fields = {f.name for f in dataclasses.fields(family.eval_config)}
    if "data" not in fields:
        raise BadInput(f"family '{family.name}' takes no data path in its evaluation config")
    config = family.eval_config(data=data)
    metrics = family.evaluate(str(directory), config, target=fmt, reporter=reporter)
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return k, float(v)
    return None, None


def bench(source: str | Path, devices: Sequence[str] = DEFAULT_DEVICES, data: str | None = None,
          out: str | Path | None = None, *, input_shape=None, reporter=None) -> dict:
    """Benchmark every format of SOURCE on each device; writes bench.json and bench.md to `out`."""
    from .._ui import SILENT

    log = reporter or SILENT
    source = Path(source) if not isinstance(source, Path) and Path(str(source)).exists() else source
    profiles = [load_profile(d) for d in devices]
    if isinstance(source, Path) and source.is_dir() and is_artifact(source):
        directory = source
    else:
        from .. import export

        out_dir = Path(out) if out else Path(f"{Path(str(source)).stem.split(':')[-1]}-bench")
        directory = out_dir / "artifact"
        with log.step("exporting to every format"):
            manifest = export(source, "all", directory, input_shape=input_shape, reporter=log)
        if manifest.location is None:
            raise BadInput(f"no format could be exported from '{source}'")
        directory = Path(manifest.location)
    manifest = Manifest.load(directory)
    out_dir = Path(out) if out else directory

    rows: dict[str, dict] = {}
    for fmt in FORMATS:
        rec = manifest.targets.get(fmt)
        status = "missing" if rec is None else ("ok" if rec.ok else rec.status)
        size = sum(f.bytes for f in rec.files) if rec is not None and rec.files else None
        row = {"format": fmt, "status": status, "size_mb": round(size / 2**20, 3) if size else None,
               "metric": None, "metric_name": None, "latency_ms": {}, "error": rec.error if rec else None}
        if status == "ok":
            try:
                row["metric_name"], row["metric"] = _metric(manifest, directory, fmt, data, log)
            except MobilizeError as e:
                row["error"] = f"metric: {e}"
        rows[fmt] = row

    for profile in profiles:
        try:
            if profile.kind == "predicted":
                if rows["ncnn"]["status"] == "ok":
                    r = check(directory, profile, store=True, reporter=log)
                    rows["ncnn"]["latency_ms"][profile.name] = r.rows[0]["latency_ms"]
                    if r.rows[0].get("note"):  # outside the range the profile was calibrated on
                        rows["ncnn"].setdefault("notes", {})[profile.name] = r.rows[0]["note"]
            elif profile.kind == "host":
                wanted = [f for f in profile.runtimes if rows.get(f, {}).get("status") == "ok"]
                if wanted:
                    r = check(directory, profile, runtimes=wanted, store=True, reporter=log)
                    for rr in r.rows:
                        rows[rr["runtime"]]["latency_ms"][profile.name] = rr.get("latency_ms")
            else:
                wanted = [rt for fmt, rts in BROWSER_RUNTIMES.items() if rows[fmt]["status"] == "ok"
                          for rt in rts if rt in profile.runtimes]
                if wanted:
                    r = check(directory, profile, runtimes=wanted, store=True, reporter=log)
                    for rr in r.rows:
                        fmt = "onnx" if rr["runtime"] == "onnxruntime-web" else "tfjs"
                        key = _row_key(fmt, rr["runtime"])
                        if key not in rows:
                            rows[key] = {"format": key, "status": rows[fmt]["status"], "size_mb": rows[fmt]["size_mb"],
                                         "metric": rows[fmt]["metric"], "metric_name": rows[fmt]["metric_name"],
                                         "latency_ms": {}, "error": None}
                        rows[key]["latency_ms"][profile.name] = rr.get("latency_ms")
        except MobilizeError as e:
            log(f"{profile.name}: {e}")
            for row in rows.values():
                row.setdefault("device_errors", {})[profile.name] = str(e)

    result = {"source": str(source), "artifact": str(directory), "model": manifest.name, "family": manifest.family,
              "data": data, "devices": [p.name for p in profiles],
              "device_kinds": {p.name: p.kind for p in profiles}, "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "rows": list(rows.values())}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "bench.json", json.dumps(result, indent=1) + "\n")
    _write(out_dir / "bench.md", markdown(result))
    result["files"] = [str(out_dir / "bench.json"), str(out_dir / "bench.md")]
    return result


def table_rows(result: dict) -> tuple[list[str], list[list]]:
    devices = result["devices"]
    first = devices[0] if devices else None
    metric_names = {r["metric_name"] for r in result["rows"] if r["metric_name"]}
    metric_head = f"metric ({', '.join(sorted(metric_names))})" if metric_names else "metric"
    kinds = result.get("device_kinds", {})
    header = ["format", "status", "size MB", metric_head] + [
        f"{d} ms" + (" (pred.)" if kinds.get(d) == "predicted" else "") for d in devices] + [f"FPS ({first})"]
    body = []
    for r in result["rows"]:
        lat = [r["latency_ms"].get(d) for d in devices]
        fps = 1000.0 / lat[0] if lat and lat[0] else None
        fps = (int(round(fps)) if fps >= 100 else round(fps, 1)) if fps is not None else None
        body.append([r["format"], r["status"], r["size_mb"], r["metric"]] +
                    [round(x, 2) if x is not None else None for x in lat] + [fps])
    return header, body


def markdown(result: dict) -> str:
    header, body = table_rows(result)
    def cell(v) -> str:
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    lines = [f"# Benchmark: {result['model']}", "",
             f"artifact `{result['artifact']}`" + (f", metric on `{result['data']}`" if result["data"] else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in body]
    lines += ["", "Latency: median of repeated runs where measured; `(pred.)` columns are predicted from the ncnn "
              "graph (see docs/devices.md). FPS = 1000 / latency on the first device.", ""]
    notes = note_lines(result)
    lines += [f"Note, {line}" for line in notes] + ([""] if notes else [])
    return "\n".join(lines)


def note_lines(result: dict) -> list[str]:
    """"FORMAT on DEVICE: note" for each prediction that carries a note (e.g. extrapolated)."""
    return [f"{r['format']} on {device}: {note}" for r in result["rows"] for device, note in r.get("notes", {}).items()]


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
