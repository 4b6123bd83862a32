"""mobilize train FAMILY: train a built-in model family on your data."""

from __future__ import annotations

import argparse

from ._output import print_json

NAME = "train"
ORDER = 10
HELP = "train a model family (detector, retrieval, nerf, nelf) on your data"
DESCRIPTION = """Train a built-in model family. Each family has its own options:
  mobilize train FAMILY --help"""
EPILOG = """examples:
  mobilize train detector --data data/voc --format voc --out runs/det --epochs 100
  mobilize train retrieval --data data/products --out runs/ret
"""


def add_arguments(p) -> None:
    p.add_argument("family", metavar="FAMILY", help="model family")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def family_parser(family, command: str, config_cls):
    from ..cli import common_options
    from ._config_args import add_config_arguments

    fp = argparse.ArgumentParser(prog=f"mobilize {command} {family.name}", description=family.description,
                                 epilog=family.example, parents=[common_options()])
    add_config_arguments(fp, config_cls)
    return fp


def run(args) -> int:
    from ..errors import BadInput
    from ..models import get_family, list_families
    from ._config_args import config_from_args
    from ._output import reporter

    if args.family in ("-h", "--help"):
        names = ", ".join(f.name for f in list_families() if f.train)
        print(f"usage: mobilize train FAMILY [options]\nfamilies: {names}\n  mobilize train FAMILY --help")
        return 0
    family = get_family(args.family)
    if family.train is None or family.train_config is None:
        trainable = ", ".join(f.name for f in list_families() if f.train)
        raise BadInput(f"family '{family.name}' cannot be trained here", f"trainable families: {trainable}")
    fargs = family_parser(family, "train", family.train_config).parse_args(args.rest)
    for flag in ("json", "quiet", "debug"):
        setattr(args, flag, getattr(args, flag) or getattr(fargs, flag))
    config = config_from_args(family.train_config, fargs)
    summary = family.train(config, reporter=reporter(args))
    if args.json:
        print_json(summary)
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
    return 0
