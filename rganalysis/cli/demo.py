"""``rganalysis demo [-o DIR]``: the whole pipeline on the embedded default checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="run the pipeline on the shipped MiniLM BERT and torchvision ResNets")
    p.add_argument("-o", "--output", type=Path, default=Path("rganalysis-demo"), help="output folder")
    return p


def run(args: argparse.Namespace) -> int:
    from rganalysis.adapters import ingest
    from rganalysis.demo import minilm_path, write_resnet_checkpoint
    from rganalysis.summary import format_summary, summarize

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    sources = {
        "all-MiniLM-L6-v2": minilm_path(),
        "resnet50": write_resnet_checkpoint("resnet50", out / "checkpoints" / "resnet50.pth"),
    }
    for name, src in sources.items():
        pset = ingest(src, name=name)
        pset.save(out / f"{name}.h5", force=True, progress=not args.quiet)
        print(format_summary(summarize(pset), max_layers=12))
        print()
    return 0
