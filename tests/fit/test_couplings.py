"""Couplings: registry, built-in sets, flows and depth resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from rganalysis.errors import InvalidParameterError
from rganalysis.fit.couplings import (
    available_coupling_sets,
    compute_couplings,
    coupling_values,
    flow_couplings,
    register_coupling_set,
    resample_depth,
    unregister_coupling_set,
)
from rganalysis.rg.coarse_graining import coarse_grain
from rganalysis.store.state import State


@pytest.fixture
def state() -> State:
    g = torch.Generator().manual_seed(0)
    w = {
        "conv1.weight": torch.randn(8, 3, 3, 3, generator=g),
        "layer1.0.conv1.weight": torch.randn(16, 8, 3, 3, generator=g),
        "fc.weight": torch.randn(10, 64, generator=g),
    }
    masks = {k: v.abs() > 0.4 for k, v in w.items()}
    return State(w, masks)


def test_builtin_sets_registered() -> None:
    assert {"density", "magnitude", "spectral"} <= set(available_coupling_sets())


def test_density_couplings_and_coordinates(state: State) -> None:
    k = compute_couplings(state)
    assert k.dims == ("coupling",)
    assert list(k["coupling"].values) == [f"density[{n}]" for n in state.names]
    assert list(k["layer"].values) == state.names
    assert set(k["set"].values) == {"density"} and set(k["statistic"].values) == {"density"}
    np.testing.assert_allclose(k["depth"].values, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(k.values, list(state.densities().values()))
    np.testing.assert_allclose(coupling_values(state), k.values)


def test_magnitude_statistics_match_numpy(state: State) -> None:
    k = compute_couplings(state, "magnitude")
    for name, w in state.weights.items():
        surv = w[state.masks[name]].double().numpy()
        mag = np.abs(surv)
        got = {
            s: float(k.sel(coupling=f"magnitude.{s}[{name}]"))
            for s in ("mean", "std", "q25", "q50", "q75", "kurtosis")
        }
        assert got["mean"] == pytest.approx(mag.mean(), rel=1e-12)
        assert got["std"] == pytest.approx(mag.std(), rel=1e-12)
        for s, q in (("q25", 0.25), ("q50", 0.5), ("q75", 0.75)):
            assert got[s] == pytest.approx(np.quantile(mag, q), rel=1e-12)
        assert got["kurtosis"] == pytest.approx(stats.kurtosis(surv, fisher=False), rel=1e-10)


def test_magnitude_of_empty_layer_is_nan(state: State) -> None:
    masks = dict(state.masks)
    masks["fc.weight"] = torch.zeros_like(masks["fc.weight"])
    k = compute_couplings(state.with_masks(masks), "magnitude")
    assert math.isnan(float(k.sel(coupling="magnitude.mean[fc.weight]")))


def test_spectral_uses_masked_reshaped_matrices(state: State) -> None:
    k = compute_couplings(state, "spectral")
    for name, wm in state.masked():
        mat = wm.reshape(wm.shape[0], -1).double().numpy()
        sv = np.linalg.svd(mat, compute_uv=False)
        assert float(k.sel(coupling=f"spectral.top_sv[{name}]")) == pytest.approx(sv[0], rel=1e-10)
        assert float(k.sel(coupling=f"spectral.stable_rank[{name}]")) == pytest.approx(
            (sv**2).sum() / sv[0] ** 2, rel=1e-10
        )


def test_several_sets_order(state: State) -> None:
    k = compute_couplings(state, ("density", "spectral"))
    assert k.sizes["coupling"] == 3 + 2 * 3
    assert list(k["set"].values[:3]) == ["density"] * 3
    assert list(k["statistic"].values[3:6]) == ["top_sv"] * 3


def test_user_registered_set(state: State) -> None:
    @register_coupling_set("l1_test")
    def l1(st: State) -> dict:
        out = {k: float(w.abs().sum()) for k, w in st.masked()}
        out["total"] = sum(out.values())  # a whole-network coupling: depth NaN
        return out

    try:
        k = compute_couplings(state, ["density", "l1_test"])
        assert "l1_test[fc.weight]" in list(k["coupling"].values)
        assert math.isnan(float(k.sel(coupling="l1_test[total]")["depth"]))
        with pytest.raises(InvalidParameterError, match="already registered"):
            register_coupling_set("l1_test")(lambda st: {})
    finally:
        unregister_coupling_set("l1_test")
    with pytest.raises(InvalidParameterError, match="unknown coupling set 'l1_test'.*density"):
        compute_couplings(state, "l1_test")


def test_flow_couplings_of_an_imp_flow(state: State) -> None:
    states = [state]
    for _ in range(3):
        states.append(coarse_grain(states[-1], 0.2))
    f = flow_couplings(states)
    assert f.dims == ("round", "coupling")
    assert list(f["round"].values) == [0, 1, 2, 3]
    sizes = np.array(list(state.sizes().values()))
    survivors = f.values @ sizes
    np.testing.assert_allclose(survivors[1:], np.round(0.8 * survivors[:-1]), atol=1.0)
    assert "layer" in f.coords and "depth" in f.coords


def test_flow_couplings_rejects_different_layers(state: State) -> None:
    other = State({"a": torch.ones(3)}, {"a": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(InvalidParameterError, match="round 1"):
        flow_couplings([state, other])


def _linear_density_net(n_layers: int) -> State:
    """Layers whose density is 0.2 + 0.6 * depth (exactly representable with 1000 weights each)."""
    w, m = {}, {}
    for i in range(n_layers):
        d = i / (n_layers - 1)
        keep = int(round(1000 * (0.2 + 0.6 * d)))
        w[f"l{i}"] = torch.ones(1000)
        mm = torch.zeros(1000, dtype=torch.bool)
        mm[:keep] = True
        m[f"l{i}"] = mm
    return State(w, m)


def test_resample_depth_puts_different_depths_in_one_space() -> None:
    short = compute_couplings(_linear_density_net(5))
    deep = compute_couplings(_linear_density_net(21))
    a = resample_depth(short, n_points=11)
    b = resample_depth(deep, n_points=11)
    assert list(a["coupling"].values) == list(b["coupling"].values)
    assert a["coupling"].values[0] == "density[depth=0.000]"
    grid = np.linspace(0, 1, 11)
    np.testing.assert_allclose(a.values, 0.2 + 0.6 * grid, atol=1e-3)
    np.testing.assert_allclose(b.values, 0.2 + 0.6 * grid, atol=1e-3)
    np.testing.assert_allclose(a["depth"].values, grid)


def test_resample_depth_on_a_flow_and_shared_depths(state: State) -> None:
    st = State(
        state.weights,
        state.masks,
        depth={"conv1.weight": 0.0, "layer1.0.conv1.weight": 1.0, "fc.weight": 1.0},
    )
    f = flow_couplings([st, coarse_grain(st, 0.3)], ("density", "magnitude"))
    r = resample_depth(f, n_points=3)
    assert r.dims == ("round", "coupling") and r.sizes["coupling"] == (1 + 6) * 3
    d = f.sel(coupling=[f"density[{n}]" for n in st.names]).values
    np.testing.assert_allclose(r.sel(coupling="density[depth=0.000]").values, d[:, 0])
    np.testing.assert_allclose(r.sel(coupling="density[depth=1.000]").values, d[:, 1:].mean(axis=1))
    np.testing.assert_allclose(
        r.sel(coupling="density[depth=0.500]").values, (d[:, 0] + d[:, 1:].mean(1)) / 2
    )
    with pytest.raises(InvalidParameterError):
        resample_depth(f, n_points=1)
