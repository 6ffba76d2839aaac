"""Linearising the RG map ``K_{n+1} = R(K_n)``: :class:`TrajectoryEstimator` (affine fit over the
one-step pairs of recorded flows) and :class:`ResponseEstimator` (Monte Carlo RG: the response of one
step to perturbations of a state), sharing one regression core.  Conventions: docs/design.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from rganalysis.base import Estimator
from rganalysis.errors import (
    DegenerateRegressionError,
    InvalidParameterError,
    RankError,
    TooFewRoundsError,
)
from rganalysis.fit.couplings import compute_couplings, coupling_values
from rganalysis.fit.intervals import (
    ROWS_PER_PARAMETER,
    DegenerateResample,
    IntervalWarning,
    draw_resamples,
    eigenvalue_intervals,
)
from rganalysis.fit.spectra import sort_eigenvalues
from rganalysis.store.state import State, resolve_device

__all__ = [
    "flow_pairs",
    "frozen_couplings",
    "IllConditionedWarning",
    "perturb_state",
    "PERTURBATION_FAMILIES",
    "ResponseEstimator",
    "TrajectoryEstimator",
]

#: Perturbation families of :class:`ResponseEstimator`.
PERTURBATION_FAMILIES = ("threshold", "random", "rescale")


class IllConditionedWarning(RuntimeWarning):
    """A fit went through but is ill-conditioned (the message gives the reason and the number)."""


# ====================================================================================================
# regression core
# ====================================================================================================
@dataclass
class _Fit:
    jacobian: np.ndarray
    offset: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    singular_values: np.ndarray
    condition_number: float
    rank: int
    residuals: np.ndarray
    residual: float
    r2: float
    r2_per_coupling: np.ndarray
    scale: np.ndarray


def normalise_columns(v: np.ndarray) -> np.ndarray:
    v = np.array(v, dtype=np.complex128)
    for j in range(v.shape[1]):
        nrm = np.linalg.norm(v[:, j])
        if nrm > 0:
            col = v[:, j] / nrm
            k = int(np.argmax(np.abs(col)))
            col = col * (abs(col[k]) / col[k])  # largest component real and positive
            v[:, j] = col
    return v


def _direction_text(vec: np.ndarray, names: Sequence[str], k: int = 3) -> str:
    order = np.argsort(-np.abs(vec))[:k]
    return " ".join(f"{vec[i]:+.2f}*{names[i]}" for i in order)


def affine_fit(
    X: np.ndarray,
    Y: np.ndarray,
    names: Sequence[str],
    *,
    rank: int | None,
    ridge: float,
    max_condition: float,
    warn_condition: float,
    what: str,
    quiet: bool = False,
) -> _Fit:
    """Least-squares affine map ``Y ~ X J^T + c`` over rows (samples), X, Y of shape (M, C)."""
    m, c = X.shape
    x_mean = X.mean(axis=0)
    y_mean = Y.mean(axis=0)
    Xc = X - x_mean
    Yc = Y - y_mean
    scale = Xc.std(axis=0)
    const = (scale == 0) | (scale <= 1e-12 * np.abs(x_mean))
    if const.any():
        bad = [names[i] for i in np.flatnonzero(const)]
        if ridge == 0 and rank is None:
            raise DegenerateRegressionError(
                f"{what}: coupling(s) {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''} do not vary "
                f"across the {m} inputs, so the regression has no information in those directions"
            )
        if not quiet:
            warnings.warn(
                f"{what}: coupling(s) {', '.join(bad[:6])} do not vary; their columns of J are "
                "set by the regularisation only",
                IllConditionedWarning,
                stacklevel=3,
            )
        scale = np.where(const, 1.0, scale)
    Xs = Xc / scale
    Ys = Yc / scale
    U, s, Vt = np.linalg.svd(Xs, full_matrices=False)
    r = c if rank is None else int(rank)
    r = min(r, s.size)
    s_r = s[:r]
    # below numpy's matrix_rank tolerance a singular value is round-off: the design is rank-deficient
    # and its condition number is infinite, whatever the BLAS returned for it
    tiny = s_r[0] * max(m, c) * np.finfo(np.float64).eps
    cond = float(s_r[0] / s_r[-1]) if s_r[-1] > tiny else math.inf
    if ridge == 0 and not cond <= max_condition:
        v_min = Vt[r - 1]
        raise DegenerateRegressionError(
            f"{what}: the design is singular or ill-conditioned (condition number {cond:.3g} > "
            f"{max_condition:.0e}); the inputs barely vary along {_direction_text(v_min, names)} "
            "(standardised couplings). Give more varied data, fewer couplings, rank= or ridge="
        )
    if cond > warn_condition and not quiet:
        warnings.warn(
            f"{what}: ill-conditioned design (condition number {cond:.3g} > {warn_condition:.0e}); "
            "the Jacobian is poorly determined along "
            f"{_direction_text(Vt[r - 1], names)}",
            IllConditionedWarning,
            stacklevel=3,
        )
    filt = s_r / (s_r**2 + ridge * m)
    Ur = U[:, :r]
    Vr = Vt[:r].T  # (C, r) spatial directions
    B = Ys.T @ Ur * filt  # (C, r)
    A = B @ Vr.T  # standardised Jacobian (C, C)
    if rank is None:
        lam, W = np.linalg.eig(A)
        vecs_s = W
    else:
        A_red = Vr.T @ B  # (r, r)
        lam, W = np.linalg.eig(A_red)
        vecs_s = B @ W  # exact DMD modes (times lambda)
        small = np.linalg.norm(vecs_s, axis=0) <= 1e-12 * max(1.0, np.abs(lam).max())
        if small.any():
            vecs_s[:, small] = (Vr @ W)[:, small]
    order = sort_eigenvalues(lam)
    lam = lam[order]
    vecs = normalise_columns(scale[:, None] * vecs_s[:, order])
    J = scale[:, None] * A / scale[None, :]
    off = y_mean - J @ x_mean
    res = Y - X @ J.T - off
    rms = float(np.sqrt(np.mean(res**2)))
    ss_tot_c = (Ys**2).sum(axis=0)
    ss_res_c = ((res / scale) ** 2).sum(axis=0)
    tot = float(ss_tot_c.sum())
    r2 = 1.0 - float(ss_res_c.sum()) / tot if tot > 0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        r2c = np.where(ss_tot_c > 0, 1.0 - ss_res_c / ss_tot_c, np.nan)
    return _Fit(J, off, lam.astype(np.complex128), vecs, s, cond, r, res, rms, r2, r2c, scale)


def _fixed_point(J: np.ndarray, c: np.ndarray, what: str, quiet: bool = False) -> np.ndarray:
    """``(I - J)^{-1} c``; NaN with a warning when ``I - J`` is singular."""
    n = J.shape[0]
    M = np.eye(n) - J
    cond = np.linalg.cond(M)
    if not np.isfinite(cond) or cond > 1e12:
        if not quiet:
            warnings.warn(
                f"{what}: I - J is singular (condition number {cond:.3g}; an eigenvalue is 1), "
                "so the affine map has no unique fixed point; fixed_point_ is NaN",
                IllConditionedWarning,
                stacklevel=3,
            )
        return np.full(n, np.nan)
    return np.linalg.solve(M, c)


def _bootstrap(
    X: np.ndarray,
    Y: np.ndarray,
    names: Sequence[str],
    ref: np.ndarray,
    *,
    n_bootstrap: int,
    rng: np.random.Generator,
    fit_kw: dict[str, Any],
    min_unique: int,
    ci_level: float,
    what: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Resample rows; each resample's eigenvalues matched to ``ref``; intervals under the policy of
    :mod:`rganalysis.fit.intervals` (a resample with fewer than ``min_unique`` distinct rows is counted
    as degenerate).  With fewer than :data:`ROWS_PER_PARAMETER` rows per parameter of a row of the
    Jacobian (``C + 1``, whatever the rank or ridge) nothing is resampled: the resamples of so few rows
    are near-singular fits whose spread is not the estimate's (no interval, so no class).

    Returns (ci (r, 2) of |lambda|, matched |mu| samples (n_ok, r), n_ok).
    """
    m, c = X.shape
    if m < ROWS_PER_PARAMETER * (c + 1):
        if n_bootstrap > 0:
            warnings.warn(
                f"{what}: no eigenvalue interval reported (NaN, class undetermined): {m} rows for "
                f"{c + 1} parameters per row, and an interval needs {ROWS_PER_PARAMETER} rows per parameter "
                f"({ROWS_PER_PARAMETER * (c + 1)}); nothing resampled",
                IntervalWarning,
                stacklevel=3,
            )
        return np.full((ref.size, 2), np.nan), np.empty((0, ref.size)), 0

    def draw() -> np.ndarray:
        idx = rng.integers(0, m, m)
        if np.unique(idx).size < min_unique:
            raise DegenerateResample(f"fewer than {min_unique} distinct rows")
        try:
            return affine_fit(X[idx], Y[idx], names, quiet=True, what=what, **fit_kw).eigenvalues
        except DegenerateRegressionError as e:
            raise DegenerateResample("degenerate design") from e

    res = draw_resamples(ref, n_bootstrap, draw)
    ci, _ = eigenvalue_intervals(
        ref, res, level=ci_level, what=f"{what} bootstrap over {m} rows", lower_bound=0.0
    )
    return ci, np.abs(res.values), res.n_usable


