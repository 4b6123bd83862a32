"""Printing helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys

from .._ui import human_bytes, table
from ..verify import failure, worst


def add_output_options(p) -> None:
    """--json / --quiet / --debug on an ACTION subparser (`mobilize data dedup`, `mobilize device
    calibrate`). SUPPRESS: `mobilize data --json dedup X` and `mobilize data dedup X --json` both
    work (the command's own flags from cli.common_options stay the defaults)."""
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    g.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks on errors")


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def reporter(args):
    from .._ui import Reporter

    return Reporter(quiet=getattr(args, "quiet", False) or getattr(args, "json", False))


def verification_table(manifest) -> str:
    rows = []
    for name, t in manifest.targets.items():
        size = sum(f.bytes for f in t.files)
        w = worst(t.parity) if t.parity else {}
        verdict = "-" if t.parity is None else ("pass" if t.parity["passed"] else "FAIL")
        rows.append([name, t.status, t.precision, human_bytes(size) if t.files else "-",
                     w.get("max_abs_err"), w.get("max_rel_err"), w.get("cosine"), verdict])
        for vname, v in t.variants.items():
            p = v.get("parity")
            vw = worst(p) if p else {}
            vsize = sum(f["bytes"] for f in v["files"])
            rows.append([f"  {name} ({vname})", "ok", v["precision"], human_bytes(vsize), vw.get("max_abs_err"),
                         vw.get("max_rel_err"), vw.get("cosine"), "-" if p is None else ("pass" if p["passed"] else "FAIL")])
    text = table(rows, ["target", "status", "precision", "size", "max abs err", "max rel err", "cosine", "parity"])
    notes = [line for name, t in manifest.targets.items() for line in failed_variant_notes(name, t)]
    return "\n".join([text, *notes])


def print_export_summary(manifest, stream=None) -> None:
    stream = stream or sys.stdout
    print(verification_table(manifest), file=stream)
    for name, t in manifest.targets.items():
        if t.error:
            print(f"{name} {t.status}: {t.error}", file=stream)
    if manifest.location:
        print(f"artifact: {manifest.location}", file=stream)


def failed_variant_notes(name: str, target) -> list[str]:
    """One line per by-product variant (tflite's fp16 file) that missed its parity bound: it stays
    in the artifact for inspection, but it is not the target's model."""
    lines = []
    for vname, v in target.variants.items():
        p = v.get("parity")
        if not p or p["passed"]:
            continue
        files = ", ".join(f["path"] for f in v["files"])
        advice = (f"use {target.io['model']}, which passed" if target.parity and target.parity.get("passed")
                  and target.io else "do not ship it")
        lines.append(f"{name} ({vname}): {files} fails {v['precision']} parity ({failure(p)}); {advice}")
    return lines
