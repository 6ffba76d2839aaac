"""``rganalysis compare A.h5 B.h5 ...``: distances between flows, their components, universality classes."""

from __future__ import annotations

import argparse
from pathlib import Path

from rganalysis.cli._options import add_options, options_from_args
from rganalysis.fit.options import FitOptions

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "distance matrix between flows (by default: which weights and units survive) and universality classes"


def _weights(text: str | None) -> dict[str, float] | None:
    from rganalysis.errors import InvalidParameterError

    if not text:
        return None
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep:
            raise InvalidParameterError(f"--weights takes name=value pairs, got {part!r}")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            raise InvalidParameterError(f"--weights: {val!r} is not a number") from None
    return out


def add_parser(sub) -> argparse.ArgumentParser:
    from rganalysis.universality.defaults import (
        ALIGNMENTS,
        DEFAULT_FIXED_POINT_RIDGE,
        DEFAULT_THRESHOLDS,
        DEFAULT_WEIGHTS_ALIGNED,
        DEFAULT_WEIGHTS_INVARIANT,
        DEFAULT_WEIGHTS_V1,
    )

    def _carried(w: dict[str, float]) -> str:
        return " + ".join(f"{v:g} x {k}" if v != 1 else k for k, v in w.items() if v)

    zero = [k for k, v in DEFAULT_WEIGHTS_ALIGNED.items() if not v and not DEFAULT_WEIGHTS_INVARIANT.get(k)]
    p = sub.add_parser(
        "compare",
        help=HELP,
        description="Measure the distance between each pair of flows and group the models into classes "
        "(connected components of the graph with an edge where the total distance <= --threshold, plus "
        "average-linkage hierarchical clustering).  The default total is what the flows' masks say, not their "
        f"fitted RG maps: between aligned flows (same starting weights up to a permutation of units) "
        f"{_carried(DEFAULT_WEIGHTS_ALIGNED)} (survival: rank correlation of how long each weight survives; "
        f"units: how unevenly the units are thinned, unit by unit); between other flows "
        f"{_carried(DEFAULT_WEIGHTS_INVARIANT)} (the permutation-invariant profile of relative unit degrees).  "
        f"The fitted-map components ({', '.join(zero)}) are computed and reported but carry weight 0 unless "
        "--weights gives them some; only when no unit component can be computed (no unit signatures) does the "
        f"total fall back to {_carried(DEFAULT_WEIGHTS_V1)}.  Components that carry no information over the "
        "given flows are dropped from the defaults (the JSON says which).  Chosen on the transfer benchmark's "
        "calibration seeds: docs/universality.md.",
    )
    p.add_argument(
        "flows", type=Path, nargs="+", help="flow stores (a single-round model store needs --rounds)"
    )
    p.add_argument(
        "--names", default=None, help="comma-separated labels, one per store (default: the stores' names)"
    )
    add_options(
        p,
        FitOptions,
        only=("couplings", "depth_points", "rank", "tol"),
    )
    p.add_argument(
        "--spectrum",
        choices=("coupling", "koopman"),
        default="coupling",
        help="spectrum entering the total: coupling-space RG exponents (default) or the Koopman/DMD "
        "eigenvalues of the parameter snapshots (both reported)",
    )
    p.add_argument("--koopman-rank", type=int, default=None, help="DMD rank (default T-1)")
    p.add_argument(
        "--fixed-point-ridge",
        type=float,
        default=DEFAULT_FIXED_POINT_RIDGE,
        help=f"ridge of the fixed point towards the flow's last round, standardised couplings (default "
        f"{DEFAULT_FIXED_POINT_RIDGE}; 0: the exact (I - J)^-1 c of rganalysis fit)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="component weights, e.g. survival=1,units=10 (default: the aligned defaults "
        + ",".join(f"{k}={v:g}" for k, v in DEFAULT_WEIGHTS_ALIGNED.items() if v)
        + " when every pair of flows starts from the same weights up to a permutation of units, else the "
        "invariant ones "
        + ",".join(f"{k}={v:g}" for k, v in DEFAULT_WEIGHTS_INVARIANT.items() if v)
        + "; components that carry no information are dropped from the defaults)",
    )
    p.add_argument(
        "--alignment",
        choices=ALIGNMENTS,
        default="auto",
        help="aligned (unit by unit), invariant (permutation-invariant summaries) or auto (aligned when every "
        "pair of flows is; default: auto)",
    )
    p.add_argument(
        "--threshold",
        default=None,
        help="class threshold on the total distance, a number or 'auto' (middle of the largest gap between merge "
        "heights); default: the mode's calibrated one ("
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_THRESHOLDS.items())
        + ")",
    )
    p.add_argument(
        "--directed",
        nargs="?",
        const="coverage",
        default=None,
        choices=("coverage", "divergence"),
        help="also print the directed transfer scores (source rows, target columns; lower = the source's "
        "ticket expected to lose less on the target; rganalysis.transfer_scores) and write them in --json "
        "under 'directed'.  coverage (the default): how much of the target's survival mass per unit the "
        "source lacks, layer amounts included; divergence: how differently that mass is spread over the "
        "units, layer by layer (blind to which ticket keeps more: docs/universality.md, section 11)",
    )
    p.add_argument(
        "--matching",
        default="auto",
        choices=("auto", "aligned", "mass-rank"),
        help="how --directed pairs the units of two flows: aligned (same starting weights up to a permutation "
        "of units; NaN for pairs that do not align), mass-rank (in the order of their survival-weighted mass), "
        "or auto (the default: per architecture, the pairs that align are scored and its other pairs are "
        "not; mass-rank where none of its pairs align; one scale per architecture).  Flows of different "
        "architectures have no unit correspondence and are never scored ('-' in the table)",
    )
    p.add_argument("--linkage", default="average", help="scipy linkage method (default: average)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="compute a data-free flow of N rounds for single-round model stores (default: refuse them)",
    )
    p.add_argument("--rate", type=float, default=0.2, help="rate of that data-free flow (default 0.2)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="fit flows on N local dask worker processes (default 1: in this process)",
    )
    p.add_argument(
        "--scheduler", default=None, help="address of a dask.distributed scheduler to fit flows on"
    )
    add_options(p, FitOptions, only=("device",))
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="write the result as JSON here")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file (never an input)")
    return p


