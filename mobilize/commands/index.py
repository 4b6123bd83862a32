"""mobilize index SOURCE --data PATH: embed a gallery and save the index the app loads."""

from __future__ import annotations

from ._output import print_json

NAME = "index"
ORDER = 35
HELP = "build the retrieval index (gallery embeddings + labels) next to a retrieval artifact"
DESCRIPTION = """Embed the gallery images (default: the train and catalog splits) with a retrieval model and
save them, with their class labels, as one small file the app loads (safetensors layout; see
docs/retrieval.md). For an artifact directory the file goes inside it (index.safetensors) and
the manifest's metadata.index records it; for a checkpoint, --out names the file."""
EPILOG = """examples:
  mobilize index artifacts/ret --data data/grocery --target onnx
  mobilize index runs/ret/model.pt --data data/grocery --gallery catalog --out catalog.safetensors
  mobilize index artifacts/ret --data data/grocery --target onnx --query photo.jpg"""


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="retrieval checkpoint or artifact directory")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset root with SPLIT/CLASS/*.jpg")
    p.add_argument("--gallery", default="train,catalog",
                   help="gallery split(s), comma-separated; a missing 'catalog' is skipped (default train,catalog)")
    p.add_argument("--target", help="runtime for an artifact (onnx, ncnn, tfjs, tflite)")
    p.add_argument("--out", metavar="FILE", help="index file (default: ARTIFACT/index.safetensors)")
    p.add_argument("--fp16", action="store_true", help="store embeddings as float16 (half the size)")
    p.add_argument("--query", metavar="IMAGE", action="append",
                   help="also look up this image (repeatable): top matches and the voted category")
    p.add_argument("--k", type=int, default=5, help="matches shown per --query (default 5)")


def run(args) -> int:
    from ..models.retrieval.build_index import build_index, lookup
    from ._output import reporter

    result = build_index(args.source, args.data, args.gallery, target=args.target, out=args.out, fp16=args.fp16,
                         reporter=reporter(args))
    if args.query:
        result["queries"] = lookup(args.source, result["file"], args.query, target=args.target, k=args.k)
    if args.json:
        print_json(result)
        return 0
    print(f"index: {result['file']} ({result['count']} items, {result['classes']} classes, dim {result['dim']}, "
          f"{result['bytes']} bytes)")
    if result.get("manifest"):
        print(f"recorded in {result['manifest']} (metadata.index)")
    for q in result.get("queries", []):
        print(f"{q['image']}: {q['category']} (vote share {q['confidence']:.2f})")
        for m in q["matches"]:
            print(f"  {m['score']:.3f}  {m['label']}  {m['item']}")
    return 0
