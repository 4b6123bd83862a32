"""The `mobilize` command: parse arguments, call the Python API, print. No logic lives here.

Each subcommand is a module in `mobilize/commands/` with NAME, HELP, ORDER,
`add_arguments(parser)` and `run(args) -> exit code`; this file finds them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

from . import __version__
from .errors import EXIT_TOOL_FAILED, MobilizeError, ToolFailed


def common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one machine-readable JSON object on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.add_argument("--debug", action="store_true", help="show tracebacks and tool output on errors")
    return p


def command_modules():
    from . import commands

    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilize",
        description="Compact vision models from data to verified artifacts for phones and browsers.",
        epilog="Exit codes: 0 done; 1 a check failed (parity, latency budget); 2 bad input; "
               "3 a tool failed inside (rerun with --debug).",
    )
    parser.add_argument("--version", action="version", version=f"mobilize {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = common_options()
    for mod in command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           epilog=getattr(mod, "EPILOG", None), parents=[parent],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def report_error(e: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    if isinstance(e, MobilizeError):
        hint = e.hint
        if isinstance(e, ToolFailed) and not debug and not hint:
            hint = "rerun with --debug for the traceback"
        print(f"mobilize: error: {e.message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return e.exit_code
    print(f"mobilize: error: internal: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
          f"{'' if debug else ' (rerun with --debug for the traceback)'}", file=sys.stderr)
    return EXIT_TOOL_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("mobilize: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mobilize ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as e:  # the one place errors become exit codes
        return report_error(e, getattr(args, "debug", False))


if __name__ == "__main__":
    raise SystemExit(main())
