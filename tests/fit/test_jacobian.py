"""Jacobian estimators against the closed-form theory on Gaussian layers, and their failure modes.

Setting of the numbers quoted in docs/theory.md: three layers of i.i.d. Gaussian weights
(sigma = 0.5, 1, 2; sizes 1e5, 3e5, 6e5), density couplings, global rounds at p = 0.2.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from rganalysis.errors import DegenerateRegressionError, InvalidParameterError, RankError, TooFewRoundsError
from rganalysis.fit.couplings import flow_couplings
from rganalysis.fit.intervals import IntervalWarning
from rganalysis.fit.jacobian import (
    IllConditionedWarning,
    ResponseEstimator,
    TrajectoryEstimator,
    flow_pairs,
    perturb_state,
)
from rganalysis.fit.theory import (
    density_jacobian_from_state,
    gaussian_density_jacobian,
    gaussian_random_jacobian,
    gaussian_survival_prime,
    global_threshold,
)
from rganalysis.rg.coarse_graining import coarse_grain
from rganalysis.store.state import State

from conftest import SIGMAS, SIZES, P


def _moduli(lam: np.ndarray) -> np.ndarray:
    return np.sort(np.abs(np.asarray(lam)))[::-1]


@pytest.fixture(scope="module")
def flow(gaussian_flow: list[State]) -> list[State]:
    return gaussian_flow


@pytest.fixture(scope="module")
def threshold_fits(flow: list[State]) -> dict[int, ResponseEstimator]:
    return {r: ResponseEstimator(P, device="cpu").fit(flow[r]) for r in (1, 2)}


# --- response estimator: threshold perturbations reproduce the theory --------------------------------
@pytest.mark.parametrize("rnd", [1, 2])
def test_threshold_response_reproduces_theory(flow: list[State], threshold_fits, rnd: int) -> None:
    st = flow[rnd]
    est = threshold_fits[rnd]
    assert est.perturbation_ == "threshold"
    assert est.manifold_["on_manifold"]
    T = global_threshold(st, P)
    J_theory = gaussian_density_jacobian(SIGMAS, SIZES, P, T)
    # eigenvalues: 1 - p exactly (global survivors are scaled by exactly 1 - p), the rest ~ 0
    lam = _moduli(est.eigenvalues_)
    assert lam[0] == pytest.approx(1 - P, abs=2e-3)
    assert lam[1] < 0.02 and lam[2] < 0.02
    # the whole matrix, against the Gaussian and the empirical-g' theory
    assert np.abs(est.jacobian_ - J_theory).max() < 0.02
    assert np.abs(est.jacobian_ - density_jacobian_from_state(st, P)).max() < 0.02
    # leading eigenvector along g'(T)
    gp = gaussian_survival_prime(T, SIGMAS)
    v = np.real(est.eigenvectors_[:, 0])
    assert abs(v @ gp) / (np.linalg.norm(v) * np.linalg.norm(gp)) > 0.999
    # diagnostics
    assert est.closure_r2_ > 0.999
    assert est.condition_number_ < 2.0
    assert est.eigenvalue_ci_.shape == (3, 2)
    assert est.eigenvalue_ci_[0, 0] <= lam[0] + 1e-9 <= est.eigenvalue_ci_[0, 1] + 2e-9


def test_trajectory_fit_on_perturbed_flows_agrees_with_response(flow: list[State], threshold_fits) -> None:
    """One-step pairs of 12 flows started from threshold perturbations of one state."""
    start = flow[1]
    flows = [
        flow_couplings([s0, coarse_grain(s0, P)])
        for s0 in perturb_state(start, "threshold", 0.02, random_state=1, n=12)
    ]
    est = TrajectoryEstimator(n_bootstrap=100).fit(flows)
    assert est.n_pairs_ == 12 and est.n_flows_ == 12
    T = global_threshold(start, P)
    theory = _moduli(np.linalg.eigvals(gaussian_density_jacobian(SIGMAS, SIZES, P, T)))
    lam = _moduli(est.eigenvalues_)
    assert lam[0] == pytest.approx(theory[0], rel=0.02)
    np.testing.assert_allclose(lam, theory, atol=0.02)
    np.testing.assert_allclose(lam, _moduli(threshold_fits[1].eigenvalues_), atol=0.02)
    assert np.abs(est.jacobian_ - threshold_fits[1].jacobian_).max() < 0.02
    assert est.r2_ > 0.999


def test_multi_round_trajectory_fit_keeps_only_the_global_mode(flow: list[State]) -> None:
    """Pairs from later rounds sit elsewhere on the nonlinear flow: the affine fit is then a global
    average, not the local Jacobian.  Only the global-density mode (left eigenvector N, 1 - p) is exact."""
    flows = []
    for s0 in perturb_state(flow[1], "threshold", 0.02, random_state=1, n=12):
        sts = [s0]
        for _ in range(3):
            sts.append(coarse_grain(sts[-1], P))
        flows.append(flow_couplings(sts))
    est = TrajectoryEstimator(n_bootstrap=0).fit(flows)
    N = np.array(SIZES, dtype=float)
    np.testing.assert_allclose(N @ est.jacobian_, (1 - P) * N, rtol=1e-4)
    assert np.isclose(np.abs(est.eigenvalues_), 1 - P, atol=1e-4).any()
    assert _moduli(est.eigenvalues_)[1] > 0.1  # the subleading modes are not the local ones (~0)


# --- other perturbation families ---------------------------------------------------------------------
def test_random_perturbations_give_survival_fractions(flow: list[State]) -> None:
    st = flow[1]
    est = ResponseEstimator(P, perturbation="random", device="cpu").fit(st)
    assert est.perturbation_ == "random"
    rho = np.array(list(st.densities().values()))
    surv = np.array(list(coarse_grain(st, P).densities().values())) / rho
    T = global_threshold(st, P)
    theory = _moduli(np.linalg.eigvals(gaussian_random_jacobian(SIGMAS, SIZES, P, rho, T)))
    lam = _moduli(est.eigenvalues_)
    np.testing.assert_allclose(lam, theory, atol=0.015)
    assert np.isclose(lam, 1 - P, atol=2e-3).any()  # the global mode survives in every family
    assert lam.min() > surv.min() - 0.02 and lam.max() < surv.max() + 0.02
    assert est.closure_r2_ > 0.99


def test_rescale_perturbations_are_refused_for_densities(flow: list[State]) -> None:
    est = ResponseEstimator(P, perturbation="rescale", n_samples=8, n_bootstrap=0, device="cpu")
    with pytest.raises(DegenerateRegressionError, match=r"rescale.*density\[l0\].*unchanged"):
        est.fit(flow[1])


def test_dense_state_warns_about_one_sided_perturbations(flow: list[State]) -> None:
    with pytest.warns(IllConditionedWarning, match="one-sided"):
        est = ResponseEstimator(P, n_samples=32, n_bootstrap=0, device="cpu").fit(flow[0])
    lam = _moduli(est.eigenvalues_)
    assert lam[0] == pytest.approx(1 - P, abs=2e-3) and lam[1] < 0.02


def test_off_manifold_state_warns(flow: list[State]) -> None:
    g = torch.Generator().manual_seed(5)
    st = flow[0].with_masks({k: torch.rand(m.shape, generator=g) < 0.7 for k, m in flow[0].masks.items()})
    with pytest.warns(IllConditionedWarning, match="not on the IMP manifold"):
        est = ResponseEstimator(P, n_samples=8, n_bootstrap=0, device="cpu").fit(st)
    assert not est.manifold_["threshold_shaped"]


def test_response_parameter_errors(flow: list[State]) -> None:
    with pytest.raises(InvalidParameterError, match="perturbation"):
        ResponseEstimator(P, perturbation="bogus").fit(flow[1])
    with pytest.raises(InvalidParameterError, match="n_samples"):
        ResponseEstimator(P, n_samples=3).fit(flow[1])
    with pytest.raises(InvalidParameterError, match="rate"):
        ResponseEstimator(1.5).fit(flow[1])


# --- trajectory estimator on synthetic affine flows --------------------------------------------------
def _affine_flows(
    A: np.ndarray, c: np.ndarray, n_flows: int, rounds: int, seed: int = 0, noise: float = 0.0
) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_flows):
        k = [rng.normal(size=A.shape[0])]
        for _ in range(rounds):
            k.append(A @ k[-1] + c + noise * rng.normal(size=A.shape[0]))
        out.append(np.array(k))
    return out


def test_exact_affine_map_is_recovered() -> None:
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    A = Q @ np.diag([1.3, 0.8, 0.5, 0.1]) @ Q.T
    c = rng.normal(size=4)
    with pytest.warns(IntervalWarning, match="4 zero-width"):  # exact pairs: no spread, no interval
        est = TrajectoryEstimator(n_bootstrap=50).fit(_affine_flows(A, c, 3, 4))
    np.testing.assert_allclose(est.jacobian_, A, atol=1e-9)
    np.testing.assert_allclose(est.offset_, c, atol=1e-9)
    np.testing.assert_allclose(est.fixed_point_, np.linalg.solve(np.eye(4) - A, c), atol=1e-8)
    np.testing.assert_allclose(np.abs(est.eigenvalues_), [1.3, 0.8, 0.5, 0.1], atol=1e-9)
    assert np.isnan(est.eigenvalue_ci_).all() and est.n_bootstrap_ == 50
    assert est.residual_ < 1e-10 and est.r2_ == pytest.approx(1.0)


def test_rank_truncation_keeps_the_slow_modes() -> None:
    """Flows near a slow 2-d subspace of a 5-d affine map: exact DMD at rank 2 finds its modes."""
    rng = np.random.default_rng(4)
    Q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    A = Q @ np.diag([0.9, 0.6, 0.01, 0.01, 0.01]) @ Q.T
    c = 0.1 * Q[:, 0]
    flows = []
    for _ in range(4):
        k = [Q @ np.concatenate([rng.normal(size=2), 0.05 * rng.normal(size=3)])]
        for _ in range(6):
            k.append(A @ k[-1] + c + 1e-4 * rng.normal(size=5))
        flows.append(np.array(k))
    est = TrajectoryEstimator(rank=2, n_bootstrap=50).fit(flows)
    assert est.eigenvalues_.shape == (2,) and est.eigenvectors_.shape == (5, 2) and est.rank_ == 2
    np.testing.assert_allclose(np.abs(est.eigenvalues_), [0.9, 0.6], atol=0.02)
    for j in range(2):
        assert abs(np.real(est.eigenvectors_[:, j]) @ Q[:, j]) > 0.99
    assert np.all(est.eigenvalue_ci_[:, 0] <= np.abs(est.eigenvalues_) + 1e-12)
    with pytest.raises(RankError, match="rank 6"):
        TrajectoryEstimator(rank=6).fit(flows)


def test_ridge_shrinks_and_allows_few_pairs() -> None:
    A = np.array([[0.7, 0.1], [0.0, 0.4]])
    flows = _affine_flows(A, np.zeros(2), 1, 2)  # 2 pairs for 2 couplings: too few unregularised
    with pytest.raises(TooFewRoundsError):
        TrajectoryEstimator().fit(flows)
    with pytest.warns(IllConditionedWarning, match="condition number inf"):  # 2 centred pairs: rank 1
        est = TrajectoryEstimator(ridge=0.1, n_bootstrap=0).fit(flows)
    assert est.condition_number_ == np.inf  # rank 1 by numpy's matrix_rank rule, not a BLAS accident
    assert np.isfinite(est.jacobian_).all()


def test_too_few_rounds_names_the_numbers(flow: list[State]) -> None:
    f = flow_couplings(flow)  # 3 rounds -> 2 pairs, 3 couplings
    with pytest.raises(
        TooFewRoundsError, match=r"2 one-step pair\(s\) from 1 flow\(s\).*3 coupling.*at least 4"
    ):
        TrajectoryEstimator().fit(f)


def test_collinear_couplings_raise_degenerate() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 1))
    flowarr = np.hstack([x, 2 * x, rng.normal(size=(10, 1))])
    with pytest.raises(DegenerateRegressionError, match="condition number"):
        TrajectoryEstimator().fit(flowarr)
    const = np.hstack([x, np.ones((10, 1))])
    with pytest.raises(DegenerateRegressionError, match="k1.*do not vary"):
        TrajectoryEstimator().fit(const)


def test_ill_conditioned_fit_warns() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 1))
    flowarr = np.hstack([x, x + 1e-6 * rng.normal(size=(12, 1)), rng.normal(size=(12, 1))])
    with pytest.warns(IllConditionedWarning, match="ill-conditioned"):
        TrajectoryEstimator(n_bootstrap=0).fit(flowarr)


def test_unit_eigenvalue_gives_nan_fixed_point_with_warning() -> None:
    A = np.diag([1.0, 0.5])
    c = np.array([0.1, 0.2])
    with pytest.warns(IllConditionedWarning, match="I - J is singular"):
        est = TrajectoryEstimator(n_bootstrap=0).fit(_affine_flows(A, c, 3, 3))
    assert np.isnan(est.fixed_point_).all()
    np.testing.assert_allclose(np.abs(est.eigenvalues_), [1.0, 0.5], atol=1e-9)


def test_flow_pairs_and_mismatched_flows(flow: list[State]) -> None:
    f = flow_couplings(flow)
    X, Y, fi, names = flow_pairs([f, f])
    assert X.shape == (4, 3) and list(fi) == [0, 0, 1, 1] and names[0] == "density[l0]"
    np.testing.assert_array_equal(X[1], Y[0])
    other = f.assign_coords(coupling=["a", "b", "c"])
    with pytest.raises(InvalidParameterError, match="different couplings"):
        flow_pairs([f, other])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "rank=None" in repr(TrajectoryEstimator())


def test_single_nonlinear_flow_warns_that_eigenvalues_are_undetermined() -> None:
    """One IMP flow lies on a curve: J across it is extrapolation, flagged by the bootstrap."""
    g = torch.Generator().manual_seed(0)
    states = [
        State.dense(
            {
                "a": torch.randn(300, 200, generator=g),
                "b": torch.randn(200, 300, generator=g) * 0.5,
                "c": torch.randn(50, 200, generator=g) * 2.0,
            }
        )
    ]
    for _ in range(8):
        states.append(coarse_grain(states[-1], P))
    with pytest.warns(IllConditionedWarning, match="poorly determined.*1 flow"):
        est = TrajectoryEstimator().fit(flow_couplings(states))
    # the exactly linear global mode is still found (left eigenvector N, eigenvalue 1 - p) ...
    assert np.isclose(np.abs(est.eigenvalues_), 1 - P, atol=1e-3).any()
    # ... but it need not be the leading one: the transverse eigenvalues are not the local ones (0)
    assert _moduli(est.eigenvalues_)[0] > 0.9


def test_no_bootstrap_interval_from_fewer_than_two_rows_per_parameter() -> None:
    """3 or 7 pairs for 3 couplings (4 parameters per row), even at rank 2: the resamples of so few pairs
    are the fit itself or near-singular fits, and their spread would support any verdict; no interval, every
    class undetermined, one warning with the numbers.  8 pairs (2 per parameter) give intervals."""
    A = np.array([[0.7, 0.1, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 0.2]])
    for m in (3, 7):
        flows = _affine_flows(A, np.zeros(3), 1, m, noise=0.01)
        with pytest.warns(
            IntervalWarning, match=rf"{m} rows for 4 parameters per row, and an interval needs 2 rows"
        ):
            est = TrajectoryEstimator(rank=2, n_bootstrap=50).fit(flows)
        assert est.n_bootstrap_ == 0 and np.isnan(est.eigenvalue_ci_).all()
        from rganalysis.fit.fixed_points import interval_class

        assert {interval_class(lo, hi) for lo, hi in est.eigenvalue_ci_} == {"undetermined"}
    four = _affine_flows(A, np.zeros(3), 1, 8, noise=0.01)
    est = TrajectoryEstimator(rank=2, n_bootstrap=50).fit(four)
    assert est.n_bootstrap_ > 0 and np.isfinite(est.eigenvalue_ci_).all()
