"""The ``rganalysis`` command line.

Each sub-command is a module of this package with ``add_parser(subparsers)`` (returning its
parser) and ``run(args) -> int``; modules are discovered, so a new command is one new module.
Errors the user can cause (:class:`~rganalysis.errors.RGAnalysisError`, missing files) print one
message and exit with status 2.  Only the module of the command that runs is imported (``rganalysis
info`` never imports torch, xarray or matplotlib); ``rganalysis --help`` imports none: each module's
one-line summary is its ``HELP`` string, read from the source.  No command's ``--help`` imports torch or
numpy (tests/cli/test_startup.py).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import pkgutil
import signal
import sys
import threading
import warnings
from typing import Any

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


def command_names() -> list[str]:
    """The sub-commands: the public modules of this package, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def command_help(name: str) -> str:
    """The one-line summary of command ``name``: its module's ``HELP`` string, read without importing it."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    try:
        with open(spec.origin, "rb") as f:  # type: ignore[union-attr]
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HELP" for t in node.targets):
                return str(ast.literal_eval(node.value))
    except (OSError, TypeError, AttributeError, ValueError, SyntaxError):
        pass
    return str(getattr(importlib.import_module(f"{__name__}.{name}"), "HELP", ""))  # e.g. bytecode only


def build_parser(only: str | None = None, *, summaries: bool = False) -> argparse.ArgumentParser:
    """The parser of every command, or of the command ``only`` alone (its module is the only one imported);
    ``summaries``: no command's parser, only their names and ``HELP`` (``rganalysis --help``; none imported)."""
    parser = argparse.ArgumentParser(
        prog="rganalysis",
        description="Iterative magnitude pruning as a renormalization-group flow: ingest checkpoints, "
        "compute and fit IMP flows, compare models by universality class.",
    )
    parser.add_argument("--version", action="version", version=f"rganalysis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    parser.set_defaults(commands=sub.choices)  # name -> sub-parser, for the generated reference
    for name in command_names():
        if only is not None and name != only:
            continue
        if summaries:
            sub.add_parser(name, help=command_help(name), add_help=False)
            continue
        mod = importlib.import_module(f"{__name__}.{name}")
        p = mod.add_parser(sub)
        p.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="no progress bars (warnings about the data still print)",
        )
        p.set_defaults(run_command=mod.run)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' hook
    """``rganalysis: warning: [Category] message`` (no source line, no file path)."""
    return f"rganalysis: warning: [{category.__name__}] {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and give exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    names = command_names()
    # no command named (--help, --version, a typo): the summaries alone, no command module imported
    args = (build_parser(first) if first in names else build_parser(summaries=True)).parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "" if sys.stderr.isatty() else "1")  # no progress bars in logs
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    on_term = _raise_on_sigterm()
    try:
        return int(args.run_command(args) or 0)
    except (RGAnalysisError, FileNotFoundError) as e:
        msg = f"no such file or directory: {e.filename or e}" if isinstance(e, FileNotFoundError) else str(e)
        print(f"rganalysis {args.command}: error: [{type(e).__name__}] {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM through _raise_on_sigterm: outputs already removed
        print(f"rganalysis {args.command}: interrupted; no partial output is left", file=sys.stderr)
        return 128 + (e.signum if isinstance(e, _Terminated) else signal.SIGINT)  # the shell's convention
    except BrokenPipeError:  # `rganalysis info big.h5 | head`: the reader left, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        warnings.formatwarning = previous
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be (so every cleanup that handles one handles both)."""

    signum = signal.SIGTERM


def _raise_on_sigterm() -> Any:
    """Make SIGTERM (``kill``, ``timeout``, a batch scheduler) raise KeyboardInterrupt like Ctrl-C, so that
    every atomic output removes its temporary file; returns the previous handler (None off the main
    thread, where Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame) -> None:  # noqa: ANN001 - signal's hook
        raise _Terminated

    return signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
