"""The ``/response`` group of a flow store: a :class:`~rganalysis.fit.response.ResponseJacobian` written
into the flow it was measured on (atomically: a partial group moved into place at the end), read back by
``rganalysis fit``, ``compare`` and ``report``.

Layout (netCDF-4, readable with ``xarray.open_dataset(path, group="response")``): the JSON of
:meth:`ResponseJacobian.to_json` in the attribute ``summary``, and the arrays ``jacobian``
(direction, direction_in), ``directions`` (direction, coupling), ``coupling`` (names), ``coupling_scale``
(coupling), ``eigenvalue_re``, ``eigenvalue_im``, ``exponent`` (eigenvalue), ``eigenvalue_ci``
(eigenvalue, bound), ``inputs`` and ``outputs`` (state, seed, coupling; standardised dK_n and dK_{n+1}),
``noise_eigenvalues`` (draw, eigenvalue).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rganalysis.errors import InvalidParameterError, RGAnalysisError
from rganalysis.fit.intervals import interval_text
from rganalysis.store.output import open_for_update

__all__ = ["RESPONSE_GROUP", "format_response", "read_response", "write_response"]

RESPONSE_GROUP = "response"
_PARTIAL = "partial_response"


def write_response(path: str | os.PathLike, est: Any) -> str:
    """Write a fitted :class:`~rganalysis.fit.response.ResponseJacobian` into the flow store ``path`` as
    the group ``/response`` (an earlier one is replaced; a failure leaves it untouched).  Returns the
    group's path.  The store must not be open elsewhere in this process."""
    import h5netcdf
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if not hasattr(est, "jacobian_") or not hasattr(est, "to_json"):
        raise InvalidParameterError("write_response needs a fitted ResponseJacobian")
    summary = json.dumps(est.to_json(), allow_nan=False)
    with open_for_update(path) as f:
        if _PARTIAL in f:
            del f[_PARTIAL]
    ok = False
    try:
        with h5netcdf.File(path, "r+") as nf:
            g = nf.create_group(_PARTIAL)
            D, C = est.directions_.shape
            N, S, _ = est.inputs_.shape
            dims = {
                "direction": D,
                "direction_in": D,
                "coupling": C,
                "eigenvalue": D,
                "bound": 2,
                "state": N,
                "seed": S,
                "draw": est.noise_eigenvalues_.shape[0],
            }
            for k, v in dims.items():
                g.dimensions[k] = v

            def put(name: str, d: tuple[str, ...], a: np.ndarray) -> None:
                g.create_variable(name, d, dtype="f8")[...] = np.asarray(a, dtype=np.float64)

            g.create_variable("coupling", ("coupling",), dtype=h5py.string_dtype())[...] = np.array(
                est.couplings_, dtype=object
            )
            put("jacobian", ("direction", "direction_in"), est.jacobian_)
            put("directions", ("direction", "coupling"), est.directions_)
            put("coupling_scale", ("coupling",), est.coupling_scale_)
            put("eigenvalue_re", ("eigenvalue",), est.eigenvalues_.real)
            put("eigenvalue_im", ("eigenvalue",), est.eigenvalues_.imag)
            put("exponent", ("eigenvalue",), est.exponents_)
            put("eigenvalue_ci", ("eigenvalue", "bound"), est.eigenvalue_ci_)
            put("inputs", ("state", "seed", "coupling"), est.inputs_)
            put("outputs", ("state", "seed", "coupling"), est.outputs_)
            put("noise_eigenvalues", ("draw", "eigenvalue"), est.noise_eigenvalues_)
            g.attrs["summary"] = summary
            g.attrs["round"] = int(est.round_)
        ok = True
    finally:
        if not ok:
            with open_for_update(path) as f:
                if _PARTIAL in f:
                    del f[_PARTIAL]
    with open_for_update(path) as f:
        if RESPONSE_GROUP in f:
            del f[RESPONSE_GROUP]
        f.move(_PARTIAL, RESPONSE_GROUP)
    est.written_ = f"{path}:/{RESPONSE_GROUP}"
    return RESPONSE_GROUP


def read_response(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON of the response Jacobian stored in the flow store ``path`` (see
    :meth:`~rganalysis.fit.response.ResponseJacobian.to_json`), or None when it has none."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with h5py.File(path, "r") as f:
            if RESPONSE_GROUP not in f:
                return None
            s = f[RESPONSE_GROUP].attrs.get("summary")
    except OSError as e:
        raise RGAnalysisError(f"{path}: cannot read its response group: {e}") from None
    if isinstance(s, bytes):
        s = s.decode()
    return None if s is None else json.loads(s)


def format_response(j: dict[str, Any], max_rows: int = 12) -> str:
    """Text table of a stored response spectrum (``rganalysis fit`` prints it after the trajectory fit)."""

    def f(x: Any, spec: str) -> str:
        missing = x is None or (isinstance(x, float) and not math.isfinite(x))
        return format("n/a", f">{spec.split('.')[0]}") if missing else format(x, spec)

    lines = [
        f"  response Jacobian at round {j['round']} (the real IMP step: rewind, retrain, prune at rate "
        f"{j['rate']:.4g}; b = {f(j['b'], '.4f')}): {j['n_directions']} directions of "
        f"{len(j['couplings'])} {','.join(j['coupling_sets'])} couplings, {j['n_retrains']} retrains "
        f"({j['retrain_seconds']:.0f} s), noise floor |lambda| <= {f(j['noise_floor'], '.3g')}",
        f"  {'|lambda|':>9} {'re':>9} {'im':>9} {'y':>8}  {'class':<20} {'95% CI of |lambda|':>20}",
    ]
    eig = sorted(j["eigenvalues"], key=lambda e: -(e["abs"] or 0))
    for e in eig[:max_rows]:
        ci = interval_text(e["ci_low"], e["ci_high"])  # "no interval" where there is none
        lines.append(
            f"  {f(e['abs'], '9.4f')} {f(e['re'], '9.4f')} {f(e['im'], '9.4f')} {f(e['exponent'], '8.3f')}  "
            f"{e['class'] + (' (noise)' if e.get('in_noise') else ''):<20} {ci:>20}"
        )
    if len(eig) > max_rows:
        lines.append(f"  ... {len(eig) - max_rows} smaller eigenvalues (all in --json)")
    if j.get("frozen_couplings"):
        lines.append(f"  left out (frozen): {', '.join(list(j['frozen_couplings'])[:6])}")
    return "\n".join(lines)
