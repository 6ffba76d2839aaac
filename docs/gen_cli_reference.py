"""Regenerate docs/cli.md from the command line's own help: `python docs/gen_cli_reference.py`."""

from __future__ import annotations

from pathlib import Path

from rganalysis.cli import build_parser


def main() -> None:
    parser = build_parser()
    commands = parser.get_default("commands")
    out = ["# Command-line reference", "",
           "Generated from the parsers by `python docs/gen_cli_reference.py`; every command exits with status 2 "
           "and one `error: [ErrorName] ...` line on bad input.", "",
           "```text", parser.format_help().rstrip(), "```", ""]
    for name, p in commands.items():
        out += [f"## `rganalysis {name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    Path(__file__).with_name("cli.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()
