"""The shape every exporter has, and the context they share within one export.

An exporter turns a ModelSpec into files in a staging directory and describes, in `io`, how
its runtime names and lays out each input and output. Intermediate files (traced modules,
the ONNX fed to onnx2tf, SavedModels) go to the context's scratch directory, never to the
artifact. Products more than one target needs (the ONNX graph, the onnx2tf run shared by
TF.js and TFLite) are built once per export and cached in the context.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ToolFailed
from ..spec import ModelSpec


@dataclass
class ExportResult:
    files: list[str]  # relative to the staging directory
    io: dict
    precision: str
    rewrites: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    variants: dict = field(default_factory=dict)  # name -> {"io": ..., "precision": ..., "files": [...]}


@dataclass
class ExportContext:
    spec: ModelSpec
    scratch: Path
    opset: int = 17
    fp16: bool = False
    calib: list[list[np.ndarray]] = field(default_factory=list)  # samples for converters that calibrate
    log: Callable[[str], None] = lambda msg: None
    _cache: dict = field(default_factory=dict)

    def cached(self, key, build):
        if key not in self._cache:
            try:
                self._cache[key] = ("ok", build())
            except Exception as e:  # remember failures so dependants fail the same way, once
                self._cache[key] = ("error", e)
        status, value = self._cache[key]
        if status == "error":
            raise value
        return value

    def example_tensors(self):
        """Seeded inputs for tracing (random rather than zeros: zeros break e.g. a matrix inverse)."""
        import torch

        return [torch.from_numpy(x) for x in self.spec.random_inputs(np.random.default_rng(0))]

    def module_for(self, converter: str):
        """The module a converter sees: the spec's module with that converter's rewrites."""
        from .rewrites import apply_rewrites

        def build():
            examples = self.example_tensors()
            return apply_rewrites(self.spec.module, examples, converter)

        return self.cached(("module", converter), build)

    def onnx_file(self, converter: str = "torch.onnx") -> tuple[Path, list[str]]:
        """A simplified, checked fp32 ONNX file in scratch; rewrites for `converter` applied."""
        from .onnx import build_onnx

        return self.cached(("onnx", converter), lambda: build_onnx(self, converter))


class Exporter:
    target = ""
    runtime = ""
    converter = ""  # which converter's rewrites apply

    def export(self, ctx: ExportContext, stage: Path) -> ExportResult:
        raise NotImplementedError

    def tool_versions(self) -> dict[str, str]:
        return {}


def run_tool(cmd: list[str], cwd: Path, what: str, timeout: int = 1800, env=None) -> subprocess.CompletedProcess:
    """Run a converter as a subprocess; on failure raise ToolFailed with its last useful line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise ToolFailed(f"{what} did not finish within {timeout} s") from e
    if proc.returncode != 0:
        raise ToolFailed(f"{what} failed: {last_error_line(proc.stderr + proc.stdout)}",
                         "rerun with --debug to see its full output") from _Output(proc)
    return proc


class _Output(Exception):
    """Carries a tool's full output so --debug can show it."""

    def __init__(self, proc):
        super().__init__(f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-20000:]}")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def last_error_line(text: str) -> str:
    lines = [l.strip() for l in _ANSI.sub("", text).strip().splitlines() if l.strip()]
    for l in reversed(lines):
        low = l.lower()
        if any(w in low for w in ("error", "exception", "not supported", "unsupported", "failed")):
            return l[:300]
    return lines[-1][:300] if lines else "no output"


def python_tool(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
