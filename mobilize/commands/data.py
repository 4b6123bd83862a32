"""mobilize data dedup|clean|restore: tidy an image-folder dataset, reversibly."""

from __future__ import annotations

from ._output import add_output_options, print_json

NAME = "data"
ORDER = 5
HELP = "clean an image-folder dataset: near-duplicates (dedup), per-class outliers (clean)"
DESCRIPTION = """Find near-duplicate images (dHash) or per-class outliers (DBSCAN on embeddings) in a
dataset laid out as ROOT/SPLIT/CLASS/*.jpg. Both print what they would move; nothing changes
without --apply, and nothing is ever deleted: files move to ROOT/.quarantine/RUN/ with a log
(moves.json), and `mobilize data restore ROOT --apply` puts them back."""
EPILOG = """examples:
  mobilize data dedup data/grocery                     # list duplicate groups, change nothing
  mobilize data dedup data/grocery --threshold 2 --apply
  mobilize data clean data/grocery/train --model runs/ret/model.pt
  mobilize data clean data/grocery/train --model artifacts/ret --target onnx --apply
  mobilize data restore data/grocery --apply"""


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = sub.add_parser("dedup", help="near-duplicate images by perceptual hash (dHash)")
    d.add_argument("path", metavar="PATH", help="dataset root, a split, or any folder of images")
    d.add_argument("--threshold", type=int, default=4,
                   help="max differing bits of 64 to call two images duplicates (default 4; 0: same hash)")
    d.add_argument("--apply", action="store_true", help="move the duplicates to the quarantine")
    add_output_options(d)

    c = sub.add_parser("clean", help="per-class outliers: DBSCAN on embeddings, keep the largest tight cluster")
    c.add_argument("path", metavar="PATH", help="dataset root or a split (CLASS folders inside)")
    c.add_argument("--model", metavar="SOURCE",
                   help="retrieval checkpoint or artifact for the embeddings (default: a colour-layout "
                        "descriptor that only catches gross outliers)")
    c.add_argument("--target", help="runtime for an artifact --model (onnx, ncnn, tfjs, tflite)")
    c.add_argument("--eps", type=float, default=0.25, help="DBSCAN radius, cosine distance (default 0.25)")
    c.add_argument("--min-samples", type=int, default=3, help="DBSCAN core-point neighbours (default 3)")
    c.add_argument("--reclaim", type=float, default=0.35,
                   help="keep an outlier within this cosine distance of a cluster member (default 0.35)")
    c.add_argument("--max-fraction", type=float, default=0.3,
                   help="leave a class alone when more than this share would move (default 0.3)")
    c.add_argument("--min-class-size", type=int, default=5, help="skip classes with fewer images (default 5)")
    c.add_argument("--apply", action="store_true", help="move the outliers to the quarantine")
    add_output_options(c)

    r = sub.add_parser("restore", help="move quarantined files back where they came from")
    r.add_argument("path", metavar="PATH", help="the dataset root given to dedup/clean")
    r.add_argument("--apply", action="store_true", help="move them back (default: list them)")
    add_output_options(r)


def run(args) -> int:
    from .._ui import table
    from ..data import cleaning
    from ._output import reporter

    rep = reporter(args)
    if args.action == "restore":
        moves = cleaning.plan_restore(args.path)
        done = cleaning.restore(args.path, moves) if args.apply else 0
        if args.json:
            print_json({"moves": moves, "applied": bool(args.apply), "restored": done})
        else:
            rows = [[m["from"], m["to"], "blocked: target exists" if m["blocked"] else m["reason"]] for m in moves]
            if rows:
                print(table(rows, ["quarantined", "back to", "note"]))
            print(f"{done} file(s) restored" if args.apply else
                  f"{len(moves)} file(s) would be restored (add --apply to move them back)")
        return 0

    if args.action == "dedup":
        plan = cleaning.plan_dedup(args.path, args.threshold, rep)
    else:
        embed, name = None, "pixels"
        if args.model:
            embed, name = cleaning.model_embedding(args.model, args.target), args.model
        elif args.target:
            from ..errors import BadInput

            raise BadInput("--target needs --model", "e.g. --model artifacts/ret --target onnx")
        try:
            plan = cleaning.plan_clean(args.path, embed, eps=args.eps, min_samples=args.min_samples,
                                       reclaim=args.reclaim, max_fraction=args.max_fraction,
                                       min_class_size=args.min_class_size, reporter=rep, embedding_name=name)
        finally:
            if embed is not None:
                embed.close()
    if args.apply:
        cleaning.apply_plan(plan)
    if args.json:
        print_json(plan.to_dict())
        return 0
    if plan.moves:
        rows = [[m.path, m.reason, ", ".join(f"{k} {v}" for k, v in m.detail.items())] for m in plan.moves]
        print(table(rows, ["file", "reason", "detail"]))
    for note in plan.notes:
        print(note)
    stats = ", ".join(f"{k} {v}" for k, v in plan.stats.items())
    if plan.applied_to:
        print(f"moved {len(plan.moves)} file(s) to {plan.applied_to} ({stats}); undo: mobilize data restore {plan.root} --apply")
    else:
        print(f"{len(plan.moves)} file(s) would move to {plan.root}/{cleaning.QUARANTINE}/ ({stats})"
              + ("; add --apply to move them" if plan.moves else ""))
    return 0
