"""Fixed points of the RG flow: scale factors ``b``, eigenvalue classes, exponents, distances to a
fixed point and the JSON of a spectrum.  Conventions: docs/concepts.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.store.parameter_set import ParameterSet

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np
import xarray as xr

from rganalysis.errors import InvalidParameterError, TooFewRoundsError
from rganalysis.fit.options import MARGINAL_Y

__all__ = [
    "classify_eigenvalues",
    "distance_to_fixed_point",
    "effective_scale_factor",
    "EXPONENT_FLOOR",
    "exponent_class",
    "exponent_points",
    "exponent_interval",
    "exponents",
    "fixed_point_type",
    "fixed_point_wording",
    "interval_class",
    "flow_scale",
    "MARGINAL_Y",
    "near_fixed_point",
    "NearFixedPoint",
    "per_round_scale_factors",
    "scale_factor",
    "spectrum_json",
]


def scale_factor(rate: float) -> float:
    """``b = 1 / (1 - p)`` for a pruning fraction ``p`` in (0, 1)."""
    rate = float(rate)
    if not (math.isfinite(rate) and 0.0 < rate < 1.0):
        raise InvalidParameterError(f"rate must be in (0, 1), got {rate}")
    return 1.0 / (1.0 - rate)


def per_round_scale_factors(global_densities: Sequence[float] | np.ndarray | xr.DataArray) -> np.ndarray:
    """``b_n = rho_n / rho_{n+1}`` from the global densities ``rho_0, rho_1, ...`` (length R -> R - 1)."""
    rho = np.asarray(global_densities, dtype=np.float64).reshape(-1)
    if rho.size < 2:
        raise TooFewRoundsError(f"per-round scale factors need at least 2 rounds, got {rho.size}")
    if not np.isfinite(rho).all() or (rho <= 0).any():
        raise InvalidParameterError("global densities must be finite and > 0")
    return rho[:-1] / rho[1:]


def effective_scale_factor(b: float | Sequence[float] | np.ndarray) -> float:
    """One scale factor: ``b`` itself, or the geometric mean of per-round factors ``b_n``.

    Raises :class:`InvalidParameterError` unless the result is > 1 (a flow that does not prune has no
    scale and no exponents).
    """
    arr = np.asarray(b, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.isfinite(arr).all() or (arr <= 0).any():
        raise InvalidParameterError("scale factors must be finite and > 0")
    beff = float(np.exp(np.mean(np.log(arr))))
    if not beff > 1.0:
        raise InvalidParameterError(f"the (geometric-mean) scale factor must be > 1, got {beff:.6g}")
    return beff


def exponents(
    eigenvalues: Sequence[complex] | np.ndarray, b: float | Sequence[float] | np.ndarray
) -> np.ndarray:
    """``y = ln|lambda| / ln b`` (``b`` scalar, or per-round ``b_n`` -> geometric mean); ``-inf`` at 0."""
    lb = math.log(effective_scale_factor(b))
    mod = np.abs(np.asarray(eigenvalues, dtype=np.complex128))
    with np.errstate(divide="ignore"):
        return np.log(mod) / lb


#: The exponent of a dead mode: exponents below it are clipped to it, and a spectrum with fewer modes is
#: padded with it when two sets of exponents are compared (:func:`exponent_points`).  A mode at y = -10
#: shrinks by ``b^-10`` per round (0.11 at p = 0.2), far below anything a flow of a few rounds resolves.
EXPONENT_FLOOR = -10.0


def exponent_points(
    eigenvalues: Sequence[complex] | np.ndarray, b: float | Sequence[float] | np.ndarray
) -> np.ndarray:
    """(k,) complex exponents ``z = log(lambda) / ln b``: real part ``y = ln|lambda| / ln b`` (clipped below
    at :data:`EXPONENT_FLOOR`), imaginary part ``arg(lambda) / ln b``.  For a map ``lambda = b^g`` this is
    ``g`` whatever the rate, so spectra of flows at different pruning rates compare in these coordinates."""
    lam = np.asarray(eigenvalues, dtype=np.complex128).reshape(-1)
    lb = math.log(effective_scale_factor(b))
    with np.errstate(divide="ignore"):
        y = np.maximum(np.log(np.abs(lam)) / lb, EXPONENT_FLOOR)
    return y + 1j * np.angle(lam) / lb


def exponent_class(y: float, band: float = MARGINAL_Y) -> str:
    """``relevant`` (``y > band``), ``irrelevant`` (``y < -band``) or ``marginal``; ``undetermined`` for NaN."""
    y = float(y)
    if math.isnan(y):
        return "undetermined"
    if y > band:
        return "relevant"
    if y < -band:
        return "irrelevant"
    return "marginal"


def interval_class(low: float, high: float, band: float = MARGINAL_Y) -> str:
    """The class an interval ``[low, high]`` of the exponent ``y`` supports: ``relevant`` (all of it above
    ``band``), ``irrelevant`` (all below ``-band``), ``marginal`` (all inside the band), else
    ``undetermined`` (it straddles a boundary, or is unknown: NaN)."""
    low, high = float(low), float(high)
    if math.isnan(low) or math.isnan(high):
        return "undetermined"
    if low > band:
        return "relevant"
    if high < -band:
        return "irrelevant"
    if low >= -band and high <= band:
        return "marginal"
    return "undetermined"


def exponent_interval(ci: np.ndarray, b: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """(k, 2) interval of ``|lambda|`` -> (k, 2) interval of ``y = ln|lambda| / ln b`` (monotone, b > 1;
    ``-inf`` for a low end at 0, NaN stays NaN)."""
    lb = math.log(effective_scale_factor(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(ci, dtype=np.float64)) / lb


def _check_band(band: float) -> float:
    band = float(band)
    if not (math.isfinite(band) and band >= 0.0):
        raise InvalidParameterError(f"the marginal band (in y) must be a finite number >= 0, got {band}")
    return band


def classify_eigenvalues(
    eigenvalues: Sequence[complex] | np.ndarray,
    b: float | Sequence[float] | np.ndarray,
    band: float = MARGINAL_Y,
    ci: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One record per eigenvalue, in the given order.

    Parameters
    ----------
    eigenvalues : (k,) complex
    b : scale factor, or per-round factors (geometric mean used)
    band : marginal band half-width in the exponent y (default :data:`MARGINAL_Y`)
    ci : optional (k, 2) interval of ``|lambda|`` (bootstrap / bags), copied into ``ci_low`` / ``ci_high``

    Returns
    -------
    list of dict with keys ``re``, ``im``, ``abs``, ``exponent`` (float, ``-inf`` for 0),
    ``class_estimate`` (the class of the point exponent) and ``class``: with ``ci``, the class its interval
    of y supports (:func:`interval_class`; ``undetermined`` when it straddles a boundary or is NaN),
    without, ``undetermined`` (a verdict needs an interval); and, when ``ci`` is given, ``ci_low``,
    ``ci_high`` (of ``|lambda|``) and ``exponent_ci_low``, ``exponent_ci_high``.
    """
    band = _check_band(band)
    lam = np.asarray(eigenvalues, dtype=np.complex128).reshape(-1)
    y = exponents(lam, b)
    if ci is not None:
        ci = np.asarray(ci, dtype=np.float64)
        if ci.shape != (lam.size, 2):
            raise InvalidParameterError(f"ci must have shape ({lam.size}, 2), got {ci.shape}")
        yci = exponent_interval(ci, b)
    out = []
    for i, z in enumerate(lam):
        rec: dict[str, Any] = {
            "re": float(z.real),
            "im": float(z.imag),
            "abs": float(abs(z)),
            "exponent": float(y[i]),
            "class": "undetermined",
            "class_estimate": exponent_class(float(y[i]), band),
        }
        if ci is not None:
            rec["ci_low"] = float(ci[i, 0])
            rec["ci_high"] = float(ci[i, 1])
            rec["exponent_ci_low"] = float(yci[i, 0])
            rec["exponent_ci_high"] = float(yci[i, 1])
            rec["class"] = interval_class(yci[i, 0], yci[i, 1], band)
        out.append(rec)
    return out