def run(args: argparse.Namespace) -> int:
    from rganalysis.errors import InvalidParameterError
    from rganalysis.store.output import guard_outputs
    from rganalysis.universality.analysis import UniversalityAnalysis
    from rganalysis.universality.text import format_comparison

    guard_outputs({"--json": args.json_out}, args.flows, force=args.force)

    for f in args.flows:
        if not f.exists():
            raise FileNotFoundError(2, "no such file", str(f))
    names = None
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(args.flows):
            raise InvalidParameterError(f"--names gives {len(names)} names for {len(args.flows)} stores")
    if args.rounds is not None and args.rounds < 2:
        raise InvalidParameterError(
            f"--rounds must be >= 2 (a fit needs 2 one-step pairs), got {args.rounds}"
        )
    if not 0 < args.rate < 1:
        raise InvalidParameterError(f"--rate must be in (0, 1), got {args.rate}")
    if args.workers < 1:
        raise InvalidParameterError(f"--workers must be >= 1, got {args.workers}")
    threshold: float | str | None = (
        args.threshold if args.threshold in (None, "auto") else _float(args.threshold, "--threshold")
    )
    scheduler = args.scheduler or ("processes" if args.workers > 1 else "sync")
    fit_opts = options_from_args(FitOptions, args)
    ua = UniversalityAnalysis(
        list(fit_opts.couplings),
        fit_opts.depth_points,
        rank=fit_opts.rank,
        tol=fit_opts.tol,
        weights=_weights(args.weights),
        alignment=args.alignment,
        spectrum=args.spectrum,
        threshold=threshold,
        linkage=args.linkage,
        rounds=args.rounds,
        rate=args.rate,
        koopman_rank=args.koopman_rank,
        fixed_point_ridge=args.fixed_point_ridge,
        scheduler=scheduler,
        n_workers=args.workers,
        device=fit_opts.device,
    ).fit([str(f) for f in args.flows], names)
    j = ua.to_json()
    directed = None
    if args.directed:
        from rganalysis.universality.transfer import transfer_scores, transfer_scores_json

        directed = transfer_scores(
            ua.signatures_,
            names=list(ua.names_),
            score=args.directed,
            matching=args.matching.replace("-", " "),
        )
        j["directed"] = transfer_scores_json(directed)
    if args.json_out:
        from rganalysis.store.output import write_json

        write_json(j, args.json_out, force=args.force, inputs=args.flows)
    print(format_comparison(j))
    if directed is not None:
        from rganalysis.universality.transfer import format_transfer_scores

        print("\n" + format_transfer_scores(directed))
    return 0


def _float(text: str, what: str) -> float:
    from rganalysis.errors import InvalidParameterError

    try:
        return float(text)
    except ValueError:
        raise InvalidParameterError(f"{what} must be a number or 'auto', got {text!r}") from None
