"""Tests of rganalysis.spectra: Wasserstein distance and matching of eigenvalue sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rganalysis.errors import InvalidParameterError
from rganalysis.fit.spectra import match_eigenvalues, spectral_wasserstein


def _brute_force(a: np.ndarray, b: np.ndarray, p: float) -> float:
    n = max(a.size, b.size)
    pa = np.r_[a, np.zeros(n - a.size)]
    pb = np.r_[b, np.zeros(n - b.size)]
    best = min(np.sum(np.abs(pa - pb[list(perm)]) ** p) for perm in itertools.permutations(range(n)))
    return float((best / n) ** (1 / p))


def test_identical_sets_are_at_distance_zero() -> None:
    a = np.array([0.9, 0.5 + 0.2j, 0.5 - 0.2j, -0.1])
    assert spectral_wasserstein(a, a) == 0.0
    assert spectral_wasserstein(a, a[::-1], p=2) == 0.0


def test_hand_computed_cases() -> None:
    assert spectral_wasserstein([1.0], [0.5]) == pytest.approx(0.5, abs=1e-15)
    # {1, 0.5} vs {1}: pad with 0, 1<->1 (cost 0), 0.5<->0 (cost 0.5), normalised by n = 2
    assert spectral_wasserstein([1.0, 0.5], [1.0]) == pytest.approx(0.25, abs=1e-15)
    assert spectral_wasserstein([1.0, 0.5], [1.0], p=2) == pytest.approx(np.sqrt(0.25 / 2), abs=1e-15)
    # distance in the complex plane, not on the real line
    assert spectral_wasserstein([1j], [1.0]) == pytest.approx(np.sqrt(2), abs=1e-15)
    # the optimal matching is not the sorted one: {0, 1} vs {1.1, 0.1} -> 0.1 each
    assert spectral_wasserstein([0.0, 1.0], [1.1, 0.1]) == pytest.approx(0.1, abs=1e-15)
    assert spectral_wasserstein([], []) == 0.0
    assert spectral_wasserstein([], [0.3, -0.4j]) == pytest.approx(0.35, abs=1e-15)


def test_matching_is_returned() -> None:
    d, matching = spectral_wasserstein([1.0, 0.5], [1.0], return_matching=True)
    assert d == pytest.approx(0.25)
    assert matching.tolist() == [[0, 0], [1, -1]]
    # 0.2 <-> 0.25 and 0 <-> 0.9j: (0.05 + 0.9) / 2, beats 0.2 <-> 0.9j, 0 <-> 0.25 (1.172 / 2)
    d, matching = spectral_wasserstein([0.2], [0.9j, 0.25], return_matching=True)
    assert matching.tolist() == [[0, 1], [-1, 0]]
    assert d == pytest.approx((0.05 + 0.9) / 2)


def test_conjugate_pairs() -> None:
    z = 0.6 * np.exp(0.7j)
    pair = np.array([z, np.conj(z)])
    assert spectral_wasserstein(pair, pair[::-1]) == 0.0
    # {0.5 +- 0.5i} vs {0.5, 0.5}: each moves by 0.5
    assert spectral_wasserstein([0.5 + 0.5j, 0.5 - 0.5j], [0.5, 0.5]) == pytest.approx(0.5)
    # a pair rotated by a small angle: each eigenvalue moves by |z| * |e^{i d} - 1|
    rot = np.array([z * np.exp(0.01j), np.conj(z * np.exp(0.01j))])
    assert spectral_wasserstein(pair, rot) == pytest.approx(abs(z) * abs(np.exp(0.01j) - 1), rel=1e-12)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_agrees_with_brute_force_and_is_symmetric(p: float) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        ka, kb = rng.integers(1, 6, size=2)
        a = rng.normal(size=ka) + 1j * rng.normal(size=ka)
        b = rng.normal(size=kb) + 1j * rng.normal(size=kb)
        d = spectral_wasserstein(a, b, p=p)
        assert d == pytest.approx(_brute_force(a, b, p), rel=1e-12, abs=1e-14)
        assert d == pytest.approx(spectral_wasserstein(b, a, p=p), rel=1e-12, abs=1e-14)
        assert d > 0


@pytest.mark.parametrize("p", [1, 2])
def test_triangle_inequality_equal_sizes(p: float) -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        a, b, c = (rng.normal(size=6) + 1j * rng.normal(size=6) for _ in range(3))
        ab = spectral_wasserstein(a, b, p=p)
        bc = spectral_wasserstein(b, c, p=p)
        ac = spectral_wasserstein(a, c, p=p)
        assert ac <= ab + bc + 1e-12


def test_match_eigenvalues_recovers_a_permutation() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=8) + 1j * rng.normal(size=8)
    perm = rng.permutation(8)
    other = ref[perm] + 1e-6 * rng.normal(size=8)
    idx = match_eigenvalues(ref, other)
    assert np.array_equal(perm[idx], np.arange(8))
    assert np.max(np.abs(other[idx] - ref)) < 1e-5


def test_match_eigenvalues_unequal_sizes() -> None:
    idx = match_eigenvalues([1.0, 0.5, 0.1], [0.49, 0.95])
    assert idx.tolist() == [1, 0, -1]
    idx = match_eigenvalues([0.5], [0.1, 0.52, 0.9])
    assert idx.tolist() == [1]
    assert match_eigenvalues([], [1.0]).tolist() == []
    assert match_eigenvalues([1.0], []).tolist() == [-1]


def test_bad_input() -> None:
    with pytest.raises(InvalidParameterError):
        spectral_wasserstein([1.0], [0.5], p=0.5)
    with pytest.raises(InvalidParameterError):
        spectral_wasserstein([np.nan], [0.5])
    with pytest.raises(InvalidParameterError):
        spectral_wasserstein(np.ones((2, 2)), [0.5])
    with pytest.raises(InvalidParameterError):
        match_eigenvalues([1.0], [np.inf])


def test_sort_eigenvalues_ignores_round_off_in_the_modulus() -> None:
    from rganalysis.fit.spectra import sort_eigenvalues

    lam = np.array([0.5 - 0.3j, 0.9, 0.5 + 0.3j, -0.9 + 1e-13j])
    assert sort_eigenvalues(lam).tolist() == [3, 1, 2, 0]  # |0.9| tie -> larger im (1e-13) first; +im first
    # a modulus perturbed by round-off does not flip the order of a conjugate pair
    noisy = lam.copy()
    noisy[0] = noisy[0] * (1 + 1e-14)
    assert sort_eigenvalues(noisy).tolist() == [3, 1, 2, 0]


def test_pooled_columns_make_a_conjugate_pair_independent_of_mirror_ties() -> None:
    from rganalysis.fit.spectra import conjugate_pairs, pooled_columns

    ref = np.array([0.5 + 0.1j, 0.5 - 0.1j, 0.2])
    assert conjugate_pairs(ref) == [(0, 1)]
    # two resamples whose matchings are mirror images of each other (a tie of match_eigenvalues)
    a = np.array([[-0.4 + 0j, 0.01 - 0.2j, 0.2], [0.3, 0.6, 0.1]])
    b = np.array([[0.01 + 0.2j, -0.4 + 0j, 0.2], [0.6, 0.3, 0.1]])
    pa, pb = pooled_columns(a, ref, conjugate=True), pooled_columns(b, ref, conjugate=True)
    for i in range(2):
        assert sorted(np.abs(pa[i])) == sorted(np.abs(pb[i]))
        assert sorted(pa[i].imag) == sorted(pb[i].imag)
    np.testing.assert_array_equal(pa[2], a[:, 2])  # a real eigenvalue keeps its own samples
