"""The ``rganalysis`` command line.

Each sub-command is a module of this package with ``add_parser(subparsers)`` (returning its
parser) and ``run(args) -> int``; modules are discovered, so a new command is one new module.
Errors the user can cause (:class:`~rganalysis.errors.RGAnalysisError`, missing files) print one
message and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings

from rganalysis import __version__
from rganalysis.errors import RGAnalysisError


class _HelpFormatter(argparse.HelpFormatter):
    """Every option states its default (unless its help already does, or it has none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rganalysis",
        description="Iterative magnitude pruning as a renormalization-group flow: ingest checkpoints, "
        "compute and fit IMP flows, compare models by universality class.",
    )
    parser.add_argument("--version", action="version", version=f"rganalysis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    parser.set_defaults(commands=sub.choices)  # name -> sub-parser, for the generated reference
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{m.name}")
        p = mod.add_parser(sub)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        p.set_defaults(run_command=mod.run)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' hook
    """``rganalysis: warning: [Category] message`` (no source line, no file path)."""
    return f"rganalysis: warning: [{category.__name__}] {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and give exit status 2."""
    args = build_parser().parse_args(argv)
    if args.quiet:
        warnings.filterwarnings("ignore", category=UserWarning, module="rganalysis")
    os.environ.setdefault("TQDM_DISABLE", "" if sys.stderr.isatty() else "1")  # no progress bars in logs
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return int(args.run_command(args) or 0)
    except (RGAnalysisError, FileNotFoundError) as e:
        msg = f"no such file or directory: {e.filename or e}" if isinstance(e, FileNotFoundError) else str(e)
        print(f"rganalysis {args.command}: error: [{type(e).__name__}] {msg}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
