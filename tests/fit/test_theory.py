"""Closed-form theory of the global density flow (sympy derivation, Gaussian layers, empirical g')."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from rganalysis.errors import InvalidParameterError
from rganalysis.fit.couplings import flow_couplings
from rganalysis.fit.theory import (
    density_jacobian_from_state,
    density_jacobian_symbolic,
    empirical_survival,
    gaussian_density_jacobian,
    gaussian_random_jacobian,
    gaussian_survival,
    gaussian_survival_prime,
    gaussian_survival_symbolic,
    gaussian_threshold,
    gaussian_trajectory,
    global_threshold,
    rank_one_density_jacobian,
)
from rganalysis.rg.coarse_graining import coarse_grain
from rganalysis.store.state import State

from conftest import SIGMAS, SIZES, P


def test_symbolic_jacobian_is_the_rank_one_formula() -> None:
    J = density_jacobian_symbolic(3)
    T, p = sp.Symbol("T", nonnegative=True), sp.Symbol("p", positive=True)
    N = sp.symbols("N_0:3", positive=True)
    gp = [sp.diff(sp.Function(f"g_{i}")(T), T) for i in range(3)]
    S = sum(N[m] * gp[m] for m in range(3))
    for i in range(3):
        for k in range(3):
            assert sp.simplify(J[i, k] - (1 - p) * N[k] * gp[i] / S) == 0


def test_symbolic_gaussian_matches_numeric() -> None:
    J = density_jacobian_symbolic(3, "gaussian")
    syms = [
        sp.Symbol("T", nonnegative=True),
        sp.Symbol("p", positive=True),
        *sp.symbols("N_0:3", positive=True),
        *sp.symbols("sigma_0:3", positive=True),
    ]
    f = sp.lambdify(syms, J, modules=["scipy", "numpy"])
    num = np.array(f(0.7, P, *SIZES, *SIGMAS), dtype=float)
    np.testing.assert_allclose(num, gaussian_density_jacobian(SIGMAS, SIZES, P, 0.7), rtol=1e-12)


def test_survival_function_and_slope() -> None:
    g, T, s = gaussian_survival_symbolic()
    assert sp.simplify(sp.diff(g, T) + sp.sqrt(2 / sp.pi) / s * sp.exp(-(T**2) / (2 * s**2))) == 0
    t = np.linspace(0.1, 3, 7)
    h = 1e-6
    num = (gaussian_survival(t + h, 1.3) - gaussian_survival(t - h, 1.3)) / (2 * h)
    np.testing.assert_allclose(gaussian_survival_prime(t, 1.3), num, rtol=1e-6)
    assert gaussian_survival(0.0, 2.0) == pytest.approx(1.0)


def test_rank_one_spectrum() -> None:
    J = gaussian_density_jacobian(SIGMAS, SIZES, P, 0.9)
    lam, V = np.linalg.eig(J)
    order = np.argsort(-np.abs(lam))
    lam, V = lam[order], V[:, order]
    np.testing.assert_allclose(np.abs(lam), [1 - P, 0, 0], atol=1e-12)
    gp = gaussian_survival_prime(0.9, SIGMAS)
    cos = abs(np.real(V[:, 0]) @ gp) / np.linalg.norm(gp)
    assert cos == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(np.array(SIZES) @ J, (1 - P) * np.array(SIZES), rtol=1e-12)  # left eigvec N
    assert np.linalg.matrix_rank(J) == 1


def test_closed_form_trajectory_conserves_the_global_fraction() -> None:
    dens, thr = gaussian_trajectory(SIGMAS, SIZES, P, 6)
    assert dens.shape == (7, 3) and thr.shape == (7,)
    glob = dens @ np.array(SIZES) / sum(SIZES)
    np.testing.assert_allclose(glob, (1 - P) ** np.arange(7), rtol=1e-12)
    assert np.all(np.diff(thr) > 0)
    assert thr[3] == pytest.approx(gaussian_threshold(SIGMAS, SIZES, (1 - P) ** 3), rel=1e-10)
    # the smallest-sigma layer is pruned fastest
    assert np.all(dens[1:, 0] < dens[1:, 1]) and np.all(dens[1:, 1] < dens[1:, 2])


def test_trajectory_from_an_uneven_start_freezes_high_threshold_layers() -> None:
    start = np.array([0.0, 0.0, 5.0])  # layer 2 keeps only |w| > 5 sigma_2 / 2: above the next T
    dens, thr = gaussian_trajectory(SIGMAS, SIZES, P, 2, start_thresholds=start)
    assert thr[1] < 5.0
    assert dens[1, 2] == pytest.approx(dens[0, 2])
    kept = dens @ np.array(SIZES)
    np.testing.assert_allclose(kept[1:], (1 - P) * kept[:-1], rtol=1e-12)


def test_imp_flow_follows_the_closed_form_trajectory(gaussian_state: State) -> None:
    rounds = 8
    states = [gaussian_state]
    for _ in range(rounds):
        states.append(coarse_grain(states[-1], P))
    measured = flow_couplings(states).values
    dens, _ = gaussian_trajectory(SIGMAS, SIZES, P, rounds)
    # finite-size scale: binomial sd of an empirical survival fraction of N_l weights
    sd = np.sqrt(dens * (1 - dens) / np.array(SIZES)) + 1.0 / np.array(SIZES)
    z = np.abs(measured - dens) / sd
    assert z.max() < 5.0, z.max()
    np.testing.assert_allclose(measured, dens, atol=5e-3)


def test_empirical_jacobian_matches_the_gaussian_one(gaussian_state: State) -> None:
    st = coarse_grain(gaussian_state, P)
    T = global_threshold(st, P)
    _, thr = gaussian_trajectory(SIGMAS, SIZES, P, 2)
    assert T == pytest.approx(thr[2], rel=2e-3)
    g, gp = empirical_survival(st, T)
    np.testing.assert_allclose(g, gaussian_survival(T, SIGMAS), atol=4e-3)
    np.testing.assert_allclose(gp, gaussian_survival_prime(T, SIGMAS), rtol=0.1)
    Je = density_jacobian_from_state(st, P)
    Jg = gaussian_density_jacobian(SIGMAS, SIZES, P, T)
    assert np.abs(Je - Jg).max() < 0.02
    np.testing.assert_allclose(np.sort(np.abs(np.linalg.eigvals(Je)))[::-1], [0.8, 0, 0], atol=1e-9)


def test_random_family_jacobian_keeps_the_global_eigenvalue() -> None:
    dens, thr = gaussian_trajectory(SIGMAS, SIZES, P, 2)
    J = gaussian_random_jacobian(SIGMAS, SIZES, P, dens[1], thr[2])
    np.testing.assert_allclose(np.array(SIZES) @ J, (1 - P) * np.array(SIZES), rtol=1e-12)
    lam = np.sort(np.abs(np.linalg.eigvals(J)))
    surv = dens[2] / dens[1]
    assert np.isclose(lam, 1 - P).any()
    assert lam.min() >= surv.min() - 1e-9 and lam.max() <= surv.max() + 1e-9


def test_rank_one_rejects_bad_input() -> None:
    with pytest.raises(InvalidParameterError):
        rank_one_density_jacobian([0.0, 0.0], [1, 2], 0.2)
    with pytest.raises(InvalidParameterError):
        gaussian_density_jacobian(SIGMAS, SIZES, 1.2, 0.5)
    with pytest.raises(InvalidParameterError):
        gaussian_trajectory(SIGMAS, SIZES, 0.2, -1)