def _warn_wide_ci(ci: np.ndarray, lam: np.ndarray, width: float, what: str, hint: str) -> None:
    """Warn when a bootstrap interval of |lambda| is wider than ``width`` (the eigenvalue is not pinned down)."""
    if not np.isfinite(ci).all() or width is None:
        return
    w = ci[:, 1] - ci[:, 0]
    bad = np.flatnonzero(w > width)
    if bad.size:
        txt = ", ".join(f"|lambda|={abs(lam[i]):.3g} in [{ci[i, 0]:.3g}, {ci[i, 1]:.3g}]" for i in bad[:4])
        warnings.warn(
            f"{what}: eigenvalue(s) poorly determined by the data (bootstrap interval wider than "
            f"{width:g}): {txt}. {hint}",
            IllConditionedWarning,
            stacklevel=3,
        )


class _LinearisedMap(Estimator):
    """Shared fitted attributes and helpers."""

    couplings_: list[str]
    jacobian_: np.ndarray
    offset_: np.ndarray
    eigenvalues_: np.ndarray
    eigenvectors_: np.ndarray
    fixed_point_: np.ndarray
    residual_: float
    residuals_: np.ndarray
    r2_: float
    r2_per_coupling_: np.ndarray
    condition_number_: float
    singular_values_: np.ndarray
    rank_: int
    eigenvalue_ci_: np.ndarray
    eigenvalue_bootstrap_: np.ndarray
    n_bootstrap_: int

    def _store(self, f: _Fit, names: Sequence[str]) -> None:
        self.couplings_ = list(names)
        self.jacobian_ = f.jacobian
        self.offset_ = f.offset
        self.eigenvalues_ = f.eigenvalues
        self.eigenvectors_ = f.eigenvectors
        self.residuals_ = f.residuals
        self.residual_ = f.residual
        self.r2_ = f.r2
        self.r2_per_coupling_ = f.r2_per_coupling
        self.condition_number_ = f.condition_number
        self.singular_values_ = f.singular_values
        self.rank_ = f.rank
        self.coupling_scale_ = f.scale

    def jacobian_dataarray(self) -> xr.DataArray:
        """``jacobian_`` as a DataArray with dims ``(coupling_out, coupling_in)``."""
        return xr.DataArray(
            self.jacobian_,
            dims=("coupling_out", "coupling_in"),
            coords={"coupling_out": self.couplings_, "coupling_in": self.couplings_},
            name="jacobian",
        )


