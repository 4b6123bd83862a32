"""Average the weights of several training runs into one checkpoint ("uniform model soup").

Runs fine-tuned from the same pretrained weights usually land in one basin of the loss, so the
plain mean of their weights is a network of the same size and cost that often generalises better
than any of them (Wortsman et al., ICML 2022). On Grocery retrieval the mean of three 20-epoch runs
is the committed model (docs/retrieval.md). Runs from different random initialisations do not
average: their mean is noise.

    import mobilize
    mobilize.average(["runs/a/model.pt", "runs/b/model.pt", "runs/c/model.pt"], "soup.pt")
"""

from __future__ import annotations

from pathlib import Path

from .errors import BadInput

DROPPED = {"optimizer", "history", "metrics", "best", "ema", "epoch", "step"}  # one run's training state


def _architecture(ckpt: dict) -> dict:
    """The checkpoint's architecture settings (every config entry but the training and data ones)."""
    config = ckpt.get("config") or {}
    out = {}
    for key, value in config.items():
        if key not in ("train", "data") and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
    return out


def _pretrained(ckpt: dict):
    return ((ckpt.get("config") or {}).get("train") or {}).get("pretrained")


def average(checkpoints: list[str | Path], out: str | Path) -> dict:
    """Write the mean of the checkpoints' weights (and BatchNorm statistics) to `out`.

    The checkpoints must be one family and one architecture: the same tensors with the same shapes,
    and the same architecture settings where both name one (a setting only newer checkpoints
    record is taken at its default in the older ones). Integer tensors (BatchNorm's batch
    counters) are taken from the first. The first checkpoint's config and class names are kept;
    its optimizer state, history and validation metrics are not: they describe one run.
    Returns a summary: the inputs, the output path, the tensor count and the family."""
    from .sources import read_checkpoint
    from .train._common import save_checkpoint

    paths = [Path(p) for p in checkpoints]
    if len(paths) < 2:
        raise BadInput(f"averaging needs two or more checkpoints, got {len(paths)}")
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise BadInput(f"--out '{out}' is one of the inputs: write the average to a new file")
    for p in paths:
        if not p.is_file():
            raise BadInput(f"checkpoint '{p}' does not exist")
    states = [read_checkpoint(p) for p in paths]
    first, name = states[0], paths[0]
    if "model" not in first:
        raise BadInput(f"'{name}' has no 'model' weights to average")
    a = _architecture(first)
    for p, s in zip(paths[1:], states[1:]):
        if s["family"] != first["family"]:
            raise BadInput(f"cannot average a '{s['family']}' checkpoint ('{p}') with a '{first['family']}' one ('{name}')")
        b = _architecture(s)
        differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
        if differ:
            k = differ[0]
            raise BadInput(f"'{p}' and '{name}' are different architectures: {k} is {b[k]!r} and {a[k]!r}")
        weights = s.get("model") or {}
        if weights.keys() != first["model"].keys() or any(
                weights[k].shape != v.shape for k, v in first["model"].items()):
            raise BadInput(f"'{p}' and '{name}' do not have the same tensors: they are different architectures")
    starts = [_pretrained(s) for s in states]  # families that record their initial weights
    if any(x is not None for x in starts) and (len(set(starts)) > 1 or "none" in starts):
        raise BadInput("only runs fine-tuned from the same pretrained weights average into a working network; "
                       f"these start from {', '.join(str(x) for x in starts)}")
    model = {k: (sum(s["model"][k] for s in states) / len(states) if v.is_floating_point() else v)
             for k, v in first["model"].items()}
    kept = {k: v for k, v in first.items() if k not in DROPPED}
    save_checkpoint(out, {**kept, "model": model, "average_of": [str(p) for p in paths]})
    return {"family": first["family"], "inputs": [str(p) for p in paths], "out": str(out), "tensors": len(model)}
