"""ncnn: pnnx (run as a subprocess in scratch) -> model.ncnn.param + model.ncnn.bin.

pnnx takes a traced TorchScript file (or the ONNX graph, for an ONNX source). We call the
pnnx binary directly rather than `pnnx.export`, which hides the tool's errors and imports the
Python file it generates. Only the two ncnn files reach the artifact.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

from ..errors import ToolFailed, Unsupported
from ..runtimes.base import io_entry
from .base import ExportContext, ExportResult, Exporter, package_version, run_tool


def parse_param(path: Path) -> list[tuple[str, str, list[str], list[str]]]:
    """(type, name, bottoms, tops) for each layer of an ncnn .param file."""
    lines = path.read_text().split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise ToolFailed(f"{path.name} is not an ncnn param file")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        ltype, name, nb, nt = parts[0], parts[1], int(parts[2]), int(parts[3])
        bottoms = parts[4:4 + nb]
        tops = parts[4 + nb:4 + nb + nt]
        layers.append((ltype, name, bottoms, tops))
    return layers


def unknown_layers(layers) -> list[str]:
    import ncnn

    bad = []
    for ltype, *_ in layers:
        if ncnn.layer_to_index(ltype) < 0 and ltype not in bad:
            bad.append(ltype)
    return bad


def graph_io(layers) -> tuple[list[str], list[str]]:
    inputs = [tops[0] for ltype, _, _, tops in layers if ltype == "Input"]
    consumed = {b for _, _, bottoms, _ in layers for b in bottoms}
    produced = [t for _, _, _, tops in layers for t in tops]
    outputs = [t for t in produced if t not in consumed and t not in inputs]
    return inputs, outputs


def _order(names: list[str], prefix: str) -> list[str]:
    """pnnx names blobs in0, in1 / out0, out1 in forward() order; sort by that number."""
    def key(n):
        m = re.fullmatch(prefix + r"(\d+)", n)
        return (0, int(m.group(1))) if m else (1, n)

    return sorted(names, key=key)


class NcnnExporter(Exporter):
    target = "ncnn"
    runtime = "ncnn"
    converter = "pnnx"

    def export(self, ctx: ExportContext, stage: Path) -> ExportResult:
        import pnnx
        import torch

        spec = ctx.spec
        batches = {t.shape[0] for t in spec.inputs}
        if batches != {1}:
            raise Unsupported("ncnn runs one sample at a time: export with batch 1 (the first dim of --input-shape)",
                              target="ncnn")
        work = ctx.scratch / "pnnx"
        work.mkdir(parents=True, exist_ok=True)
        rewrites: list[str] = []
        if spec.onnx_path is not None:
            model_file, _ = ctx.onnx_file(self.converter)
        elif spec.torchscript_path is not None:
            model_file = spec.torchscript_path
        else:
            module, rewrites = ctx.module_for(self.converter)
            model_file = work / "model.pt"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(module, tuple(ctx.example_tensors()), check_trace=False)
                traced.save(str(model_file))
            except Exception as e:
                raise ToolFailed(f"torch.jit.trace failed: {str(e).strip().splitlines()[0][:300]}") from e

        shapes = ",".join("[" + ",".join(str(d) for d in t.shape) + "]f32" for t in spec.inputs)
        param, weights = work / "model.ncnn.param", work / "model.ncnn.bin"
        cmd = [pnnx.EXEC_PATH, str(model_file), f"inputshape={shapes}", "device=cpu",
               f"fp16={1 if ctx.fp16 else 0}", f"ncnnparam={param}", f"ncnnbin={weights}",
               f"ncnnpy={work / 'model_ncnn.py'}", f"pnnxparam={work / 'model.pnnx.param'}",
               f"pnnxbin={work / 'model.pnnx.bin'}", f"pnnxpy={work / 'model_pnnx.py'}",
               f"pnnxonnx={work / 'model.pnnx.onnx'}"]
        proc = run_tool(cmd, work, "pnnx")
        if not param.is_file() or not weights.is_file():
            from .base import last_error_line

            raise ToolFailed(f"pnnx wrote no ncnn model: {last_error_line(proc.stderr + proc.stdout)}")
        layers = parse_param(param)
        bad = unknown_layers(layers)
        if bad:
            bad.sort(key=lambda op: op.startswith("pnnx."))  # the real op first, pnnx's wrappers last
            raise Unsupported(f"the op {', '.join(bad)} has no ncnn layer (pnnx left it unconverted)",
                              target="ncnn", op=bad[0],
                              hint="ncnn tensors have at most 4 dims besides batch; rewrite that part, "
                                   "e.g. attention as nn.MultiheadAttention, or choose another target")
        ins, outs = graph_io(layers)
        ins, outs = _order(ins, "in"), _order(outs, "out")
        if len(ins) != len(spec.inputs) or len(outs) != len(spec.outputs):
            raise ToolFailed(f"pnnx produced {len(ins)} inputs / {len(outs)} outputs; the model has "
                             f"{len(spec.inputs)} / {len(spec.outputs)}")
        shutil.copyfile(param, stage / "model.ncnn.param")
        shutil.copyfile(weights, stage / "model.ncnn.bin")
        io = {
            "model": "model.ncnn.param",
            "weights": "model.ncnn.bin",
            "inputs": [io_entry(n, t.shape, batch=False) for n, t in zip(ins, spec.inputs)],
            "outputs": [io_entry(n, t.shape, batch=False) for n, t in zip(outs, spec.outputs)],
        }
        precision = "fp16" if ctx.fp16 else "fp32"
        notes = ["ncnn has no batch axis: feed one sample as a Mat of the listed shape"]
        return ExportResult(files=["model.ncnn.param", "model.ncnn.bin"], io=io, precision=precision,
                            rewrites=rewrites, notes=notes)

    def tool_versions(self) -> dict[str, str]:
        return {"pnnx": package_version("pnnx"), "ncnn": package_version("ncnn")}
