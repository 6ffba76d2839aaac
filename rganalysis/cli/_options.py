"""Command-line options generated from the option fields of a dataclass (:mod:`rganalysis.fit.options`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import MISSING
from typing import Any

from rganalysis.errors import InvalidParameterError
from rganalysis.fit.options import flag_of, option_fields, show_value

__all__ = ["add_options", "options_from_args"]


def _default(f: Any, defaults: Mapping[str, Any]) -> Any:
    if f.name in defaults:
        return defaults[f.name]
    if f.default is not MISSING:
        return f.default
    return f.default_factory()


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: Sequence[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One option per option field of ``cls`` (all, or ``only`` these), its help ending with the default.

    ``defaults`` overrides a field's default for this command.  Values are parsed by the field's
    ``parse`` (else the type of its default); a bool field becomes a flag.
    """
    defaults = dict(defaults or {})
    for f in option_fields(cls):
        if only is not None and f.name not in only:
            continue
        md = f.metadata
        default = _default(f, defaults)
        shown = "none" if default is None else show_value(f, default)
        kw: dict[str, Any] = {"dest": f.name, "default": default}
        if isinstance(default, bool):
            parser.add_argument(flag_of(f), action="store_true", help=md["help"], **kw)
            continue
        if md.get("parse") is None and default is not None:
            kw["type"] = type(default)  # a custom parse runs in options_from_args, where errors are named
        if md.get("choices"):
            kw["choices"] = tuple(md["choices"])
        if md.get("metavar"):
            kw["metavar"] = md["metavar"]
        parser.add_argument(flag_of(f), help=f"{md['help']} (default: {shown})".replace("%", "%%"), **kw)


def options_from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """An instance of ``cls`` from the parsed options (fields the parser does not have keep their defaults)."""
    kw = {}
    for f in option_fields(cls):
        if not hasattr(args, f.name):
            continue
        value, parse = getattr(args, f.name), f.metadata.get("parse")
        if parse is not None and isinstance(value, str):
            try:
                value = parse(value)
            except InvalidParameterError as e:
                raise InvalidParameterError(f"{flag_of(f)}: {e}") from None
            except ValueError as e:
                raise InvalidParameterError(f"{flag_of(f)}: invalid value {value!r} ({e})") from None
        kw[f.name] = value
    return cls(**kw, **extra)
