"""Distances between two flow signatures: the components (spectrum, fixed point, subspace, Koopman),
their weights and the total.  Definitions: docs/universality.md.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from rganalysis.errors import InvalidParameterError
from rganalysis.universality.defaults import (
    ALIGNMENTS,
    DEFAULT_WEIGHTS_ALIGNED,
    DEFAULT_WEIGHTS_INVARIANT,
    DEFAULT_WEIGHTS_V1,
)
from rganalysis.universality.signature import FlowSignature
from rganalysis.universality.units import (
    Alignment,
    align_units,
    survival_distance,
    unit_distance,
    unit_profile_distance,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_WEIGHTS_ALIGNED",
    "DEFAULT_WEIGHTS_INVARIANT",
    "DEFAULT_WEIGHTS_V1",
    "ALIGNED_COMPONENTS",
    "UNIT_COMPONENTS",
    "ALIGNMENTS",
    "DistanceMatrix",
    "component_weights",
    "informative_components",
    "resolve_weights",
    "pair_components",
    "distance_matrix",
    "fixed_point_distance",
    "flow_distance",
    "FlowDistance",
    "koopman_distance",
    "response_spectrum_distance",
    "principal_angles",
    "spectrum_distance",
    "subspace_distance",
]


# ====================================================================================================
# component distances
# ====================================================================================================
#: Components of the distance between two flows, in report order.  ``spectrum``, ``fixed_point``,
#: ``subspace`` (and ``koopman``) compare the fitted RG maps; ``survival`` and ``units`` compare the
#: flows weight by weight and unit by unit (aligned flows only); ``unit_profile`` compares the
#: distributions of unit degrees (any two flows).
#: ``response_spectrum`` compares the spectra of the response Jacobians stored in the flows (the real IMP
#: step, :func:`rganalysis.response_jacobian`); it is reported only when every flow compared has one.
COMPONENTS = (
    "spectrum",
    "fixed_point",
    "subspace",
    "koopman",
    "survival",
    "units",
    "unit_profile",
    "response_spectrum",
)
ALIGNED_COMPONENTS = ("survival", "units")
UNIT_COMPONENTS = ("survival", "units", "unit_profile")


def _wasserstein(a: np.ndarray, b: np.ndarray, p: float = 1) -> float:
    """:func:`rganalysis.fit.spectra.spectral_wasserstein` (zero-padded optimal matching)."""
    from rganalysis.fit.spectra import spectral_wasserstein

    return float(spectral_wasserstein(a, b, p=p))


def spectrum_distance(a: FlowSignature, b: FlowSignature, p: float = 1) -> float:
    """Optimal-matching distance of the retained exponents (exponent units; see the module docstring).

    ``W_p`` over ``n = max(k_a, k_b)`` pairs of the retained exponents, the shorter list padded with
    ``y = 0`` (marginal): an unmatched exponent ``y`` costs ``|y| / n``.  0 when neither fit has a
    retained direction.
    """
    return _wasserstein(a.retained_exponents, b.retained_exponents, p)


def _check_space(a: FlowSignature, b: FlowSignature, what: str) -> None:
    if a.couplings != b.couplings:
        raise InvalidParameterError(
            f"{what}: {a.name!r} and {b.name!r} were fitted in different coupling spaces "
            f"({len(a.couplings)} vs {len(b.couplings)} couplings); fit both on normalised-depth "
            "couplings (depth_points=N) to compare them"
        )


def _pair_scale(a: FlowSignature, b: FlowSignature) -> np.ndarray:
    """(C,) units ``s_c``: RMS of coupling c over the rounds of both flows (1 where it is 0)."""
    s = np.sqrt(0.5 * (a.coupling_ms + b.coupling_ms))
    return np.where(s > 0, s, 1.0)


def fixed_point_distance(a: FlowSignature, b: FlowSignature) -> float:
    """RMS over couplings of ``(K*_a - K*_b) / s`` (dimensionless; see the module docstring)."""
    _check_space(a, b, "fixed_point_distance")
    d = (a.fixed_point - b.fixed_point) / _pair_scale(a, b)
    return float(np.sqrt(np.mean(d**2)))


def _retained_basis(sig: FlowSignature, scale: np.ndarray) -> np.ndarray:
    """(C, d) orthonormal basis of the real span of the retained eigenvectors, in units of ``scale``."""
    V = sig.eigenvectors[:, sig.retained] / scale[:, None]
    if V.shape[1] == 0:
        return np.zeros((V.shape[0], 0))
    cols = [V.real]
    im = V.imag
    keep = np.linalg.norm(im, axis=0) > 1e-12 * np.maximum(1.0, np.linalg.norm(V.real, axis=0))
    if keep.any():
        cols.append(im[:, keep])
    M = np.concatenate(cols, axis=1)
    U, s, _ = np.linalg.svd(M, full_matrices=False)
    d = int(np.sum(s > 1e-10 * s[0])) if s.size and s[0] > 0 else 0
    return U[:, :d]


def principal_angles(a: FlowSignature, b: FlowSignature) -> np.ndarray:
    """Principal angles (radians, increasing, ``min(d_a, d_b)`` of them) between the retained
    eigen-subspaces of two fits in the shared, scaled coupling space."""
    _check_space(a, b, "principal_angles")
    s = _pair_scale(a, b)
    Qa, Qb = _retained_basis(a, s), _retained_basis(b, s)
    if Qa.shape[1] == 0 or Qb.shape[1] == 0:
        return np.zeros(0)
    cos = np.linalg.svd(Qa.T @ Qb, compute_uv=False)
    return np.sort(np.arccos(np.clip(cos, -1.0, 1.0)))


def subspace_distance(a: FlowSignature, b: FlowSignature) -> float:
    """``||P_a - P_b||_F / sqrt(d_a + d_b)`` in [0, 1] for the retained eigen-subspaces.

    Equals ``sqrt(sum sin^2 theta / d)`` for equal dimensions ``d`` (``theta`` the principal angles);
    1 when exactly one subspace is empty, 0 when both are.
    """
    _check_space(a, b, "subspace_distance")
    s = _pair_scale(a, b)
    Qa, Qb = _retained_basis(a, s), _retained_basis(b, s)
    da, db = Qa.shape[1], Qb.shape[1]
    if da + db == 0:
        return 0.0
    cos2 = float(np.sum(np.linalg.svd(Qa.T @ Qb, compute_uv=False) ** 2)) if da and db else 0.0
    return float(math.sqrt(max(0.0, da + db - 2.0 * cos2) / (da + db)))


def _exponent_wasserstein(ea: np.ndarray, ba: float, eb: np.ndarray, bb: float, p: float = 1) -> float:
    """``spectral_wasserstein`` of the complex exponents ``log(lambda) / ln b`` of two spectra (each at its
    own b), padded with the dead mode :data:`~rganalysis.fit.fixed_points.EXPONENT_FLOOR`."""
    from rganalysis.fit.fixed_points import EXPONENT_FLOOR, exponent_points
    from rganalysis.fit.spectra import spectral_wasserstein

    za, zb = exponent_points(ea, ba), exponent_points(eb, bb)
    return float(spectral_wasserstein(za, zb, p=p, pad=EXPONENT_FLOOR))


def response_spectrum_distance(a: FlowSignature, b: FlowSignature, p: float = 1) -> float:
    """``W_p`` between the exponents ``z = log(lambda) / ln b`` of the two flows' stored response Jacobians
    (each at its own ``b``; :func:`~rganalysis.fit.fixed_points.exponent_points`, padded with the dead mode):
    in exponent units, so flows at different pruning rates compare."""
    ea, eb = a.response_eigenvalues, b.response_eigenvalues
    if ea is None or eb is None:
        missing = a.name if ea is None else b.name
        raise InvalidParameterError(
            f"{missing!r} has no stored response Jacobian: measure one with rganalysis.response_jacobian"
        )
    return _exponent_wasserstein(ea, _response_b(a), eb, _response_b(b), p)


def _response_b(sig: FlowSignature) -> float:
    b = (sig.response or {}).get("b")
    return float(b) if b is not None and math.isfinite(float(b)) and float(b) > 1 else float(sig.b)


def koopman_distance(a: FlowSignature, b: FlowSignature, p: float = 1) -> float:
    """``W_p`` between the exponents ``z = log(lambda) / ln b`` of the two flows' DMD eigenvalues (each at
    its flow's ``b``, padded with the dead mode): in exponent units, so flows at different rates compare."""
    if a.koopman_eigenvalues is None or b.koopman_eigenvalues is None:
        missing = a.name if a.koopman_eigenvalues is None else b.name
        raise InvalidParameterError(
            f"{missing!r} has no Koopman eigenvalues: compute them with spectrum='koopman'"
        )
    return _exponent_wasserstein(a.koopman_eigenvalues, a.b, b.koopman_eigenvalues, b.b, p)


