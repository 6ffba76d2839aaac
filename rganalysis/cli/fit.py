"""``rganalysis fit FLOW.h5``: fit the linearised RG map of a flow and print its spectrum."""

from __future__ import annotations

import argparse
from pathlib import Path

from rganalysis.cli._options import add_options, options_from_args
from rganalysis.fit.options import FitOptions

#: The one-line summary ``rganalysis --help`` shows (read from this file without importing it).
HELP = "fit the linearised RG map of a flow: Jacobian, fixed point, exponents"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("fit", help=HELP)
    p.add_argument("flows", type=Path, nargs="+", help="flow store(s); several flows are fitted together")
    add_options(p, FitOptions)
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="write the result as JSON here")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file (never an input)")
    return p


def run(args: argparse.Namespace) -> int:
    import rganalysis
    from rganalysis.fit.flowfit import format_spectrum
    from rganalysis.fit.response_store import format_response, read_response
    from rganalysis.store.output import guard_outputs, write_json

    guard_outputs({"--json": args.json_out}, args.flows, force=args.force)
    opts = options_from_args(FitOptions, args)
    psets = [rganalysis.load(f) for f in args.flows]
    try:
        fit = opts.flowfit().fit(psets)
    finally:
        for p in psets:
            p.close()
    j = fit.to_json()
    # a response Jacobian stored in a flow (rganalysis.response_jacobian) is embedded and printed as it is
    stored = {name: read_response(f) for name, f in zip(j["models"], args.flows, strict=True)}
    stored = {k: v for k, v in stored.items() if v is not None}
    if stored:
        j["response"] = stored
    if args.json_out:
        write_json(j, args.json_out, force=args.force, inputs=args.flows)
    print(format_spectrum(j))
    for name, r in stored.items():
        print(f"{name}: stored response spectrum (linearises the real IMP step, not the recorded trajectory)")
        print(format_response(r))
    return 0
