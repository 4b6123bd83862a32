"""TF.js: onnx2tf's SavedModel -> tensorflowjs_converter -> graph model, weights in 4 MB shards.

The converter runs through `_tfjs_convert`, which fixes its bias-add fusion bug.

The converter runs in a subprocess. With --fp16 the weights are stored as float16
(`--quantize_float16`); TF.js dequantizes them on load and computes in float32.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from ..errors import ToolFailed, Unsupported
from ..runtimes.base import io_entry
from ._onnx2tf import input_perm, output_index as _output_index, resolve_output_perms, run_onnx2tf
from .base import ExportContext, ExportResult, Exporter, package_version, run_tool

SHARD_BYTES = 4 * 1024 * 1024


def read_signature(model_json: Path) -> tuple[dict, dict]:
    sig = json.loads(model_json.read_text()).get("signature", {})
    return sig.get("inputs", {}), sig.get("outputs", {})


def _unsupported_ops(output: str) -> list[str]:
    """tensorflowjs_converter prints 'Unsupported Ops in the model ...' then the op names."""
    lines = output.splitlines()
    for i in range(len(lines) - 2, -1, -1):
        if lines[i].startswith("ValueError: Unsupported Ops in the model"):
            return [op.strip() for op in lines[i + 1].split(",") if op.strip()]
    return []


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _outputs_in_spec_order(sig_out: dict, names: list[str]) -> list[dict]:
    """onnx2tf keys the signature by ONNX output name, or output_i; else fall back to Identity_i."""
    by_norm = {_norm(k): v for k, v in sig_out.items()}
    if all(_norm(n) in by_norm for n in names) and len(by_norm) == len(sig_out):
        return [by_norm[_norm(n)] for n in names]
    if all(f"output_{i}" in sig_out for i in range(len(names))):
        return [sig_out[f"output_{i}"] for i in range(len(names))]
    return sorted(sig_out.values(), key=lambda e: _output_index(e["name"]))


def _shape(entry: dict) -> tuple[int, ...]:
    return tuple(int(d.get("size", -1)) for d in entry.get("tensorShape", {}).get("dim", []))


class TFJSExporter(Exporter):
    target = "tfjs"
    runtime = "tfjs-node"
    converter = "onnx2tf"

    def export(self, ctx: ExportContext, stage: Path) -> ExportResult:
        tf = ctx.cached("onnx2tf", lambda: run_onnx2tf(ctx))
        work = ctx.scratch / "tfjs"
        if work.exists():
            shutil.rmtree(work)
        cmd = [sys.executable, "-m", "mobilize.exporters._tfjs_convert",
               "--input_format=tf_saved_model", "--output_format=tfjs_graph_model",
               "--signature_name=serving_default", "--saved_model_tags=serve",
               f"--weight_shard_size_bytes={SHARD_BYTES}"]
        if ctx.fp16:
            cmd.append("--quantize_float16=*")
        # oneDNN graph rewrites emit _Mkl* ops (e.g. _MklLayerNorm) that TF.js cannot run
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
        try:
            run_tool(cmd + [str(tf.saved_model), str(work)], ctx.scratch, "tensorflowjs_converter", env=env)
        except ToolFailed as e:
            ops = _unsupported_ops(str(e.__cause__ or ""))
            if ops:
                raise Unsupported(f"TF.js has no kernel for the op {', '.join(ops)}", target="tfjs", op=ops[0]) from e
            raise
        dest = stage / "tfjs"
        shutil.copytree(work, dest)
        files = sorted(str(p.relative_to(stage)) for p in dest.rglob("*") if p.is_file())
        sig_in, sig_out = read_signature(dest / "model.json")
        spec = ctx.spec
        in_entries = []
        for sig_name, t in zip(tf.input_names, spec.inputs):
            node = sig_in.get(sig_name, {}).get("name", sig_name).split(":")[0]
            in_entries.append(io_entry(node, t.shape, input_perm(t.shape)))
        ordered = _outputs_in_spec_order(sig_out, [t.name for t in spec.outputs])
        out_nodes = [e["name"].split(":")[0] for e in ordered]
        shapes = [_shape(e) for e in ordered]

        def probe(example):
            from ..runtimes.tfjs import TFJSSession

            raw_io = {"inputs": in_entries, "outputs": [io_entry(n, s) for n, s in zip(out_nodes, shapes)]}
            rec = type("R", (), {"io": raw_io})
            with TFJSSession(dest / "model.json", rec, [{"shape": s} for s in shapes]) as sess:
                return sess.run(example)

        perms, notes = resolve_output_perms(ctx, shapes, probe)
        out_entries = [io_entry(n, t.shape, p) for n, t, p in zip(out_nodes, spec.outputs, perms)]
        io = {"model": "tfjs/model.json", "inputs": in_entries, "outputs": out_entries}
        return ExportResult(files=files, io=io, precision="fp16" if ctx.fp16 else "fp32", rewrites=tf.rewrites,
                            notes=tf.notes + notes + ["weights sharded at 4 MB"])

    def tool_versions(self) -> dict[str, str]:
        from ..runtimes.tfjs import npm_package_version

        return {"onnx2tf": package_version("onnx2tf"), "tensorflow": package_version("tensorflow"),
                "tensorflowjs": package_version("tensorflowjs"),
                "@tensorflow/tfjs": npm_package_version("@tensorflow/tfjs") or "not installed"}
