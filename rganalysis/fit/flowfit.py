"""From a stored flow to its fitted RG spectrum: :class:`FlowFit` (couplings per round, a Jacobian
fit, the fixed point, eigenvalue classes and exponents) and the JSON and text of ``rganalysis fit``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import xarray as xr

from rganalysis.base import Estimator
from rganalysis.errors import InvalidParameterError
from rganalysis.fit.auto import (
    RANK_AGREEMENT,
    auto_rank,
    rank_agreement,
    resolve_depth_points,
)
from rganalysis.fit.couplings import RESCALED_COUPLING_SETS, coupling_domain, flow_couplings, resample_depth
from rganalysis.fit.fixed_points import (
    MARGINAL_Y,
    classify_eigenvalues,
    distance_to_fixed_point,
    effective_scale_factor,
    fixed_point_type,
    fixed_point_wording,
    flow_scale,
    near_fixed_point,
    spectrum_json,
)
from rganalysis.fit.intervals import IntervalWarning, interval_text
from rganalysis.fit.jacobian import ResponseEstimator, TrajectoryEstimator
from rganalysis.store.checks import check_nested
from rganalysis.store.diagnostics import collapsed_layers
from rganalysis.store.hdf5 import load
from rganalysis.store.parameter_set import ParameterSet

__all__ = ["ESTIMATORS", "FlowFit", "format_spectrum"]

ESTIMATORS = ("trajectory", "response")

#: A fixed point within this fraction of a coupling's range over the flow(s) of its domain's boundary is on it.
BOUNDARY_RTOL = 1e-3
#: Options of the response estimator only: name -> (command-line flag, default); the trajectory fit refuses them.
_RESPONSE_OPTIONS = {
    "round": ("--round", None),
    "perturbation": ("--perturbation", "threshold"),
    "n_samples": ("--samples", "auto"),
    "epsilon": ("--epsilon", 0.02),
}
#: Coupling sets made of layer densities alone (which a layer-scope flow fixes by its rate).
_DENSITY_SETS = frozenset({"density_rel", "density_raw", "density", "global_density"})


class FlowFit(Estimator):
    """Fit the linearised RG map of one or more stored flows (scikit-learn style).

    Parameters
    ----------
    couplings : coupling sets (default ``density_rel``, the rescaled densities; the raw ``density_raw``,
        ``unit_raw``, ... and the other sets of :mod:`rganalysis.fit.couplings`, or registered ones)
    estimator : ``trajectory`` (affine fit over the one-step pairs of the flows) or ``response``
        (perturbations of one round's state, see :class:`~rganalysis.fit.jacobian.ResponseEstimator`)
    depth_points : resample per-layer couplings onto this many normalised depths (cross-architecture
        coordinates; also makes short flows of deep models fittable); ``"auto"`` (the default of ``fit``,
        ``report`` and ``compare``): :func:`~rganalysis.fit.auto.resolve_depth_points`; None: per layer
    rank : trajectory rank: an int (exact DMD truncation), None (full least squares) or ``"auto"``
        (:func:`~rganalysis.fit.auto.auto_rank` on the first flow's couplings)
    ridge, n_bootstrap : trajectory estimator options
    round, perturbation, n_samples, epsilon : response estimator options (``round`` default: last;
        ``n_samples`` default ``"auto"``: :func:`~rganalysis.fit.auto.auto_samples` of the live couplings)
    tol : the near-fixed-point tolerance (relative distance); the classes use the marginal band
        :data:`~rganalysis.fit.fixed_points.MARGINAL_Y` in the exponent y = ln|lambda| / ln b
    device : where the response estimator runs

    Fitted attributes: ``couplings_`` (list of (round, coupling) DataArrays), ``estimator_``,
    ``rate_``, ``b_``, ``b_n_``, ``eigenvalues_``, ``eigenvalue_classes_`` (the class each eigenvalue's
    bootstrap interval of y supports, ``undetermined`` when it straddles a boundary or there is none), ``fixed_point_``,
    ``fixed_point_type_`` (``undetermined`` unless the intervals fix it; ``extrapolated`` when the fixed
    point lies outside the couplings' domain: no state IMP can reach, so no type), ``fixed_point_outside_``
    (couplings whose fixed-point value lies outside their domain: an extrapolation),
    ``collapsed_`` (layers IMP emptied -> first empty round),
    ``rank_agreement_`` (with ``rank="auto"`` and a bootstrap: the share of resamples of the pairs whose
    automatic rank is ``rank_``; below :data:`~rganalysis.fit.auto.RANK_AGREEMENT` no interval is reported),
    ``parameters_per_row_`` (rank or couplings, + 1) and ``underdetermined_`` (no more one-step pairs than
    that: no fixed-point verdict),
    ``distance_`` (per round, first flow), ``near_fixed_point_``, ``depth_points_`` and ``rank_`` (the
    values used),
    ``frozen_couplings_`` (response estimator: couplings no perturbation moves, left out of the fit and of
    ``couplings_``, with the reason).
    """

    def __init__(
        self,
        couplings: str | Sequence[str] = ("density_rel",),
        estimator: str = "trajectory",
        *,
        depth_points: int | str | None = "auto",
        rank: int | str | None = "auto",
        ridge: float = 0.0,
        n_bootstrap: int = 200,
        round: int | None = None,
        perturbation: str = "threshold",
        n_samples: int | str = "auto",
        epsilon: float = 0.02,
        tol: float = 0.05,
        device: str = "auto",
        random_state: int = 0,
    ):
        self.couplings = couplings
        self.estimator = estimator
        self.depth_points = depth_points
        self.rank = rank
        self.ridge = ridge
        self.n_bootstrap = n_bootstrap
        self.round = round
        self.perturbation = perturbation
        self.n_samples = n_samples
        self.epsilon = epsilon
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def _sets(self) -> list[str]:
        """The coupling sets fitted.  With the response estimator the rescaled sets are measured together
        with their scale (``global_density``): relative couplings alone do not close under one data-free
        round (the next relative densities depend on the global density only; docs/theory.md, section 9)."""
        sets = [self.couplings] if isinstance(self.couplings, str) else list(self.couplings)
        if (
            self.estimator == "response"
            and any(s in RESCALED_COUPLING_SETS for s in sets)
            and "global_density" not in sets
        ):
            sets.append("global_density")
        return sets

    def _couplings(self, pset: ParameterSet, depth_points: int | None) -> xr.DataArray:
        k = flow_couplings(pset, self._sets())
        if k.sizes["coupling"] == 0:
            if set(self._sets()) <= set(RESCALED_COUPLING_SETS):
                # one layer: nothing to measure it against; its only rescaled coupling is the scale itself
                warnings.warn(
                    f"{pset.attrs.get('name', 'this flow')}: one prunable layer has no relative couplings "
                    f"({', '.join(self._sets())} measure layers against each other); fitting the scale "
                    "global_density alone (rho -> (1 - p) rho)",
                    UserWarning,
                    stacklevel=3,
                )
                k = flow_couplings(pset, "global_density")
            else:
                raise InvalidParameterError(f"coupling sets {self._sets()} give no couplings for this flow")
        return resample_depth(k, depth_points) if depth_points else k

    def fit(
        self,
        flows: ParameterSet | str | os.PathLike | Sequence[ParameterSet | str | os.PathLike],
        couplings: xr.DataArray | Sequence[xr.DataArray] | None = None,
    ) -> FlowFit:
        """Fit the flow(s), given as ParameterSets or store paths (opened for the fit, then closed);
        returns self.

        ``couplings``: the flows' couplings, already computed (one ``(round, coupling)`` DataArray per
        flow, e.g. streamed by :func:`~rganalysis.fit.streaming.stream_flow_couplings` and resampled):
        used as they are instead of being computed from ``couplings`` and ``depth_points``.
        """
        if self.estimator not in ESTIMATORS:
            raise InvalidParameterError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        given_opts = [k for k, (_, v) in _RESPONSE_OPTIONS.items() if getattr(self, k) != v]
        if self.estimator == "trajectory" and given_opts:
            raise InvalidParameterError(
                ", ".join(f"{k} ({_RESPONSE_OPTIONS[k][0]})" for k in given_opts)
                + ": option(s) of the response estimator (estimator='response', --estimator response); the "
                "trajectory fit uses every round of the flow"
            )
        given = [flows] if isinstance(flows, ParameterSet | str | os.PathLike) else list(flows)
        if not given:
            raise InvalidParameterError("no flow given")
        with ExitStack() as opened:
            sets = [opened.enter_context(load(f)) if isinstance(f, str | os.PathLike) else f for f in given]
            return self._fit(sets, couplings)

    def _fit(
        self, flows: list[ParameterSet], couplings: xr.DataArray | Sequence[xr.DataArray] | None
    ) -> FlowFit:
        for i, p in enumerate(flows):
            check_nested(p)
            empty = np.flatnonzero(p.global_density().values <= 0) if self.estimator == "trajectory" else ()
            if len(empty):
                r = int(empty[0])
                raise InvalidParameterError(
                    f"flow {i} ({p.attrs.get('name', p.path)}): the network is empty from round {r} (global "
                    "density 0), where relative couplings and the scale factor b_n are undefined; fit a flow "
                    f"that stops before it (`rganalysis flow --rounds {r - 1}`)"
                )
        layer_scope = [p for p in flows if p.flow_attrs.get("scope") == "layer"]
        fixed_by_rate = self.estimator == "trajectory" and set(self._sets()) <= _DENSITY_SETS and layer_scope
        if fixed_by_rate:
            warnings.warn(
                f"{layer_scope[0].attrs.get('name', layer_scope[0].path)}: a layer-scope flow prunes every layer "
                "by the same fraction each round, so its densities are fixed by the rate ((1 - p)^n in every "
                "layer; density_rel is 1 up to rounding) and their fit measures rounding noise: no interval, "
                "no class; fit --couplings magnitude_rel or unit_rel, or a global-scope flow",
                IntervalWarning,
                stacklevel=3,
            )
        scales = [flow_scale(p) for p in flows]
        self.rate_, self.b_, _ = scales[0]
        self.b_n_ = [b for s in scales for b in s[2]]
        if len(flows) > 1:
            self.b_ = effective_scale_factor([s[1] for s in scales])
            rates = [s[0] for s in scales]
            if any(r is None or not math.isclose(r, rates[0], rel_tol=1e-6) for r in rates):
                self.rate_ = None  # flows at other rates: b is their joint scale factor, no one rate
        sets = self._sets()
        self.depth_points_ = (
            None
            if couplings is not None
            else resolve_depth_points(
                self.depth_points, flows, sets, rank=self.rank, ridge=self.ridge, estimator=self.estimator
            )
        )
        if couplings is None:
            self.couplings_ = [self._couplings(p, self.depth_points_) for p in flows]
        else:
            self.couplings_ = [couplings] if isinstance(couplings, xr.DataArray) else list(couplings)
            if len(self.couplings_) != len(flows):
                raise InvalidParameterError(f"{len(self.couplings_)} coupling arrays for {len(flows)} flows")
        if self.estimator == "trajectory":
            self.rank_ = auto_rank(self.couplings_[0]) if self.rank == "auto" else self.rank
            est = TrajectoryEstimator(
                rank=self.rank_,
                ridge=self.ridge,
                n_bootstrap=0 if fixed_by_rate else self.n_bootstrap,
                random_state=self.random_state,
            )
            est.fit([self.couplings_[i] for i in _distinct(self.couplings_)])
            fixed_point = est.fixed_point_
            self.rank_agreement_ = None
            if self.rank == "auto" and est.n_bootstrap > 0 and np.isfinite(est.eigenvalue_ci_).any():
                self._check_rank(est)
        else:
            self.rank_ = None
            self.rank_agreement_ = None
            if self.depth_points_:
                raise InvalidParameterError(
                    "the response estimator works on per-layer couplings; drop --depth-points"
                )
            p = flows[0]
            r = p.n_rounds - 1 if self.round is None else int(self.round)
            if scales[0][0] is None:
                raise InvalidParameterError("the response estimator needs the flow's rate")
            est = ResponseEstimator(
                rate=scales[0][0],
                scope=str(p.flow_attrs.get("scope", "global")),
                couplings=self._sets(),
                perturbation=self.perturbation,
                n_samples=self.n_samples,
                epsilon=self.epsilon,
                random_state=self.random_state,
                device=self.device,
                n_bootstrap=self.n_bootstrap,
            )
            est.fit(p.state(r, self.device))
            fixed_point = est.fixed_point_
            self.response_round_ = r
            if est.frozen_couplings_:  # left out of the regression: the flow is described without them
                self.couplings_ = [k.sel(coupling=list(est.couplings_)) for k in self.couplings_]
        self.frozen_couplings_ = dict(getattr(est, "frozen_couplings_", {}))
        self.estimator_ = est
        self.eigenvalues_ = est.eigenvalues_
        self.jacobian_ = est.jacobian_
        self.fixed_point_ = fixed_point
        ci = getattr(est, "eigenvalue_ci_", None)
        ci = np.full((len(self.eigenvalues_), 2), np.nan) if ci is None else np.asarray(ci, dtype=np.float64)
        self.eigenvalue_classes_ = [
            r["class"] for r in classify_eigenvalues(self.eigenvalues_, self.b_, MARGINAL_Y, ci)
        ]
        self.fixed_point_type_ = fixed_point_type(self.eigenvalues_, classes=self.eigenvalue_classes_)
        names = [str(c) for c in est.couplings_]
        # a fixed point on the boundary (the empty network's density 0) is reached in the limit: within
        # BOUNDARY_RTOL of the coupling's range over the flow it is on it, not outside (the fit's intercept
        # carries that much noise: -1.3e-4 for a DistilBERT's global density at 0.5)
        values = np.concatenate(
            [np.asarray(k.sel(coupling=names).values, dtype=np.float64) for k in self.couplings_]
        )
        slack = np.maximum(1e-9, BOUNDARY_RTOL * np.ptp(values, axis=0))
        self.fixed_point_outside_ = [
            n
            for n, v, t in zip(names, np.asarray(fixed_point, dtype=np.float64), slack, strict=True)
            if math.isfinite(v) and not (coupling_domain(n)[0] - t <= v <= coupling_domain(n)[1] + t)
        ]
        if self.fixed_point_outside_:  # a linearisation about no reachable state: no type verdict
            self.fixed_point_type_ = "extrapolated"
        # no more rows than parameters per row: the map interpolates the pairs, its fixed point is not measured
        rows = getattr(est, "n_pairs_", None) if self.estimator == "trajectory" else None
        self.parameters_per_row_ = (
            len(names) if self.rank_ is None else min(int(self.rank_), len(names))
        ) + 1
        # as many rows as parameters: an exact fit, no residual
        self.underdetermined_ = rows is not None and rows <= self.parameters_per_row_
        if self.underdetermined_ and self.fixed_point_type_ != "extrapolated":
            self.fixed_point_type_ = "undetermined"
        self.collapsed_ = {}
        for p in flows:
            for name, r in collapsed_layers(p).items():
                self.collapsed_.setdefault(name, r)
        k0 = self.couplings_[0]
        if np.isfinite(fixed_point).all() and not self.underdetermined_:
            self.distance_ = distance_to_fixed_point(k0, fixed_point)
            self.near_fixed_point_ = near_fixed_point(k0, fixed_point, tol=self.tol)
        else:
            self.distance_ = xr.DataArray(
                np.full(k0.sizes["round"], np.nan), dims=("round",), coords={"round": k0["round"].values}
            )
            self.near_fixed_point_ = None
        self.names_ = [str(p.attrs.get("name", "")) for p in flows]
        return self

    def _check_rank(self, est: TrajectoryEstimator) -> None:
        """The automatic rank's intervals hold at that rank; where resamples of the pairs pick another rank
        too often (:data:`~rganalysis.fit.auto.RANK_AGREEMENT`) the verdict would be the rank's, not the
        data's: no interval, one warning.  Measured on the first flow's pairs, the ones ``auto_rank`` chose
        the rank from."""
        self.rank_agreement_ = rank_agreement(
            [self.couplings_[0]], int(self.rank_), random_state=self.random_state
        )
        if self.rank_agreement_ < RANK_AGREEMENT:
            est.eigenvalue_ci_ = np.full_like(np.asarray(est.eigenvalue_ci_, dtype=np.float64), np.nan)
            warnings.warn(
                f"no eigenvalue interval reported (NaN, class undetermined): the automatic rank {self.rank_} is "
                f"what its rule picks for only {self.rank_agreement_:.0%} of resamples of the one-step pairs "
                f"(an interval needs {RANK_AGREEMENT:.0%}), so the verdict would be the rank's, not the data's; "
                "--rank N (rank=N) fits at a rank you choose, and its intervals hold at that rank",
                IntervalWarning,
                stacklevel=3,
            )

    def to_json(self) -> dict[str, Any]:
        """The JSON contract of ``rganalysis fit``."""
        est = self.estimator_
        spec = spectrum_json(est, self.b_, MARGINAL_Y)

        def num(x: float) -> float | None:
            x = float(x)
            return x if math.isfinite(x) else None

        out = {
            "models": self.names_,
            "estimator": self.estimator,
            "rate": None if self.rate_ is None else float(self.rate_),
            "b": float(self.b_),
            "b_n": self.b_n_,
            "couplings": [str(c) for c in est.couplings_],
            "depth_points": self.depth_points_,
            "rank": self.rank_,
            "rank_rule": "auto" if self.rank == "auto" else "given",
            "rank_agreement": getattr(self, "rank_agreement_", None),
            "jacobian": [[num(x) for x in row] for row in np.asarray(self.jacobian_)],
            "fixed_point": [num(x) for x in np.asarray(self.fixed_point_)],
            "eigenvalues": spec["eigenvalues"],
            "tol": float(self.tol),
            "fixed_point_type": self.fixed_point_type_,
            "fixed_point_type_estimate": fixed_point_type(self.eigenvalues_, b=self.b_),
            "marginal_band_y": MARGINAL_Y,
            "fixed_point_extrapolated": bool(self.fixed_point_outside_),
            "underdetermined": bool(getattr(self, "underdetermined_", False)),
            "n_pairs": getattr(self.estimator_, "n_pairs_", None),
            "parameters_per_row": self.parameters_per_row_,
            "fixed_point_outside_domain": list(self.fixed_point_outside_),
            "collapsed_layers": dict(self.collapsed_),
            "distance_to_fixed_point": [num(x) for x in self.distance_.values],
            "near_fixed_point": None if self.near_fixed_point_ is None else self.near_fixed_point_.to_dict(),
            "residual": num(est.residual_),
            "diagnostics": spec.get("diagnostics", {}),
        }
        if self.estimator == "response":
            out["perturbation"] = est.perturbation_
            out["round"] = self.response_round_
            out["frozen_couplings"] = dict(self.frozen_couplings_)
        return out


def _distinct(couplings: Sequence[xr.DataArray]) -> list[int]:
    """Indices of the flows whose couplings are not those of an earlier flow in every round.  A repeat adds
    the same pairs again: fitted jointly they would count as independent data and narrow every interval (one
    ResNet-18 flow passed 8 times got 'irrelevant' and a stable fixed point that it alone left undetermined),
    so each is fitted once, with one warning."""
    kept: dict[int, np.ndarray] = {}
    repeats: list[tuple[int, int]] = []
    for i, k in enumerate(couplings):
        v = np.asarray(k.values)
        twin = next((j for j, u in kept.items() if np.array_equal(u, v, equal_nan=True)), None)
        if twin is None:
            kept[i] = v
        else:
            repeats.append((i, twin))
    if repeats:
        warnings.warn(
            f"{len(repeats)} flow(s) have the same couplings in every round as an earlier one (first: flow "
            f"{repeats[0][0]} = flow {repeats[0][1]}): fitted once, as their pairs are the same data",
            UserWarning,
            stacklevel=3,
        )
    return list(kept)


def format_spectrum(j: dict[str, Any], max_rows: int = 20) -> str:
    """Text table of a fit's spectrum: verdicts only where the bootstrap intervals support them."""
    kind, where = fixed_point_wording(j)
    rank = ""
    if j.get("rank") is not None:
        agree = j.get("rank_agreement")
        how = (
            f" (auto, {agree:.0%} of pair resamples pick it)"
            if j.get("rank_rule") == "auto" and agree is not None and agree < 1
            else " (auto)" * (j.get("rank_rule") == "auto")
        )
        rank = f"rank {j['rank']}{how}, "
    what = j["estimator"]
    # FlowFit's response estimator prunes only: said so, beside any stored block of the real IMP step
    if what == "response":
        what = f"response (the prune step alone at round {j.get('round')}, no retraining)"
    lines = [
        f"{', '.join(j['models'])}: {what} fit on {len(j['couplings'])} couplings, {rank}"
        f"b = {j['b']:.4f}" + (f" (rate {j['rate']:.4g})" if j["rate"] is not None else ""),
        f"  fixed point: {kind}; {where}",
    ]
    collapsed = j.get("collapsed_layers") or {}
    if collapsed:
        lines.append(
            f"  layer collapse: {len(collapsed)} layer(s) emptied by the flow: "
            + ", ".join(f"{k} (round {v})" for k, v in list(collapsed.items())[:6])
            + (" ..." if len(collapsed) > 6 else "")
        )
    lines.append(f"  {'|lambda|':>9} {'re':>9} {'im':>9} {'y':>8}  {'class':<12} {'95% CI of |lambda|':>20}")
    eig = sorted(j["eigenvalues"], key=lambda e: -(e["abs"] or 0))
    for e in eig[:max_rows]:
        ci = interval_text(e["ci_low"], e["ci_high"])
        y = "-inf" if e["exponent"] is None else f"{e['exponent']:.3f}"
        lines.append(f"  {e['abs']:>9.4f} {e['re']:>9.4f} {e['im']:>9.4f} {y:>8}  {e['class']:<12} {ci:>20}")
    if len(eig) > max_rows:
        lines.append(f"  ... {len(eig) - max_rows} smaller eigenvalues (all in --json)")
    return "\n".join(lines)
