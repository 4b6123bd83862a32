"""mobilize average CKPT CKPT [...] --out PATH: one checkpoint whose weights are the runs' mean."""

from __future__ import annotations

from ._output import print_json

NAME = "average"
ORDER = 15
HELP = "average the weights of several runs of one network into one checkpoint (a model soup)"
DESCRIPTION = """Write a checkpoint whose weights and BatchNorm statistics are the plain mean of the given
runs' ("uniform model soup"). The runs must be one family and one architecture, fine-tuned from the
same pretrained weights (runs from random weights do not average). The result is the same size and
speed as one run; evaluate it like any checkpoint (mobilize eval) before you ship it."""
EPILOG = """example (the committed Grocery retrieval model, docs/retrieval.md):
  mobilize average runs/a/model.pt runs/b/model.pt runs/c/model.pt --out runs/soup.pt
  mobilize eval runs/soup.pt --data data/grocery --query val --gallery train,catalog"""


def add_arguments(p) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="two or more checkpoints of one network")
    p.add_argument("--out", required=True, metavar="PATH", help="the averaged checkpoint to write")


def run(args) -> int:
    from .._average import average

    result = average(args.checkpoints, args.out)
    if args.json:
        print_json(result)
    else:
        print(f"wrote {result['out']}: the mean of {len(result['inputs'])} {result['family']} checkpoints "
              f"({result['tensors']} tensors)")
    return 0
