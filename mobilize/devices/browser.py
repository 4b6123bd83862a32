"""Latency in a real browser: headless Chromium, TF.js (wasm, webgl) and onnxruntime-web.

mobilize serves the artifact and the pinned npm packages from a localhost HTTP server it
starts (nothing is fetched from the internet), and drives Chromium with playwright-core from
Node (`web/run_browser.cjs`). The CPU slowdown of a low-end phone is emulated with the
DevTools protocol's `Emulation.setCPUThrottlingRate`, set before the page loads, so load
time, the first inference and the steady state are all throttled.

The page is served without cross-origin isolation, like most sites, so WebAssembly runs on
one thread. With `--disable-gpu`, WebGL is SwiftShader (a CPU rasteriser): webgl numbers from
a headless machine show the backend works and what its overheads are, not a GPU's speed.
"""

from __future__ import annotations

import functools
import http.server
import json
import mimetypes
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Sequence

from ..errors import BadInput, ToolFailed
from .host import summarize

WEB = Path(__file__).parent / "web"
DRIVER = WEB / "run_browser.cjs"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BASE_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
             "--disable-default-apps", "--disable-sync", "--disable-extensions", "--mute-audio"]
# WebGL without a GPU: ANGLE on SwiftShader, which Chromium only allows when asked
WEBGL_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
NO_GPU_ARGS = ["--disable-gpu"]
NPM_NEEDED = ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "onnxruntime-web", "playwright-core")


def chromium_executable() -> str:
    env = os.environ.get("MOBILIZE_CHROMIUM")
    if env:
        if not Path(env).is_file():
            raise BadInput(f"MOBILIZE_CHROMIUM='{env}' is not a file")
        return env
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BadInput("browser latency checks need Chromium",
                   "install Debian's chromium (apt-get install chromium) or set MOBILIZE_CHROMIUM to its path")


