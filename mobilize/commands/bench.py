"""mobilize bench: every format of a model, its size, metric and latency on each device."""

from __future__ import annotations

from ._output import print_json, reporter

NAME = "bench"
ORDER = 50
HELP = "benchmark table: format, status, size, metric, latency per device profile, FPS"
DESCRIPTION = """Benchmark SOURCE in every format (ONNX, ncnn, TF.js, TFLite): status, size, the family's
metric on --data (when SOURCE belongs to a model family), and latency on each device profile.
SOURCE is an artifact directory, or anything `mobilize export` takes (it is exported first).
The table is saved as bench.json and bench.md in --out (default: the artifact directory)."""
EPILOG = """examples:
  mobilize bench artifacts/det --data ../shared/data/bccd
  mobilize bench mobilize.models.zoo:mobilenet_v2_tiny --out bench/mnv2
  mobilize bench artifacts/det --device host --device android-lowend-1t --device browser-desktop --json"""


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="artifact directory or an export source")
    p.add_argument("--data", metavar="PATH", help="evaluation data for the metric column (model families only)")
    p.add_argument("--device", "-d", action="append", metavar="PROFILE",
                   help="device profile name or .json (repeatable; default: host, android-lowend, browser-lowend)")
    p.add_argument("--out", "-o", metavar="DIR", help="where bench.json and bench.md go")
    p.add_argument("--input-shape", action="append", metavar="SHAPE", help="when SOURCE needs exporting")


def run(args) -> int:
    from .._ui import table
    from ..devices.bench import DEFAULT_DEVICES, bench, note_lines, table_rows

    result = bench(args.source, args.device or DEFAULT_DEVICES, args.data, args.out, input_shape=args.input_shape,
                   reporter=reporter(args))
    if args.json:
        print_json(result)
        return 0
    header, body = table_rows(result)
    print(table(body, header))
    for r in result["rows"]:
        if r.get("error"):
            print(f"{r['format']}: {r['error']}")
    for line in note_lines(result):
        print(f"note: {line}")
    print("saved: " + ", ".join(result["files"]))
    return 0