@dataclass
class FlowDistance:
    """Distance between two flows: its components, the weights and the total.

    ``components`` maps each computed component to its value (NaN where not defined: other coupling
    spaces, or flows that are not aligned); ``total = sum_k weights[k] * components[k]`` over the
    components with a non-zero weight; ``angles`` are the principal angles in degrees (empty when not
    defined); ``alignment`` says whether (and how) the two flows' units correspond.
    """

    components: dict[str, float]
    weights: dict[str, float]
    total: float
    angles: np.ndarray
    alignment: Alignment | None = None


def component_weights(
    weights: Mapping[str, float] | None, spectrum: str, mode: str = "invariant"
) -> dict[str, float]:
    """The weights of the total: ``weights`` as given (components it does not name weigh 0), or the
    defaults of ``mode`` (``aligned`` or ``invariant``), to which ``spectrum="koopman"`` adds the
    ``koopman`` component with weight 1 (and gives the coupling ``spectrum`` weight 0)."""
    if spectrum not in ("coupling", "koopman"):
        raise InvalidParameterError(f"spectrum must be 'coupling' or 'koopman', got {spectrum!r}")
    if mode not in ("aligned", "invariant"):
        raise InvalidParameterError(f"mode must be 'aligned' or 'invariant', got {mode!r}")
    if weights is None:
        w = dict(DEFAULT_WEIGHTS_ALIGNED if mode == "aligned" else DEFAULT_WEIGHTS_INVARIANT)
        if spectrum == "koopman":  # the parameter-space spectrum enters the total, the coupling one does not
            w["koopman"], w["spectrum"] = 1.0, 0.0
        return w
    w = dict.fromkeys(COMPONENTS, 0.0)
    for k, v in weights.items():
        if k not in COMPONENTS:
            raise InvalidParameterError(f"unknown distance component {k!r}; known: {', '.join(COMPONENTS)}")
        v = float(v)
        if not (math.isfinite(v) and v >= 0):
            raise InvalidParameterError(f"weight of {k!r} must be a finite number >= 0, got {v}")
        w[k] = v
    if not any(w.values()):
        raise InvalidParameterError("all distance weights are 0")
    return w


