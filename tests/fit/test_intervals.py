"""The one interval policy (rganalysis.fit.intervals): the cases seen on a ResNet-18 8-round flow."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rganalysis.fit.intervals import (
    IntervalWarning,
    Resamples,
    eigenvalue_intervals,
    usable_needed,
)


def _res(values: np.ndarray, requested: int | None = None, bad: Counter | None = None) -> Resamples:
    v = np.asarray(values, dtype=np.complex128)
    return Resamples(v, v.shape[0] if requested is None else requested, bad or Counter())


def test_inverted_and_estimate_excluding_intervals_are_not_reported() -> None:
    """`koopman --rank 6`: subsampling-widened bags gave |lambda| 0.2632 the 'interval' [0, -0.19]
    (inverted, excludes its estimate) and 0.9144 the interval [0.9148, 0.9258] (excludes it)."""
    rng = np.random.default_rng(0)
    ref = np.array([0.9144, 0.26])
    bags = np.column_stack([0.92 + 0.002 * rng.standard_normal(100), 0.05 + 0.01 * rng.standard_normal(100)])
    with pytest.warns(IntervalWarning, match="2 of 2 eigenvalue interval") as rec:
        ci, why = eigenvalue_intervals(ref, _res(bags), factor=1.73, lower_bound=0.0, what="bags")
    assert len(rec) == 1  # exactly one warning
    assert np.isnan(ci).all()
    assert "excludes its estimate" in why[0] and why[1] == "inverted"


def test_zero_width_and_too_few_usable_resamples_give_no_interval() -> None:
    """`fit --estimator response --samples 32 --bootstrap 50`: 13 of 50 usable, all 0.8000."""
    vals = np.full((13, 1), 0.8)
    bad = Counter({"fewer than 22 distinct rows": 37})
    with pytest.warns(IntervalWarning, match=r"13 of 50 resamples usable \(37 degenerate.*fewer than the 25"):
        ci, _ = eigenvalue_intervals(np.array([0.8]), _res(vals, 50, bad))
    assert np.isnan(ci).all() and usable_needed(50) == 25 and usable_needed(10) == 20
    with pytest.warns(IntervalWarning, match="zero-width"):
        ci, _ = eigenvalue_intervals(np.array([0.8]), _res(np.full((50, 1), 0.8)))
    assert np.isnan(ci).all()


def test_a_good_interval_contains_its_estimate() -> None:
    rng = np.random.default_rng(1)
    v = 0.5 + 0.05 * rng.standard_normal((200, 1))
    ci, why = eigenvalue_intervals(np.array([0.5]), _res(v))
    assert why == [None] and ci[0, 0] < 0.5 < ci[0, 1]
    assert ci[0, 0] == pytest.approx(np.quantile(v, 0.025)) and ci[0, 1] == pytest.approx(
        np.quantile(v, 0.975)
    )


def test_koopman_without_intervals_prints_no_class() -> None:
    """Koopman defaults on 9 snapshots (rank 8 = T-1): bagging impossible.  On main it still listed every
    mode as 'irrelevant'; now no class is printed and the table says plainly there are no intervals."""
    from rganalysis.koopman.dmd import KoopmanDMD
    from rganalysis.koopman.summary import format_koopman, koopman_json

    x = np.random.default_rng(0).standard_normal((9, 60)) * 0.5 ** np.arange(9)[:, None]
    with pytest.warns(IntervalWarning, match="bagging impossible"):
        dmd = KoopmanDMD(device="cpu").fit(x, b=1.25)
    assert set(dmd.classes_) == {"undetermined"}
    j = koopman_json(dmd)
    j["features"] = 60
    txt = format_koopman(j)
    rows = txt.split("no confidence intervals")[0]
    assert "relevant" not in rows and "undetermined" not in rows  # no class column at all
    assert "no confidence intervals (bagging impossible" in txt


def test_interval_text_never_looks_zero_width():
    from rganalysis.fit.intervals import interval_text

    assert interval_text(0.8000001875, 0.8000042970) == "[0.800000, 0.800004]"
    assert interval_text(0.1, 0.25) == "[0.1000, 0.2500]"
    assert interval_text(None, None) == interval_text(float("nan"), 1.0) == "no interval"
