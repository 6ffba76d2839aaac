"""The options of ``rganalysis report``: the fit options plus the comparison's and the figures'."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from rganalysis.fit.options import FitOptions, command_args, option, parse_depth_points, parse_rank
from rganalysis.store.parameter_set import ParameterSet

__all__ = ["DEFAULT_DEPTH_POINTS", "ReportOptions"]


#: Default number of normalised depths the per-layer couplings are resampled onto (lowered so a short
#: flow stays fittable, see :meth:`ReportOptions.resolve_depth_points`).
DEFAULT_DEPTH_POINTS = 8


#: Couplings per layer of the built-in coupling sets (used to size the automatic depth resampling).
_STATS_PER_LAYER = {"density": 1, "magnitude": 6, "spectral": 2}


@dataclass
class ReportOptions(FitOptions):
    """The options of a report: :class:`~rganalysis.fit.options.FitOptions` (the fit of each flow, as
    ``rganalysis fit`` does it) plus what the comparison and the figures need.

    ``depth_points`` is ``"auto"`` (default), an integer >= 2, or None (no resampling: per-layer
    couplings).  ``"auto"`` resamples onto ``min(8, well determined, fewest layers)`` depths (at
    least 2).  *Well determined* is the most depths for which the trajectory estimator has, from the
    shortest flow, at least twice as many one-step pairs as parameters per row of the Jacobian
    (pairs >= 2 (couplings + 1)): the bare minimum (pairs = couplings + 1) gives an exactly
    determined fit with zero residual, no usable bootstrap and arbitrary eigenvalues.  *Fewest
    layers* is the smallest number of pruned layers of the flows (more depths than layers would be
    collinear).  With ``rank`` or ``ridge`` the first bound is dropped; with the response estimator
    there is no resampling.  All flows of a report share the value, so they live in one coupling
    space.  The value used is recorded in the report together with the
    ``rganalysis fit`` command that reproduces the numbers.

    ``koopman`` adds, per flow, the Koopman/DMD spectrum of ``rganalysis koopman`` (its defaults, with
    this ``tol`` and ``device``).  ``threshold`` (None: the module's default, or ``"auto"``) and
    ``compare_rank`` (``"auto"``, an int, or None for a full fit) are the options of ``rganalysis compare`` that
    ``fit`` does not have; ``couplings``, ``tol`` and the depth points are shared with it.
    """

    depth_points: int | str | None = field(
        default="auto",
        metadata=option(
            "resample per-layer couplings onto N normalised depths; auto: 8, fewer when the shortest flow has under "
            "2 (couplings + 1) one-step pairs or fewer layers (none with --estimator response); 0: per-layer "
            "couplings. The report prints the value used",
            parse=parse_depth_points,
            metavar="N",
            show=lambda v: "0" if v is None else str(v),
        ),
    )
    koopman: bool = False
    threshold: float | str | None = None
    compare_rank: int | str | None = "auto"
    magnitude_samples: int = 200_000
    dpi: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        self.compare_rank = parse_rank(self.compare_rank)

    def resolve_depth_points(self, flows: Sequence[ParameterSet]) -> int | None:
        """The number of depths actually used for ``flows`` (one value for all, so they share one space)."""
        if self.depth_points != "auto":
            return self.depth_points
        if self.estimator == "response":
            return None
        layers = min(len(p.pruned_names()) for p in flows)  # more depths than layers are collinear
        if self.rank is not None or self.ridge:
            return max(2, min(DEFAULT_DEPTH_POINTS, layers))
        n_stats, n_global = _coupling_groups(self.couplings, flows[0])
        pairs = min(p.n_rounds for p in flows) - 1
        # at least as many one-step pairs as twice the parameters per row (couplings + 1): an exactly
        # determined fit has zero residual, no usable bootstrap and arbitrary eigenvalues
        fittable = (pairs // 2 - 1 - n_global) // max(1, n_stats)
        return max(2, min(DEFAULT_DEPTH_POINTS, fittable, layers))

    def koopman_args(self) -> list[str]:
        """The ``rganalysis koopman`` options (non-default ones only) of the report's Koopman spectra."""
        return command_args(
            FitOptions(tol=self.tol, device=self.device), FitOptions(), only=("tol", "device")
        )

    def compare_args(self, depth_points: int | None) -> list[str]:
        """The ``rganalysis compare`` options (non-default ones only) of the report's comparison."""
        mine = FitOptions(
            couplings=self.couplings, depth_points=depth_points, rank=self.compare_rank, tol=self.tol
        )
        a = command_args(mine, FitOptions(), only=("couplings",))
        a += ["--depth-points", "0" if depth_points is None else str(depth_points)]
        a += command_args(mine, FitOptions(rank="auto"), only=("rank", "tol"))
        if self.threshold is not None:
            a += ["--threshold", str(self.threshold)]
        return a

    def fit_args(self, depth_points: int | None) -> list[str]:
        """The ``rganalysis fit`` options (non-default ones only) that give the same fit."""
        mine = FitOptions(**{f.name: getattr(self, f.name) for f in fields(FitOptions)})
        mine.depth_points = depth_points
        return command_args(mine, FitOptions())


def _coupling_groups(sets: Sequence[str], pset: ParameterSet) -> tuple[int, int]:
    """(number of per-layer statistics, number of whole-network couplings) of the coupling sets."""
    n_stats = n_global = 0
    unknown = [s for s in sets if s not in _STATS_PER_LAYER]
    for s in sets:
        n_stats += _STATS_PER_LAYER.get(s, 0)
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