def resolve_weights(
    weights: Mapping[str, float] | None, spectrum: str, mode: str, usable: Mapping[str, bool]
) -> tuple[dict[str, float], str, list[str]]:
    """The weights of a total and where they come from.

    ``weights`` given: exactly those (rule ``given``).  Otherwise the defaults of ``mode``, less the
    components that are not ``usable`` (undefined or carrying no information over the flows compared:
    they are returned as ``dropped``); when no unit component is usable (no unit signatures), the
    fitted-map weights of version 1, :data:`DEFAULT_WEIGHTS_V1` (rule ``fit default``).
    """
    if weights is not None:
        return component_weights(weights, spectrum, mode), "given", []
    w = component_weights(None, spectrum, mode)
    dropped = [k for k, v in w.items() if v > 0 and not usable.get(k, False)]
    for k in dropped:
        w[k] = 0.0
    if any(usable.get(k, False) for k in UNIT_COMPONENTS) and any(w.values()):
        return w, f"{mode} default", dropped
    w = component_weights(DEFAULT_WEIGHTS_V1, spectrum, mode)
    if spectrum == "koopman":
        w["koopman"], w["spectrum"] = 1.0, 0.0
    more = [k for k, v in w.items() if v > 0 and not usable.get(k, False)]
    for k in more:
        w[k] = 0.0
    return w, "fit default", dropped + more


