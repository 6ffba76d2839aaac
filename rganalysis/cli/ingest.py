"""``rganalysis ingest SOURCE -o OUT.h5``: read a checkpoint into the parameter store."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("ingest", help="read a checkpoint (file or folder) into an HDF5 parameter store")
    p.add_argument("source", type=Path, help="checkpoint file or folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .h5 file")
    from rganalysis.adapters import available

    p.add_argument(
        "--adapter",
        choices=available(),
        metavar="NAME",
        help="force an adapter instead of detecting one: " + ", ".join(available()),
    )
    p.add_argument("--name", help="label of the model in reports (default: the output file's stem)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument(
        "--mask",
        action="append",
        type=Path,
        default=None,
        dest="masks",
        help="mask file (BERT-tickets layout); repeat for a recorded flow, one round per mask",
    )
    p.add_argument("--prefix", help="key prefix of the sub-network to take (self-supervised checkpoints)")
    p.add_argument("--architecture", help="name the architecture instead of detecting it")
    p.add_argument("--include-embeddings", action="store_true", help="count embeddings as prunable")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow whole-model pickles (UNSAFE: the file can run code)",
    )
    p.add_argument("--compress", action="store_true", help="gzip-compress tensors in the store")
    return p


def run(args: argparse.Namespace) -> int:
    from rganalysis.adapters import ingest
    from rganalysis.errors import OutputExistsError

    if args.output.exists() and not args.force:  # fail before reading a large checkpoint
        raise OutputExistsError(f"{args.output} exists; pass --force to overwrite it")
    options = {
        k: v
        for k, v in {
            "name": args.name or args.output.stem,
            "masks": args.masks,
            "prefix": args.prefix,
            "architecture": args.architecture,
            "include_embeddings": args.include_embeddings,
            "allow_pickle": args.allow_pickle,
        }.items()
        if v not in (None, False)
    }
    pset = ingest(args.source, adapter=args.adapter, **options)
    pset.save(args.output, force=args.force, compress=args.compress, progress=not args.quiet)
    n = sum(i.numel for i in pset.info.values())
    print(
        f"{args.output}: {pset.attrs.get('architecture')} via {pset.attrs.get('adapter')}, "
        f"{len(pset.names)} tensors, {n:,} parameters, {pset.n_rounds} round(s)"
    )
    return 0
