"""``rganalysis ingest SOURCE [SOURCE ...] -o OUT``: read checkpoints into parameter stores."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "read a checkpoint (file or folder) into an HDF5 parameter store"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("ingest", help=HELP)
    p.add_argument(
        "source", type=Path, nargs="+", help="checkpoint file or folder; several: a sweep, one store each"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output .h5 file; with several sources, a folder that receives SOURCE_NAME.h5 for each",
    )
    from rganalysis.adapters import names  # without importing an adapter: --help stays torch-free

    p.add_argument(
        "--adapter",
        choices=names(),
        metavar="NAME",
        help="force an adapter instead of detecting one: " + ", ".join(names()),
    )
    p.add_argument("--name", help="label of the model in reports (default: the output file's stem)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists (never a source)")
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
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes: ingest several sources at once, or read the files of a ticket series at once "
        "(default 1); the stores are those of a serial run",
    )
    return p


def _stem(source: Path) -> str:
    name = source.name
    return re.sub(r"(\.(pth|pt|bin|ckpt|tar|safetensors))+$", "", name) or name


def run(args: argparse.Namespace) -> int:
    from rganalysis.errors import DuplicateOutputError, InvalidParameterError
    from rganalysis.store.output import guard_outputs

    if args.workers < 1:
        raise InvalidParameterError(f"--workers must be >= 1, got {args.workers}")
    sources: list[Path] = args.source
    inputs = [*sources, *(args.masks or [])]
    if len(sources) == 1:
        outputs = [args.output]
        guard_outputs({"-o": args.output}, inputs, force=args.force)  # fail before reading a large checkpoint
    else:
        if args.name or args.masks:
            raise InvalidParameterError("--name and --mask take one source")
        if args.output.exists() and not args.output.is_dir():
            raise InvalidParameterError(f"-o {args.output}: with several sources, -o is a folder")
        outputs = [args.output / f"{_stem(s)}.h5" for s in sources]
        seen: dict[Path, Path] = {}
        for s, o in zip(sources, outputs, strict=True):
            if o in seen:
                raise DuplicateOutputError(
                    f"{seen[o]} and {s} would both be written to {o}; ingest them separately"
                )
            seen[o] = s
            guard_outputs({str(o): o}, inputs, force=args.force)
    options = {
        k: v
        for k, v in {
            "name": args.name or (args.output.stem if len(sources) == 1 else None),
            "masks": args.masks,
            "prefix": args.prefix,
            "architecture": args.architecture,
            "include_embeddings": args.include_embeddings,
            "allow_pickle": args.allow_pickle,
        }.items()
        if v not in (None, False)
    }
    from rganalysis.adapters import ingest, ingest_many, raise_from

    if len(sources) == 1:
        if args.workers > 1:
            options["workers"] = args.workers  # a ticket series reads its files in parallel
        pset = ingest(sources[0], adapter=args.adapter, **options)
        pset.save(
            args.output, force=args.force, compress=args.compress, progress=not args.quiet, inputs=inputs
        )
        n = sum(i.numel for i in pset.info.values())
        print(
            f"{args.output}: {pset.attrs.get('architecture')} via {pset.attrs.get('adapter')}, "
            f"{len(pset.names)} tensors, {n:,} values, {pset.n_rounds} round(s)"
        )
        return 0
    results = ingest_many(
        sources,
        outputs,
        workers=args.workers,
        adapter=args.adapter,
        force=args.force,
        compress=args.compress,
        **options,
    )
    failed = [r for r in results if "error" in r]
    for r in results:
        if "error" not in r:
            print(
                f"{r['output']}: {r['architecture']} via {r['adapter']}, {r['tensors']} tensors, "
                f"{r['parameters']:,} values, {r['rounds']} round(s)"
            )
    if failed:
        for r in failed[1:]:
            print(
                f"rganalysis ingest: error: [{r['error']}] {' '.join(r['message'].split())}",
                file=__import__("sys").stderr,
            )
        raise_from(failed[0])
    return 0
