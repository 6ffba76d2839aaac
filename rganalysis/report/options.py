"""The options of ``rganalysis report``: the fit options plus the comparison's and the figures'.

Imports without numpy or torch: ``rganalysis report --help`` is built from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from rganalysis.fit.options import FitOptions, command_args

if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.store.parameter_set import ParameterSet

__all__ = ["ReportOptions"]


@dataclass
class ReportOptions(FitOptions):
    """The options of a report: :class:`~rganalysis.fit.options.FitOptions` (the fit of each flow, exactly as
    ``rganalysis fit`` does it, and the comparison, as ``rganalysis compare`` does it, with the same
    defaults) plus what the figures need.  All flows of a report share one resolved ``depth_points``, so
    they live in one coupling space; the value used is recorded in the report together with the
    ``rganalysis fit`` command that reproduces the numbers.

    ``koopman`` adds, per flow, the Koopman/DMD spectrum of ``rganalysis koopman`` (its defaults, with
    this ``tol`` and ``device``).  ``threshold`` (None: the comparison's default, or ``"auto"``) is the
    option of ``rganalysis compare`` that ``fit`` does not have.
    """

    koopman: bool = False
    threshold: float | str | None = None
    magnitude_samples: int = 200_000
    dpi: int = 100

    def resolve_depth_points(self, flows: Sequence[ParameterSet]) -> int | None:
        """The number of depths actually used for ``flows`` (:func:`~rganalysis.fit.auto.resolve_depth_points`)."""
        from rganalysis.fit.auto import resolve_depth_points

        return resolve_depth_points(
            self.depth_points,
            flows,
            self.couplings,
            rank=self.rank,
            ridge=self.ridge,
            estimator=self.estimator,
        )

    def koopman_args(self) -> list[str]:
        """The ``rganalysis koopman`` options (non-default ones only) of the report's Koopman spectra."""
        return command_args(
            FitOptions(tol=self.tol, device=self.device), FitOptions(), only=("tol", "device")
        )

    def compare_args(self, depth_points: int | None) -> list[str]:
        """The ``rganalysis compare`` options (non-default ones only) of the report's comparison."""
        mine = FitOptions(couplings=self.couplings, depth_points=depth_points, rank=self.rank, tol=self.tol)
        a = command_args(mine, FitOptions(), only=("couplings",))
        a += ["--depth-points", "0" if depth_points is None else str(depth_points)]
        a += command_args(mine, FitOptions(), only=("rank", "tol"))
        if self.threshold is not None:
            a += ["--threshold", str(self.threshold)]
        return a

    def fit_args(self, depth_points: int | None) -> list[str]:
        """The ``rganalysis fit`` options (non-default ones only) that give the same fit, with the depth points
        the report resolved written out."""
        mine = FitOptions(**{f.name: getattr(self, f.name) for f in fields(FitOptions)})
        mine.depth_points = depth_points
        a = command_args(mine, FitOptions())
        if depth_points is None and "--depth-points" not in a:
            a += ["--depth-points", "0"]
        return a
