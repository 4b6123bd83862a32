"""What every runtime adapter shares: the session interface and the layout bookkeeping.

A session takes and returns arrays in the *spec's* layout (PyTorch's NCHW, batch included)
and converts to and from the runtime's own layout using the target's `io` record:

    io entry = {"name": runtime name, "shape": runtime shape, "dtype": ...,
                "layout": "NHWC" | "NCHW" | ..., "perm": axes of the spec tensor in runtime
                order, "batch": False when the runtime has no batch axis (ncnn)}
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


class Session:
    """A loaded artifact. `run` takes one sample's inputs and returns its outputs."""

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_many(self, samples: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
        return [self.run(s) for s in samples]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Runtime:
    name = ""
    target = ""

    def version(self) -> str:
        return ""

    def open(self, directory: Path, record, spec_inputs: list[dict], spec_outputs: list[dict],
             threads: int | None = None) -> Session:
        """Load the target's files from `directory`; spec_* are the manifest's inputs/outputs."""
        raise NotImplementedError


@contextlib.contextmanager
def native_stderr_silenced():
    """Hide what native libraries print straight to fd 2 (LiteRT's "INFO: Created ... delegate")."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def io_entry(name: str, spec_shape: Sequence[int], perm: Sequence[int] | None = None,
             batch: bool = True, layout: str | None = None, dtype: str = "float32") -> dict:
    """Describe how the runtime sees a spec tensor."""
    perm = list(perm) if perm is not None else list(range(len(spec_shape)))
    shape = [int(spec_shape[a]) for a in perm]
    if not batch:
        shape = shape[1:]
    if layout is None:
        layout = layout_name(len(spec_shape), perm)
    return {"name": name, "shape": shape, "dtype": dtype, "layout": layout if batch else layout[1:],
            "perm": perm, "batch": batch}


def layout_name(rank: int, perm: Sequence[int]) -> str:
    letters = {1: "N", 2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}.get(rank)
    if letters is None:
        return "N" + "".join(f"d{i}" for i in range(1, rank)) if list(perm) == list(range(rank)) else str(list(perm))
    return "".join(letters[a] for a in perm)


def to_runtime(x: np.ndarray, entry: dict) -> np.ndarray:
    y = np.transpose(x, entry.get("perm") or range(x.ndim))
    if not entry.get("batch", True):
        if y.shape[0] != 1:
            raise ValueError("this runtime takes one sample at a time (batch 1)")
        y = y[0]
    return np.ascontiguousarray(y, dtype=np.float32)


def from_runtime(y: np.ndarray, entry: dict, spec_shape: Sequence[int]) -> np.ndarray:
    perm = entry.get("perm") or list(range(len(spec_shape)))
    runtime_shape = [int(spec_shape[a]) for a in perm]
    y = np.asarray(y).reshape(runtime_shape)
    return np.transpose(y, np.argsort(perm))
