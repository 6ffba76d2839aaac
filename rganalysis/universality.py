"""Universality classes: distances between fitted IMP flows, and the classes they imply.

Two models are in one universality class when their RG flows share a fixed point and the spectrum
of relevant directions there.  This module reduces each fitted flow to a small
:class:`FlowSignature`, measures three separate distances between two signatures, combines them
into one total with explicit weights, and groups models into classes.

Components (all symmetric, 0 for a flow and itself; see docs/universality.md)
---------------------------------------------------------------------------
``spectrum``
    Optimal matching of the RG exponents ``y = ln|lambda| / ln b`` of the *retained* eigenvalues
    (relevant and marginal, ``|lambda| >= 1 - tol``) of the two fits:
    :func:`rganalysis.spectra.spectral_wasserstein` with ``p = 1`` on the exponents, i.e. the mean
    ``|y_i - y'_pi(i)|`` over ``n = max(k, k')`` pairs, where the shorter list is padded with
    ``y = 0``: an unmatched exponent is penalised by its distance to marginality ``|y|``.  Units:
    exponent units (dimensionless); exponents are comparable across rates (``lambda = b^y``).
``fixed_point``
    RMS over couplings of ``(K*_A - K*_B) / s``, the fixed points of the two fits in their shared
    coupling space, each coupling in units of its RMS value over all rounds of both flows,
    ``s_c = sqrt((mean_n K_A[n,c]^2 + mean_n K_B[n,c]^2) / 2)``.  Dimensionless (0.1 = the fixed
    points differ by 10 % of a typical coupling value).  ``K*`` is :func:`ridge_fixed_point`: the
    point that one step of the fitted map ``K -> J K + c`` moves least, with a ridge penalty
    (default ``0.05``, standardised couplings) on its distance from the flow's last round.  Exactly
    FlowFit's ``(I - J)^{-1} c`` with ``fixed_point_ridge=0``; with the ridge, a direction whose
    eigenvalue is within ~0.05 of 1 (where ``(I - J)^{-1} c`` runs off to infinity, e.g. ResNet-50's
    data-free flow) keeps its fixed point near the data instead of far outside the coupling domain.
``subspace``
    ``||P_A - P_B||_F / sqrt(d_A + d_B)`` for the orthogonal projectors on the retained
    eigen-subspaces (real span of the eigenvectors; ``d`` = their dimensions) in the shared coupling
    space scaled by ``s``: 0 for equal subspaces, 1 for orthogonal ones or when one is empty (0 when
    both are).  For ``d_A = d_B`` it is the RMS of ``sin`` of the principal angles
    (:func:`principal_angles`).
``koopman`` (optional)
    :func:`~rganalysis.spectra.spectral_wasserstein` (``p = 1``) between the eigenvalues of exact DMD
    of each flow's parameter snapshots ``theta_n * m_n`` (:func:`koopman_eigenvalues`).

The ``fixed_point`` and ``subspace`` components need the same coupling names (fit both flows on
normalised-depth couplings, ``depth_points=N``, to compare different architectures).

Total: ``sum_k weights[k] * component[k]`` over :data:`DEFAULT_WEIGHTS` (1 each), all components
reported separately; a component with weight 0 is reported and not summed.

Classes: a :mod:`networkx` graph with the models as nodes and an edge wherever the total distance is
``<= threshold``; its connected components are the classes.  Hierarchical clustering
(:func:`scipy.cluster.hierarchy.linkage`, ``average``) is reported beside it, with its dendrogram.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from rganalysis.errors import DegenerateRegressionError, InvalidParameterError, TooFewRoundsError

__all__ = [
    "COMPONENTS",
    "DEFAULT_DEPTH_POINTS",
    "DEFAULT_FIXED_POINT_RIDGE",
    "DEFAULT_THRESHOLD",
    "DEFAULT_WEIGHTS",
    "FlowDistance",
    "FlowSignature",
    "UniversalityAnalysis",
    "auto_rank",
    "class_graph",
    "classes_from_distance",
    "distance_matrix",
    "fixed_point_distance",
    "flow_distance",
    "flow_signature",
    "format_comparison",
    "hierarchical_clustering",
    "koopman_distance",
    "koopman_eigenvalues",
    "largest_gap_threshold",
    "principal_angles",
    "ridge_fixed_point",
    "spectrum_distance",
    "subspace_distance",
]

#: Components of the distance between two flows, in report order.
COMPONENTS = ("spectrum", "fixed_point", "subspace", "koopman")

#: Weights of the total distance (``spectrum="coupling"``).  With ``spectrum="koopman"`` the
#: ``koopman`` component takes the spectrum's weight and ``spectrum`` is reported with weight 0.
DEFAULT_WEIGHTS: dict[str, float] = {"spectrum": 1.0, "fixed_point": 1.0, "subspace": 1.0, "koopman": 0.0}

#: Default class threshold on the total distance (see docs/universality.md for its calibration).
DEFAULT_THRESHOLD = 0.3

#: Default ridge of :func:`ridge_fixed_point` (standardised couplings; 0: FlowFit's exact fixed point).
DEFAULT_FIXED_POINT_RIDGE = 0.05

#: Default number of normalised depths of the coupling space used to compare architectures.
DEFAULT_DEPTH_POINTS = 8

#: Default relative singular-value cut of the automatic trajectory rank (:func:`auto_rank`).
DEFAULT_RANK_RTOL = 0.02

#: Default factor by which each extra direction of the automatic rank must divide the residual.
DEFAULT_RANK_GAIN = 2.0

#: Default most directions the automatic rank keeps.
DEFAULT_MAX_RANK = 3


# ====================================================================================================
# signatures
# ====================================================================================================
def ridge_fixed_point(jacobian: np.ndarray, offset: np.ndarray, anchor: np.ndarray,
                      scale: np.ndarray | None = None, ridge: float = DEFAULT_FIXED_POINT_RIDGE
                      ) -> tuple[np.ndarray, str]:
    """Fixed point of the affine map ``K -> J K + c``, regularised towards ``anchor``.

    In standardised couplings ``y = K / scale`` (``scale``: the estimator's ``coupling_scale_``;
    default 1), with ``M = I - S^-1 J S`` and ``y0 = anchor / scale``::

        y* = argmin_y  ||M y - c / scale||^2 + ridge^2 ||y - y0||^2

    i.e. the point that one step of the map moves least, penalised by its distance from ``anchor``
    (the flow's last round).  ``ridge = 0`` gives ``(I - J)^{-1} c`` exactly when ``I - J`` is
    invertible, else the least-squares solution nearest ``anchor``.  With ``ridge > 0`` a component
    along an eigen-direction with ``|1 - lambda| >> ridge`` is (nearly) exact, one with
    ``|1 - lambda| << ridge`` (marginal: a line of fixed points, or none, far away) stays near the data.

    Parameters
    ----------
    jacobian : (C, C); offset : (C,); anchor : (C,) coupling units; scale : (C,) or None; ridge : >= 0

    Returns
    -------
    (K* (C,) in coupling units, method: ``"ridge=<ridge>"``, ``"exact"`` or ``"lstsq"``)
    """
    J = np.asarray(jacobian, dtype=np.float64)
    c = np.asarray(offset, dtype=np.float64).reshape(-1)
    y0 = np.asarray(anchor, dtype=np.float64).reshape(-1)
    ridge = float(ridge)
    if not (math.isfinite(ridge) and ridge >= 0):
        raise InvalidParameterError(f"fixed_point_ridge must be a finite number >= 0, got {ridge}")
    s = np.ones(c.size) if scale is None else np.asarray(scale, dtype=np.float64).reshape(-1)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    M = np.eye(c.size) - J * (1.0 / s)[:, None] * s[None, :]
    rhs = c / s - M @ (y0 / s)
    if ridge > 0:
        A = np.vstack([M, ridge * np.eye(c.size)])
        d = np.linalg.lstsq(A, np.concatenate([rhs, np.zeros(c.size)]), rcond=None)[0]
        return s * (y0 / s + d), f"ridge={ridge:g}"
    if np.linalg.cond(M) < 1e12:
        return s * np.linalg.solve(M, c / s), "exact"
    d = np.linalg.lstsq(M, rhs, rcond=None)[0]
    return s * (y0 / s + d), "lstsq"


@dataclass
class FlowSignature:
    """What a distance needs from one fitted flow (small, picklable, JSON-able).

    Attributes
    ----------
    name : model label
    couplings : (C,) coupling names of the fit
    eigenvalues : (r,) complex128, the linearised RG map's eigenvalues, decreasing ``|lambda|``
    eigenvectors : (C, r) complex128, unit columns in coupling coordinates
    b : effective scale factor of the flow (``1 / (1 - p)``, or the geometric mean of ``b_n``)
    tol : marginal band half-width around ``|lambda| = 1``
    fixed_point : (C,) float64, ``K*`` in coupling units (:func:`ridge_fixed_point`)
    fixed_point_method : ``"ridge=<value>"``, ``"exact"`` (``(I - J)^-1 c``, ridge 0) or ``"lstsq"``
        (ridge 0 and ``I - J`` singular: least squares nearest the last round)
    coupling_ms : (C,) float64, mean over the flow's rounds of ``K[n, c]^2`` (sets the units ``s``)
    rank : trajectory rank of the fit
    n_rounds : rounds of the flow (pairs = n_rounds - 1)
    koopman_eigenvalues : (k,) complex128 or None, DMD eigenvalues of the parameter snapshots
    meta : free-form provenance (source path, architecture, warnings of the fit, ...)
    """

    name: str
    couplings: list[str]
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    b: float
    tol: float
    fixed_point: np.ndarray
    fixed_point_method: str
    coupling_ms: np.ndarray
    rank: int
    n_rounds: int
    koopman_eigenvalues: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.couplings = [str(c) for c in self.couplings]
        self.eigenvalues = np.asarray(self.eigenvalues, dtype=np.complex128).reshape(-1)
        self.eigenvectors = np.asarray(self.eigenvectors, dtype=np.complex128).reshape(len(self.couplings), -1)
        self.fixed_point = np.asarray(self.fixed_point, dtype=np.float64).reshape(-1)
        self.coupling_ms = np.asarray(self.coupling_ms, dtype=np.float64).reshape(-1)
        if self.koopman_eigenvalues is not None:
            self.koopman_eigenvalues = np.asarray(self.koopman_eigenvalues, dtype=np.complex128).reshape(-1)
        c = len(self.couplings)
        if self.eigenvectors.shape[1] != self.eigenvalues.size:
            raise InvalidParameterError(f"{self.name}: {self.eigenvalues.size} eigenvalues but "
                                        f"{self.eigenvectors.shape[1]} eigenvectors")
        if self.fixed_point.size != c or self.coupling_ms.size != c:
            raise InvalidParameterError(f"{self.name}: fixed point / coupling scale must have {c} entries")
        if not (math.isfinite(self.b) and self.b > 1.0):
            raise InvalidParameterError(f"{self.name}: scale factor b must be > 1, got {self.b}")

    # ------------------------------------------------------------------ derived
    @property
    def retained(self) -> np.ndarray:
        """(r,) bool: relevant or marginal eigenvalues, ``|lambda| >= 1 - tol``."""
        return np.abs(self.eigenvalues) >= 1.0 - self.tol

    @property
    def exponents(self) -> np.ndarray:
        """(r,) RG exponents ``y = ln|lambda| / ln b`` (``-inf`` for ``lambda = 0``)."""
        with np.errstate(divide="ignore"):
            return np.log(np.abs(self.eigenvalues)) / math.log(self.b)

    @property
    def retained_exponents(self) -> np.ndarray:
        """Exponents of the retained eigenvalues, decreasing."""
        return np.sort(self.exponents[self.retained])[::-1]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fit(cls, fit: Any, name: str | None = None, *, koopman: np.ndarray | None = None,
                 meta: Mapping[str, Any] | None = None, fixed_point_ridge: float = DEFAULT_FIXED_POINT_RIDGE
                 ) -> FlowSignature:
        """The signature of a fitted :class:`~rganalysis.analysis.FlowFit` (trajectory estimator).

        ``coupling_ms`` pools all rounds of all the fit's flows; the fixed point is
        :func:`ridge_fixed_point` anchored at the last round of the first flow (FlowFit's exact one is
        kept in ``meta["fixed_point_exact"]``).
        """
        est = getattr(fit, "estimator_", None)
        if est is None:
            raise InvalidParameterError("FlowSignature.from_fit needs a fitted FlowFit")
        K = np.concatenate([np.asarray(k.transpose("round", "coupling").values, dtype=np.float64)
                            for k in fit.couplings_], axis=0)
        anchor = np.asarray(fit.couplings_[0].transpose("round", "coupling").values[-1], dtype=np.float64)
        fp, method = ridge_fixed_point(est.jacobian_, est.offset_, anchor, getattr(est, "coupling_scale_", None),
                                       fixed_point_ridge)
        meta = {"fixed_point_exact": [float(x) if math.isfinite(x) else None
                                      for x in np.asarray(fit.fixed_point_, dtype=np.float64)], **(meta or {})}
        names = list(getattr(fit, "names_", None) or [""])
        return cls(
            name=str(name if name is not None else (names[0] or "model")),
            couplings=list(est.couplings_),
            eigenvalues=est.eigenvalues_,
            eigenvectors=est.eigenvectors_,
            b=float(fit.b_),
            tol=float(fit.tol),
            fixed_point=fp,
            fixed_point_method=method,
            coupling_ms=np.mean(K**2, axis=0),
            rank=int(getattr(est, "rank_", len(est.eigenvalues_))),
            n_rounds=int(K.shape[0] // max(1, len(fit.couplings_))),
            koopman_eigenvalues=koopman,
            meta=meta,
        )

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """JSON-able summary (no eigenvectors: they are in ``rganalysis fit --json``)."""

        def num(x: float) -> float | None:
            x = float(x)
            return x if math.isfinite(x) else None

        y = self.exponents
        out: dict[str, Any] = {
            "name": self.name,
            "n_rounds": self.n_rounds,
            "b": self.b,
            "rank": self.rank,
            "tol": self.tol,
            "couplings": self.couplings,
            "eigenvalues": [{"re": float(z.real), "im": float(z.imag), "abs": float(abs(z)),
                             "exponent": num(y[i]), "retained": bool(self.retained[i])}
                            for i, z in enumerate(self.eigenvalues)],
            "fixed_point": [num(x) for x in self.fixed_point],
            "fixed_point_method": self.fixed_point_method,
        }
        if self.koopman_eigenvalues is not None:
            out["koopman_eigenvalues"] = [{"re": float(z.real), "im": float(z.imag), "abs": float(abs(z))}
                                          for z in self.koopman_eigenvalues]
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out


# ====================================================================================================
# component distances
# ====================================================================================================
def _wasserstein(a: np.ndarray, b: np.ndarray, p: float = 1) -> float:
    """:func:`rganalysis.spectra.spectral_wasserstein` (zero-padded optimal matching)."""
    from rganalysis.spectra import spectral_wasserstein

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
        raise InvalidParameterError(f"{missing!r} has no Koopman eigenvalues: compute them with spectrum='koopman'")
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


def _weights(weights: Mapping[str, float] | None, spectrum: str) -> dict[str, float]:
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


def flow_distance(a: FlowSignature, b: FlowSignature, weights: Mapping[str, float] | None = None,
                  spectrum: str = "coupling", p: float = 1) -> FlowDistance:
    """All components between two signatures and their weighted total.

    ``spectrum="koopman"`` computes the ``koopman`` component too and gives it the spectrum's weight
    (``spectrum`` stays in the report with weight 0).  A component is computed when its weight is
    non-zero or it is cheap and defined; components with weight 0 never enter the total.
    """
    w = _weights(weights, spectrum)
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


def distance_matrix(signatures: Sequence[FlowSignature], weights: Mapping[str, float] | None = None,
                    spectrum: str = "coupling", p: float = 1) -> tuple[xr.DataArray, xr.DataArray]:
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
    keys = [k for k in COMPONENTS if any(k in d.components for d in pairs.values())] if pairs else \
        [k for k, v in _weights(weights, spectrum).items() if v > 0 or k == "spectrum"]
    total = np.zeros((n, n))
    comps = np.zeros((len(keys), n, n))
    for (i, j), d in pairs.items():
        total[i, j] = total[j, i] = d.total
        for c, k in enumerate(keys):
            comps[c, i, j] = comps[c, j, i] = d.components.get(k, math.nan)
    w = _weights(weights, spectrum)
    coords = {"model": names, "model_other": names}
    D = xr.DataArray(total, dims=("model", "model_other"), coords=coords, name="distance")
    C = xr.DataArray(comps, dims=("component", "model", "model_other"), coords={"component": keys, **coords},
                     name="components", attrs={"weights": json.dumps({k: w[k] for k in keys})})
    return D, C


# ====================================================================================================
# classes
# ====================================================================================================
def _check_matrix(D: np.ndarray, names: Sequence[str]) -> np.ndarray:
    D = np.asarray(D, dtype=np.float64)
    n = len(names)
    if D.shape != (n, n):
        raise InvalidParameterError(f"distance matrix must be ({n}, {n}) for {n} models, got {D.shape}")
    if not np.isfinite(D).all():
        raise InvalidParameterError("the distance matrix has non-finite entries")
    if not np.allclose(D, D.T, rtol=0, atol=1e-12) or np.any(np.abs(np.diag(D)) > 1e-12) or (D < 0).any():
        raise InvalidParameterError("the distance matrix must be symmetric, >= 0, with a zero diagonal")
    return D


def class_graph(D: np.ndarray, names: Sequence[str], threshold: float):
    """networkx Graph: one node per model, an edge (attribute ``weight`` = distance) where
    ``D[i, j] <= threshold``."""
    import networkx as nx

    D = _check_matrix(D, names)
    g = nx.Graph()
    g.add_nodes_from(names)
    n = len(names)
    for i in range(n):
        for j in range(i + 1, n):
            if D[i, j] <= threshold:
                g.add_edge(names[i], names[j], weight=float(D[i, j]))
    return g


def classes_from_distance(D: np.ndarray, names: Sequence[str], threshold: float) -> list[list[str]]:
    """Connected components of :func:`class_graph`; each class in input order, classes ordered by
    their first member."""
    import networkx as nx

    g = class_graph(D, names, threshold)
    order = {n: i for i, n in enumerate(names)}
    classes = [sorted(c, key=order.__getitem__) for c in nx.connected_components(g)]
    return sorted(classes, key=lambda c: order[c[0]])


def hierarchical_clustering(D: np.ndarray, names: Sequence[str], method: str = "average",
                            threshold: float | None = None) -> dict[str, Any]:
    """scipy hierarchical clustering of a distance matrix, as JSON-able data.

    Returns
    -------
    dict with ``method``; ``linkage`` ((n-1) rows ``[i, j, height, size]``, scipy's convention:
    indices >= n are earlier merges); ``dendrogram`` (scipy's ``dendrogram(no_plot=True)``:
    ``ivl`` leaf labels left to right, ``leaves``, ``icoord``, ``dcoord``); ``merges`` (readable
    ``{"height", "left", "right"}`` with member names) and, with ``threshold``, ``clusters`` (flat
    clusters cut at that height, lists of names).
    """
    from scipy.cluster.hierarchy import dendrogram, fcluster, linkage
    from scipy.spatial.distance import squareform

    D = _check_matrix(D, names)
    n = len(names)
    out: dict[str, Any] = {"method": method}
    if n < 2:
        out.update(linkage=[], dendrogram={"ivl": list(names), "leaves": list(range(n)), "icoord": [], "dcoord": []},
                   merges=[])
        if threshold is not None:
            out["clusters"] = [list(names)] if n else []
        return out
    Z = linkage(squareform(D, checks=False), method=method)
    dn = dendrogram(Z, no_plot=True, labels=list(names))
    members: list[list[str]] = [[x] for x in names]
    merges = []
    for i, j, h, _ in Z:
        left, right = members[int(i)], members[int(j)]
        members.append(left + right)
        merges.append({"height": float(h), "left": left, "right": right})
    out.update(
        linkage=[[int(r[0]), int(r[1]), float(r[2]), int(r[3])] for r in Z],
        dendrogram={"ivl": [str(x) for x in dn["ivl"]], "leaves": [int(x) for x in dn["leaves"]],
                    "icoord": [[float(x) for x in row] for row in dn["icoord"]],
                    "dcoord": [[float(x) for x in row] for row in dn["dcoord"]]},
        merges=merges,
    )
    if threshold is not None:
        lab = fcluster(Z, t=float(threshold), criterion="distance")
        groups: dict[int, list[str]] = {}
        for name, c in zip(names, lab, strict=True):
            groups.setdefault(int(c), []).append(name)
        order = {x: i for i, x in enumerate(names)}
        out["clusters"] = sorted(groups.values(), key=lambda c: order[c[0]])
    return out


def largest_gap_threshold(D: np.ndarray, names: Sequence[str], method: str = "average") -> float:
    """A threshold from the distance distribution: the middle of the largest gap between consecutive
    merge heights of the hierarchical clustering (0 prepended), i.e. the cut of the dendrogram that
    is most stable.  With fewer than 2 models: :data:`DEFAULT_THRESHOLD`."""
    if len(names) < 2:
        return DEFAULT_THRESHOLD
    h = np.array([m["height"] for m in hierarchical_clustering(D, names, method)["merges"]])
    h = np.concatenate([[0.0], np.sort(h)])
    k = int(np.argmax(np.diff(h)))
    return float(0.5 * (h[k] + h[k + 1]))


# ====================================================================================================
# from stores to signatures
# ====================================================================================================
def auto_rank(couplings: xr.DataArray, rtol: float = DEFAULT_RANK_RTOL, max_rank: int = DEFAULT_MAX_RANK,
              gain: float = DEFAULT_RANK_GAIN) -> int:
    """Trajectory rank suited to a short flow.

    Start at rank 1 and keep one more direction while (a) its singular value of the standardised,
    centred one-step design (as :class:`~rganalysis.jacobian.TrajectoryEstimator` builds it) is at
    least ``rtol`` times the largest, and (b) adding it divides the RMS one-step residual by at least
    ``gain``; never above ``max_rank`` or ``n_pairs - 1`` (what the estimator allows).

    On short data-free flows the first direction is the common decay of all densities, the second
    (on ResNets) the redistribution of density between depths: it divides the residual by ~8.
    Further directions explain little (residual / 1.1 to 1.9 on the flows in docs/universality.md)
    and their eigenvalues are unstable; (b) keeps them out.
    """
    from rganalysis.jacobian import TrajectoryEstimator

    K = couplings.transpose("round", "coupling")
    m = int(K.sizes["round"]) - 1
    if m < 2:
        raise TooFewRoundsError(f"a flow of {m + 1} rounds has {m} one-step pair(s); at least 2 are needed")
    cap = max(1, min(int(max_rank), m - 1, int(K.sizes["coupling"])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = TrajectoryEstimator(rank=1, n_bootstrap=0).fit(K)
        s = fit.singular_values_
        r, res = 1, fit.residual_
        while r < cap and s.size > r and s[0] > 0 and s[r] >= float(rtol) * s[0]:
            try:
                nxt = TrajectoryEstimator(rank=r + 1, n_bootstrap=0).fit(K).residual_
            except DegenerateRegressionError:  # the next direction is numerically empty
                break
            if not nxt * float(gain) <= res:
                break
            r, res = r + 1, nxt
    return r


def koopman_eigenvalues(pset: Any, rank: int | None = None, energy: float | None = None,
                        device: str = "auto") -> np.ndarray:
    """Eigenvalues of exact DMD (:class:`rganalysis.koopman.KoopmanDMD`) of a flow's parameter
    snapshots ``theta_n * m_n`` over its pruned tensors, streamed one tensor at a time.

    Uses the store-level :func:`rganalysis.koopman_flow.koopman_fit` (subset ``prunable``, no
    rescaling, no bagging) when that module is installed, else streams the same snapshots into
    :class:`~rganalysis.koopman.KoopmanDMD` here.

    Parameters
    ----------
    pset : a flow :class:`~rganalysis.store.ParameterSet` (T = ``n_rounds`` >= 2 snapshots)
    rank, energy : DMD truncation (default rank ``T - 1``, lowered to the numerical rank)
    device : where the Gram is accumulated ("auto": CUDA when present)

    Returns
    -------
    (r,) complex128, sorted by decreasing modulus.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from rganalysis.koopman_flow import koopman_fit
        except ImportError:
            dmd = _koopman_local(pset, rank, energy, device)
        else:
            dmd = koopman_fit(pset, rank=rank, energy=energy, subset="prunable", scale="none", n_bags=0,
                              device=device)
    return np.asarray(dmd.eigenvalues_, dtype=np.complex128)


def _koopman_local(pset: Any, rank: int | None, energy: float | None, device: str) -> Any:
    """KoopmanDMD fitted on the masked weights of ``pset.pruned_names()``, one (T, numel) block per tensor."""
    import torch

    from rganalysis.koopman import KoopmanDMD
    from rganalysis.parallel import _weight_versions

    names = list(pset.pruned_names())
    T = int(pset.n_rounds)
    if T < 2:
        raise TooFewRoundsError(f"a DMD needs at least 2 rounds, the flow has {T}")

    def blocks():
        for name in names:
            versions = _weight_versions(pset, name)
            out = None
            for r in range(T):
                if r == 0 or versions is None or r in versions:
                    w = pset.tensor(name, r).to(torch.float32).reshape(-1)
                if out is None:
                    out = torch.empty((T, w.numel()), dtype=torch.float32)
                torch.mul(w, pset.mask(name, r).reshape(-1), out=out[r])
            yield out

    return KoopmanDMD(rank=rank, energy=energy, n_bags=0, device=device).fit(blocks)


class _PrecomputedFlowFit:
    """Factory of a FlowFit subclass that takes its couplings from a dict (computed once, streamed)."""

    @staticmethod
    def make(precomputed: Mapping[int, xr.DataArray], **kw: Any):
        from rganalysis.analysis import FlowFit

        class _Fit(FlowFit):
            def _couplings(self, pset):  # noqa: D401 - override of FlowFit's hook
                return precomputed[id(pset)]

        return _Fit(**kw)


def flow_signature(
    source: str | os.PathLike | Any,
    *,
    name: str | None = None,
    couplings: Sequence[str] = ("density",),
    depth_points: int | None = DEFAULT_DEPTH_POINTS,
    rank: int | str | None = "auto",
    rank_rtol: float = DEFAULT_RANK_RTOL,
    max_rank: int = DEFAULT_MAX_RANK,
    rank_gain: float = DEFAULT_RANK_GAIN,
    ridge: float = 0.0,
    tol: float = 0.05,
    rounds: int | None = None,
    rate: float = 0.2,
    koopman: bool = False,
    koopman_rank: int | None = None,
    fixed_point_ridge: float = DEFAULT_FIXED_POINT_RIDGE,
    device: str = "auto",
) -> FlowSignature:
    """Fit one flow and reduce it to a :class:`FlowSignature` (picklable: runs on dask workers).

    Parameters
    ----------
    source : path of a flow store, or an open flow ParameterSet
    name : label (default: the store's ``name`` attribute, else the file stem)
    couplings, depth_points : coupling sets and normalised depths of the coupling space
        (``depth_points=None``: per-layer couplings, same architecture only)
    rank : ``"auto"`` (:func:`auto_rank`), an int, or None (full least squares)
    rounds, rate : a single-round *model* store needs a flow: with ``rounds`` a data-free flow
        (global, no rescaling) of ``rounds`` rounds at ``rate`` is computed in memory first;
        without, :class:`~rganalysis.errors.TooFewRoundsError`
    koopman, koopman_rank : also compute :func:`koopman_eigenvalues`
    fixed_point_ridge : ridge of :func:`ridge_fixed_point` (0: FlowFit's exact fixed point)
    """
    from rganalysis.parallel import stream_flow_couplings
    from rganalysis.store import ParameterSet, load

    own = not isinstance(source, ParameterSet)
    pset = load(Path(source)) if own else source
    try:
        label = name or str(pset.attrs.get("name") or "") or (Path(source).stem if own else "model")
        meta: dict[str, Any] = {"architecture": str(pset.attrs.get("architecture", "")),
                                "source": str(source) if own else str(getattr(pset, "path", "") or "")}
        flow = pset
        if pset.n_rounds < 2:
            if rounds is None:
                raise TooFewRoundsError(
                    f"{label}: a single-round model store has no flow; record one with `rganalysis flow` "
                    "or pass rounds= (CLI: --rounds N --rate P) to compute a data-free flow here"
                )
            from rganalysis.flow import compute_flow

            flow = compute_flow(pset, int(rounds), float(rate), device=device, progress=False)
            meta["flow"] = {"computed": True, "rounds": int(rounds), "rate": float(rate), "rescaling": "none"}
        K = stream_flow_couplings(flow, couplings, device=device)
        if depth_points:
            from rganalysis.couplings import resample_depth

            K = resample_depth(K, int(depth_points))
        r = auto_rank(K, rank_rtol, max_rank, rank_gain) if rank == "auto" else rank
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = _PrecomputedFlowFit.make(
                {id(flow): K}, couplings=tuple(couplings), estimator="trajectory", depth_points=None,
                rank=r, ridge=ridge, n_bootstrap=0, tol=tol, device=device,
            ).fit(flow)
        meta["warnings"] = sorted({str(w.message) for w in caught})
        meta["couplings_sets"] = list(couplings)
        meta["depth_points"] = depth_points
        eig = koopman_eigenvalues(flow, rank=koopman_rank, device=device) if koopman else None
        return FlowSignature.from_fit(fit, label, koopman=eig, meta=meta, fixed_point_ridge=fixed_point_ridge)
    finally:
        if own:
            pset.close()


def _signature_task(args: tuple[Any, dict[str, Any]]) -> FlowSignature:
    """dask task: (source, options) -> signature (module level, so it pickles)."""
    source, kw = args
    return flow_signature(source, **kw)


# ====================================================================================================
# the analysis
# ====================================================================================================
class UniversalityAnalysis:
    """Distances between flows, their components, and universality classes (scikit-learn style).

    Parameters
    ----------
    couplings : coupling sets of the shared space (default ``("density",)``)
    depth_points : normalised depths the per-layer couplings are resampled onto (default 8; the
        cross-architecture coordinates)
    rank : trajectory rank: ``"auto"`` (:func:`auto_rank`: each extra direction needs a singular value
        >= ``rank_rtol`` x the largest and must divide the residual by ``rank_gain``; at most
        ``max_rank``), an int, or None (full least squares)
    tol : marginal band around ``|lambda| = 1``: eigenvalues with ``|lambda| >= 1 - tol`` are retained
    weights : component weights of the total (default :data:`DEFAULT_WEIGHTS`)
    spectrum : ``"coupling"`` (exponents of the coupling-space fit) or ``"koopman"`` (DMD of the
        parameter snapshots enters the total in place of it; both are reported)
    threshold : total distance at or below which two models are joined (default
        :data:`DEFAULT_THRESHOLD`), or ``"auto"`` (:func:`largest_gap_threshold`)
    linkage : scipy linkage method of the hierarchical clustering (default ``"average"``)
    rounds, rate : data-free flow computed for single-round model stores (see :func:`flow_signature`)
    koopman_rank : DMD rank (default ``T - 1``)
    fixed_point_ridge : ridge of :func:`ridge_fixed_point` (default 0.05; 0: FlowFit's exact fixed point)
    scheduler, n_workers : where signatures are computed: ``"sync"`` (default: this process), None /
        ``"processes"`` (local dask processes) or a dask.distributed address / Client
        (:func:`rganalysis.parallel.map_flows`)
    device : where couplings and DMD Grams are computed ("auto" default: CUDA when present)

    Fitted attributes: ``signatures_`` (list of :class:`FlowSignature`), ``names_``, ``distance_``
    (DataArray (model, model_other)), ``components_`` (DataArray (component, model, model_other)),
    ``weights_``, ``threshold_``, ``threshold_rule_`` (``"fixed"`` or ``"largest_gap"``),
    ``graph_`` (networkx Graph), ``classes_`` (lists of names), ``hierarchy_`` (dict, see
    :func:`hierarchical_clustering`), ``scheduler_`` (where it ran).
    """

    def __init__(
        self,
        couplings: Sequence[str] = ("density",),
        depth_points: int | None = DEFAULT_DEPTH_POINTS,
        *,
        rank: int | str | None = "auto",
        rank_rtol: float = DEFAULT_RANK_RTOL,
        max_rank: int = DEFAULT_MAX_RANK,
        rank_gain: float = DEFAULT_RANK_GAIN,
        tol: float = 0.05,
        weights: Mapping[str, float] | None = None,
        spectrum: str = "coupling",
        threshold: float | str = DEFAULT_THRESHOLD,
        linkage: str = "average",
        rounds: int | None = None,
        rate: float = 0.2,
        koopman_rank: int | None = None,
        fixed_point_ridge: float = DEFAULT_FIXED_POINT_RIDGE,
        scheduler: Any = "sync",
        n_workers: int | None = None,
        device: str = "auto",
    ):
        self.couplings = couplings
        self.depth_points = depth_points
        self.rank = rank
        self.rank_rtol = rank_rtol
        self.max_rank = max_rank
        self.rank_gain = rank_gain
        self.tol = tol
        self.weights = weights
        self.spectrum = spectrum
        self.threshold = threshold
        self.linkage = linkage
        self.rounds = rounds
        self.rate = rate
        self.koopman_rank = koopman_rank
        self.fixed_point_ridge = fixed_point_ridge
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.device = device

    def _signature_options(self) -> dict[str, Any]:
        return dict(couplings=tuple([self.couplings] if isinstance(self.couplings, str) else self.couplings),
                    depth_points=self.depth_points, rank=self.rank, rank_rtol=self.rank_rtol,
                    max_rank=self.max_rank, rank_gain=self.rank_gain, tol=self.tol, rounds=self.rounds, rate=self.rate,
                    koopman=self.spectrum == "koopman", koopman_rank=self.koopman_rank,
                    fixed_point_ridge=self.fixed_point_ridge, device=self.device)

    def fit(self, flows: Sequence[Any], names: Sequence[str] | None = None) -> UniversalityAnalysis:
        """Fit every flow (store paths, ParameterSets or ready :class:`FlowSignature` objects),
        then compute distances and classes.  Returns self."""
        from rganalysis.parallel import map_flows, resolve_scheduler

        flows = list(flows)
        if not flows:
            raise InvalidParameterError("no flows to compare")
        if names is not None and len(names) != len(flows):
            raise InvalidParameterError(f"{len(names)} names for {len(flows)} flows")
        _weights(self.weights, self.spectrum)  # validate early
        opts = self._signature_options()
        todo = [(i, f) for i, f in enumerate(flows) if not isinstance(f, FlowSignature)]
        sigs: list[FlowSignature | None] = [f if isinstance(f, FlowSignature) else None for f in flows]
        paths = [(i, f) for i, f in todo if isinstance(f, (str, os.PathLike))]
        opened = [(i, f) for i, f in todo if not isinstance(f, (str, os.PathLike))]
        kw = [{**opts, "name": None if names is None else names[i]} for i, _ in paths]
        for (i, _), s in zip(paths, map_flows(_signature_task, [(str(f), k) for (_, f), k in zip(paths, kw, strict=True)],
                                              scheduler=self.scheduler, n_workers=self.n_workers), strict=True):
            sigs[i] = s
        for i, f in opened:  # open stores cannot travel to workers
            sigs[i] = flow_signature(f, **{**opts, "name": None if names is None else names[i]})
        self.scheduler_ = resolve_scheduler(self.scheduler) if paths else "sync"
        sig_list = [s for s in sigs if s is not None]
        if names is not None:
            for s, n in zip(sig_list, names, strict=True):
                s.name = str(n)
        _dedupe_names(sig_list)
        self.signatures_ = sig_list
        return self._classify()

    def _classify(self) -> UniversalityAnalysis:
        sigs = self.signatures_
        self.names_ = [s.name for s in sigs]
        self.distance_, self.components_ = distance_matrix(sigs, self.weights, self.spectrum)
        self.weights_ = {k: v for k, v in _weights(self.weights, self.spectrum).items()
                         if k in self.components_["component"].values}
        D = self.distance_.values
        if self.threshold == "auto":
            self.threshold_ = largest_gap_threshold(D, self.names_, self.linkage)
            self.threshold_rule_ = "largest_gap"
        else:
            t = float(self.threshold)
            if not (math.isfinite(t) and t >= 0):
                raise InvalidParameterError(f"threshold must be a number >= 0 or 'auto', got {self.threshold!r}")
            self.threshold_, self.threshold_rule_ = t, "fixed"
        self.graph_ = class_graph(D, self.names_, self.threshold_)
        self.classes_ = classes_from_distance(D, self.names_, self.threshold_)
        self.hierarchy_ = hierarchical_clustering(D, self.names_, self.linkage, self.threshold_)
        return self

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``rganalysis compare --json``: ``models``, ``distance`` (matrix), ``components``
        (name -> matrix, ``null`` where undefined), ``weights``, ``classes``, ``threshold``,
        ``threshold_rule``, ``graph`` (nodes, weighted edges), ``hierarchical`` (linkage, dendrogram,
        merges, clusters), ``fits`` (per model: rank, b, eigenvalues with exponents, fixed point,
        warnings) and ``settings``."""

        def mat(a: np.ndarray) -> list[list[float | None]]:
            return [[float(x) if math.isfinite(x) else None for x in row] for row in np.asarray(a)]

        return {
            "models": list(self.names_),
            "distance": mat(self.distance_.values),
            "components": {str(k): mat(self.components_.sel(component=k).values)
                           for k in self.components_["component"].values},
            "weights": dict(self.weights_),
            "total": "sum over components of weights[component] * components[component] (weight 0: reported only)",
            "classes": [list(c) for c in self.classes_],
            "threshold": float(self.threshold_),
            "threshold_rule": self.threshold_rule_,
            "graph": {"nodes": list(self.graph_.nodes),
                      "edges": [[u, v, float(d["weight"])] for u, v, d in self.graph_.edges(data=True)]},
            "hierarchical": self.hierarchy_,
            "fits": {s.name: s.to_json() for s in self.signatures_},
            "settings": {"couplings": list([self.couplings] if isinstance(self.couplings, str) else self.couplings),
                         "depth_points": self.depth_points, "rank": self.rank, "rank_rtol": self.rank_rtol,
                         "max_rank": self.max_rank, "rank_gain": self.rank_gain, "tol": self.tol, "spectrum": self.spectrum, "p": 1,
                         "linkage": self.linkage, "rounds": self.rounds,
                         "fixed_point_ridge": self.fixed_point_ridge,
                         "rate": self.rate if self.rounds else None, "scheduler": self.scheduler_},
        }


def _dedupe_names(sigs: Sequence[FlowSignature]) -> None:
    """Make names unique (``name``, ``name#2``, ...), in place."""
    seen: dict[str, int] = {}
    for s in sigs:
        n = seen.get(s.name, 0) + 1
        seen[s.name] = n
        if n > 1:
            s.name = f"{s.name}#{n}"


def format_comparison(j: Mapping[str, Any], digits: int = 3) -> str:
    """Text report of a comparison JSON: the total matrix, each component, classes, merges."""
    names = list(j["models"])
    w = max(8, *(len(n) for n in names)) if names else 8

    def table(title: str, M: Sequence[Sequence[float | None]]) -> list[str]:
        lines = [title, " " * w + " " + " ".join(f"{n[:w]:>{w}}" for n in names)]
        for n, row in zip(names, M, strict=True):
            cells = " ".join(f"{'-':>{w}}" if x is None else f"{x:>{w}.{digits}f}" for x in row)
            lines.append(f"{n:<{w}} {cells}")
        return lines

    wtxt = " + ".join(f"{v:g}*{k}" for k, v in j["weights"].items() if v > 0)
    out = table(f"total distance = {wtxt}", j["distance"])
    for k, M in j["components"].items():
        out += [""] + table(f"component {k} (weight {j['weights'].get(k, 0):g})", M)
    out += ["", f"classes (graph components, total <= {j['threshold']:.4g}, {j['threshold_rule']} threshold):"]
    out += [f"  {i + 1}: {', '.join(c)}" for i, c in enumerate(j["classes"])]
    h = j["hierarchical"]
    if h.get("merges"):
        out += [f"hierarchical clustering ({h['method']} linkage), merges:"]
        out += [f"  {m['height']:.{digits}f}: {{{', '.join(m['left'])}}} + {{{', '.join(m['right'])}}}"
                for m in h["merges"]]
        if "clusters" in h:
            out += [f"  clusters cut at {j['threshold']:.4g}: " + " | ".join(", ".join(c) for c in h["clusters"])]
    for name, f in j.get("fits", {}).items():
        ys = [e["exponent"] for e in f["eigenvalues"] if e["retained"]]
        ytxt = ", ".join("-inf" if y is None else f"{y:.3f}" for y in ys) or "none"
        out.append(f"fit {name}: rank {f['rank']}, b = {f['b']:.4g}, retained exponents [{ytxt}], "
                   f"fixed point ({f['fixed_point_method']})" + (f"; {len(f['warnings'])} warning(s)"
                                                                 if f.get("warnings") else ""))
    return "\n".join(out)