# ====================================================================================================
# trajectory fits
# ====================================================================================================
def _as_flow_array(flow: Any, i: int) -> tuple[np.ndarray, list[str]]:
    if isinstance(flow, xr.DataArray):
        if set(flow.dims) != {"round", "coupling"}:
            raise InvalidParameterError(f"flow {i} must have dims (round, coupling), got {flow.dims}")
        f = flow.transpose("round", "coupling")
        return np.asarray(f.values, dtype=np.float64), [str(c) for c in f["coupling"].values]
    arr = np.asarray(flow, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidParameterError(f"flow {i} must be 2-d (round, coupling), got shape {arr.shape}")
    return arr, [f"k{j}" for j in range(arr.shape[1])]


def flow_pairs(
    flows: xr.DataArray | np.ndarray | Sequence[xr.DataArray | np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """All one-step pairs of one or more flows.

    Returns ``(X, Y, flow_index, names)``: X, Y of shape (M, C) with ``Y[i] = K_{n+1}`` following
    ``X[i] = K_n`` in flow ``flow_index[i]``.  All flows must share their coupling names.
    """
    if isinstance(flows, (xr.DataArray, np.ndarray)):
        flows = [flows]
    flows = list(flows)
    if not flows:
        raise InvalidParameterError("no flows given")
    xs, ys, fi = [], [], []
    names: list[str] | None = None
    for i, fl in enumerate(flows):
        arr, nm = _as_flow_array(fl, i)
        if names is None:
            names = nm
        elif nm != names:
            raise InvalidParameterError(f"flow {i} has different couplings from flow 0")
        if not np.isfinite(arr).all():
            where = np.argwhere(~np.isfinite(arr))
            bad = sorted({names[j] for j in where[:, 1]})
            raise InvalidParameterError(
                f"flow {i} has non-finite values in {', '.join(bad[:6])} from round {int(where[:, 0].min())} "
                "(relative couplings are undefined once the network, or a layer they divide by, is empty)"
            )
        if arr.shape[0] >= 2:
            xs.append(arr[:-1])
            ys.append(arr[1:])
            fi.append(np.full(arr.shape[0] - 1, i))
    assert names is not None
    if not xs:
        return np.empty((0, len(names))), np.empty((0, len(names))), np.empty(0, int), names
    return np.vstack(xs), np.vstack(ys), np.concatenate(fi), names


class TrajectoryEstimator(_LinearisedMap):
    """Affine fit ``K_{n+1} = J K_n + c`` over the one-step pairs of recorded flows.

    Parameters
    ----------
    rank : int or None
        Truncate to this many directions (exact DMD on the standardised, centred pairs).  None: full
        least squares, which needs at least ``C + 1`` pairs for C couplings.
    ridge : float >= 0
        Tikhonov penalty in standardised units: ``ridge * M`` is added to the squared singular values
        of the standardised design (M pairs), i.e. relative to unit variance per coupling.
    n_bootstrap : int >= 0
        Bootstrap resamples of the pairs (across rounds and flows) for ``eigenvalue_ci_``.
    random_state : int, seed of the bootstrap.
    ci_level : float, central probability of ``eigenvalue_ci_`` (default 0.95).
    max_condition : condition number above which an unregularised fit raises
        :class:`DegenerateRegressionError`.
    warn_condition : condition number above which a fit warns (:class:`IllConditionedWarning`).
    ci_warn_width : warn when the bootstrap interval of some ``|lambda|`` is wider than this (the data
        do not pin that eigenvalue down; typical of a single nonlinear flow).  None: never.

    Notes
    -----
    The affine model is a *global* linearisation over the region the pairs cover.  Pairs from a
    single flow lie on a curve, so they determine J only along the flow; combine several flows started
    from perturbed states to pin down the other directions (see docs/theory.md).
    """

    def __init__(
        self,
        rank: int | None = None,
        ridge: float = 0.0,
        n_bootstrap: int = 200,
        random_state: int | None = 0,
        ci_level: float = 0.95,
        max_condition: float = 1e10,
        warn_condition: float = 1e4,
        ci_warn_width: float | None = 0.5,
    ) -> None:
        self.rank = rank
        self.ridge = ridge
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state
        self.ci_level = ci_level
        self.max_condition = max_condition
        self.warn_condition = warn_condition
        self.ci_warn_width = ci_warn_width

    def fit(
        self, flows: xr.DataArray | np.ndarray | Sequence[xr.DataArray | np.ndarray]
    ) -> TrajectoryEstimator:
        """Fit on one flow or a list of flows, each (round, coupling) with the same couplings."""
        if self.ridge < 0 or not math.isfinite(self.ridge):
            raise InvalidParameterError(f"ridge must be a finite number >= 0, got {self.ridge}")
        if self.n_bootstrap < 0:
            raise InvalidParameterError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")
        if not 0 < self.ci_level < 1:
            raise InvalidParameterError(f"ci_level must be in (0, 1), got {self.ci_level}")
        X, Y, fi, names = flow_pairs(flows)
        m, c = X.shape
        n_flows = int(np.unique(fi).size) if m else 0
        if self.rank is not None:
            if int(self.rank) != self.rank or self.rank < 1:
                raise InvalidParameterError(f"rank must be a positive integer, got {self.rank!r}")
            if self.rank > c or self.rank > m - 1:
                raise RankError(
                    f"rank {self.rank} asked for, but {m} one-step pairs of {c} couplings "
                    f"allow at most {max(min(c, m - 1), 0)}"
                )
        need = (
            c + 1 if (self.rank is None and self.ridge == 0) else (2 if self.rank is None else self.rank + 1)
        )
        if m < need:
            raise TooFewRoundsError(
                f"{m} one-step pair(s) from {n_flows} flow(s) cannot fit an affine map of {c} coupling(s): "
                f"at least {need} pairs are needed (couplings + 1 without rank truncation or ridge). "
                "Record more rounds or flows, use fewer couplings, or set rank= / ridge="
            )
        what = "TrajectoryEstimator"
        fit_kw = dict(
            rank=self.rank,
            ridge=float(self.ridge),
            max_condition=self.max_condition,
            warn_condition=self.warn_condition,
        )
        f = affine_fit(X, Y, names, what=what, **fit_kw)
        self._store(f, names)
        self.fixed_point_ = _fixed_point(f.jacobian, f.offset, what)
        self.n_pairs_ = m
        self.n_flows_ = n_flows
        rng = np.random.default_rng(self.random_state)
        min_unique = (c + 1) if (self.rank is None and self.ridge == 0) else min(m, (self.rank or 1) + 1)
        self.eigenvalue_ci_, self.eigenvalue_bootstrap_, self.n_bootstrap_ = _bootstrap(
            X,
            Y,
            names,
            f.eigenvalues,
            n_bootstrap=self.n_bootstrap,
            rng=rng,
            fit_kw=fit_kw,
            min_unique=min_unique,
            ci_level=self.ci_level,
            what=what,
        )
        _warn_wide_ci(
            self.eigenvalue_ci_,
            f.eigenvalues,
            self.ci_warn_width,
            what,
            f"The {m} pairs from {n_flows} flow(s) fix J only along the region they cover (one "
            "nonlinear flow fixes it across itself only through its curvature); add flows started "
            "from perturbed states, or use the response estimator.",
        )
        return self

    def predict(self, K: np.ndarray) -> np.ndarray:
        """One step of the fitted map, ``K (.., C) -> J K + c``."""
        K = np.asarray(K, float)
        c = self.jacobian_.shape[0]
        if K.ndim == 0 or K.shape[-1] != c:
            raise InvalidParameterError(
                f"predict takes couplings of shape (..., {c}) (the fit's {c} couplings), got {K.shape}"
            )
        return K @ self.jacobian_.T + self.offset_


# ====================================================================================================
# response fits
# ====================================================================================================
class _Perturber:
    """Draws perturbed copies of one state (all work on the state's device)."""

    def __init__(
        self, state: State, family: str, epsilon: float, rng: np.random.Generator, gen: torch.Generator
    ) -> None:
        self.state = state
        self.family = family
        self.epsilon = epsilon
        self.rng = rng
        self.gen = gen
        self.clipped = 0
        self._order: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if family == "threshold":
            for k, w in state.weights.items():
                m = state.masks[k].reshape(-1)
                mag = w.detach().abs().reshape(-1)
                idx = torch.arange(mag.numel(), device=mag.device)
                surv = idx[m]
                pruned = idx[~m]
                surv = surv[torch.argsort(mag[surv])]  # smallest survivors first
                pruned = pruned[torch.argsort(mag[pruned], descending=True)]  # largest pruned first
                self._order[k] = (surv, pruned)

    def draw(self) -> State:
        st = self.state
        eps = self.epsilon
        if self.family == "threshold":
            masks = {}
            for k, m in st.masks.items():
                surv, pruned = self._order[k]
                u = self.rng.uniform(-eps, eps)
                n = int(round(u * surv.numel()))
                flat = m.reshape(-1).clone()
                if n < 0:
                    flat[surv[: min(-n, surv.numel())]] = False
                elif n > 0:
                    if n > pruned.numel():
                        self.clipped += 1
                    flat[pruned[: min(n, pruned.numel())]] = True
                masks[k] = flat.reshape(m.shape)
            return st.with_masks(masks)
        if self.family == "random":
            masks = {}
            for k, m in st.masks.items():
                u = float(self.rng.uniform(0.0, eps))
                r = torch.rand(m.shape, generator=self.gen, device=self.gen.device)
                masks[k] = m & (r.to(m.device) >= u)
            return st.with_masks(masks)
        if self.family == "rescale":
            weights = {k: w * (1.0 + float(self.rng.uniform(-eps, eps))) for k, w in st.weights.items()}
            return st.with_weights(weights)
        raise InvalidParameterError(f"unknown perturbation family {self.family!r}")


def perturb_state(
    state: State,
    perturbation: str = "threshold",
    epsilon: float = 0.02,
    random_state: int | None = 0,
    n: int = 1,
) -> list[State]:
    """``n`` perturbed copies of ``state`` from a :data:`PERTURBATION_FAMILIES` family.

    ``threshold``: each layer prunes (u < 0) its ``|u| * survivors`` smallest survivors or restores
    (u > 0) its ``u * survivors`` largest pruned weights, ``u ~ U(-epsilon, epsilon)`` per layer;
    ``random``: each layer drops each survivor with probability ``u ~ U(0, epsilon)``;
    ``rescale``: each layer's weights are multiplied by ``1 + u``, ``u ~ U(-epsilon, epsilon)``.
    """
    if perturbation not in PERTURBATION_FAMILIES:
        raise InvalidParameterError(
            f"perturbation must be one of {PERTURBATION_FAMILIES}, got {perturbation!r}"
        )
    rng = np.random.default_rng(random_state)
    gen = torch.Generator(device=state.device)
    gen.manual_seed(int(rng.integers(0, 2**62)))
    p = _Perturber(state, perturbation, float(epsilon), rng, gen)
    return [p.draw() for _ in range(int(n))]


def _manifold_report(state: State, rate: float) -> dict[str, Any]:
    """Is ``state`` on the IMP manifold for a global round at ``rate``?

    Threshold-shaped masks (no pruned weight larger than a survivor, per layer) and every layer's
    own threshold below the round's global threshold.
    """
    from rganalysis.fit.theory import global_threshold

    T = global_threshold(state, rate)
    layer_t: dict[str, float] = {}
    shaped = True
    for k, w in state.weights.items():
        m = state.masks[k]
        mag = w.detach().abs()
        surv = mag[m]
        prn = mag[~m]
        t = float(surv.min()) if surv.numel() else math.nan  # the layer keeps |w| >= t (NaN: empty)
        layer_t[k] = t
        if prn.numel() and surv.numel() and float(prn.max()) > t:
            shaped = False
    above = [k for k, t in layer_t.items() if t >= T]
    return {
        "threshold_shaped": shaped,
        "global_threshold": T,
        "layer_thresholds": layer_t,
        "layers_above_global": above,
        "on_manifold": shaped and not above,
    }


def frozen_couplings(
    names: Sequence[str],
    layers: Sequence[str],
    densities: Mapping[str, float],
    still: np.ndarray,
    responses: np.ndarray,
    what: str,
) -> dict[str, str]:
    """Why each coupling in ``still`` (indices into ``names``) is left out of a response regression.

    ``layers``: the layer of each coupling ("" for whole-network ones); ``densities``: layer -> density
    at the state; ``responses``: (n_samples, C) the images' deviations dK', to say whether the step still
    moved the coupling; ``what``: the perturbations, for the message.  Returns coupling name -> reason: a
    dead layer (density 0), a near-empty one (density < 0.001), or a statistic pinned at a boundary.
    """
    out: dict[str, str] = {}
    for i in np.asarray(still, dtype=int):
        d = densities.get(str(layers[i]))
        why = (
            "dead layer (density 0)"
            if d == 0.0
            else f"near-empty layer (density {d:.2g})"
            if d is not None and d < 1e-3
            else f"not moved by any of {what} (frozen, or pinned at a boundary)"
        )
        col = responses[:, i] if responses.size else np.zeros(0)
        if col.size and not np.isfinite(col).all():
            why += "; undefined (NaN) at the state or after the step"
            moved = 0.0
        else:
            moved = float(np.abs(col).max()) if col.size else 0.0
        out[str(names[i])] = why + (
            f"; the step still moved it (max |dK'| = {moved:.3g})" if moved > 0 else ""
        )
    return out


class ResponseEstimator(_LinearisedMap):
    """Linearise one RG step at a state from its response to small perturbations.

    Parameters
    ----------
    rate : float in (0, 1), the pruning fraction p of one round.
    scope : pruning scope passed to :func:`rganalysis.rg.coarse_grain` (``"global"``).
    couplings : coupling sets (see :mod:`rganalysis.fit.couplings`), default ``("density",)``.
    perturbation : ``"threshold"`` (default), ``"random"`` or ``"rescale"`` (see :func:`perturb_state`).
    n_samples : perturbed states, more than the live couplings (those of layers with survivors); ``"auto"``
        (default): :func:`~rganalysis.fit.auto.auto_samples` of them, 6 per regression parameter.
    epsilon : size of the perturbations (fraction of survivors moved / relative rescaling).
    random_state : seed.
    device : where the states are perturbed and coarse-grained (``"auto"``: CUDA if available).
    n_bootstrap : bootstrap resamples of the samples for ``eigenvalue_ci_``.
    ci_level : central probability of ``eigenvalue_ci_``.
    rg_map : optional ``State -> State`` used as R instead of ``coarse_grain(state, rate, scope)``.

    Fitted attributes (besides the shared ones)
    -------------------------------------------
    perturbation_ : str, the family used
    closure_r2_ : float, R^2 of ``dK' ~ J dK`` (standardised): how well the couplings' perturbations
        predict their images; well below 1 means the couplings do not close under R for this family
    base_couplings_ : DataArray (C,), K at the state;  image_couplings_ : DataArray (C,), R(K)
    perturbations_ : (n_samples, C) dK;  responses_ : (n_samples, C) dK'
    manifold_ : dict or None, for global scope: whether the state is on the IMP manifold
        (``on_manifold``, ``global_threshold``, ``layer_thresholds``, ...)
    clipped_ : int, threshold perturbations that wanted to restore more weights than were pruned
    fixed_point_ : fixed point of the linearised map ``K -> R(K0) + c + J (K - K0)``
    all_couplings_ : list of str, every coupling of the state;  ``couplings_`` are those regressed
    frozen_couplings_ : dict, coupling name -> why it was left out: couplings that no perturbation moves
        (a dead layer, a near-empty one whose perturbation rounds to no weight, a statistic pinned at a
        boundary) or that are undefined (NaN) carry no information; they are reported here and left out
        of the regression instead of failing it.  Only when *every* coupling is frozen does the fit raise
        :class:`DegenerateRegressionError`.
    """

    def __init__(
        self,
        rate: float,
        scope: str = "global",
        couplings: str | Sequence[str] = ("density",),
        perturbation: str = "threshold",
        n_samples: int | str = "auto",
        epsilon: float = 0.02,
        random_state: int | None = 0,
        device: str | torch.device = "auto",
        n_bootstrap: int = 200,
        ci_level: float = 0.95,
        rg_map: Callable[[State], State] | None = None,
    ) -> None:
        self.rate = rate
        self.scope = scope
        self.couplings = couplings
        self.perturbation = perturbation
        self.n_samples = n_samples
        self.epsilon = epsilon
        self.random_state = random_state
        self.device = device
        self.n_bootstrap = n_bootstrap
        self.ci_level = ci_level
        self.rg_map = rg_map

    def _map(self) -> Callable[[State], State]:
        if self.rg_map is not None:
            return self.rg_map
        from rganalysis.rg.coarse_graining import coarse_grain

        rate, scope = float(self.rate), self.scope
        return lambda st: coarse_grain(st, rate, scope=scope)

    def _n_samples(self, base: xr.DataArray, densities: Mapping[str, float]) -> int:
        """The perturbed states to draw: ``n_samples``, or :func:`~rganalysis.fit.auto.auto_samples` of the
        live couplings (finite, of a layer with survivors or of the whole network); at least live + 1."""
        from rganalysis.fit.auto import auto_samples

        layers = [str(x) for x in base["layer"].values]
        live = int(
            sum(
                np.isfinite(v) and (not lay or densities.get(lay, 1.0) > 0)
                for v, lay in zip(base.values, layers, strict=True)
            )
        )
        if isinstance(self.n_samples, str):
            if self.n_samples != "auto":
                raise InvalidParameterError(f"n_samples must be 'auto' or an integer, got {self.n_samples!r}")
            return auto_samples(live)
        n = int(self.n_samples)
        if n < live + 1:
            raise InvalidParameterError(
                f"n_samples={n} is too few to fit {live} live couplings (need >= {live + 1}; 'auto' draws "
                f"{auto_samples(live)})"
            )
        return n

    def fit(self, state: State) -> ResponseEstimator:
        """Measure the Jacobian of one round at ``state``."""
        if not 0.0 < float(self.rate) < 1.0:
            raise InvalidParameterError(f"rate must be in (0, 1), got {self.rate}")
        if self.perturbation not in PERTURBATION_FAMILIES:
            raise InvalidParameterError(
                f"perturbation must be one of {PERTURBATION_FAMILIES}, got {self.perturbation!r}"
            )
        if not 0.0 < float(self.epsilon) < 1.0:
            raise InvalidParameterError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if self.n_bootstrap < 0 or not 0 < self.ci_level < 1:
            raise InvalidParameterError("n_bootstrap must be >= 0 and ci_level in (0, 1)")
        what = f"ResponseEstimator(perturbation={self.perturbation!r})"
        R = self._map()
        dev = resolve_device(self.device)
        state = state.to(dev)
        base = compute_couplings(state, self.couplings)
        names = [str(c) for c in base["coupling"].values]
        n_samples = self._n_samples(base, state.densities())
        image = compute_couplings(R(state), self.couplings)

        self.manifold_ = None
        if self.scope == "global":
            self.manifold_ = _manifold_report(state, float(self.rate))
            if self.perturbation == "threshold" and not self.manifold_["on_manifold"]:
                why = (
                    "its masks are not threshold-shaped"
                    if not self.manifold_["threshold_shaped"]
                    else f"layers {self.manifold_['layers_above_global']} keep only weights above the round's "
                    "global threshold"
                )
                warnings.warn(
                    f"{what}: the state is not on the IMP manifold ({why}); the measured Jacobian is "
                    "R's at this state, but the rank-one manifold theory does not apply",
                    IllConditionedWarning,
                    stacklevel=2,
                )

        rng = np.random.default_rng(self.random_state)
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(rng.integers(0, 2**62)))
        pert = _Perturber(state, self.perturbation, float(self.epsilon), rng, gen)
        k0 = base.values
        k0p = image.values
        dK = np.empty((n_samples, len(names)))
        dKp = np.empty_like(dK)
        for i in range(n_samples):
            st = pert.draw()
            dK[i] = coupling_values(st, self.couplings) - k0
            dKp[i] = coupling_values(R(st), self.couplings) - k0p
        self.clipped_ = pert.clipped
        if self.perturbation == "threshold" and pert.clipped > n_samples * len(state.names) // 4:
            warnings.warn(
                f"{what}: {pert.clipped} layer perturbations could not restore as many weights as drawn "
                "(nearly dense layers): the perturbations are one-sided there",
                IllConditionedWarning,
                stacklevel=2,
            )

        undefined = ~(np.isfinite(dK).all(axis=0) & np.isfinite(dKp).all(axis=0))
        still = np.flatnonzero(np.all(dK == 0, axis=0) | undefined)
        if still.size == len(names):
            moved = float(np.abs(dKp).max())
            raise DegenerateRegressionError(
                f"{what}: the perturbations leave coupling(s) {', '.join(names[:6])}"
                f"{' ...' if len(names) > 6 else ''} unchanged in all {n_samples} samples, so the "
                "regression of dK' on dK has no information in those directions"
                + (
                    " (per-layer magnitude rescaling does not change densities)"
                    if self.perturbation == "rescale"
                    else ""
                )
                + (
                    f"; R's output still moved (max |dK'| = {moved:.3g}): these couplings do not describe the "
                    "state completely"
                    if moved > 0
                    else ""
                )
                + ". Use another perturbation family or couplings the family moves."
            )
        # couplings that no perturbation moves (a dead or near-empty layer: frozen, or absorbed at a boundary)
        # carry no information; they are reported and left out of the regression
        self.all_couplings_ = list(names)
        self.frozen_couplings_ = frozen_couplings(
            names,
            [str(x) for x in base["layer"].values],
            state.densities(),
            still,
            dKp,
            f"the {n_samples} {self.perturbation} perturbations",
        )
        if still.size:
            keep = np.setdiff1d(np.arange(len(names)), still)
            names = [names[i] for i in keep]
            dK, dKp = dK[:, keep], dKp[:, keep]
            base, image = base.isel(coupling=keep), image.isel(coupling=keep)
            k0, k0p = k0[keep], k0p[keep]
        fit_kw = dict(rank=None, ridge=0.0, max_condition=1e10, warn_condition=1e4)
        f = affine_fit(dK, dKp, names, what=what, **fit_kw)
        self._store(f, names)
        self.perturbation_ = self.perturbation
        self.closure_r2_ = f.r2
        self.base_couplings_ = base
        self.image_couplings_ = image
        self.perturbations_ = dK
        self.responses_ = dKp
        # fixed point of the linearised map K -> k0p + c + J (K - k0)
        self.fixed_point_ = _fixed_point(f.jacobian, k0p + f.offset - f.jacobian @ k0, what)
        self.n_samples_ = n_samples
        self.eigenvalue_ci_, self.eigenvalue_bootstrap_, self.n_bootstrap_ = _bootstrap(
            dK,
            dKp,
            names,
            f.eigenvalues,
            n_bootstrap=self.n_bootstrap,
            rng=rng,
            fit_kw=fit_kw,
            min_unique=len(names) + 1,
            ci_level=self.ci_level,
            what=what,
        )
        return self
