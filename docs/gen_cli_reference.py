"""Regenerate docs/cli.md from the command line's own help: `python docs/gen_cli_reference.py` (CI checks it
is current)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from generated_file import write_or_check  # docs/, beside this script

from rganalysis.cli import build_parser


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal: fix the width
    parser = build_parser()
    commands = parser.get_default("commands")
    out = [
        "# Command-line reference",
        "",
        "Generated from the parsers by `python docs/gen_cli_reference.py`; every command exits with status 2 "
        "and one `error: [ErrorName] ...` line on bad input.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    for name, p in commands.items():
        out += [f"## `rganalysis {name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md; with ``--check``, only say whether it is current (exit status 1 when stale)."""
    return write_or_check(Path(__file__).with_name("cli.md"), render(), Path(__file__).name, argv)


if __name__ == "__main__":
    sys.exit(main())
