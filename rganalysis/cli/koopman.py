"""``rganalysis koopman FLOW.h5``: Koopman (exact DMD) spectrum of a flow in parameter space."""

from __future__ import annotations

import argparse
from pathlib import Path

from rganalysis.fit.options import MARGINAL_Y

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "Koopman / exact DMD spectrum of a flow in parameter space, streamed from the store"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "koopman",
        help=HELP,
        description="Exact DMD of the snapshots x_n = theta_n * m_n of a stored flow (computed or recorded), "
        "read tensor by tensor: singular values, eigenvalues with bagged 95% intervals, exponents "
        "y = ln|lambda| / ln b and classes (relevant / irrelevant / marginal) only where the interval of y "
        "supports one (no intervals: no class); optionally the modes, "
        "written into the flow file under /koopman/mode_NNN.",
    )
    p.add_argument("flow", type=Path, help="flow store (.h5) with at least 2 rounds")
    rank = p.add_mutually_exclusive_group()
    rank.add_argument(
        "--rank",
        type=int,
        default=None,
        help="DMD truncation rank (<= T-1 and the numerical rank; default: T-1, lowered to the numerical rank)",
    )
    rank.add_argument(
        "--energy",
        type=float,
        default=None,
        help="smallest rank whose singular values carry this fraction of the energy, e.g. 0.999",
    )
    p.add_argument(
        "--subset",
        default="prunable",
        help="tensors in the snapshot: prunable (default: the pruned tensors), all (every "
        "floating-point tensor), or comma-separated name globs, e.g. 'layer4.*'",
    )
    p.add_argument(
        "--scale",
        default="none",
        choices=("none", "layer-std"),
        help="per-layer scaling fixed across rounds: none (default) or layer-std (round-0 std)",
    )
    p.add_argument(
        "--bags", type=int, default=100, help="bags over snapshot pairs for eigenvalue CIs (0: none)"
    )
    p.add_argument(
        "--tol",
        type=float,
        default=MARGINAL_Y,
        help=f"marginal band in the exponent: |y| <= tol is marginal, y = ln|lambda| / ln b (default {MARGINAL_Y})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the bagging")
    p.add_argument("--modes", action="store_true", help="write the modes into FLOW under /koopman/mode_NNN")
    p.add_argument(
        "--modes-limit",
        type=int,
        default=None,
        metavar="K",
        help="write only the K leading modes (implies --modes)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="write the result as JSON here")
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing output file (never an input), or earlier --modes",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from rganalysis.errors import InvalidParameterError
    from rganalysis.koopman.dmd import KoopmanDMD
    from rganalysis.koopman.modes import write_modes
    from rganalysis.koopman.summary import format_koopman, koopman_json
    from rganalysis.store.output import guard_outputs

    guard_outputs({"--json": args.json_out}, [args.flow], force=args.force)  # (the modes go into FLOW itself)

    if args.modes_limit is not None and args.modes_limit < 1:
        raise InvalidParameterError(f"--modes-limit must be >= 1, got {args.modes_limit}")
    if args.bags < 0:
        raise InvalidParameterError(f"--bags must be >= 0, got {args.bags}")
    if not args.flow.exists():
        raise FileNotFoundError(2, "no such file", str(args.flow))
    if (args.modes or args.modes_limit is not None) and not args.force:
        from rganalysis.errors import OutputExistsError
        from rganalysis.koopman.modes import mode_groups

        earlier = mode_groups(args.flow)
        if earlier:
            raise OutputExistsError(
                f"{args.flow} already holds {len(earlier)} Koopman modes (/koopman/mode_*) of an earlier fit; "
                "--force replaces them"
            )
    dmd = KoopmanDMD(
        rank=args.rank,
        energy=args.energy,
        subset=args.subset,
        scale=args.scale,
        n_bags=args.bags,
        device=args.device,
        random_state=args.seed,
        tol=args.tol,
        progress=not args.quiet,
    ).fit(args.flow)
    if args.modes or args.modes_limit is not None:
        write_modes(args.flow, dmd, limit=args.modes_limit, progress=not args.quiet)
    j = koopman_json(dmd)
    if args.json_out:
        from rganalysis.store.output import write_json

        write_json(j, args.json_out, force=args.force, inputs=[args.flow])
    print(format_koopman(j))
    return 0
