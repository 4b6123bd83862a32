"""ONNX: torch.onnx (TorchScript-based exporter) -> onnxsim -> onnx.checker."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

from ..errors import ToolFailed, Unsupported
from .onnx_rewrites import apply_onnx_rewrites
from .base import ExportContext, ExportResult, Exporter, package_version
from ..runtimes.base import io_entry


def build_onnx(ctx: ExportContext, converter: str) -> tuple[Path, list[str]]:
    """Write `<scratch>/<converter>/model.onnx`: exported, simplified and checked."""
    import onnx

    spec = ctx.spec
    out_dir = ctx.scratch / f"onnx-{converter}"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    rewrites: list[str] = []
    if spec.onnx_path is not None:
        model = onnx.load(str(spec.onnx_path))
        _fix_input_shapes(model, spec)
    else:
        module, rewrites = ctx.module_for(converter)
        raw = out_dir / "raw.onnx"
        _torch_export(module, ctx.example_tensors(), raw, spec, ctx.opset)
        model = onnx.load(str(raw))
    model = _simplify(model)
    rewrites = rewrites + apply_onnx_rewrites(model, converter)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ToolFailed(f"the exported ONNX graph does not pass onnx.checker: {str(e).splitlines()[0]}") from e
    onnx.save(model, str(path))
    return path, rewrites


def _torch_export(module, examples, path: Path, spec, opset: int) -> None:
    import torch

    names_out = [t.name for t in spec.outputs]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, tuple(examples), str(path), dynamo=False, opset_version=opset,
                input_names=[t.name for t in spec.inputs], output_names=names_out,
                do_constant_folding=True,
            )
    except Exception as e:
        msg = str(e)
        m = re.search(r"operator '([\w:.]+)'", msg) or re.search(r"(aten::\w+)", msg)
        if m and ("not supported" in msg or "Unsupported" in type(e).__name__):
            raise Unsupported(f"the op {m.group(1)} cannot be exported to ONNX (opset {opset})",
                              target="onnx", op=m.group(1),
                              hint="try a higher --opset, or rewrite that part of the model") from e
        raise ToolFailed(f"torch.onnx.export failed: {msg.strip().splitlines()[0][:300] if msg.strip() else type(e).__name__}") from e


def _fix_input_shapes(model, spec) -> None:
    """Pin the graph's (possibly dynamic) input dims to the spec's shapes."""
    by_name = {t.name: t.shape for t in spec.inputs}
    for gi in model.graph.input:
        if gi.name in by_name:
            for d, size in zip(gi.type.tensor_type.shape.dim, by_name[gi.name]):
                d.Clear()
                d.dim_value = int(size)


def _simplify(model):
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception:  # onnxsim cannot handle every graph; the unsimplified one is still valid
        return model
    return simplified if ok else model


class OnnxExporter(Exporter):
    target = "onnx"
    runtime = "onnxruntime"
    converter = "torch.onnx"

    def export(self, ctx: ExportContext, stage: Path) -> ExportResult:
        src, rewrites = ctx.onnx_file(self.converter)
        dest = stage / "model.onnx"
        notes = []
        precision = "fp32"
        if ctx.fp16:
            _to_fp16(src, dest)
            precision = "fp16"
            notes.append("fp16 weights and compute; inputs and outputs stay float32")
        else:
            shutil.copyfile(src, dest)
        io = _onnx_io(dest, ctx.spec)
        return ExportResult(files=["model.onnx"], io=io, precision=precision, rewrites=rewrites, notes=notes)

    def tool_versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__, "onnx": package_version("onnx"),
                "onnxsim": package_version("onnxsim"), "onnxruntime": package_version("onnxruntime")}


def _to_fp16(src: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _topological_sort(model.graph)  # the converter appends its input casts at the end
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))


def _topological_sort(graph) -> None:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ToolFailed("the fp16 ONNX graph has a cycle or a missing input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _onnx_io(path: Path, spec) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    ins = [i.name for i in model.graph.input if i.name not in init]
    outs = [o.name for o in model.graph.output]
    return {
        "model": path.name,
        "inputs": [io_entry(n, t.shape) for n, t in zip(ins, spec.inputs)],
        "outputs": [io_entry(n, t.shape) for n, t in zip(outs, spec.outputs)],
    }