def _type_of(classes: set[str]) -> str:
    if "relevant" in classes and "irrelevant" in classes:
        return "saddle"
    if classes == {"irrelevant"}:
        return "stable"
    if classes == {"relevant"}:
        return "unstable"
    return "marginal"


def fixed_point_type(
    eigenvalues: Sequence[complex] | np.ndarray,
    *,
    b: float | Sequence[float] | np.ndarray | None = None,
    band: float = MARGINAL_Y,
    classes: Sequence[str] | None = None,
) -> str:
    """``"stable"`` (all irrelevant), ``"unstable"`` (all relevant), ``"saddle"`` (relevant and
    irrelevant directions, marginal ones allowed), else ``"marginal"`` (some marginal direction and
    only one other kind).

    ``classes`` (one per eigenvalue, e.g. the interval verdicts of :func:`classify_eigenvalues`) are the
    directions' classes; an ``undetermined`` one may be any of the three, and the type is
    ``undetermined`` unless it is the same whichever they are.  Without ``classes`` the point exponents
    ``ln|lambda| / ln b`` decide (``b`` is then required): the *estimate* of the type, not a verdict.
    """
    band = _check_band(band)
    lam = np.asarray(eigenvalues, dtype=np.complex128).reshape(-1)
    if lam.size == 0:
        raise InvalidParameterError("no eigenvalues to classify")
    if classes is None:
        if b is None:
            raise InvalidParameterError("fixed_point_type needs the classes or the scale factor b")
        return _type_of({exponent_class(float(y), band) for y in exponents(lam, b)})
    known = {c for c in classes if c != "undetermined"}
    n_open = sum(c == "undetermined" for c in classes)
    if n_open == 0:
        return _type_of(known)
    kinds = ("relevant", "irrelevant", "marginal")
    types = {
        _type_of(known | set(extra)) for k in range(1, min(n_open, 3) + 1) for extra in combinations(kinds, k)
    }
    return types.pop() if len(types) == 1 else "undetermined"


