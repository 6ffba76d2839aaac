"""Regenerate docs/cli.md from the command line's own help: `python docs/gen_cli_reference.py`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rganalysis.cli import build_parser


def main() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ["# Command-line reference", "",
           "Generated from the parsers by `python docs/gen_cli_reference.py`; every command exits with status 2 "
           "and one `error: [ErrorName] ...` line on bad input.", "",
           "```text", parser.format_help().rstrip(), "```", ""]
    for name, p in sub.choices.items():
        out += [f"## `rganalysis {name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    Path(__file__).with_name("cli.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()
