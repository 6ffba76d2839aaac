"""``rganalysis flow IN.h5 -o FLOW.h5 [--rounds N] [--rate P]``: compute and record an IMP flow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "run IMP (data-free or rewinding) on a stored model and record the flow"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("flow", help=HELP)
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
    p.add_argument(
        "--rescaling",
        default="none",
        help="none (data-free flow, default) or rewind (to the store's rewind point, else the start weights; the "
        "command line does not retrain, so rewinding to the start weights gives the data-free flow's masks: "
        "retrain in Python with compute_flow(..., rescaling='rewind', train=...))",
    )
    p.add_argument(
        "--start-round", type=int, default=None, help="round of the input to start from (default: last)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists (never the input)")
    p.add_argument("--compress", action="store_true", help="gzip-compress the output")
    return p


def _budget(pset, args):
    """Memory, disk and empty rounds of the flow asked for (:mod:`rganalysis.rg.budget`)."""
    import numpy as np

    from rganalysis.rg.budget import flow_budget

    start = pset.n_rounds - 1 if args.start_round is None else args.start_round
    names = pset.pruned_names()
    layers, table = pset.density_table()
    row = table[min(max(start, 0), pset.n_rounds - 1)]
    sizes = {n: (pset.info[n].numel, pset.info[n].dtype.itemsize) for n in names}
    survivors = np.array([round(row[layers.index(n)] * pset.info[n].numel) for n in names])
    model = sum(i.numel * i.dtype.itemsize for i in pset.info.values())
    rewind = sum(
        pset.info[n].numel * pset.info[n].dtype.itemsize for n in pset.rewind_names() if n in pset.info
    )
    return flow_budget(
        sizes,
        survivors,
        args.rounds,
        args.rate,
        scope=args.scope,
        rescaling=args.rescaling,
        model_bytes=model,
        rewind_bytes=rewind,
        output_dir=args.output.resolve().parent,
    )


def run(args: argparse.Namespace) -> int:
    import rganalysis
    from rganalysis.errors import InvalidParameterError
    from rganalysis.rg.flow import compute_flow
    from rganalysis.store.diagnostics import collapsed_layers
    from rganalysis.store.output import guard_outputs

    guard_outputs({"-o": args.output}, [args.store], force=args.force)
    if args.rounds < 1:
        raise InvalidParameterError(f"--rounds must be >= 1, got {args.rounds}")
    if not 0 < args.rate < 1:
        raise InvalidParameterError(f"--rate must be in (0, 1), got {args.rate}")
    with rganalysis.load(args.store) as pset:
        budget = _budget(pset, args)
        budget.check()
        if budget.empty_from is not None:
            which = (
                f"round {args.rounds}"
                if budget.empty_from == args.rounds
                else f"rounds {budget.empty_from}-{args.rounds}"
            )
            print(
                f"rganalysis flow: warning: {which} will prune nothing "
                f"(round({args.rate:g} x survivors) = 0 with {budget.survivors[budget.empty_from]:,} survivors)",
                file=sys.stderr,
            )
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
        flow.save(
            args.output,
            force=args.force,
            compress=args.compress,
            progress=not args.quiet,
            inputs=[args.store],
        )
        _, table = flow.density_table()
        sizes = [flow.info[n].numel for n in flow.pruned_names()]
        g = (table @ sizes) / sum(sizes)
        collapsed = collapsed_layers(flow)
    empty = flow.flow_attrs.get("empty_from")
    how = "data-free" if args.rescaling == "none" else f"rescaling {args.rescaling}, no retraining"
    print(
        f"{args.output}: {args.rounds} rounds of {args.scope} IMP at rate {args.rate} "
        f"({how}) on "
        f"{len(flow.pruned_names())} layers; global density {g[0]:.4f} -> {g[-1]:.4f}"
        + (f"; rounds {empty}-{args.rounds} pruned nothing" if empty is not None else "")
    )
    if collapsed:
        print(
            f"layer collapse: {len(collapsed)} layer(s) emptied: "
            + ", ".join(f"{k} (from round {r})" for k, r in list(collapsed.items())[:6])
            + (
                f" and {len(collapsed) - 6} more (rganalysis info shows every layer's densities)"
                if len(collapsed) > 6
                else ""
            )
        )
    return 0