def _flow_array(flow: xr.DataArray | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(flow, xr.DataArray):
        if "coupling" not in flow.dims:
            raise InvalidParameterError("flow needs a 'coupling' dimension")
        f = flow.transpose(..., "coupling")
        arr = np.asarray(f.values, dtype=np.float64)
        rounds = np.asarray(f["round"].values) if "round" in f.coords else np.arange(arr.shape[0])
    else:
        arr = np.asarray(flow, dtype=np.float64)
        rounds = np.arange(arr.shape[0]) if arr.ndim == 2 else np.arange(1)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidParameterError(f"flow must be (round, coupling), got shape {arr.shape}")
    return arr, rounds


def distance_to_fixed_point(
    flow_couplings: xr.DataArray | np.ndarray,
    fixed_point: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray | None = None,
) -> xr.DataArray:
    """Euclidean distance ``||K_n - K*||`` per round.

    Parameters
    ----------
    flow_couplings : (round, coupling) couplings of a flow
    fixed_point : (coupling,) ``K*`` (e.g. an estimator's ``fixed_point_``); NaN is refused
    scale : optional (coupling,) per-coupling units, the distance is ``||(K_n - K*) / scale||``

    Returns
    -------
    DataArray (round,), in coupling units (dimensionless with ``scale``).
    """
    arr, rounds = _flow_array(flow_couplings)
    fp = np.asarray(fixed_point, dtype=np.float64).reshape(-1)
    if fp.size != arr.shape[1]:
        raise InvalidParameterError(f"fixed point has {fp.size} couplings, the flow {arr.shape[1]}")
    if not np.isfinite(fp).all():
        raise InvalidParameterError("the fixed point is not finite (the fit found none: I - J singular)")
    d = arr - fp
    if scale is not None:
        s = np.asarray(scale, dtype=np.float64).reshape(-1)
        if s.size != fp.size or (s <= 0).any():
            raise InvalidParameterError("scale must be positive, one entry per coupling")
        d = d / s
    return xr.DataArray(
        np.linalg.norm(d, axis=1), dims=("round",), coords={"round": rounds}, name="distance_to_fixed_point"
    )


@dataclass
class NearFixedPoint:
    """Verdict of :func:`near_fixed_point` (``bool(v)`` is ``v.near``)."""

    near: bool
    distance: float  # at the last round, in the measure below
    tol: float
    measure: str  # "relative" (to ||K*||) or "absolute" (coupling units)
    round: int  # the round judged (last of the flow)
    fixed_point_norm: float

    def __bool__(self) -> bool:
        return bool(self.near)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a plain dict (the JSON of ``near_fixed_point``)."""
        return asdict(self)


def near_fixed_point(
    flow: xr.DataArray | np.ndarray,
    fixed_point: Sequence[float] | np.ndarray,
    tol: float = 0.05,
    relative: bool = True,
) -> NearFixedPoint:
    """Is the last round of ``flow`` within ``tol`` of ``fixed_point``?

    With ``relative`` (default) the distance is ``||K_last - K*|| / ||K*||``; when ``K*`` is the origin
    (``||K*|| = 0``, e.g. the fully pruned network of the density flow) the absolute distance is used
    and the verdict says so in ``measure``.  The tolerance is recorded in the verdict.
    """
    if not (math.isfinite(tol) and tol >= 0):
        raise InvalidParameterError(f"tol must be >= 0, got {tol}")
    dist = distance_to_fixed_point(flow, fixed_point)
    fp_norm = float(np.linalg.norm(np.asarray(fixed_point, dtype=np.float64)))
    d_last = float(dist.values[-1])
    measure = "absolute"
    if relative and fp_norm > 0:
        d_last /= fp_norm
        measure = "relative"
    return NearFixedPoint(
        bool(d_last <= tol), d_last, float(tol), measure, int(dist["round"].values[-1]), fp_norm
    )


def fixed_point_wording(j: Mapping[str, Any], digits: int = 4) -> tuple[str, str]:
    """``(what, where)``: the fixed-point verdict of a fit's JSON (``rganalysis fit --json``) in words, one
    wording for the console, the demo and the report.

    ``what`` is the type (``stable`` ...; ``undetermined (estimate: ...)`` when the intervals do not fix
    it), or ``extrapolated, not reached`` when some coupling of the fixed point lies outside its domain:
    then no type is given, since the linearisation is about a point no IMP state can be.  ``where`` says
    how far the last round is from it (``near``/``not near`` with the distance, measure and tolerance;
    for an extrapolation the distance and the couplings outside their domain, no nearness verdict).  A fit
    with no more one-step pairs than parameters per row (``underdetermined``) is ``undetermined`` with
    neither; a type of a fit whose rank is below its couplings says it is of the fitted directions only.
    """
    near = j.get("near_fixed_point")
    dist = ""
    if near is not None:
        dist = f"{near['measure']} distance {near['distance']:.{digits}g} at round {near['round']}"
    if j.get("fixed_point_extrapolated"):
        out = list(j.get("fixed_point_outside_domain") or [])
        n = len(j.get("couplings") or [])
        where = (
            (f"{dist}; " if dist else "")
            + f"couplings outside their domain: {len(out)} of {n} (e.g. {', '.join(out[:3])}), "
            "a point no IMP state can reach: no type or nearness verdict"
        )
        return "extrapolated, not reached", where
    kind = str(j.get("fixed_point_type"))
    if j.get("underdetermined"):
        return "undetermined", (
            f"{j.get('n_pairs')} one-step pairs for {j.get('parameters_per_row')} parameters per row: the data "
            "do not determine the map (a fit without ridge passes through them), so it measures no fixed point "
            "(no nearness verdict)"
        )
    if kind == "undetermined":
        kind += f" (estimate: {j.get('fixed_point_type_estimate', '?')}; the intervals do not fix it)"
    rank, n_c = j.get("rank"), len(j.get("couplings") or [])
    if rank is not None and int(rank) < n_c and not kind.startswith("undetermined"):
        kind += f" along the {rank} fitted direction(s) of {n_c} (rank {rank}: the others are not estimated)"
    if near is None:
        return kind, "no finite fixed point (I - J singular)"
    rel = "<=" if near["near"] else ">"
    return kind, f"{'near' if near['near'] else 'not near'} ({dist} {rel} tol {near['tol']:g})"


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def spectrum_json(
    eigenvalues: Sequence[complex] | np.ndarray | Any,
    b: float | Sequence[float] | np.ndarray,
    band: float = MARGINAL_Y,
    ci: np.ndarray | None = None,
    *,
    couplings: Sequence[str] | None = None,
    eigenvectors: np.ndarray | None = None,
    fixed_point: Sequence[float] | np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object the CLI writes for one spectrum (only JSON types; non-finite numbers -> null).

    ``eigenvalues`` may be an array or a fitted estimator (its ``eigenvalues_``, ``eigenvalue_ci_``,
    ``eigenvectors_``, ``fixed_point_``, ``couplings_`` and diagnostics are then used).

    Returns
    -------
    dict with ``scale_factor`` (effective b), ``scale_factors`` (per-round list when given),
    ``band`` (the marginal half-width in y), ``type`` (:func:`fixed_point_type`), ``eigenvalues``: list of
    ``{re, im, abs, exponent, class, ci_low, ci_high, exponent_ci_low, exponent_ci_high}`` (``ci_*`` null when unknown), and when known
    ``couplings``, ``eigenvectors`` (list per eigenvalue of ``{"re": [...], "im": [...]}``),
    ``fixed_point``, ``perturbation``, ``diagnostics``; ``extra`` is merged in last.
    """
    diagnostics: dict[str, Any] = {}
    perturbation = None
    if hasattr(eigenvalues, "eigenvalues_"):
        est = eigenvalues
        eigenvalues = est.eigenvalues_
        ci = getattr(est, "eigenvalue_ci_", None) if ci is None else ci
        eigenvectors = getattr(est, "eigenvectors_", None) if eigenvectors is None else eigenvectors
        fixed_point = getattr(est, "fixed_point_", None) if fixed_point is None else fixed_point
        couplings = getattr(est, "couplings_", None) if couplings is None else couplings
        perturbation = getattr(est, "perturbation_", None)
        for key in (
            "condition_number_",
            "residual_",
            "r2_",
            "closure_r2_",
            "rank_",
            "n_bootstrap_",
            "n_pairs_",
            "n_flows_",
            "n_samples_",
        ):
            if hasattr(est, key):
                v = getattr(est, key)
                diagnostics[key.rstrip("_")] = _json_float(v) if isinstance(v, float) else int(v)
        if hasattr(est, "n_bootstrap_") and hasattr(est, "n_bootstrap"):  # usable of requested resamples
            diagnostics["n_bootstrap_requested"] = int(est.n_bootstrap)
    lam = np.asarray(eigenvalues, dtype=np.complex128).reshape(-1)
    beff = effective_scale_factor(b)
    ci_arr = None if ci is None else np.asarray(ci, dtype=np.float64)
    if ci_arr is not None and ci_arr.shape != (lam.size, 2):
        raise InvalidParameterError(f"ci must have shape ({lam.size}, 2), got {ci_arr.shape}")
    # a verdict only where its interval supports it: without an interval, every class is undetermined
    recs = classify_eigenvalues(
        lam, beff, band, ci_arr if ci_arr is not None else np.full((lam.size, 2), np.nan)
    )
    eig_json = []
    for i, r in enumerate(recs):
        eig_json.append(
            {
                "re": _json_float(r["re"]),
                "im": _json_float(r["im"]),
                "abs": _json_float(r["abs"]),
                "exponent": _json_float(r["exponent"]),
                "class": r["class"],
                "class_estimate": r["class_estimate"],
                "ci_low": None if ci_arr is None else _json_float(ci_arr[i, 0]),
                "ci_high": None if ci_arr is None else _json_float(ci_arr[i, 1]),
                "exponent_ci_low": _json_float(r["exponent_ci_low"]) if ci_arr is not None else None,
                "exponent_ci_high": _json_float(r["exponent_ci_high"]) if ci_arr is not None else None,
            }
        )
    out: dict[str, Any] = {
        "scale_factor": beff,
        "band": float(band),
        "type": fixed_point_type(lam, band=band, classes=[r["class"] for r in recs]),
        "type_estimate": fixed_point_type(lam, b=beff, band=band),
        "eigenvalues": eig_json,
    }
    b_arr = np.asarray(b, dtype=np.float64).reshape(-1)
    if b_arr.size > 1:
        out["scale_factors"] = [float(x) for x in b_arr]
    if couplings is not None:
        out["couplings"] = [str(c) for c in couplings]
    if eigenvectors is not None:
        V = np.asarray(eigenvectors, dtype=np.complex128)
        out["eigenvectors"] = [
            {"re": [_json_float(x) for x in V[:, j].real], "im": [_json_float(x) for x in V[:, j].imag]}
            for j in range(V.shape[1])
        ]
    if fixed_point is not None:
        out["fixed_point"] = [_json_float(x) for x in np.asarray(fixed_point, dtype=np.float64).reshape(-1)]
    if perturbation is not None:
        out["perturbation"] = str(perturbation)
    if diagnostics:
        out["diagnostics"] = diagnostics
    if extra:
        out.update(extra)
    return out


def flow_scale(pset: ParameterSet) -> tuple[float | None, float, list[float]]:
    """(rate, b, b_n) of a flow.

    A flow computed at a fixed rate p has b = 1/(1-p); a recorded flow takes its scale factors from
    the measured global densities, b_n = rho_n / rho_{n+1}, and b is their geometric mean.
    """
    b_n = [float(x) for x in pset.scale_factors()] if pset.n_rounds > 1 else []
    rate = pset.flow_attrs.get("rate")
    if pset.flow_attrs.get("kind") == "computed" and rate:
        return float(rate), scale_factor(float(rate)), b_n
    if not b_n:
        raise TooFewRoundsError("a single-round store has no flow: run `rganalysis flow` first")
    if any(not math.isfinite(b) or b <= 1.0 for b in b_n):
        raise InvalidParameterError(f"the recorded flow does not prune every round (b_n = {b_n})")
    b = effective_scale_factor(b_n)
    return 1.0 - 1.0 / b, b, b_n