def pair_components(
    a: FlowSignature, b: FlowSignature, spectrum: str = "coupling", p: float = 1
) -> tuple[dict[str, float], np.ndarray, Alignment | None]:
    """Every component that is defined for the pair (NaN for the others), the principal angles
    (degrees) and the units' alignment (None without unit signatures)."""
    comp: dict[str, float] = {"spectrum": spectrum_distance(a, b, p)}
    angles = np.zeros(0)
    if a.couplings == b.couplings:
        comp["fixed_point"] = fixed_point_distance(a, b)
        comp["subspace"] = subspace_distance(a, b)
        angles = np.degrees(principal_angles(a, b))
    else:
        comp["fixed_point"] = comp["subspace"] = math.nan
    if spectrum == "koopman" or (a.koopman_eigenvalues is not None and b.koopman_eigenvalues is not None):
        comp["koopman"] = koopman_distance(a, b, p)
    if a.response is not None and b.response is not None:
        comp["response_spectrum"] = response_spectrum_distance(a, b, p)
    alignment = None
    if a.units is not None and b.units is not None:
        alignment = align_units(a.units, b.units)
        comp["survival"] = survival_distance(a.units, b.units, alignment)
        comp["units"] = unit_distance(a.units, b.units, alignment)
        comp["unit_profile"] = unit_profile_distance(a.units, b.units)
    return comp, angles, alignment


def flow_distance(
    a: FlowSignature,
    b: FlowSignature,
    weights: Mapping[str, float] | None = None,
    spectrum: str = "coupling",
    p: float = 1,
    alignment: str = "auto",
) -> FlowDistance:
    """All components between two signatures and their weighted total.

    ``alignment="auto"`` uses the aligned default weights when the two flows' units correspond, the
    invariant ones otherwise (``aligned`` / ``invariant`` force one).  ``spectrum="koopman"`` computes
    the ``koopman`` component and gives it the spectrum's weight.  A component with a non-zero weight
    that is not defined for the pair raises :class:`InvalidParameterError`.
    """
    comp, angles, al = pair_components(a, b, spectrum, p)
    mode = _mode(alignment, [al])
    w, _, _ = resolve_weights(weights, spectrum, mode, {k: math.isfinite(v) for k, v in comp.items()})
    total = _total(comp, w, f"{a.name!r} and {b.name!r}", al)
    return FlowDistance(comp, {k: w[k] for k in comp}, total, angles, al)


def _mode(alignment: str, alignments: Sequence[Alignment | None]) -> str:
    if alignment not in ALIGNMENTS:
        raise InvalidParameterError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if alignment == "aligned":
        bad = [al for al in alignments if al is None or not al.aligned]
        if bad:
            why = bad[0].why if bad[0] is not None else "a flow has no unit signatures"
            raise InvalidParameterError(
                f"alignment 'aligned': {len(bad)} of {len(alignments)} pair(s) of flows are not aligned "
                f"(not the same starting weights up to a permutation of units: {why}); use 'auto' or 'invariant'"
            )
    if alignment != "auto":
        return alignment
    n_aligned = sum(al is not None and al.aligned for al in alignments)
    if alignments and n_aligned == len(alignments):
        return "aligned"
    if n_aligned:
        warnings.warn(
            f"{n_aligned} of {len(alignments)} pair(s) of flows start from the same weights, the others do not: "
            "every pair is compared invariantly (unit_profile), so that the matrix has one scale; compare "
            "the flows of one start alone for their aligned distances (survival + units)",
            UserWarning,
            stacklevel=3,
        )
    return "invariant"


def _total(comp: Mapping[str, float], w: Mapping[str, float], pair: str, al: Alignment | None) -> float:
    for k, v in w.items():
        if v > 0 and not math.isfinite(comp.get(k, math.nan)):
            why = (
                al.why
                if al is not None and k in ALIGNED_COMPONENTS and al.why
                else "no unit signature"
                if k in (*ALIGNED_COMPONENTS, "unit_profile") and al is None
                else "different coupling spaces: fit both on normalised-depth couplings (depth_points=N)"
                if k in ("fixed_point", "subspace")
                else "not computed"
            )
            raise InvalidParameterError(f"the {k} component (weight {v:g}) is not defined for {pair}: {why}")
    return float(sum(w[k] * comp[k] for k in w if w[k] > 0))


