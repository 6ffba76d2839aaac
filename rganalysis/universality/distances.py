"""Distances between two flow signatures: the components (spectrum, fixed point, subspace, Koopman),
their weights and the total.  Definitions: docs/universality.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from rganalysis.errors import InvalidParameterError
from rganalysis.universality.signature import FlowSignature

__all__ = [
    "COMPONENTS",
    "DEFAULT_WEIGHTS",
    "distance_matrix",
    "fixed_point_distance",
    "flow_distance",
    "FlowDistance",
    "koopman_distance",
    "principal_angles",
    "spectrum_distance",
    "subspace_distance",
]


# ====================================================================================================
# component distances
# ====================================================================================================
#: Components of the distance between two flows, in report order.
COMPONENTS = ("spectrum", "fixed_point", "subspace", "koopman")

#: Weights of the total distance (``spectrum="coupling"``).  With ``spectrum="koopman"`` the
#: ``koopman`` component takes the spectrum's weight and ``spectrum`` is reported with weight 0.
DEFAULT_WEIGHTS: dict[str, float] = {"spectrum": 1.0, "fixed_point": 1.0, "subspace": 1.0, "koopman": 0.0}


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


def koopman_distance(a: FlowSignature, b: FlowSignature, p: float = 1) -> float:
    """``spectral_wasserstein`` between the two flows' DMD eigenvalues (complex plane, zero-padded)."""
    if a.koopman_eigenvalues is None or b.koopman_eigenvalues is None:
        missing = a.name if a.koopman_eigenvalues is None else b.name
        raise InvalidParameterError(
            f"{missing!r} has no Koopman eigenvalues: compute them with spectrum='koopman'"
        )
    return _wasserstein(a.koopman_eigenvalues, b.koopman_eigenvalues, p)


@dataclass
class FlowDistance:
    """Distance between two flows: its components, the weights and the total.

    ``components`` maps each computed component to its value (NaN where not defined, e.g. the
    coupling spaces differ and that component's weight is 0); ``total = sum_k weights[k] *
    components[k]`` over the components with a non-zero weight; ``angles`` are the principal angles
    in degrees (empty when not defined).
    """

    components: dict[str, float]
    weights: dict[str, float]
    total: float
    angles: np.ndarray


def component_weights(weights: Mapping[str, float] | None, spectrum: str) -> dict[str, float]:
    if spectrum not in ("coupling", "koopman"):
        raise InvalidParameterError(f"spectrum must be 'coupling' or 'koopman', got {spectrum!r}")
    w = dict(DEFAULT_WEIGHTS)
    if spectrum == "koopman":
        w["koopman"], w["spectrum"] = w["spectrum"], 0.0
    for k, v in (weights or {}).items():
        if k not in COMPONENTS:
            raise InvalidParameterError(f"unknown distance component {k!r}; known: {', '.join(COMPONENTS)}")
        v = float(v)
        if not (math.isfinite(v) and v >= 0):
            raise InvalidParameterError(f"weight of {k!r} must be a finite number >= 0, got {v}")
        w[k] = v
    if not any(w.values()):
        raise InvalidParameterError("all distance weights are 0")
    return w


def flow_distance(
    a: FlowSignature,
    b: FlowSignature,
    weights: Mapping[str, float] | None = None,
    spectrum: str = "coupling",
    p: float = 1,
) -> FlowDistance:
    """All components between two signatures and their weighted total.

    ``spectrum="koopman"`` computes the ``koopman`` component too and gives it the spectrum's weight
    (``spectrum`` stays in the report with weight 0).  A component is computed when its weight is
    non-zero or it is cheap and defined; components with weight 0 never enter the total.
    """
    w = component_weights(weights, spectrum)
    comp: dict[str, float] = {"spectrum": spectrum_distance(a, b, p)}
    same = a.couplings == b.couplings
    angles = np.zeros(0)
    if same:
        comp["fixed_point"] = fixed_point_distance(a, b)
        comp["subspace"] = subspace_distance(a, b)
        angles = np.degrees(principal_angles(a, b))
    else:
        for k in ("fixed_point", "subspace"):
            if w[k] > 0:
                _check_space(a, b, f"the {k} component (weight {w[k]})")
            comp[k] = math.nan
    if spectrum == "koopman" or w["koopman"] > 0:
        comp["koopman"] = koopman_distance(a, b, p)
    total = float(sum(w[k] * comp[k] for k in comp if w[k] > 0))
    return FlowDistance(comp, {k: w[k] for k in comp}, total, angles)


def distance_matrix(
    signatures: Sequence[FlowSignature],
    weights: Mapping[str, float] | None = None,
    spectrum: str = "coupling",
    p: float = 1,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Pairwise distances of ``n`` signatures.

    Returns
    -------
    total : DataArray (model, model_other), float64, symmetric, zero diagonal
    components : DataArray (component, model, model_other), float64 (NaN where undefined); attribute
        ``weights`` (JSON string of the weights used)
    """
    import json

    sigs = list(signatures)
    n = len(sigs)
    names = [s.name for s in sigs]
    pairs = {}
    for i in range(n):
        for j in range(i + 1, n):
            pairs[i, j] = flow_distance(sigs[i], sigs[j], weights, spectrum, p)
    keys = (
        [k for k in COMPONENTS if any(k in d.components for d in pairs.values())]
        if pairs
        else [k for k, v in component_weights(weights, spectrum).items() if v > 0 or k == "spectrum"]
    )
    total = np.zeros((n, n))
    comps = np.zeros((len(keys), n, n))
    for (i, j), d in pairs.items():
        total[i, j] = total[j, i] = d.total
        for c, k in enumerate(keys):
            comps[c, i, j] = comps[c, j, i] = d.components.get(k, math.nan)
    w = component_weights(weights, spectrum)
    coords = {"model": names, "model_other": names}
    D = xr.DataArray(total, dims=("model", "model_other"), coords=coords, name="distance")
    C = xr.DataArray(
        comps,
        dims=("component", "model", "model_other"),
        coords={"component": keys, **coords},
        name="components",
        attrs={"weights": json.dumps({k: w[k] for k in keys})},
    )
    return D, C
