"""TFLite: the fp32 and fp16 .tflite files of the shared onnx2tf run.

The primary file is fp32 (fp16 with --fp16); the other precision ships as a verified variant.
Inputs of rank 4 are NHWC; the io record says so and the runtime adapter transposes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import Unsupported
from ..runtimes.base import io_entry, native_stderr_silenced
from ._onnx2tf import input_perm, output_index as _output_index, resolve_output_perms, run_onnx2tf
from .base import ExportContext, ExportResult, Exporter, package_version


class TFLiteExporter(Exporter):
    target = "tflite"
    runtime = "litert"
    converter = "onnx2tf"

    def export(self, ctx: ExportContext, stage: Path) -> ExportResult:
        from ai_edge_litert.interpreter import Interpreter

        tf = ctx.cached("onnx2tf", lambda: run_onnx2tf(ctx))
        files = {"fp32": "model.tflite", "fp16": "model_fp16.tflite"}
        shutil.copyfile(tf.tflite_fp32, stage / files["fp32"])
        if tf.tflite_fp16.is_file():
            shutil.copyfile(tf.tflite_fp16, stage / files["fp16"])
        try:
            with native_stderr_silenced():
                interp = Interpreter(model_path=str(stage / files["fp32"]))
                interp.allocate_tensors()
        except RuntimeError as e:
            flex = re.findall(r"\(Flex(\w+)\)", str(e))
            if flex:
                raise Unsupported(f"the op {', '.join(flex)} is a TensorFlow 'select' op that the builtin "
                                  "TFLite interpreter cannot run (it needs the Flex delegate)",
                                  target="tflite", op=flex[0]) from e
            raise
        ins = {d["name"]: d for d in interp.get_input_details()}
        outs = sorted(interp.get_output_details(), key=lambda d: _output_index(d["name"]))
        spec = ctx.spec
        in_entries = []
        for sig_name, t in zip(tf.input_names, spec.inputs):
            name = sig_name if sig_name in ins else _closest(sig_name, ins)
            in_entries.append(io_entry(name, t.shape, input_perm(t.shape)))

        def probe(example):
            from ..runtimes.tflite import TFLiteSession

            raw_io = {"inputs": in_entries, "outputs": [io_entry(d["name"], tuple(d["shape"])) for d in outs]}
            rec = type("R", (), {"io": raw_io})
            return TFLiteSession(stage / files["fp32"], rec, [{"shape": tuple(d["shape"])} for d in outs], 1).run(example)

        perms, notes = resolve_output_perms(ctx, [tuple(d["shape"]) for d in outs], probe)
        out_entries = [io_entry(d["name"], t.shape, p) for d, t, p in zip(outs, spec.outputs, perms)]
        primary = "fp16" if ctx.fp16 else "fp32"
        other = "fp32" if ctx.fp16 else "fp16"
        io = {"model": files[primary], "inputs": in_entries, "outputs": out_entries}
        variants = {}
        if (stage / files[other]).is_file():
            variants[other] = {"io": {**io, "model": files[other]}, "precision": other, "files": [files[other]]}
        return ExportResult(files=[files[primary]], io=io, precision=primary, rewrites=tf.rewrites,
                            notes=tf.notes + notes, variants=variants)

    def tool_versions(self) -> dict[str, str]:
        return {"onnx2tf": package_version("onnx2tf"), "tensorflow": package_version("tensorflow"),
                "ai-edge-litert": package_version("ai-edge-litert")}


def _closest(name: str, candidates) -> str:
    norm = lambda s: re.sub(r"[^a-z0-9]", "", s.lower())
    for c in candidates:
        if norm(c) == norm(name):
            return c
    return name
