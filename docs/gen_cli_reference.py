"""Regenerate docs/cli.md from the command line's own help: `python docs/gen_cli_reference.py` (CI checks it
is current)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
    path = Path(__file__).with_name("cli.md")
    text = render()
    if "--check" in (sys.argv[1:] if argv is None else argv):
        if path.read_text() != text:
            print(f"{path} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
