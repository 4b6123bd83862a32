"""Turn a config dataclass into command-line options, and parsed options back into it.

Each field becomes --field-name; its type annotation gives the type, its default the default
(no default: required), `metadata={"help": ...}` the help text. bool fields get --x/--no-x.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if args else str
    return tp


def add_config_arguments(parser: argparse.ArgumentParser, config_cls, skip: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group("options")
    for f in dataclasses.fields(config_cls):
        if f.name in skip or f.metadata.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kwargs: dict = {"dest": f.name, "help": help_text + (f" (default: {default})" if has_default and default
                                                               not in (None, "", False) else "")}
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kwargs)
            continue
        if typing.get_origin(tp) in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs.update(type=inner, nargs="+")
        elif tp in (int, float, str):
            kwargs["type"] = tp
        else:
            kwargs["type"] = str
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if has_default:
            kwargs["default"] = default
        else:
            kwargs["required"] = True
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument(flag, **kwargs)


def config_from_args(config_cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update({k: v for k, v in extra.items() if k in names})
    return config_cls(**values)
