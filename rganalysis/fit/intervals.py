"""One interval policy for every resampled eigenvalue: the trajectory fit's bootstrap over one-step pairs,
the response Jacobian's bootstrap of its seed noise on the fixed design (or over states), and the Koopman
DMD's bags over snapshot pairs all draw their resamples through :func:`draw_resamples` and turn them
into intervals with :func:`eigenvalue_intervals`.

The policy (docs/theory.md, section 3, "One interval policy"; its coverage on known answers is measured by
``benchmarks/interval_coverage.py`` and tabled there):

- a resample that gives no usable fit (a degenerate design, too few distinct rows, another number of
  eigenvalues) is *counted* with its reason, never skipped silently;
- an interval is reported only when at least :data:`MIN_USABLE_FRACTION` of the requested resamples and
  at least :data:`MIN_USABLE_RESAMPLES` of them were usable, and only for a regression with at least
  :data:`ROWS_PER_PARAMETER` rows per parameter;
- a reported interval contains its point estimate, has ``low < high`` and is not zero-width (relative
  width above :data:`ZERO_WIDTH_RTOL`); an interval that fails any of these is NaN;
- a NaN interval makes its class ``undetermined`` (:func:`rganalysis.fit.fixed_points.interval_class`),
  and each call says why in exactly one :class:`IntervalWarning`.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rganalysis.fit.spectra import match_eigenvalues, pooled_columns

__all__ = [
    "DegenerateResample",
    "IntervalWarning",
    "MIN_USABLE_FRACTION",
    "MIN_USABLE_RESAMPLES",
    "ROWS_PER_PARAMETER",
    "Resamples",
    "ZERO_WIDTH_RTOL",
    "draw_resamples",
    "eigenvalue_intervals",
    "interval_text",
    "usable_needed",
]

#: An interval is reported only when at least this fraction of the requested resamples were usable: with
#: fewer, the usable ones are a selected subset (those that happened to hold enough distinct rows) and
#: their spread is not the sampling spread of the estimate.
MIN_USABLE_FRACTION = 0.5
#: ... and at least this many (the 2.5 % and 97.5 % quantiles of fewer draws are the extreme draws).
MIN_USABLE_RESAMPLES = 20
#: A bootstrap interval of a regression with ``P`` parameters per row needs at least this many rows per
#: parameter (``ROWS_PER_PARAMETER * P`` rows): with fewer, a resample holds about ``0.63 x`` as many distinct
#: rows, most resamples are near-singular fits, and their spread is not the estimate's (coverage is measured
#: from 12 pairs for 4 parameters on, docs/theory.md section 3).  The auto rule of depth points keeps to it.
ROWS_PER_PARAMETER = 2
#: An interval narrower than this times ``max(1, |estimate|)`` is zero-width: every resample gave the
#: estimate back (noise-free or exactly linear data, or resamples that all hold the same rows), which
#: says nothing about its uncertainty.  1e-6, not 1e-9: the spread of exact data stored in float32 is
#: round-off (a few 1e-7), not sampling error.
ZERO_WIDTH_RTOL = 1e-6


class IntervalWarning(RuntimeWarning):
    """Some eigenvalue intervals are not reported (NaN, class undetermined); the message says why."""


class DegenerateResample(Exception):
    """Raised by a resample's ``draw`` when it gives no usable fit; the message is the reason (counted)."""


@dataclass
class Resamples:
    """The usable resamples of one estimate and the count of the others.

    ``values``: (n_usable, k) complex, each resample's eigenvalues matched to the reference's order;
    ``requested``: resamples drawn; ``degenerate``: reason -> count of the unusable ones.
    """

    values: np.ndarray
    requested: int
    degenerate: Counter[str] = field(default_factory=Counter)

    @property
    def n_usable(self) -> int:
        return int(self.values.shape[0])

    def summary(self) -> str:
        """``"13 of 50 resamples usable (37 degenerate: 30 x too few distinct rows, ...)"``."""
        txt = f"{self.n_usable} of {self.requested} resamples usable"
        n_bad = sum(self.degenerate.values())
        if n_bad:
            why = ", ".join(f"{n} x {r}" for r, n in self.degenerate.most_common())
            txt += f" ({n_bad} degenerate: {why})"
        return txt


