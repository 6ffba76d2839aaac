"""``rganalysis report FLOW.h5 [MORE.h5 ...] -o report.html [--pdf report.pdf]``: a self-contained report."""

from __future__ import annotations

import argparse
from pathlib import Path

from rganalysis.cli._options import add_options, options_from_args
from rganalysis.report.options import ReportOptions

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "one self-contained HTML report (and optionally a PDF) of the fit of each flow and their comparison"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help=HELP,
        description="Fit each flow exactly as `rganalysis fit` does with the same options (and, with several "
        "flows, compare them as `rganalysis compare` does), then write one HTML file with every figure embedded "
        "and the JSON behind every table.",
    )
    p.add_argument("flows", type=Path, nargs="+", help="flow store(s) written by `rganalysis flow`")
    p.add_argument("-o", "--output", type=Path, required=True, help="the HTML report")
    p.add_argument(
        "--pdf", type=Path, default=None, help="also write a PDF: one page per figure, plus tables"
    )
    add_options(p, ReportOptions)
    kp = p.add_mutually_exclusive_group()
    kp.add_argument(
        "--koopman",
        action="store_true",
        help="add each flow's Koopman/DMD spectrum in parameter space (as `rganalysis koopman` computes "
        "it, with --tol and --device) beside the coupling-space spectrum",
    )
    kp.add_argument(
        "--koopman-json",
        type=Path,
        action="append",
        default=None,
        metavar="JSON",
        help="a Koopman spectrum already computed (`rganalysis koopman --json`), once per flow in the "
        "order of the flows, instead of --koopman",
    )
    p.add_argument(
        "--threshold",
        default=None,
        help="compare: class threshold on the total distance, a number or 'auto' (default: compare's)",
    )
    p.add_argument(
        "--no-compare", action="store_true", help="with several flows, skip the comparison section"
    )
    p.add_argument(
        "--magnitude-samples",
        type=int,
        default=200_000,
        help="weights per round in the magnitude histograms (larger models are subsampled)",
    )
    p.add_argument("--dpi", type=int, default=100, help="resolution of the embedded figures")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file (never an input)")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from rganalysis.store.output import guard_outputs

    inputs = [*args.flows, *(args.koopman_json or [])]
    guard_outputs({"-o": args.output, "--pdf": args.pdf}, inputs, force=args.force)

    import matplotlib

    matplotlib.use("Agg")
    from rganalysis.errors import InvalidParameterError
    from rganalysis.report.build import write_report

    koopman = None
    if args.koopman_json:
        if len(args.koopman_json) != len(args.flows):
            raise InvalidParameterError(
                f"--koopman-json given {len(args.koopman_json)} time(s) for {len(args.flows)} flow(s): once per flow"
            )
        koopman = [json.loads(Path(k).read_text()) for k in args.koopman_json]
    threshold = args.threshold
    if threshold is not None and threshold != "auto":
        try:
            threshold = float(threshold)
        except ValueError:
            raise InvalidParameterError(
                f"--threshold must be a number or 'auto', got {threshold!r}"
            ) from None
    opts = options_from_args(
        ReportOptions,
        args,
        koopman=args.koopman,
        threshold=threshold,
        magnitude_samples=args.magnitude_samples,
        dpi=args.dpi,
    )
    rep = write_report(
        args.flows,
        args.output,
        args.pdf,
        opts,
        koopman=koopman,
        compare=not args.no_compare,
        progress=not args.quiet,
        force=args.force,
        inputs=inputs,
    )
    figs = sum(len(m.figures) for m in rep.models) + len(rep.figures)
    print(
        f"{args.output}: report of {len(rep.models)} model(s), {figs} figures"
        + (f"; {args.pdf}: {rep.pdf_pages()} pages" if args.pdf else "")
        + (f" (no comparison: {rep.compare_note})" if rep.compare_note else "")
    )
    return 0
