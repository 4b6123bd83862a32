"""Parity: does the artifact compute what the reference computes?

For each output, over all verification samples:

- max_abs_err  = max |artifact - reference|
- max_rel_err  = max |artifact - reference| / max(|reference|, 0.01 * scale), where scale is
  max |reference| of that output (the floor keeps near-zero references from exploding it)
- cosine       = cosine similarity of the flattened artifact and reference outputs

An output passes when max_abs_err <= atol + rtol * scale and cosine >= min_cosine. The
tolerances depend on the artifact's precision and are listed in TOLERANCES (and in
docs/export.md). max_rel_err is reported, not judged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    min_cosine: float


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999),
    "fp16": Tolerance(atol=1e-3, rtol=2e-2, min_cosine=0.999),
}


def tolerance_for(precision: str) -> Tolerance:
    return TOLERANCES.get(precision, TOLERANCES["fp32"])


def compare_output(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> dict:
    ref = np.asarray(ref, dtype=np.float64).ravel()
    got = np.asarray(got, dtype=np.float64).ravel()
    if ref.shape != got.shape:
        return {"passed": False, "error": f"{got.size} values where the reference has {ref.size}"}
    if not np.all(np.isfinite(got)):
        bad = int(np.sum(~np.isfinite(got)))
        return {"passed": False, "error": f"{bad} non-finite values", "max_abs_err": float("inf")}
    diff = np.abs(got - ref)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    floor = max(0.01 * scale, 1e-12)
    max_rel = float(np.max(diff / np.maximum(np.abs(ref), floor))) if diff.size else 0.0
    nr, ng = np.linalg.norm(ref), np.linalg.norm(got)
    if nr == 0 and ng == 0:
        cosine = 1.0
    elif nr == 0 or ng == 0:
        cosine = 0.0
    else:
        cosine = float(np.dot(ref, got) / (nr * ng))
    bound = tol.atol + tol.rtol * scale
    passed = max_abs <= bound and cosine >= tol.min_cosine
    return {
        "max_abs_err": max_abs,
        "max_rel_err": max_rel,
        "cosine": cosine,
        "scale": scale,
        "abs_bound": bound,
        "passed": bool(passed),
    }


def compare(
    reference: Sequence[Sequence[np.ndarray]],
    artifact: Sequence[Sequence[np.ndarray]],
    output_names: Sequence[str],
    precision: str,
) -> dict:
    """Compare per output over all samples; `reference[i][j]` is sample i, output j."""
    tol = tolerance_for(precision)
    outputs = []
    for j, name in enumerate(output_names):
        ref = np.concatenate([np.asarray(s[j]).ravel() for s in reference])
        try:
            got = np.concatenate([np.asarray(s[j]).ravel() for s in artifact])
        except IndexError:
            outputs.append({"name": name, "passed": False, "error": "the artifact did not return this output"})
            continue
        outputs.append({"name": name, **compare_output(ref, got, tol)})
    return {
        "passed": all(o["passed"] for o in outputs),
        "precision": precision,
        "tolerance": asdict(tol),
        "samples": len(reference),
        "outputs": outputs,
    }


def worst(parity: dict) -> dict:
    """The summary a table shows: worst error and cosine over all outputs."""
    outs = parity.get("outputs", [])
    return {
        "max_abs_err": max((o.get("max_abs_err", float("inf")) for o in outs), default=0.0),
        "max_rel_err": max((o.get("max_rel_err", float("inf")) for o in outs), default=0.0),
        "cosine": min((o.get("cosine", 0.0) for o in outs), default=1.0),
    }


def failure(parity: dict) -> str:
    """One line on the first output that missed its bound (for an error message or a note)."""
    o = next(o for o in parity["outputs"] if not o["passed"])
    if "error" in o:
        return f"output {o['name']}: {o['error']}"
    return (f"output {o['name']} differs from the reference: max abs err {o['max_abs_err']:.3g} "
            f"(bound {o['abs_bound']:.3g}), cosine {o['cosine']:.6f}")
