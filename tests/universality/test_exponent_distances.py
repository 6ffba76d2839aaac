"""Koopman and response-spectrum distances compare exponents, so flows at different rates compare."""

from __future__ import annotations

import numpy as np
import pytest

from rganalysis.fit.fixed_points import classify_eigenvalues
from rganalysis.universality.distances import _exponent_wasserstein


def test_the_same_map_at_two_rates_is_at_distance_zero_in_y() -> None:
    g = np.array([-0.5 + 0.3j, -0.5 - 0.3j, -1.2, 0.4])  # generator exponents: lambda = b^g
    b1, b2 = 1.25, 2.0
    l1, l2 = b1**g, b2**g
    assert _exponent_wasserstein(l1, b1, l2, b2) == pytest.approx(0.0, abs=1e-12)
    # in lambda the two spectra differ (what main compared)
    assert np.abs(np.sort(np.abs(l1)) - np.sort(np.abs(l2))).max() > 0.1
    ci = lambda lam, b: np.column_stack([np.abs(lam) * b**-0.05, np.abs(lam) * b**0.05])  # noqa: E731
    c1 = [r["class"] for r in classify_eigenvalues(l1, b1, ci=ci(l1, b1))]
    c2 = [r["class"] for r in classify_eigenvalues(l2, b2, ci=ci(l2, b2))]
    assert c1 == c2 == ["irrelevant", "irrelevant", "irrelevant", "relevant"]
