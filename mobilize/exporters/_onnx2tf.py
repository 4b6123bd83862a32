"""The one onnx2tf run that TF.js and TFLite share: ONNX -> SavedModel + fp32/fp16 .tflite.

onnx2tf runs in a subprocess (TensorFlow stays out of the exporting process) with its working
directory in scratch, where we place `calibration_image_sample_data_20x128x128x3_float32.npy`
so it never tries to download its sample images. Image (4-D) inputs become NHWC; other inputs
keep their shape (`keep_shape_absolutely_input_names`). If onnx2tf's strict accuracy
correction crashes, the run is repeated with it disabled (-dsm); our verification judges.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

import numpy as np

from ..errors import ToolFailed, Unsupported
from .base import ExportContext, run_tool

CALIBRATION_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@dataclass
class TFProducts:
    saved_model: Path
    tflite_fp32: Path
    tflite_fp16: Path
    input_names: list[str]  # SavedModel signature names, in spec order
    notes: list[str]
    rewrites: list[str]


def write_calibration(path: Path, ctx: ExportContext) -> None:
    """onnx2tf's sample data: 20 RGB images 128x128 in [0, 1], seeded (never downloaded)."""
    rng = np.random.default_rng(0)
    data = rng.random((20, 128, 128, 3), dtype=np.float32)
    np.save(path, data)


def run_onnx2tf(ctx: ExportContext) -> TFProducts:
    onnx_path, rewrites = ctx.onnx_file("onnx2tf")
    work = ctx.scratch / "onnx2tf"
    work.mkdir(parents=True, exist_ok=True)
    write_calibration(work / CALIBRATION_FILE, ctx)
    out = work / "saved_model"
    keep = [t.name for t in ctx.spec.inputs if len(t.shape) != 4]
    job = {"onnx": str(onnx_path), "out": str(out), "keep_shape": keep, "strict": True}
    notes: list[str] = []
    try:
        _run_job(job, work)
    except ToolFailed as first:
        unsupported = _unsupported_op(str(first))
        if unsupported:
            raise Unsupported(f"onnx2tf cannot convert the op {unsupported}", target="tfjs", op=unsupported) from first
        job["strict"] = False
        ctx.log("onnx2tf strict mode failed; retrying with -dsm")
        _run_job(job, work)
        notes.append("onnx2tf's strict accuracy correction crashed on this graph; converted with -dsm "
                     f"(its error: {first.message[:160]})")
    stem = "model"
    fp32, fp16 = out / f"{stem}_float32.tflite", out / f"{stem}_float16.tflite"
    if not (out / "saved_model.pb").is_file() or not fp32.is_file():
        raise ToolFailed("onnx2tf wrote no SavedModel/TFLite files")
    info = json.loads((work / "job_result.json").read_text())
    return TFProducts(out, fp32, fp16, info["inputs"], notes, rewrites)


def _run_job(job: dict, work: Path) -> None:
    (work / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
    run_tool([sys.executable, "-m", "mobilize.exporters._onnx2tf", str(work / "job.json")], work, "onnx2tf", env=env)


def _unsupported_op(message: str) -> str | None:
    m = re.search(r"(?:OP|op|operator)\s+['\"]?(\w+)['\"]?\s+is not (?:yet )?(?:implemented|supported)", message)
    return m.group(1) if m else None


# -- layout bookkeeping -------------------------------------------------------------------
CHANNEL_LAST = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


def candidate_perms(spec_shape, runtime_shape) -> list[tuple[int, ...]]:
    """Axis orders that turn the spec shape into the runtime shape, likeliest first."""
    spec_shape, runtime_shape = tuple(spec_shape), tuple(runtime_shape)
    rank = len(spec_shape)
    if len(runtime_shape) != rank:
        return []
    preferred = [tuple(range(rank))]
    if rank in CHANNEL_LAST:
        preferred.append(CHANNEL_LAST[rank])
    found = [p for p in preferred if tuple(spec_shape[a] for a in p) == runtime_shape]
    if rank <= 5:
        for p in permutations(range(rank)):
            if p[0] == 0 and p not in found and tuple(spec_shape[a] for a in p) == runtime_shape:
                found.append(p)
    return found


def output_index(name: str) -> int:
    """onnx2tf names the k-th graph output Identity_k (the first plain Identity)."""
    m = re.fullmatch(r"Identity(?:_(\d+))?", name.split(":")[0])
    return int(m.group(1) or 0) if m else 10**6


def input_perm(shape) -> tuple[int, ...]:
    return CHANNEL_LAST[4] if len(shape) == 4 else tuple(range(len(shape)))


def resolve_output_perms(ctx: ExportContext, runtime_shapes: list, probe) -> tuple[list[tuple[int, ...]], list[str]]:
    """Pick each output's axis order. Shapes decide when only one order fits; when several
    fit (square feature maps), one probe run against the reference decides."""
    spec = ctx.spec
    candidates = []
    for t, rshape in zip(spec.outputs, runtime_shapes):
        c = candidate_perms(t.shape, rshape)
        if not c:
            raise ToolFailed(f"output {t.name} came out of onnx2tf as {list(rshape)}, which no axis order of "
                             f"{list(t.shape)} gives")
        candidates.append(c)
    notes = []
    if all(len(c) == 1 for c in candidates):
        return [c[0] for c in candidates], notes
    example = spec.random_inputs(np.random.default_rng(12345))
    ref = spec.reference(example)
    raw = probe(example)  # runtime-layout outputs
    chosen = []
    for t, c, r, y in zip(spec.outputs, candidates, ref, raw):
        errs = [float(np.abs(np.transpose(np.asarray(y).reshape([t.shape[a] for a in p]), np.argsort(p)) - r).max())
                for p in c]
        chosen.append(c[int(np.argmin(errs))])
        if len(c) > 1:
            notes.append(f"output {t.name}: shape fits several layouts; a probe run chose {list(chosen[-1])}")
    return chosen, notes


# -- the job itself (runs in its own process) ---------------------------------------------
def _job_main(job_file: str) -> None:
    import os
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    job = json.loads(Path(job_file).read_text())
    import onnx2tf

    onnx2tf.convert(
        input_onnx_file_path=job["onnx"],
        output_folder_path=job["out"],
        keep_shape_absolutely_input_names=job["keep_shape"] or None,
        disable_strict_mode=not job["strict"],
        non_verbose=True,
        verbosity="error",
    )
    import tensorflow as tf

    loaded = tf.saved_model.load(job["out"])
    sig = loaded.signatures["serving_default"]
    inputs = list(sig.structured_input_signature[1].keys())
    Path(job_file).with_name("job_result.json").write_text(json.dumps({"inputs": inputs}))


if __name__ == "__main__":
    _job_main(sys.argv[1])
