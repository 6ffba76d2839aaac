"""``rganalysis fit FLOW.h5``: fit the linearised RG map of a flow and print its spectrum."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("fit", help="fit the linearised RG map of a flow: Jacobian, fixed point, exponents")
    p.add_argument("flows", type=Path, nargs="+", help="flow store(s); several flows are fitted together")
    p.add_argument("--couplings", default="density", help="comma-separated coupling sets (default: density)")
    p.add_argument("--estimator", default="trajectory", choices=("trajectory", "response"))
    p.add_argument("--depth-points", type=int, default=None,
                   help="resample per-layer couplings onto N normalised depths (cross-architecture space)")
    add_estimator_options(p)
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="write the result as JSON here")
    return p


def add_estimator_options(p: argparse.ArgumentParser) -> None:
    """The estimator options shared by ``fit`` and ``report`` (which must fit exactly as ``fit`` does)."""
    p.add_argument("--rank", type=int, default=None, help="trajectory: truncate the fit to this rank (exact DMD)")
    p.add_argument("--ridge", type=float, default=0.0, help="trajectory: ridge penalty (standardised units)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for eigenvalue intervals")
    p.add_argument("--round", type=int, default=None, help="response: the round linearised (default: last)")
    p.add_argument("--perturbation", default="threshold", help="response: threshold (default), random, rescale")
    p.add_argument("--samples", type=int, default=64, help="response: number of perturbed states")
    p.add_argument("--tol", type=float, default=0.05, help="marginal band around |lambda| = 1 (default 0.05)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def run(args: argparse.Namespace) -> int:
    import rganalysis
    from rganalysis.fit.flowfit import FlowFit, format_spectrum

    psets = [rganalysis.load(f) for f in args.flows]
    try:
        fit = FlowFit(
            [c.strip() for c in args.couplings.split(",") if c.strip()], args.estimator,
            depth_points=args.depth_points, rank=args.rank, ridge=args.ridge, n_bootstrap=args.bootstrap,
            round=args.round, perturbation=args.perturbation, n_samples=args.samples, tol=args.tol,
            device=args.device,
        ).fit(psets)
    finally:
        for p in psets:
            p.close()
    j = fit.to_json()
    if args.json_out:
        from rganalysis.store.output import write_json

        write_json(j, args.json_out)
    print(format_spectrum(j))
    return 0
