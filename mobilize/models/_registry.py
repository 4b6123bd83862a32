"""The model-family registry.

A family (detector, retrieval, nelf, ...) registers one `Family`. Through it:

- `mobilize export CKPT` finds `spec_from_checkpoint` by the checkpoint's "family" entry;
- `mobilize train NAME` builds its options from the `train_config` dataclass and calls `train`;
- `mobilize eval SOURCE` builds its options from `eval_config` and calls `evaluate`;
- `mobilize demo` calls `demo` after the export demo.

Signatures:

    spec_from_checkpoint(ckpt: dict, input_shapes: list[tuple] | None) -> ModelSpec
    train(config: train_config, reporter: mobilize._ui.Reporter) -> dict (summary; JSON-able)
    evaluate(source: str, config: eval_config, target: str | None, reporter) -> dict (metrics)
    demo(workdir: Path, reporter) -> dict (what to show: {"rows": [[...]], "header": [...], ...})

`evaluate` gets its model through `mobilize.runtimes.open_predictor(source, target)`, which
runs a checkpoint in PyTorch and an artifact in the runtime of `target`, with one interface.

Config dataclasses are plain data: each field becomes `--field-name` on the command line
(help text from `field(metadata={"help": ...})`), and the Python API takes the same names as
keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BadInput


@dataclass
class Family:
    name: str
    description: str
    # (checkpoint dict, input shapes or None) -> ModelSpec with module, inputs, preprocess...
    spec_from_checkpoint: Callable[..., Any]
    train_config: type | None = None
    train: Callable[..., dict] | None = None  # train(config) -> summary dict
    eval_config: type | None = None
    evaluate: Callable[..., dict] | None = None  # evaluate(source, config, target, reporter) -> metrics
    demo: Callable[..., dict] | None = None  # demo(workdir, reporter) -> summary
    demo_order: int = 100
    example: str | None = None  # a one-line example for --help


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"family '{family.name}' is registered twice")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    _load_builtin_families()
    if name not in _FAMILIES:
        known = ", ".join(sorted(_FAMILIES)) or "none"
        raise BadInput(f"unknown model family '{name}'", f"known families: {known}")
    return _FAMILIES[name]


def list_families() -> list[Family]:
    _load_builtin_families()
    return [_FAMILIES[k] for k in sorted(_FAMILIES)]


_BUILTIN = ("detector", "retrieval", "nerf", "nelf")
_loaded = False


def _load_builtin_families() -> None:
    """Import the built-in families once; a family that is not there yet is skipped."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import importlib.util

    for name in _BUILTIN:
        module = f"mobilize.models.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
