"""``rganalysis info STORE.h5 [--json]``: what a store holds (read without torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "architecture, parameter counts, layers and per-round densities of a store"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help=HELP)
    p.add_argument("store", type=Path, help="a store written by `rganalysis ingest` or `rganalysis flow`")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--max-layers", type=int, default=None, help="list at most this many layers in the text")
    return p


def run(args: argparse.Namespace) -> int:
    from rganalysis.store.reader import StoreReader
    from rganalysis.store.summary import format_summary, summarize

    with StoreReader(args.store) as store:  # structure checked; densities checked against the masks
        s = summarize(store)
    print(json.dumps(s, indent=2) if args.json else format_summary(s, args.max_layers))
    return 0
