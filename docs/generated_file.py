"""Shared by the docs generators: write a generated file, or with ``--check`` only say whether it is current."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(path: Path, text: str, generator: str, argv: list[str] | None = None) -> int:
    """Write ``text`` to ``path``; with ``--check`` in ``argv`` (default: the command line) compare instead,
    exit status 1 and a message naming ``generator`` when the file is stale."""
    if "--check" in (sys.argv[1:] if argv is None else argv):
        if path.read_text() != text:
            print(f"{path} is stale: run python docs/{generator}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    return 0
