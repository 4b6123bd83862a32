"""`mobilize.export(...)`: source -> spec -> each target's files -> verified -> manifest.

Output is atomic: everything is built in a staging directory next to DIR (intermediates in a
scratch directory elsewhere) and renamed into place at the end. A run that is interrupted or
finds bad input leaves nothing. A run where some targets fail but others pass writes DIR when
DIR did not exist yet (its manifest says which target failed and why). An existing DIR is
never replaced by a failing run, and a run where no target passes never writes DIR: such
results go to DIR.failed beside it, for inspection.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import __version__
from ._ui import SILENT, Reporter
from .errors import BadInput, MobilizeError, Unsupported
from .exporters import ExportContext, get_exporter, resolve_targets
from .manifest import FAILED, OK, UNSUPPORTED, FileRecord, Manifest, TargetRecord, is_artifact
from .runtimes import get_runtime
from .sources import load_source
from .spec import ModelSpec, sha256_file
from .verify import compare, failure, worst

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def export(
    source: Any,
    target: str | Sequence[str] = "all",
    out: str | Path | None = None,
    *,
    input_shape: Sequence | None = None,
    opset: int = 17,
    fp16: bool = False,
    name: str | None = None,
    verify: bool = True,
    calib: str | Path | None = None,
    samples: int = 4,
    seed: int = 0,
    threads: int | None = None,
    reporter: Reporter | None = None,
    debug: bool = False,
    spec: ModelSpec | None = None,
) -> Manifest:
    """Export SOURCE to each target, verify each artifact in its runtime, return the manifest.

    SOURCE: an .onnx file, a TorchScript file, a mobilize checkpoint, "package.module:callable",
    "path/file.py:callable", or an nn.Module. `input_shape` is a list of shapes, one per input
    ("1,3,224,224" or (1, 3, 224, 224)). The returned manifest's `location` is the directory
    written (None when nothing was), and `exit_code()` says how the run went.
    """
    log = reporter or SILENT
    targets = resolve_targets(target)
    if samples < 1:
        raise BadInput("--samples must be at least 1")
    if spec is None:
        with log.step("loading the source"):
            spec = load_source(source, input_shape, name)
    elif name:
        spec.name = name
    out = Path(out) if out else Path(spec.name)
    _check_out(out)

    inputs = verification_inputs(spec, samples, seed, calib) if verify else []
    references = [spec.reference(x) for x in inputs]

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix="mobilize-scratch-"))
    try:
        ctx = ExportContext(spec=spec, scratch=scratch, opset=opset, fp16=fp16, calib=inputs, log=log)
        manifest = _new_manifest(spec, targets, samples, seed, calib, inputs, verify)
        for t in targets:
            manifest.targets[t] = _export_target(t, ctx, stage, inputs, references, verify, threads, log, debug)
        manifest.save(stage)
        manifest.location = _commit(stage, out, manifest, log)
        return manifest
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if debug and os.environ.get("MOBILIZE_KEEP_SCRATCH"):
            log(f"scratch kept at {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out '{out}' exists and is a file", "choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not is_artifact(out):
        raise BadInput(f"--out '{out}' is a non-empty directory that is not a mobilize artifact",
                       "choose a new directory; mobilize never overwrites other files")


def _new_manifest(spec: ModelSpec, targets, samples, seed, calib, inputs, verify) -> Manifest:
    tools = {"mobilize": __version__, "python": platform.python_version()}
    for t in targets:
        try:
            tools.update(get_exporter(t).tool_versions())
        except Exception:
            pass
    random_kind = "family sampler" if spec.sample_inputs else "standard normal"
    verification = {}
    if verify:
        verification = {"samples": len(inputs), "random": {"count": samples, "seed": seed, "distribution": random_kind},
                        "calib": {"dir": str(calib), "count": len(inputs) - samples} if calib else None}
        verification = {k: v for k, v in verification.items() if v is not None}
    else:
        verification = {"skipped": True}
    return Manifest(
        name=spec.name, family=spec.family, created_by=f"mobilize {__version__}", source=spec.source.to_dict(),
        tools=tools, inputs=[t.to_dict() for t in spec.inputs], outputs=[t.to_dict() for t in spec.outputs],
        preprocess=spec.preprocess, labels=spec.labels, metadata=spec.metadata, verification=verification,
    )


def _export_target(target, ctx, stage, inputs, references, verify, threads, log, debug) -> TargetRecord:
    exporter = get_exporter(target)
    record = TargetRecord(runtime=exporter.runtime)
    tstage = stage / f".target-{target}"
    tstage.mkdir()
    start = time.perf_counter()
    try:
        with log.step(f"{target}: export") as box:
            try:
                result = exporter.export(ctx, tstage)
            except BaseException:
                box["status"] = "failed"
                raise
        record.export_seconds = round(time.perf_counter() - start, 2)
        record.precision, record.io = result.precision, result.io
        record.rewrites, record.notes = result.rewrites, result.notes
        all_files = list(result.files) + [f for v in result.variants.values() for f in v["files"]]
        for rel in all_files:
            dest = stage / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tstage / rel), dest)
        record.files = [_file_record(stage, rel) for rel in result.files]
        if verify:
            with log.step(f"{target}: verify in {exporter.runtime}") as box:
                record.runtime = _runtime_label(target)
                record.parity = _verify(target, stage, record, ctx.spec, inputs, references, threads)
                box["status"] = "passed" if record.parity["passed"] else "FAILED"
            for vname, v in result.variants.items():
                vrec = TargetRecord(io=v["io"], precision=v["precision"])
                parity = _verify(target, stage, vrec, ctx.spec, inputs, references, threads)
                record.variants[vname] = {"files": [_file_record(stage, f).__dict__ for f in v["files"]],
                                          "io": v["io"], "precision": v["precision"], "parity": parity}
            if not record.parity["passed"]:
                record.status, record.error_kind = FAILED, "parity"
                record.error = failure(record.parity)
        else:
            for vname, v in result.variants.items():
                record.variants[vname] = {"files": [_file_record(stage, f).__dict__ for f in v["files"]],
                                          "io": v["io"], "precision": v["precision"]}
    except Unsupported as e:
        record.status, record.error_kind, record.error = UNSUPPORTED, "unsupported", _one_line(e)
        _discard(record, stage)
    except BadInput as e:
        record.status, record.error_kind, record.error = FAILED, "input", _one_line(e)
        _discard(record, stage)
    except Exception as e:
        record.status, record.error_kind = FAILED, "tool"
        record.error = _one_line(e) if isinstance(e, MobilizeError) else f"{type(e).__name__}: {_one_line(e)}"
        if debug:
            log("".join(traceback.format_exception(e)))
            if e.__cause__ is not None:
                log(str(e.__cause__))
        _discard(record, stage)
    finally:
        shutil.rmtree(tstage, ignore_errors=True)
    if record.export_seconds is None:
        record.export_seconds = round(time.perf_counter() - start, 2)
    return record


def _discard(record: TargetRecord, stage: Path) -> None:
    for f in record.files:
        (stage / f.path).unlink(missing_ok=True)
    record.files, record.parity = [], None


def _runtime_label(target: str) -> str:
    rt = get_runtime(target)
    v = rt.version()
    return f"{rt.name} {v}".strip()


def _verify(target, stage, record, spec, inputs, references, threads) -> dict:
    session = get_runtime(target).open(stage, record, [t.to_dict() for t in spec.inputs],
                                       [t.to_dict() for t in spec.outputs], threads)
    try:
        got = session.run_many(inputs)
    finally:
        session.close()
    return compare(references, got, [t.name for t in spec.outputs], record.precision or "fp32")


def _file_record(stage: Path, rel: str) -> FileRecord:
    p = stage / rel
    return FileRecord(path=rel, bytes=p.stat().st_size, sha256=sha256_file(p))


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:400] if text else type(e).__name__


def _commit(stage: Path, out: Path, manifest: Manifest, log) -> Path | None:
    """Rename the staged artifact into place; see the module docstring for the rules."""
    any_ok = any(t.ok for t in manifest.targets.values())
    if manifest.exit_code() == 0 or (any_ok and not out.exists()):
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            stage.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out)
        return out
    if not any(t.files for t in manifest.targets.values()):
        log("no target produced an artifact: nothing written")
        return None
    failed = out.with_name(out.name + ".failed")
    if failed.exists():
        shutil.rmtree(failed)
    stage.rename(failed)
    if out.exists():
        log(f"kept the existing {out}: this run had failures; its result is in {failed}")
    else:
        log(f"no target passed: the result is in {failed} for inspection")
    return failed


# -- verification inputs ------------------------------------------------------------------
def verification_inputs(spec: ModelSpec, samples: int, seed: int, calib) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    inputs = [spec.random_inputs(rng) for _ in range(samples)]
    if calib:
        inputs += load_calib(spec, Path(calib))
    return inputs


def load_calib(spec: ModelSpec, directory: Path, limit: int = 8) -> list[list[np.ndarray]]:
    """Real samples for verification: .npy (one input), .npz (named inputs) or images."""
    if not directory.is_dir():
        raise BadInput(f"--calib '{directory}' is not a directory")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and
                   (p.suffix.lower() in IMAGE_SUFFIXES | {".npy", ".npz"}))[:limit]
    if not files:
        raise BadInput(f"--calib '{directory}' holds no images, .npy or .npz files")
    out = []
    for f in files:
        try:
            out.append(_calib_sample(spec, f))
        except BadInput:
            raise
        except Exception as e:
            raise BadInput(f"--calib file '{f}' cannot be used: {_one_line(e)}") from e
    return out


def _calib_sample(spec: ModelSpec, f: Path) -> list[np.ndarray]:
    shapes = [t.shape for t in spec.inputs]
    if f.suffix.lower() == ".npy":
        if len(shapes) != 1:
            raise BadInput(f"--calib: '{f.name}' is one array but the model has {len(shapes)} inputs; use .npz")
        arr = np.load(f).astype(np.float32).reshape(shapes[0])
        return [arr]
    if f.suffix.lower() == ".npz":
        data = np.load(f)
        return [data[t.name].astype(np.float32).reshape(t.shape) for t in spec.inputs]
    from PIL import Image

    img = Image.open(f)
    if spec.calib_inputs is not None:
        return [np.asarray(x, np.float32) for x in spec.calib_inputs(img)]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][1] not in (1, 3):
        raise BadInput("--calib images need a model with one image input [N, 1|3, H, W]")
    return [image_to_input(img, shapes[0], spec.preprocess)]


def image_to_input(img, shape, preprocess: dict | None) -> np.ndarray:
    """Resize and normalise an image as the manifest's preprocess says (default: RGB in [0, 1])."""
    pre = preprocess or {}
    n, c, h, w = shape
    img = img.convert("L" if c == 1 else "RGB").resize((w, h))
    x = np.asarray(img, np.float32).reshape(h, w, c) * float(pre.get("scale", 1 / 255))
    if pre.get("channel_order", "RGB") == "BGR" and c == 3:
        x = x[..., ::-1]
    if "mean" in pre:
        x = x - np.asarray(pre["mean"], np.float32)
    if "std" in pre:
        x = x / np.asarray(pre["std"], np.float32)
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    return np.repeat(x, n, 0)
