"""mobilize eval SOURCE: measure a checkpoint or an exported artifact on data."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._output import print_json

NAME = "eval"
ORDER = 20
HELP = "evaluate a checkpoint or an exported artifact (in any runtime) on a data set"
DESCRIPTION = """Evaluate SOURCE, a checkpoint or an exported artifact directory, with its family's metric.
For an artifact, --target picks the runtime (onnx, ncnn, tfjs, tflite). Family options:
  mobilize eval SOURCE --help"""
EPILOG = """examples:
  mobilize eval runs/det/best.pt --data data/voc --split val
  mobilize eval artifacts/det --target ncnn --data data/voc --split val --json
"""


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="checkpoint or artifact directory")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def family_of(source: str) -> str:
    from ..errors import BadInput
    from ..manifest import Manifest, is_artifact
    from ..sources import read_checkpoint

    path = Path(source)
    if path.is_dir():
        if not is_artifact(path):
            raise BadInput(f"'{source}' is a directory but not a mobilize artifact (no manifest.json)")
        family = Manifest.load(path).family
    elif path.is_file():
        family = read_checkpoint(path).get("family")
    else:
        raise BadInput(f"source '{source}' does not exist")
    if not family:
        raise BadInput(f"'{source}' does not belong to a model family, so there is no metric to compute",
                       "eval works on checkpoints and artifacts of the built-in families")
    return family


def run(args) -> int:
    from ..errors import BadInput
    from ..models import get_family
    from ._config_args import add_config_arguments, config_from_args
    from ._output import reporter
    from ..cli import common_options

    family = get_family(family_of(args.source))
    if family.evaluate is None or family.eval_config is None:
        raise BadInput(f"family '{family.name}' has no evaluation")
    fp = argparse.ArgumentParser(prog=f"mobilize eval SOURCE ({family.name})", parents=[common_options()])
    fp.add_argument("--target", help="runtime for an artifact: onnx, ncnn, tfjs, tflite")
    add_config_arguments(fp, family.eval_config, skip=("target",))
    fargs = fp.parse_args(args.rest)
    for flag in ("json", "quiet", "debug"):
        setattr(args, flag, getattr(args, flag) or getattr(fargs, flag))
    config = config_from_args(family.eval_config, fargs, target=fargs.target)
    metrics = family.evaluate(args.source, config, target=fargs.target, reporter=reporter(args))
    if args.json:
        print_json(metrics)
    else:
        from .._ui import table

        rows = [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))]
        print(table(rows, ["metric", "value"]))
    return 0
