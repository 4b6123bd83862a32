"""Exporters: one module per target, one line each in EXPORTERS.

Adding a target (MNN, Core ML) is a module with an `Exporter` subclass, a line here, and a
runtime in `mobilize.runtimes`.
"""

from __future__ import annotations

import importlib

from ..errors import BadInput
from .base import ExportContext, ExportResult, Exporter

EXPORTERS = {
    "onnx": "mobilize.exporters.onnx:OnnxExporter",
    "ncnn": "mobilize.exporters.ncnn:NcnnExporter",
    "tfjs": "mobilize.exporters.tfjs:TFJSExporter",
    "tflite": "mobilize.exporters.tflite:TFLiteExporter",
}
TARGETS = tuple(EXPORTERS)


def get_exporter(target: str) -> Exporter:
    if target not in EXPORTERS:
        raise BadInput(f"unknown target '{target}'", f"choose from: {', '.join(TARGETS)}, all")
    module, cls = EXPORTERS[target].split(":")
    return getattr(importlib.import_module(module), cls)()


def resolve_targets(targets) -> list[str]:
    if isinstance(targets, str):
        targets = [targets]
    out: list[str] = []
    for t in targets or ["all"]:
        for part in str(t).split(","):
            part = part.strip().lower()
            if not part:
                continue
            names = list(TARGETS) if part == "all" else [part]
            for n in names:
                if n not in EXPORTERS:
                    raise BadInput(f"unknown target '{n}'", f"choose from: {', '.join(TARGETS)}, all")
                if n not in out:
                    out.append(n)
    return out


__all__ = ["EXPORTERS", "TARGETS", "ExportContext", "ExportResult", "Exporter", "get_exporter", "resolve_targets"]
