"""mobilize check: will a model meet its latency budget on a device?"""

from __future__ import annotations

from ._output import print_json, reporter

NAME = "check"
ORDER = 40
HELP = "latency of an artifact (or an ncnn .param) on a device profile, against a budget"
DESCRIPTION = """Check TARGET's latency on DEVICE against a budget.

TARGET is an artifact directory (from `mobilize export`) or a bare ncnn .param file (the
architecture alone is enough for a prediction). DEVICE is a profile name or a profile .json:
  android-lowend, android-lowend-1t   predicted from the ncnn graph (Cortex-A53 class phone)
  browser-lowend, browser-desktop     measured in headless Chromium (TF.js wasm/webgl, onnxruntime-web)
  host                                measured on this machine (ncnn, ONNX Runtime, LiteRT, TF.js)
Results are stored in the artifact's manifest.json under "checks"."""
EPILOG = """examples:
  mobilize check artifacts/det --device android-lowend --fps 30
  mobilize check artifacts/det --device browser-lowend --budget-ms 100 --json
  mobilize check model.ncnn.param --device android-lowend-1t --input-shape 1,3,224,224
  mobilize check artifacts/det --device my-phone.json --fps 15

exit codes: 0 within budget (or no budget given); 1 over budget on some runtime; 2 bad input;
3 a runtime or the browser failed (rerun with --debug)."""


def add_arguments(p) -> None:
    p.add_argument("target", metavar="TARGET", help="artifact directory or ncnn .param file")
    p.add_argument("--device", "-d", required=True, metavar="PROFILE", help="profile name or path to a profile .json")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget-ms", type=float, metavar="N", help="latency budget in milliseconds")
    g.add_argument("--fps", type=float, metavar="F", help="frame-rate budget (budget = 1000/F ms)")
    p.add_argument("--input-shape", action="append", metavar="SHAPE",
                   help="input shape for a bare .param that does not state it (e.g. 1,3,224,224); once per input")
    p.add_argument("--threads", type=int, help="threads for measured runtimes (default: the profile's)")
    p.add_argument("--runtime", action="append", metavar="R",
                   help="only these runtimes (host: ncnn, onnx, tflite, tfjs; browser: tfjs-wasm, tfjs-webgl, onnx)")
    p.add_argument("--no-store", dest="store", action="store_false", help="do not write the result into the manifest")


def run(args) -> int:
    from ..devices import check

    result = check(args.target, args.device, args.budget_ms, args.fps, input_shapes=args.input_shape,
                   threads=args.threads, runtimes=args.runtime, store=args.store, reporter=reporter(args))
    if args.json:
        print_json(result.to_dict())
    else:
        print(check_table(result))
        details = measured_table(result)
        if details:
            print(f"\nmeasured ({result.device}):")
            print(details)
        for r in result.rows:
            if r.get("error"):
                print(f"{r['runtime']}: {r['error']}")
            if r.get("note"):
                print(f"note ({r['runtime']}): {r['note']}")
            if r.get("top_layers"):
                print(f"\nheaviest layers ({r['runtime']}, predicted on {result.device}):")
                print(layers_table(r["top_layers"]))
    return result.exit_code()


def check_table(result) -> str:
    from .._ui import table

    rows = []
    for r in result.rows:
        if "latency_ms" not in r:
            rows.append([result.device, r["runtime"], "-", "-", "-", "error"])
            continue
        if r.get("method") == "predicted":
            latency = f"{r['latency_ms']:.1f} ({r['low_ms']:.1f}-{r['high_ms']:.1f}) predicted"
        else:
            latency = f"{r['latency_ms']:.1f} (p90 {r['p90_ms']:.1f})"
        budget = "-" if result.budget_ms is None else f"{result.budget_ms:.1f}"
        fps = 1000.0 / r["latency_ms"] if r["latency_ms"] > 0 else None
        rows.append([result.device, r["runtime"], latency, f"{fps:.1f}" if fps else "-", budget, r.get("verdict", "-")])
    return table(rows, ["device", "runtime", "latency ms", "fps", "budget ms", "verdict"])


def memory_text(r: dict) -> str:
    """A measured run's memory in words: the process's peak RSS (host), TF.js's tensors and the
    page's JS heap (browser)."""
    parts = []
    if "peak_rss_mb" in r:
        grown = f" (+{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f})" if "baseline_rss_mb" in r else ""
        parts.append(f"peak RSS {r['peak_rss_mb']:.0f} MB{grown}")
    mem = r.get("memory") or {}
    if mem.get("num_bytes") is not None:
        gpu = f", {mem['num_bytes_in_gpu'] / 1e6:.2f} MB on the GPU" if mem.get("num_bytes_in_gpu") else ""
        parts.append(f"{mem['num_bytes'] / 1e6:.2f} MB in {mem.get('num_tensors', '?')} tensors{gpu}")
    if r.get("js_heap_used_bytes"):
        parts.append(f"JS heap {r['js_heap_used_bytes'] / 1e6:.1f} MB")
    return "; ".join(parts) or "-"


def measured_table(result) -> str:
    """What the measured runtimes reported beyond latency: runs, load and first-inference time,
    memory (empty when nothing was measured)."""
    from .._ui import table

    rows = [[r["runtime"], str(r.get("runs", "-")), f"{r['load_ms']:.0f}" if "load_ms" in r else "-",
             f"{r['first_ms']:.1f}" if "first_ms" in r else "-", memory_text(r)]
            for r in result.rows if r.get("method") == "measured" and "latency_ms" in r]
    return table(rows, ["runtime", "runs", "load ms", "first inference ms", "memory"]) if rows else ""


def layers_table(layers) -> str:
    from .._ui import table

    rows = [[r["name"], r["type"], r["kind"], f"{r['macs'] / 1e6:.1f}", f"{r['ms']:.2f}", f"{100 * r['share']:.0f}%"]
            for r in layers]
    return table(rows, ["layer", "type", "priced as", "MMACs", "ms", "share"])
