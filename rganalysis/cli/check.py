"""``rganalysis check STORE.h5 [MORE.h5 ...]``: verify whole stores; exit 2 if anything is wrong."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "verify a store: structure, checksums, finite weights, masks, densities (exit 2 if anything is wrong)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "check",
        help=HELP,
        description="Read every dataset of each store and verify what its format records: the structure "
        "(groups, variables, shapes, dtypes, netCDF dimensions), the CRC-32 of every dataset (format 2), "
        "finite weights, masks in range and nested where the store says so, and the density table against "
        "the masks.  Prints one line per problem (the error's name first) and exits with status 2 if there "
        "is any; otherwise one line per store saying what was verified.",
    )
    p.add_argument("stores", type=Path, nargs="+", help="store files (.h5)")
    return p


def run(args: argparse.Namespace) -> int:
    from rganalysis.store.checks import check_store

    bad = 0
    for path in args.stores:
        if not path.exists():
            raise FileNotFoundError(2, "no such file", str(path))
        result = check_store(path)
        for e in result.problems:
            msg = " ".join(str(e).split())  # one line per problem
            print(f"rganalysis check: error: [{type(e).__name__}] {msg}", file=sys.stderr)
        if result.ok:
            print(result.summary() + "".join(f"; {n}" for n in result.notes))
        bad += not result.ok
    return 2 if bad else 0