def node_modules() -> Path:
    from ..runtimes.tfjs import node_modules_dir

    nm = node_modules_dir()
    missing = [p for p in NPM_NEEDED if not (nm / p).is_dir()]
    if missing:
        raise BadInput(f"browser latency checks need the npm packages {', '.join(missing)}",
                       "run `make setup` (installs js/package.json into .venv/node)")
    return nm


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Three roots: /page/ (the harness), /npm/ (node_modules), /artifact/ (the model files)."""

    roots: dict[str, Path] = {}

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        parts = [p for p in path.split("/") if p and p not in (".", "..")]
        if not parts or parts[0] not in self.roots:
            return str(Path(self.roots["page"]) / "__missing__")
        return str(Path(self.roots[parts[0]]).joinpath(*parts[1:]))

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


class LocalServer:
    """A threaded localhost HTTP server on a free port, for one measurement session."""

    def __init__(self, artifact: Path | None):
        mimetypes.add_type("application/javascript", ".mjs")
        mimetypes.add_type("application/wasm", ".wasm")
        roots = {"page": WEB, "npm": node_modules()}
        if artifact is not None:
            roots["artifact"] = Path(artifact).resolve()
        handler = type("Handler", (_Handler,), {"roots": roots,
                                                "extensions_map": {**_Handler.extensions_map,
                                                                   ".mjs": "application/javascript",
                                                                   ".wasm": "application/wasm"}})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _launch_args(backends: Sequence[str]) -> list[str]:
    args = list(BASE_ARGS)
    args += WEBGL_ARGS if "webgl" in backends else NO_GPU_ARGS
    return args


def run_jobs(jobs: list[dict], artifact: Path | None, timeout_s: float = 900) -> list[dict]:
    """Run harness jobs in one Chromium; each job's result dict (or {"error": ...})."""
    from ..runtimes.tfjs import node_executable

    executable = chromium_executable()
    nm = node_modules()
    backends = {j.get("backend", "") for j in jobs}
    with LocalServer(artifact) as server, tempfile.TemporaryDirectory(prefix="mobilize-browser-") as tmp:
        # playwright-core gives every launch a fresh temporary profile (--user-data-dir) itself
        cfg = {"executable": executable, "page_url": f"{server.url}/page/bench.html",
               "args": _launch_args(sorted(backends)), "jobs": jobs}
        cfg_file = Path(tmp) / "config.json"
        cfg_file.write_text(json.dumps(cfg))
        env = dict(os.environ, NODE_PATH=str(nm))
        try:
            proc = subprocess.run([node_executable(), str(DRIVER), str(cfg_file)], capture_output=True, text=True,
                                  env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ToolFailed(f"the browser harness did not finish within {timeout_s:.0f} s") from e
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolFailed(f"the browser harness failed: {err}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise ToolFailed(f"the browser harness failed: {answer['error'].splitlines()[0]}")
    return answer["results"]


# -- throttling calibrated to this machine ----------------------------------------------------
# CDP's throttling rate is relative to the machine it runs on: 10x on a fast desktop and 10x on a
# slow CI runner emulate different phones. Chrome DevTools' calibrated presets instead pick the
# rate at which this machine's Chromium scores a target device's Lighthouse BenchmarkIndex; a
# profile with `benchmark_index` does the same (docs/devices.md, "How slow browser-lowend is").
BENCHMARK_MS = 1000  # both halves of one BenchmarkIndex measurement
MAX_RATE = 100.0


def benchmark_index(throttle: float = 1.0) -> dict:
    """Lighthouse's BenchmarkIndex of this machine's Chromium at a throttling rate:
    {"index", "strings", "copies"} (higher is faster)."""
    job = {"runtime": "benchmark", "key": "benchmark", "throttle": float(throttle), "duration_ms": BENCHMARK_MS,
           "page": "index.html"}
    res = run_jobs([job], None)[0]
    if "error" in res or not res.get("index"):
        raise ToolFailed(f"the BenchmarkIndex measurement failed: {res.get('error', 'no index')}")
    return {k: res[k] for k in ("index", "strings", "copies")}


def calibrated_rate(index: float, target_index: float, rate: float = 1.0) -> float:
    """The throttling rate expected to bring an index measured at `rate` to `target_index`: the
    index falls about in proportion to the rate. Never below 1 (a machine slower than the target
    cannot be sped up) nor above MAX_RATE."""
    if index <= 0 or target_index <= 0:
        raise BadInput(f"a BenchmarkIndex must be positive (measured {index:g}, target {target_index:g})")
    return round(min(max(rate * index / target_index, 1.0), MAX_RATE), 2)


def calibrate_throttle(target_index: float) -> dict:
    """The CPU throttling rate at which this machine's Chromium scores `target_index`: measured at
    1x, then once more at the first estimate and corrected (throttling slices the renderer's time,
    so the index does not fall exactly with the rate)."""
    host = benchmark_index(1.0)
    first = calibrated_rate(host["index"], target_index)
    record = {"target_index": target_index, "host_index": host["index"], "host": host, "first_rate": first}
    if first > 1.0:
        at_first = benchmark_index(first)
        record["index_at_first_rate"] = at_first["index"]
        record["rate"] = calibrated_rate(at_first["index"], target_index, first)
    else:
        record["rate"] = 1.0
    return record


# -- jobs from an artifact ------------------------------------------------------------------
def artifact_jobs(directory: Path, manifest, runtimes: Sequence[str], throttle: float, warmup: int, runs: int,
                  max_seconds: float, min_runs: int = 5) -> list[dict]:
    """One job per (runtime, backend) the artifact has: 'tfjs-wasm', 'tfjs-webgl', 'onnx'."""
    jobs = []
    common = {"throttle": throttle, "warmup": warmup, "runs": runs, "max_seconds": max_seconds, "min_runs": min_runs}
    for rt in runtimes:
        target = "onnx" if rt == "onnx" else "tfjs"
        record = manifest.targets.get(target)
        if record is None or record.status != "ok":
            continue
        io = record.io
        inputs = [{"name": e["name"], "shape": [int(d) for d in e["shape"]]} for e in io["inputs"]]
        if target == "tfjs":
            jobs.append({"runtime": "tfjs", "backend": rt.split("-", 1)[1], "key": rt,
                         "model_url": f"/artifact/{io['model']}", "inputs": inputs,
                         "outputs": [e["name"] for e in io["outputs"]]} | common)
        else:
            model = next(f.path for f in record.files if f.path.endswith(".onnx"))
            jobs.append({"runtime": "onnx", "backend": "wasm", "key": "onnxruntime-web",
                         "model_url": f"/artifact/{model}", "inputs": inputs} | common)
    return jobs


def measure_artifact(directory: Path | str, runtimes: Sequence[str] = ("tfjs-wasm", "onnx"),
                     throttle: float | Sequence[float] = 1.0, warmup: int = 3, runs: int = 20,
                     max_seconds: float = 20.0, target_index: float | None = None) -> list[dict]:
    """Measure an artifact's TF.js and ONNX files in Chromium at one or more throttling rates.

    runtimes: 'tfjs-wasm', 'tfjs-webgl', 'onnx' (onnxruntime-web, wasm). Each result has
    latency_ms (median), p90_ms, load_ms, first_ms, memory and the raw times. With
    target_index, `throttle` is ignored: the rate is calibrated on this machine so that its
    Chromium scores that BenchmarkIndex (`calibrate_throttle`), and each result carries the
    calibration record under "calibration".
    """
    from ..manifest import Manifest

    directory = Path(directory)
    manifest = Manifest.load(directory)
    bad = [r for r in runtimes if r not in ("tfjs-wasm", "tfjs-webgl", "onnx")]
    if bad:
        raise BadInput(f"unknown browser runtime {', '.join(bad)}", "use tfjs-wasm, tfjs-webgl or onnx")
    calibration = calibrate_throttle(target_index) if target_index else None
    if calibration:
        rates = [calibration["rate"]]
    else:
        rates = [float(throttle)] if isinstance(throttle, (int, float)) else [float(t) for t in throttle]
    jobs = []
    for rate in rates:
        jobs += artifact_jobs(directory, manifest, runtimes, rate, warmup, runs, max_seconds)
    if not jobs:
        raise BadInput(f"'{directory}' has no usable tfjs or onnx target to run in a browser",
                       "export with --target tfjs and/or --target onnx")
    results = run_jobs(jobs, directory)
    out = []
    for job, res in zip(jobs, results):
        row = {"runtime": job["key"], "throttle": job["throttle"]}
        if "error" in res:
            row["error"] = res["error"]
        else:
            row |= summarize(res["ms"]) | {
                "load_ms": round(res["backend_init_ms"] + res["load_ms"], 2), "first_ms": round(res["first_ms"], 2),
                "memory": res.get("memory", {}), "js_heap_used_bytes": res.get("js_heap_used_bytes"),
                "backend": res.get("backend"), "version": res.get("version"), "browser": res.get("browser"),
                "ms": [round(x, 3) for x in res["ms"]]}
            if res.get("renderer"):
                row["renderer"] = res["renderer"]
        if calibration:
            row["calibration"] = calibration
        out.append(row)
    return out
