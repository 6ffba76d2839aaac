"""Flow signatures: what a distance between two flows needs from one fitted flow (its spectrum, fixed
point, eigen-subspace), and :func:`flow_signature`, which fits a stored flow and reduces it to one.
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

from rganalysis.errors import InvalidParameterError, TooFewRoundsError
from rganalysis.fit.auto import (
    DEFAULT_DEPTH_POINTS,
    DEFAULT_MAX_RANK,
    DEFAULT_RANK_GAIN,
    DEFAULT_RANK_RTOL,
    auto_rank,
)
from rganalysis.fit.flowfit import FlowFit
from rganalysis.universality.defaults import DEFAULT_FIXED_POINT_RIDGE
from rganalysis.universality.units import UnitSignature, require_masks

__all__ = [
    "auto_rank",
    "DEFAULT_DEPTH_POINTS",
    "DEFAULT_FIXED_POINT_RIDGE",
    "DEFAULT_MAX_RANK",
    "DEFAULT_RANK_GAIN",
    "DEFAULT_RANK_RTOL",
    "flow_signature",
    "FlowSignature",
    "koopman_eigenvalues",
    "ridge_fixed_point",
]


# ====================================================================================================
# signatures
# ====================================================================================================
def ridge_fixed_point(
    jacobian: np.ndarray,
    offset: np.ndarray,
    anchor: np.ndarray,
    scale: np.ndarray | None = None,
    ridge: float = DEFAULT_FIXED_POINT_RIDGE,
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
    tol : the fit's near-fixed-point tolerance (recorded; the retained directions use the band in y,
        :data:`~rganalysis.fit.fixed_points.MARGINAL_Y`)
    fixed_point : (C,) float64, ``K*`` in coupling units (:func:`ridge_fixed_point`)
    fixed_point_method : ``"ridge=<value>"``, ``"exact"`` (``(I - J)^-1 c``, ridge 0) or ``"lstsq"``
        (ridge 0 and ``I - J`` singular: least squares nearest the last round)
    coupling_ms : (C,) float64, mean over the flow's rounds of ``K[n, c]^2`` (sets the units ``s``)
    rank : trajectory rank of the fit
    n_rounds : rounds of the flow (pairs = n_rounds - 1)
    koopman_eigenvalues : (k,) complex128 or None, DMD eigenvalues of the parameter snapshots
    meta : free-form provenance (source path, architecture, warnings of the fit, ...)
    units : :class:`~rganalysis.universality.units.UnitSignature` or None, what the unit components need
    response : the JSON of the response Jacobian stored in the flow (:func:`rganalysis.response_jacobian`,
        read by :func:`~rganalysis.fit.response_store.read_response`), or None
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
    units: UnitSignature | None = None
    response: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.couplings = [str(c) for c in self.couplings]
        self.eigenvalues = np.asarray(self.eigenvalues, dtype=np.complex128).reshape(-1)
        self.eigenvectors = np.asarray(self.eigenvectors, dtype=np.complex128).reshape(
            len(self.couplings), -1
        )
        self.fixed_point = np.asarray(self.fixed_point, dtype=np.float64).reshape(-1)
        self.coupling_ms = np.asarray(self.coupling_ms, dtype=np.float64).reshape(-1)
        if self.koopman_eigenvalues is not None:
            self.koopman_eigenvalues = np.asarray(self.koopman_eigenvalues, dtype=np.complex128).reshape(-1)
        c = len(self.couplings)
        if self.eigenvectors.shape[1] != self.eigenvalues.size:
            raise InvalidParameterError(
                f"{self.name}: {self.eigenvalues.size} eigenvalues but "
                f"{self.eigenvectors.shape[1]} eigenvectors"
            )
        if self.fixed_point.size != c or self.coupling_ms.size != c:
            raise InvalidParameterError(f"{self.name}: fixed point / coupling scale must have {c} entries")
        if not (math.isfinite(self.b) and self.b > 1.0):
            raise InvalidParameterError(f"{self.name}: scale factor b must be > 1, got {self.b}")

    # ------------------------------------------------------------------ derived
    @property
    def response_eigenvalues(self) -> np.ndarray | None:
        """(D,) complex128 eigenvalues of the stored response Jacobian (decreasing ``|lambda|``), or None."""
        if self.response is None:
            return None
        return np.array(
            [complex(e["re"] or 0.0, e["im"] or 0.0) for e in self.response["eigenvalues"]],
            dtype=np.complex128,
        )

    @property
    def retained(self) -> np.ndarray:
        """(r,) bool: relevant or marginal directions, exponent ``y >= -MARGINAL_Y``
        (:data:`~rganalysis.fit.fixed_points.MARGINAL_Y`: the band is in y, the same at every rate)."""
        from rganalysis.fit.fixed_points import MARGINAL_Y

        return self.exponents >= -MARGINAL_Y

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
    def from_fit(
        cls,
        fit: Any,
        name: str | None = None,
        *,
        koopman: np.ndarray | None = None,
        units: UnitSignature | None = None,
        meta: Mapping[str, Any] | None = None,
        fixed_point_ridge: float = DEFAULT_FIXED_POINT_RIDGE,
    ) -> FlowSignature:
        """The signature of a fitted :class:`~rganalysis.fit.FlowFit` (trajectory estimator).

        ``coupling_ms`` pools all rounds of all the fit's flows; the fixed point is
        :func:`ridge_fixed_point` anchored at the last round of the first flow (FlowFit's exact one is
        kept in ``meta["fixed_point_exact"]``).
        """
        est = getattr(fit, "estimator_", None)
        if est is None:
            raise InvalidParameterError("FlowSignature.from_fit needs a fitted FlowFit")
        K = np.concatenate(
            [np.asarray(k.transpose("round", "coupling").values, dtype=np.float64) for k in fit.couplings_],
            axis=0,
        )
        anchor = np.asarray(fit.couplings_[0].transpose("round", "coupling").values[-1], dtype=np.float64)
        fp, method = ridge_fixed_point(
            est.jacobian_, est.offset_, anchor, getattr(est, "coupling_scale_", None), fixed_point_ridge
        )
        meta = {
            "fixed_point_exact": [
                float(x) if math.isfinite(x) else None for x in np.asarray(fit.fixed_point_, dtype=np.float64)
            ],
            **(meta or {}),
        }
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
            units=units,
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
            "eigenvalues": [
                {
                    "re": float(z.real),
                    "im": float(z.imag),
                    "abs": float(abs(z)),
                    "exponent": num(y[i]),
                    "retained": bool(self.retained[i]),
                }
                for i, z in enumerate(self.eigenvalues)
            ],
            "fixed_point": [num(x) for x in self.fixed_point],
            "fixed_point_method": self.fixed_point_method,
        }
        if self.koopman_eigenvalues is not None:
            out["koopman_eigenvalues"] = [
                {"re": float(z.real), "im": float(z.imag), "abs": float(abs(z))}
                for z in self.koopman_eigenvalues
            ]
        if self.response is not None:
            out["response"] = {
                k: self.response[k]
                for k in ("round", "b", "noise_floor", "n_directions", "n_retrains", "type", "eigenvalues")
                if k in self.response
            }
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out


# ====================================================================================================
# from stores to signatures
# ====================================================================================================
def koopman_eigenvalues(
    pset: Any, rank: int | None = None, energy: float | None = None, device: str = "auto"
) -> np.ndarray:
    """Eigenvalues of exact DMD (:class:`rganalysis.koopman.KoopmanDMD`) of a flow's parameter
    snapshots ``theta_n * m_n`` over its pruned tensors, streamed one tensor at a time (no bagging).

    Parameters
    ----------
    pset : a flow :class:`~rganalysis.store.ParameterSet` (T = ``n_rounds`` >= 2 snapshots)
    rank, energy : DMD truncation (default rank ``T - 1``, lowered to the numerical rank)
    device : where the Gram is accumulated ("auto": CUDA when present)

    Returns
    -------
    (r,) complex128, sorted by decreasing modulus.
    """
    from rganalysis.koopman.dmd import KoopmanDMD

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dmd = KoopmanDMD(
            rank=rank, energy=energy, subset="prunable", scale="none", n_bags=0, device=device
        ).fit(pset)
    return np.asarray(dmd.eigenvalues_, dtype=np.complex128)


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
    units: bool = True,
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
    units : also compute the :class:`~rganalysis.universality.units.UnitSignature` (needs nested masks)
    """
    from rganalysis.fit.streaming import stream_flow_couplings
    from rganalysis.store.hdf5 import load
    from rganalysis.store.parameter_set import ParameterSet

    own = not isinstance(source, ParameterSet)
    pset = load(Path(source)) if own else source
    try:
        label = name or str(pset.attrs.get("name") or "") or (Path(source).stem if own else "model")
        meta: dict[str, Any] = {
            "architecture": str(pset.attrs.get("architecture", "")),
            "source": str(source) if own else str(getattr(pset, "path", "") or ""),
        }
        flow = pset
        if pset.n_rounds < 2:
            if rounds is None:
                raise TooFewRoundsError(
                    f"{label}: a single-round model store has no flow; record one with `rganalysis flow` "
                    "or pass rounds= (CLI: --rounds N --rate P) to compute a data-free flow here"
                )
            from rganalysis.rg.flow import compute_flow

            flow = compute_flow(pset, int(rounds), float(rate), device=device, progress=False)
            meta["flow"] = {"computed": True, "rounds": int(rounds), "rate": float(rate), "rescaling": "none"}
        else:
            require_masks(pset, label)
        K = stream_flow_couplings(flow, couplings, device=device)
        if depth_points:
            from rganalysis.fit.couplings import resample_depth

            K = resample_depth(K, int(depth_points))
        r = auto_rank(K, rank_rtol, max_rank, rank_gain) if rank == "auto" else rank
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = FlowFit(
                tuple(couplings), "trajectory", rank=r, ridge=ridge, n_bootstrap=0, tol=tol, device=device
            ).fit(flow, couplings=K)
        meta["warnings"] = sorted({str(w.message) for w in caught})
        meta["couplings_sets"] = list(couplings)
        meta["depth_points"] = depth_points
        eig = koopman_eigenvalues(flow, rank=koopman_rank, device=device) if koopman else None
        usig = UnitSignature.from_flow(flow, label) if units else None
        sig = FlowSignature.from_fit(
            fit, label, koopman=eig, units=usig, meta=meta, fixed_point_ridge=fixed_point_ridge
        )
        path = Path(source) if own else getattr(pset, "path", None)
        if path is not None and flow is pset:
            from rganalysis.fit.response_store import read_response

            sig.response = read_response(path)
        return sig
    finally:
        if own:
            pset.close()


def signature_task(args: tuple[Any, dict[str, Any]]) -> FlowSignature:
    """dask task: (source, options) -> signature (module level, so it pickles)."""
    source, kw = args
    return flow_signature(source, **kw)
