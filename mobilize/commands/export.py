"""mobilize export: a model to ONNX, ncnn, TF.js and TFLite, each verified in its runtime."""

from __future__ import annotations

from ._output import print_export_summary, print_json, reporter

NAME = "export"
ORDER = 30
HELP = "export a model to onnx, ncnn, tfjs, tflite and verify each artifact"
DESCRIPTION = """Export SOURCE to one or more targets and verify each artifact in its real runtime
(onnxruntime, ncnn, TF.js under Node, LiteRT) against the PyTorch reference.

SOURCE is an .onnx file, a TorchScript file, a mobilize checkpoint, package.module:callable,
or path/to/file.py:callable (a callable that returns an nn.Module)."""
EPILOG = """examples:
  mobilize export model.onnx --target ncnn --out artifacts/model
  mobilize export my_models.py:build_net --input-shape 1,3,224,224 --target all --out artifacts/net
  mobilize export runs/det/best.pt --target tfjs --target tflite --fp16 --out artifacts/det

exit codes: 0 every target ok; 1 parity beyond tolerance; 2 bad input or an op a target cannot
express; 3 a converter failed inside (rerun with --debug)."""


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="model to export")
    p.add_argument("--target", "-t", action="append", metavar="T",
                   help="onnx, ncnn, tfjs, tflite or all (repeatable; default all)")
    p.add_argument("--out", "-o", metavar="DIR", help="artifact directory (default: ./NAME)")
    p.add_argument("--input-shape", action="append", metavar="SHAPE",
                   help="e.g. 1,3,224,224; once per input, in forward() order")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--fp16", action="store_true", help="half-precision weights where the target supports them")
    p.add_argument("--name", help="model name in the manifest (default: from SOURCE)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip verification")
    p.add_argument("--calib", metavar="DIR", help="real samples (images, .npy, .npz) added to the verification inputs")
    p.add_argument("--samples", type=int, default=4, help="seeded random verification inputs (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="runtime threads for verification")


def run(args) -> int:
    from .. import export

    manifest = export(
        args.source, args.target or ["all"], args.out, input_shape=args.input_shape, opset=args.opset,
        fp16=args.fp16, name=args.name, verify=args.verify, calib=args.calib, samples=args.samples,
        seed=args.seed, threads=args.threads, reporter=reporter(args), debug=args.debug,
    )
    if args.json:
        print_json({"location": str(manifest.location) if manifest.location else None,
                    "exit_code": manifest.exit_code(), "manifest": manifest.to_dict()})
    else:
        print_export_summary(manifest)
    code = manifest.exit_code()
    if code == 3 and not args.debug:
        import sys

        print("mobilize: a converter failed inside (rerun with --debug to see its traceback and output)",
              file=sys.stderr)
    return code