def informative_components(values: Mapping[str, np.ndarray]) -> dict[str, bool]:
    """Per component, whether its off-diagonal values carry information: not all NaN, not (with at least
    3 pairs) all equal, and, for the fitted-map components, not all zero (a spectrum distance of 0 between
    flows that retain no direction says nothing).  A unit component that is 0 for every pair says the masks
    are the same: that is information, and dropping it would leave the total to the fitted maps, which
    differ for one model's flows of different lengths."""
    out = {}
    for k, v in values.items():
        x = v[np.isfinite(v)]
        if x.size == 0 or (k not in UNIT_COMPONENTS and not np.any(x != 0)):
            out[k] = False
        elif x.size >= 3 and not np.any(x != 0):
            out[k] = True
        elif x.size >= 3:
            out[k] = bool(np.ptp(x) > 1e-12 * max(1.0, float(np.abs(x).max())))
        else:
            out[k] = True
    return out


@dataclass
class DistanceMatrix:
    """The result of :func:`distance_matrix`.

    ``total`` (model, model_other) and ``components`` (component, model, model_other) DataArrays
    (NaN where undefined); ``weights`` used; ``mode`` (``aligned`` / ``invariant``); ``aligned``
    (n, n) bool per pair; ``informative`` per component (see :func:`informative_components`);
    ``dropped``: components whose default weight was set to 0 because they carry no information;
    ``rule``: where the weights come from (:func:`resolve_weights`).
    """

    total: xr.DataArray
    components: xr.DataArray
    weights: dict[str, float]
    mode: str
    aligned: np.ndarray
    informative: dict[str, bool]
    dropped: list[str]
    rule: str = "given"


def distance_matrix(
    signatures: Sequence[FlowSignature],
    weights: Mapping[str, float] | None = None,
    spectrum: str = "coupling",
    p: float = 1,
    alignment: str = "auto",
) -> DistanceMatrix:
    """Pairwise distances of ``n`` signatures.

    Every defined component is computed for every pair.  The weights are ``weights`` as given, else the
    defaults of the mode (``alignment="auto"``: aligned when every pair of flows is, else invariant) less
    the components that carry no information over these flows (:func:`resolve_weights`).
    """
    sigs = list(signatures)
    n = len(sigs)
    names = [s.name for s in sigs]
    pairs = {
        (i, j): pair_components(sigs[i], sigs[j], spectrum, p) for i in range(n) for j in range(i + 1, n)
    }
    mode = _mode(alignment, [al for _, _, al in pairs.values()])
    keys = [k for k in COMPONENTS if any(k in c for c, _, _ in pairs.values())] or ["spectrum"]
    if any(s.response is None for s in sigs):  # reported only when every flow has a response Jacobian
        keys = [k for k in keys if k != "response_spectrum"]
        if weights is not None and weights.get("response_spectrum"):
            have = sum(s.response is not None for s in sigs)
            raise InvalidParameterError(
                f"the response_spectrum component (weight {weights['response_spectrum']:g}) needs a stored "
                f"response Jacobian in every flow; {have} of {n} have one (rganalysis.response_jacobian)"
            )
    comps = np.zeros((len(keys), n, n))
    aligned = np.eye(n, dtype=bool)
    for (i, j), (c, _, al) in pairs.items():
        aligned[i, j] = aligned[j, i] = al is not None and al.aligned
        for ci, k in enumerate(keys):
            comps[ci, i, j] = comps[ci, j, i] = c.get(k, math.nan)
    off = ~np.eye(n, dtype=bool)
    informative = informative_components({k: comps[ci][off] for ci, k in enumerate(keys)})
    if n < 2:  # nothing to compare: every defined component counts
        informative = {k: True for k in keys}
    w, rule, dropped = resolve_weights(weights, spectrum, mode, informative)
    used = {k: w.get(k, 0.0) for k in keys}
    total = np.zeros((n, n))
    for (i, j), (c, _, al) in pairs.items():
        total[i, j] = total[j, i] = _total(
            c, {k: v for k, v in used.items()}, f"{names[i]!r} and {names[j]!r}", al
        )
    coords = {"model": names, "model_other": names}
    D = xr.DataArray(total, dims=("model", "model_other"), coords=coords, name="distance")
    C = xr.DataArray(
        comps,
        dims=("component", "model", "model_other"),
        coords={"component": keys, **coords},
        name="components",
        attrs={"weights": json.dumps(used)},
    )
    return DistanceMatrix(D, C, used, mode, aligned, informative, dropped, rule)
