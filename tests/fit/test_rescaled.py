"""Rescaled couplings (``density_rel``, ``unit_rel``, ``magnitude_rel``, ``global_density``): their values,
the data-free flow's Jacobian in these coordinates derived with sympy (docs/theory.md, section 9) against
the response estimator on Gaussian layers, and why trajectory fits exceed ``1 - p``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp
import torch
import xarray as xr

from rganalysis.fit.couplings import (
    RAW_COUPLING_SETS,
    RESCALED_COUPLING_SETS,
    available_coupling_sets,
    compute_couplings,
    flow_couplings,
    relative_reference_layer,
)
from rganalysis.fit.jacobian import ResponseEstimator, TrajectoryEstimator
from rganalysis.fit.theory import (
    gaussian_density_jacobian,
    gaussian_relative_jacobian,
    gaussian_survival,
    gaussian_survival_prime,
    gaussian_trajectory,
    global_threshold,
    relative_density_jacobian,
    relative_density_jacobian_symbolic,
    secant_ratios,
)
from rganalysis.store.state import State

from conftest import SIGMAS, SIZES, P


def _moduli(lam: np.ndarray) -> np.ndarray:
    return np.sort(np.abs(np.asarray(lam)))[::-1]


# --- the sets --------------------------------------------------------------------------------------------
def test_rescaled_and_raw_sets_are_registered_and_old_names_are_the_raw_sets(gaussian_flow) -> None:
    assert set(RESCALED_COUPLING_SETS) | set(RAW_COUPLING_SETS) | {"global_density"} <= set(
        available_coupling_sets()
    )
    st = gaussian_flow[1]
    old = compute_couplings(st, "density").values
    np.testing.assert_array_equal(compute_couplings(st, "density_raw").values, old)
    assert list(compute_couplings(st, "density_raw")["coupling"].values) == [
        f"density_raw[l{i}]" for i in range(3)
    ]


def test_relative_densities_divide_out_the_global_density(gaussian_flow) -> None:
    st = gaussian_flow[1]
    rho = np.array(list(st.densities().values()))
    n = np.asarray(SIZES, float) / sum(SIZES)
    k = compute_couplings(st, ("density_rel", "global_density"))
    assert relative_reference_layer(st.sizes()) == "l2"  # the largest layer is left out
    assert list(k["coupling"].values) == ["density_rel[l0]", "density_rel[l1]", "global_density[network]"]
    g = float(n @ rho)
    assert k.values[-1] == pytest.approx(1 - P, abs=1e-6)  # one round at p = 0.2 from dense
    np.testing.assert_allclose(k.values[:2], rho[:2] / g, rtol=1e-12)
    # the left-out layer is fixed by the others: sum_l n_l x_l = 1
    assert n[:2] @ k.values[:2] + n[2] * rho[2] / g == pytest.approx(1.0, abs=1e-12)
    # undefined for the empty network
    empty = st.with_masks({k_: torch.zeros_like(m) for k_, m in st.masks.items()})
    assert np.all(np.isnan(compute_couplings(empty, "density_rel").values))


def test_relative_unit_and_magnitude_sets_are_scale_free() -> None:
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(20, 30, generator=g), "b": torch.randn(30, 10, generator=g)}
    masks = {k: torch.rand(v.shape, generator=g) < 0.4 for k, v in w.items()}
    st = State(w, masks)
    st2 = State({"a": 4.0 * w["a"], "b": 0.5 * w["b"]}, masks)
    np.testing.assert_allclose(
        compute_couplings(st, "magnitude_rel").values,
        compute_couplings(st2, "magnitude_rel").values,
        rtol=1e-12,
    )
    u = compute_couplings(st, "unit_rel")
    raw = compute_couplings(st, "unit_raw")
    dens = st.densities()
    for name in ("a", "b"):
        q = u.sel(coupling=f"unit_rel.out_q50[{name}]").item()
        assert q == pytest.approx(
            raw.sel(coupling=f"unit_raw.out_q50[{name}]").item() / dens[name], rel=1e-12
        )


def test_streamed_rescaled_couplings_equal_the_in_memory_ones(imp_flow) -> None:
    import rganalysis
    from rganalysis.fit.streaming import stream_flow_couplings

    sets = ("density_rel", "global_density", "unit_rel")
    with rganalysis.load(imp_flow["path"]) as pset:
        a = flow_couplings(pset, sets)
        b = stream_flow_couplings(pset, sets, device="cpu")
    assert list(a["coupling"].values) == list(b["coupling"].values)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-14)
    np.testing.assert_array_equal(np.isnan(a["depth"].values), np.isnan(b["depth"].values))


# --- the data-free flow in rescaled coordinates: theory ------------------------------------------------
def test_symbolic_relative_jacobian_has_a_zero_relative_block_and_the_scale_row() -> None:
    J = relative_density_jacobian_symbolic(3)
    p = sp.Symbol("p", positive=True)
    assert J[:2, :2] == sp.zeros(2, 2)
    assert list(J[2, :]) == [0, 0, 1 - p]
    # the scale column against the closed form, on Gaussian layers
    T = sp.Symbol("T", nonnegative=True)
    N = sp.symbols("N_0:3", positive=True)
    x = sp.symbols("x_0:2", positive=True)
    rho = sp.Symbol("rho", positive=True)
    t0 = 0.9
    sub = {p: P, T: t0, **dict(zip(N, SIZES, strict=True))}
    g, gp = gaussian_survival(t0, SIGMAS), gaussian_survival_prime(t0, SIGMAS)
    n = np.asarray(SIZES, float) / sum(SIZES)
    sub[rho] = float(n @ g) / (1 - P)
    num = []
    for i in range(2):
        e = J[i, 2]
        for k in range(3):
            e = e.subs(sp.Derivative(sp.Function(f"g_{k}")(T), T), gp[k]).subs(sp.Function(f"g_{k}")(T), g[k])
        num.append(float(e.subs(sub).subs({x[0]: 1, x[1]: 1})))
    Jn = relative_density_jacobian(g, gp, SIZES, P)
    np.testing.assert_allclose(Jn[:2, 2], num, rtol=1e-12)
    np.testing.assert_array_equal(Jn[:, :2], 0.0)
    assert Jn[2, 2] == pytest.approx(1 - P, abs=0)


@pytest.fixture(scope="module")
def rescaled_fits(gaussian_flow):
    return {
        r: ResponseEstimator(P, couplings=("density_rel", "global_density"), device="cpu").fit(
            gaussian_flow[r]
        )
        for r in (1, 2)
    }


@pytest.mark.parametrize("rnd", [1, 2])
def test_response_estimator_reproduces_the_rescaled_jacobian(gaussian_flow, rescaled_fits, rnd: int) -> None:
    """Measured (64 threshold perturbations, eps 0.02): |lambda| 0.80002, 0.0016, 0.0003 (round 1) and
    0.80001, 0.0043, 0.0043 (round 2); relative block at most 0.0057; scale column within 0.005 / 0.023."""
    st = gaussian_flow[rnd]
    est = rescaled_fits[rnd]
    assert est.manifold_["on_manifold"] and est.closure_r2_ > 0.999
    J_theory = gaussian_relative_jacobian(SIGMAS, SIZES, P, global_threshold(st, P))
    lam = _moduli(est.eigenvalues_)
    assert lam[0] == pytest.approx(1 - P, abs=1e-3)  # the scale: exactly 1/b
    assert lam[1] < 0.01 and lam[2] < 0.01  # every relative direction: 0
    assert np.abs(est.jacobian_[:, :2]).max() < 0.01  # the relative block is 0
    np.testing.assert_allclose(est.jacobian_[2], [0, 0, 1 - P], atol=1e-4)  # the scale row
    np.testing.assert_allclose(est.jacobian_[:2, 2], J_theory[:2, 2], atol=0.03)  # response to the scale


def test_relative_densities_alone_do_not_close_the_data_free_map(gaussian_flow) -> None:
    """x' depends on the global density only, which relative densities leave out: regressed on dx alone
    the response is mostly unexplained (closure 0.35 measured) -- add ``global_density`` to measure R."""
    est = ResponseEstimator(P, couplings=("density_rel",), device="cpu").fit(gaussian_flow[1])
    assert est.closure_r2_ < 0.6


# --- trajectory fits: why |lambda| above 1 - p ------------------------------------------------------------
def test_trajectory_fits_exceed_one_minus_p_on_a_flow_whose_local_jacobians_do_not() -> None:
    """Closed-form Gaussian flow (sigma 1, 0.5, 2; sizes 6e4, 6e4, 1e4), 10 rounds at p = 0.2: every local
    Jacobian has spectrum {0.8, 0, 0}; the secant ratios of successive increments average (weighted by the
    removals) to exactly 0.8 and stay below 1; the affine trajectory fit gives a pair at |lambda| 1.122."""
    sig, size = (1.0, 0.5, 2.0), (6e4, 6e4, 1e4)
    dens, thr = gaussian_trajectory(sig, size, P, 10)
    for T in thr[1:]:
        np.testing.assert_allclose(
            _moduli(np.linalg.eigvals(gaussian_density_jacobian(sig, size, P, T))), [0.8, 0, 0], atol=1e-12
        )
    r = secant_ratios(dens, size)
    inc = np.diff(dens, axis=0)[:-1] * np.asarray(size)
    np.testing.assert_allclose((inc * r).sum(1) / inc.sum(1), 1 - P, rtol=1e-10)
    assert np.nanmax(r) < 1.0 and np.nanmax(r) > 0.98
    K = xr.DataArray(
        dens, dims=("round", "coupling"), coords={"round": np.arange(11), "coupling": ["a", "b", "c"]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lam = _moduli(TrajectoryEstimator(n_bootstrap=0).fit(K).eigenvalues_)
    assert lam[0] == pytest.approx(1.1221, abs=1e-3) and lam[2] == pytest.approx(0.8, abs=1e-3)
