"""``rganalysis flow IN.h5 -o FLOW.h5 [--rounds N] [--rate P]``: compute and record an IMP flow."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("flow", help="run IMP (data-free or rewinding) on a stored model and record the flow")
    p.add_argument(
        "store", type=Path, help="input store (a model, or a flow to continue from its last round)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output flow store (.h5)")
    p.add_argument("--rounds", type=int, default=8, help="number of IMP rounds, >= 1 (default: 8)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.2,
        help="fraction of surviving weights pruned per round, in (0, 1) (default: 0.2)",
    )
    p.add_argument("--scope", default="global", help="pruning scope: global (default) or layer")
    p.add_argument("--rescaling", default="none", help="none (data-free flow, default) or rewind")
    p.add_argument(
        "--start-round", type=int, default=None, help="round of the input to start from (default: last)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument("--compress", action="store_true", help="gzip-compress the output")
    return p


def run(args: argparse.Namespace) -> int:
    import rganalysis
    from rganalysis.errors import InvalidParameterError, OutputExistsError
    from rganalysis.rg.flow import compute_flow
    from rganalysis.store.checks import collapsed_layers

    if args.output.exists() and not args.force:
        raise OutputExistsError(f"{args.output} exists; pass --force to overwrite it")
    if args.rounds < 1:
        raise InvalidParameterError(f"--rounds must be >= 1, got {args.rounds}")
    if not 0 < args.rate < 1:
        raise InvalidParameterError(f"--rate must be in (0, 1), got {args.rate}")
    with rganalysis.load(args.store) as pset:
        flow = compute_flow(
            pset,
            args.rounds,
            args.rate,
            scope=args.scope,
            rescaling=args.rescaling,
            start_round=args.start_round,
            device=args.device,
            progress=not args.quiet,
        )
        flow.save(args.output, force=args.force, compress=args.compress, progress=not args.quiet)
        g = flow.global_density().values
        collapsed = collapsed_layers(flow)
    print(
        f"{args.output}: {args.rounds} rounds of {args.scope} IMP at rate {args.rate} on "
        f"{len(flow.pruned_names())} layers; global density {g[0]:.4f} -> {g[-1]:.4f}"
    )
    if collapsed:
        print(
            f"layer collapse: {len(collapsed)} layer(s) emptied: "
            + ", ".join(f"{k} (from round {r})" for k, r in collapsed.items())
        )
    return 0
