"""mobilize demo: everything mobilize can do, end to end, on its embedded data."""

from __future__ import annotations

from ._output import print_json, reporter

NAME = "demo"
ORDER = 0
HELP = "run the whole pipeline on embedded data: export + verify, then each model family"
DESCRIPTION = """Runs every stage on data mobilize generates itself (nothing is downloaded):
export a small example network to ONNX, ncnn, TF.js and TFLite and verify each artifact,
then train, export and evaluate each built-in model family on its synthetic data."""
EPILOG = """examples:
  mobilize demo
  mobilize demo --only export --out /tmp/demo"""


def add_arguments(p) -> None:
    p.add_argument("--out", default="mobilize-demo", help="working directory (default: ./mobilize-demo)")
    p.add_argument("--only", action="append", metavar="STAGE", help="run only this stage (repeatable)")


def run(args) -> int:
    from ..demo import run_demo

    results = run_demo(args.out, args.only, reporter(args))
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"\n== {r.get('title', r['stage'])}  ({r['seconds']} s)")
            if r.get("table"):
                print(r["table"])
            for k, v in r.items():
                if k not in ("title", "table", "stage", "seconds", "ok"):
                    print(f"{k}: {v}")
    return 0 if all(r.get("ok", True) for r in results) else 1
