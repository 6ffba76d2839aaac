"""Settings chosen from the data, one definition for ``fit``, ``report`` and ``compare``: the
normalised depths a flow's couplings are resampled onto, the rank of its trajectory fit, and the number
of perturbed states of the response estimator."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from rganalysis.errors import DegenerateRegressionError, TooFewRoundsError
from rganalysis.fit.intervals import ROWS_PER_PARAMETER

__all__ = [
    "DEFAULT_DEPTH_POINTS",
    "DEFAULT_MAX_RANK",
    "DEFAULT_RANK_GAIN",
    "DEFAULT_RANK_RTOL",
    "MIN_SAMPLES",
    "SAMPLES_PER_PARAMETER",
    "RANK_AGREEMENT",
    "auto_rank",
    "auto_samples",
    "rank_agreement",
    "resolve_depth_points",
]

#: Perturbed states per regression parameter (C live couplings + 1 intercept) of :func:`auto_samples`.
SAMPLES_PER_PARAMETER = 6
#: The fewest perturbed states :func:`auto_samples` draws.
MIN_SAMPLES = 64
#: The most normalised depths per-layer couplings are resampled onto (the cross-architecture space).
DEFAULT_DEPTH_POINTS = 8
#: Relative singular-value cut of the automatic trajectory rank (:func:`auto_rank`).
DEFAULT_RANK_RTOL = 0.02
#: Factor by which each extra direction of the automatic rank must divide the one-step residual.
DEFAULT_RANK_GAIN = 2.0
#: The most directions the automatic rank keeps.
DEFAULT_MAX_RANK = 3
#: The least share of resamples of the one-step pairs for which :func:`auto_rank`'s rule must pick the fit's
#: rank for its eigenvalues to be classified (:func:`rank_agreement`); below it the rank, and so the verdict,
#: is a matter of which pairs were observed (two ResNet-18 seeds whose densities differ by < 0.009: rank 1,
#: "irrelevant", and rank 3, "relevant", each rank picked by about half of the resamples of either flow).
RANK_AGREEMENT = 0.8

#: Couplings per layer of the built-in coupling sets (sizes the automatic depth resampling).
_STATS_PER_LAYER = {
    "density": 1,
    "density_raw": 1,
    "density_rel": 1,
    "magnitude": 6,
    "magnitude_raw": 6,
    "magnitude_rel": 5,
    "spectral": 2,
    "spectral_raw": 2,
    "unit": 12,
    "unit_raw": 12,
    "unit_rel": 12,
}
#: Whole-network couplings of the built-in coupling sets.
_GLOBAL_COUPLINGS = {"global_density": 1}


def auto_rank(
    couplings: xr.DataArray,
    rtol: float = DEFAULT_RANK_RTOL,
    max_rank: int = DEFAULT_MAX_RANK,
    gain: float = DEFAULT_RANK_GAIN,
) -> int:
    """Trajectory rank suited to a short flow.

    Start at rank 1 and keep one more direction while (a) its singular value of the standardised,
    centred one-step design (as :class:`~rganalysis.fit.jacobian.TrajectoryEstimator` builds it) is at
    least ``rtol`` times the largest, and (b) adding it divides the RMS one-step residual by at least
    ``gain``; never above ``max_rank`` or what the pairs determine, ``n_pairs // 2 - 1`` (the rule of
    :func:`resolve_depth_points`: pairs >= 2 (directions + 1); at least 1).  On short
    data-free flows the first direction is the common decay of all densities, the second (on ResNets)
    the redistribution of density between depths; further directions explain little and their
    eigenvalues are unstable, and (b) keeps them out (docs/universality.md).
    """
    K = couplings.transpose("round", "coupling")
    m = int(K.sizes["round"]) - 1
    if m < 2:
        raise TooFewRoundsError(f"a flow of {m + 1} rounds has {m} one-step pair(s); at least 2 are needed")
    return _rank_rule(K, m, int(K.sizes["coupling"]), rtol, max_rank, gain)


def _rank_rule(data: Any, m: int, n_couplings: int, rtol: float, max_rank: int, gain: float) -> int:
    """:func:`auto_rank`'s rule on ``data`` (what :class:`TrajectoryEstimator` fits) of ``m`` pairs."""
    from rganalysis.fit.jacobian import TrajectoryEstimator

    cap = max(1, min(int(max_rank), m // 2 - 1, n_couplings))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = TrajectoryEstimator(rank=1, n_bootstrap=0).fit(data)
        s = fit.singular_values_
        r, res = 1, fit.residual_
        while r < cap and s.size > r and s[0] > 0 and s[r] >= float(rtol) * s[0]:
            try:
                nxt = TrajectoryEstimator(rank=r + 1, n_bootstrap=0).fit(data).residual_
            except DegenerateRegressionError:  # the next direction is numerically empty
                break
            if not nxt * float(gain) <= res:
                break
            r, res = r + 1, nxt
    return r


def rank_agreement(
    couplings: Sequence[xr.DataArray],
    rank: int,
    n_resamples: int = 100,
    random_state: int | None = 0,
    rtol: float = DEFAULT_RANK_RTOL,
    max_rank: int = DEFAULT_MAX_RANK,
    gain: float = DEFAULT_RANK_GAIN,
) -> float:
    """The share of ``n_resamples`` resamples (with replacement) of the flows' one-step pairs for which
    :func:`auto_rank`'s rule picks ``rank``: how far the data, not the draw of the pairs, fix the rank
    (compare with :data:`RANK_AGREEMENT`).  A resample whose rule fails counts as another rank."""
    pairs = []
    for k in couplings:
        v = np.asarray(k.transpose("round", "coupling").values, dtype=np.float64)
        pairs += [np.stack([v[i], v[i + 1]]) for i in range(len(v) - 1)]
    m = len(pairs)
    n_couplings = int(couplings[0].sizes["coupling"])
    rng = np.random.default_rng(random_state)
    same = 0
    for _ in range(int(n_resamples)):
        idx = rng.integers(0, m, m)
        try:
            same += _rank_rule([pairs[i] for i in idx], m, n_couplings, rtol, max_rank, gain) == int(rank)
        except (DegenerateRegressionError, np.linalg.LinAlgError):
            continue
    return same / max(1, int(n_resamples))


def _coupling_groups(sets: Sequence[str], pset: Any) -> tuple[int, int]:
    """(number of per-layer statistics, number of whole-network couplings) of the coupling sets."""
    n_stats = n_global = 0
    unknown = [s for s in sets if s not in _STATS_PER_LAYER and s not in _GLOBAL_COUPLINGS]
    for s in sets:
        n_stats += _STATS_PER_LAYER.get(s, 0)
        n_global += _GLOBAL_COUPLINGS.get(s, 0)
    if unknown:  # a registered set: look at what it gives on round 0
        from rganalysis.fit.couplings import compute_couplings

        k = compute_couplings(pset.state(0, "cpu"), unknown)
        depth = np.asarray(k["depth"].values, dtype=np.float64)
        keys = {
            (s, st)
            for s, st, d in zip(k["set"].values, k["statistic"].values, depth, strict=True)
            if np.isfinite(d)
        }
        n_stats += len(keys)
        n_global += int((~np.isfinite(depth)).sum())
    return n_stats, n_global


def resolve_depth_points(
    depth_points: int | str | None,
    flows: Sequence[Any],
    couplings: Sequence[str] = ("density_rel",),
    *,
    rank: int | str | None = "auto",
    ridge: float = 0.0,
    estimator: str = "trajectory",
) -> int | None:
    """The number of normalised depths actually used for ``flows`` (one value for all, so they share one
    coupling space): ``depth_points`` itself unless it is ``"auto"``.

    ``"auto"`` -- the one rule of ``fit``, ``report``, ``compare`` and the demo: none with the response
    estimator or a one-layer flow (per-layer couplings); otherwise ``min(8, fittable, fewest layers)``,
    at least 2.  *Fewest layers*: more depths than the shallowest flow has pruned layers (one fewer with
    ``density_rel`` alone, which leaves its reference layer out) would be collinear.  *Fittable*: the most depths for which the shortest flow has at least twice as many
    one-step pairs as parameters per row of the Jacobian (pairs >= 2 (couplings + 1)), whatever the rank
    or ridge: the bare minimum gives an exactly determined fit with zero residual, no usable bootstrap and
    arbitrary eigenvalues, and a rank truncation only hides that the couplings are not determined (8 pairs:
    3 depths).  Never fewer than 2 depths (one is not a resampling); a flow too short for 2 (fewer than 6
    pairs) is fitted on 2, and its fit reports no interval and so no class (:data:`ROWS_PER_PARAMETER`).  For one flow this is its own value; for several the smallest of theirs, so a report or a
    comparison of several flows may resample onto fewer depths than ``fit`` does on one of them.  ``rank``
    and ``ridge`` are accepted for the signature's sake and do not change the number.  ``flows`` need
    ``pruned_names()``, ``n_rounds`` and (for registered coupling sets beyond the built-in ones)
    ``state(0)``.
    """
    del rank, ridge  # one rule whatever the truncation (see above)
    if depth_points != "auto":
        if depth_points and estimator != "response":
            layers = min(len(p.pruned_names()) for p in flows)
            if int(depth_points) > layers:
                warnings.warn(
                    f"{depth_points} depth points for flows of {layers} pruned layers: the resampled couplings "
                    f"repeat layers (collinear columns); --depth-points auto or at most {layers}",
                    UserWarning,
                    stacklevel=3,
                )
        return depth_points
    if estimator == "response":
        return None
    layers = min(len(p.pruned_names()) for p in flows)
    if set(couplings) <= {"density_rel", "global_density"}:
        layers -= 1  # density_rel leaves the reference layer out
    if layers < 2:
        return None  # one layer (coupling): nothing to resample
    n_stats, n_global = _coupling_groups(couplings, flows[0])
    pairs = min(p.n_rounds for p in flows) - 1
    fittable = (pairs // ROWS_PER_PARAMETER - 1 - n_global) // max(1, n_stats)
    return max(2, min(DEFAULT_DEPTH_POINTS, fittable, layers))


def auto_samples(n_live: int) -> int:
    """Perturbed states of the response estimator for ``n_live`` live couplings (those of layers that
    still have survivors): ``max(MIN_SAMPLES, SAMPLES_PER_PARAMETER * (n_live + 1))``.

    Each coupling's image is regressed on the ``n_live`` perturbations and an intercept.  With ``M``
    states the noise of the fitted Jacobian's eigenvalues grows like ``sqrt(n_live / (M - n_live - 1))``
    times the per-state noise (the spectral radius of a random ``n_live x n_live`` matrix whose entries
    have variance ``1 / (M - n_live - 1)``), so ``M = 6 (n_live + 1)`` keeps spurious eigenvalues below
    half the per-state noise, whatever the network's size; and a bootstrap resample of ``M`` states holds
    about ``0.632 M = 3.8 (n_live + 1)`` distinct ones, so every resample is a determined fit (it needs
    ``n_live + 1``).  At 64 states for 51 live couplings (a 6-round data-free ResNet-50 flow) a resample
    holds about 40 distinct states: no bootstrap resample was usable.  docs/theory.md, section 3.
    """
    n = int(n_live)
    if n < 0:
        raise ValueError(f"n_live must be >= 0, got {n_live}")
    return max(MIN_SAMPLES, SAMPLES_PER_PARAMETER * (n + 1))