def interval_text(lo: float | None, hi: float | None, digits: int = 4) -> str:
    """``[lo, hi]`` with ``digits`` decimals, or as many more (up to 10) as it takes for the two ends to
    differ: a reported interval is never zero-width, so its text must not look it (``[0.800000, 0.800004]``,
    not ``[0.8000, 0.8000]``).  ``"no interval"`` for a missing one."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval"
    d = digits
    while d < 10 and f"{lo:.{d}f}" == f"{hi:.{d}f}":
        d += 1
    return f"[{lo:.{d}f}, {hi:.{d}f}]"


def usable_needed(requested: int) -> int:
    """Usable resamples needed for an interval out of ``requested``:
    ``max(MIN_USABLE_RESAMPLES, ceil(MIN_USABLE_FRACTION * requested))``."""
    return max(MIN_USABLE_RESAMPLES, math.ceil(MIN_USABLE_FRACTION * int(requested)))


def draw_resamples(reference: np.ndarray, n: int, draw: Callable[[], np.ndarray]) -> Resamples:
    """Call ``draw()`` ``n`` times; each returns a resample's eigenvalues or raises
    :class:`DegenerateResample` (or numpy's ``LinAlgError``) with the reason.  A resample with another
    number of eigenvalues than ``reference`` (k,) is degenerate too.  Usable ones are matched to
    ``reference`` (:func:`~rganalysis.fit.spectra.match_eigenvalues`)."""
    ref = np.asarray(reference, dtype=np.complex128).reshape(-1)
    out: list[np.ndarray] = []
    bad: Counter[str] = Counter()
    for _ in range(int(n)):
        try:
            mu = np.asarray(draw(), dtype=np.complex128).reshape(-1)
        except DegenerateResample as e:
            bad[str(e)] += 1
            continue
        except np.linalg.LinAlgError:
            bad["singular design"] += 1
            continue
        if mu.size != ref.size:
            bad[f"{mu.size} instead of {ref.size} eigenvalues"] += 1
            continue
        if not np.isfinite(mu).all():
            bad["non-finite eigenvalues"] += 1
            continue
        out.append(mu[match_eigenvalues(ref, mu)])
    values = np.vstack(out) if out else np.empty((0, ref.size), dtype=np.complex128)
    return Resamples(values, int(n), bad)


def eigenvalue_intervals(
    reference: np.ndarray,
    res: Resamples,
    *,
    level: float = 0.95,
    what: str = "",
    part: Callable[[np.ndarray], np.ndarray] = np.abs,
    factor: float = 1.0,
    lower_bound: float | None = None,
    warn: bool = True,
) -> tuple[np.ndarray, list[str | None]]:
    """Intervals of ``part(lambda)`` (default ``|lambda|``) from resamples, under the policy above.

    The interval of eigenvalue i is ``e_i + factor * (q - e_i)`` with ``e_i = part(reference[i])`` and
    ``q`` the ``(1 -+ level) / 2`` quantiles of its resamples (a conjugate pair's pooled,
    :func:`~rganalysis.fit.spectra.pooled_columns`); ``factor`` 1 is the percentile interval, another
    value rescales the resamples' spread around the estimate (the Koopman bags' subsampling correction).
    ``lower_bound`` clips the low end (0 for a modulus).

    Returns ``(ci (k, 2), reasons)``: ``reasons[i]`` is None for a reported interval, else why it is NaN.
    With ``warn``, one :class:`IntervalWarning` lists the reasons (none when nothing was requested).
    """
    ref = np.asarray(reference, dtype=np.complex128).reshape(-1)
    k = ref.size
    ci = np.full((k, 2), np.nan)
    reasons: list[str | None] = [None] * k
    if res.requested == 0:
        return ci, ["no resamples requested"] * k
    need = usable_needed(res.requested)
    if res.n_usable < need:
        why = f"{res.summary()}, fewer than the {need} an interval needs"
        reasons = [why] * k
    else:
        centre = part(ref).astype(np.float64)
        a = (1.0 - float(level)) / 2.0
        for i, v in enumerate(pooled_columns(res.values, ref, conjugate=True)):
            q = np.quantile(part(v).astype(np.float64), [a, 1.0 - a])
            lo, hi = centre[i] + factor * (q - centre[i])
            if lower_bound is not None:
                lo = max(lo, lower_bound)
            e = centre[i]
            slack = ZERO_WIDTH_RTOL * max(1.0, abs(e))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                reasons[i] = "non-finite resamples"
            elif hi < lo:
                reasons[i] = "inverted"
            elif hi - lo <= slack:
                reasons[i] = "zero-width (every resample gave the estimate back: no spread to measure)"
            elif not (lo - slack <= e <= hi + slack):
                reasons[i] = "excludes its estimate (the resamples are biased away from the fit)"
            else:
                ci[i] = lo, hi
    bad = [i for i, r in enumerate(reasons) if r is not None]
    if warn and bad:
        if res.n_usable < need:
            txt = f"no eigenvalue interval reported (NaN, class undetermined): {reasons[0]}"
        else:
            by: dict[str, list[int]] = {}
            for i in bad:
                by.setdefault(str(reasons[i]), []).append(i)
            parts = []
            for r, ix in by.items():
                mods = ", ".join(f"{abs(ref[i]):.4g}" for i in ix[:4]) + (" ..." if len(ix) > 4 else "")
                parts.append(f"{len(ix)} {r} (|lambda| {mods})")
            txt = (
                f"{len(bad)} of {k} eigenvalue interval(s) not reported (NaN, class undetermined): "
                + "; ".join(parts)
                + f"; {res.summary()}"
            )
        warnings.warn(f"{what}: {txt}", IntervalWarning, stacklevel=3)
    return ci, reasons
