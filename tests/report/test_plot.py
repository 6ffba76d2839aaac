"""rganalysis.plot: every public figure takes ``ax=None`` or an Axes and returns the Axes it drew on."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from rganalysis.report import plot  # noqa: E402
from rganalysis.store.parameter_set import ParameterSet, build_info  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tiny_flow() -> ParameterSet:
    """Two layers, four rounds of nested magnitude masks (in memory)."""
    g = torch.Generator().manual_seed(0)
    w = {"a.weight": torch.randn(40, 30, generator=g), "b.weight": torch.randn(10, 40, generator=g) * 0.3}
    masks = {}
    for k, t in w.items():
        a = t.abs().reshape(-1)
        srt = a.sort().values
        masks[k] = [
            (t.abs() >= srt[int(f * a.numel())]) if f else torch.ones_like(t, dtype=torch.bool)
            for f in (0.0, 0.3, 0.5, 0.7)
        ]
    return ParameterSet(
        build_info(w),
        {0: w},
        masks,
        n_rounds=4,
        layouts=[[]] * 4,
        flow_attrs={"kind": "computed", "rate": 0.3, "rescaling": "none"},
    )


def _new_ax() -> Axes:
    return plt.subplots()[1]


def test_density_heatmap_inputs(tiny_flow):
    ax = plot.density_heatmap(tiny_flow)
    assert isinstance(ax, Axes)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    d = tiny_flow.densities()
    mine = _new_ax()
    assert plot.density_heatmap(d, ax=mine) is mine
    img = mine.get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(img), d.values.T)
    assert plot.density_heatmap(d.values, ax=_new_ax(), annotate=False) is not None


def test_magnitude_distributions_subsample_is_deterministic(tiny_flow):
    ax = _new_ax()
    assert plot.magnitude_distributions(tiny_flow, ax=ax) is ax
    assert ax.get_xscale() == "log"
    assert len(ax.get_yticklabels()) == 4  # one baseline per round
    full, stride, exact = plot._survivor_samples(tiny_flow, [0, 3], max_samples=10**9)
    n3 = sum(int(tiny_flow.mask(n, 3).sum()) for n in tiny_flow.names)
    assert stride == 1
    assert full[0].size == 1600 and full[3].size == n3
    assert exact == {0: 1600, 3: n3}
    sub1, s1, exact1 = plot._survivor_samples(tiny_flow, [0, 3], max_samples=200)
    sub2, _, _ = plot._survivor_samples(tiny_flow, [0, 3], max_samples=200)
    assert s1 == 8 and sub1[0].size == 200
    assert exact1 == exact  # subsampling the histograms never changes the survivor counts
    # stride 6 keeps 267 of 1600 positions: 267 x 6 = 1602 would exceed the total; the ticks are exact
    ax3 = plot.magnitude_distributions(tiny_flow, rounds=[0, 3], ax=_new_ax(), max_samples=300)
    assert [t.get_text() for t in ax3.get_yticklabels()] == [f"round 3\n{n3:,}", "round 0\n1,600"]
    np.testing.assert_array_equal(sub1[3], sub2[3])
    assert set(sub1[3]) <= set(sub1[0])  # the same positions at every round: survivors are a subset
    ax2 = plot.magnitude_distributions(tiny_flow, rounds=[0, 2], ax=_new_ax(), stacked=False, max_samples=200)
    assert len(ax2.get_legend().get_texts()) == 2


def test_project_flow_is_pca():
    t = np.linspace(0, 1, 6)[:, None]
    line = np.hstack([t, 2 * t, -t])  # a straight flow: one direction carries everything
    proj, mean, comps, ratio = plot.project_flow(line)
    assert ratio[0] == pytest.approx(1.0)
    np.testing.assert_allclose(np.abs(comps[0]), np.abs([1, 2, -1]) / np.sqrt(6), atol=1e-12)
    np.testing.assert_allclose(proj[0][:, 1], 0, atol=1e-12)
    np.testing.assert_allclose(mean, line.mean(0))
    # several flows share one basis
    p2, *_ = plot.project_flow([line, line + 0.1])
    assert len(p2) == 2 and p2[0].shape == (6, 2)


def test_flow_projection_with_fixed_point_and_dataarray():
    k = xr.DataArray(np.random.default_rng(0).random((5, 4)), dims=("round", "coupling"))
    ax = plot.flow_projection(k, fixed_point=[0.5] * 4)
    assert isinstance(ax, Axes)
    assert "fixed point K*" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax = plot.flow_projection([k, k * 0.9], ax=_new_ax(), labels=["A", "B"], fixed_point=[None] * 4)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    with pytest.raises(ValueError):
        plot.flow_projection([k, k[:, :3]])


def test_spectrum_from_json_array_and_ci():
    recs = [
        {
            "re": 1.3,
            "im": 0.0,
            "abs": 1.3,
            "exponent": 1.0,
            "class": "relevant",
            "ci_low": 1.2,
            "ci_high": 1.4,
        },
        {"re": 0.5, "im": 0.5, "abs": 0.5 * 2**0.5, "class": "irrelevant", "ci_low": None, "ci_high": None},
        {"re": 0.5, "im": -0.5, "abs": 0.5 * 2**0.5, "class": "irrelevant", "ci_low": 0.6, "ci_high": 9.0},
        {"re": -1.0, "im": 0.0, "abs": 1.0, "class": "marginal", "ci_low": 0.9, "ci_high": 1.1},
    ]
    ax = plot.spectrum({"eigenvalues": recs, "b": 1.25})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"relevant (1)", "irrelevant (2)", "marginal (1)"} <= set(labels)
    assert any("unit circle" in s for s in labels) and any("|y| ≤ 0.2" in s for s in labels)
    assert ax.get_xlim()[1] >= 1.3 * 1.1  # every eigenvalue is in view; a wild interval is not
    assert ax.get_xlim()[1] < 5
    ax = _new_ax()
    assert (
        plot.spectrum(
            np.array([1.2, 0.3 + 0.4j, 0.3 - 0.4j]), ax=ax, ci=[[1.1, 1.3], [0.4, 0.6], [0.4, 0.6]], b=1.25
        )
        is ax
    )
    assert "relevant (1)" in [t.get_text() for t in ax.get_legend().get_texts()]
    # without b a bare |lambda| has no exponent: no class, no band
    labels = [t.get_text() for t in plot.spectrum(np.array([1.2, 0.5])).get_legend().get_texts()]
    assert "undetermined (2)" in labels and not any("band" in s for s in labels)
    with pytest.raises(ValueError):
        plot.spectrum([0.5, 0.2], ci=[[0.4, 0.6]])


def test_spectrum_band_is_the_exponent_band():
    # the grey ring is |y| <= MARGINAL_Y at the JSON's b, i.e. |lambda| in [b**-0.2, b**0.2]; a fit JSON's tol
    # (its near-fixed-point tolerance) is not a band: |lambda| 1.04 at b = 1.25 is y = 0.176, marginal
    ax = plot.spectrum({"eigenvalues": [{"re": 1.04, "im": 0.0, "abs": 1.04}], "b": 1.25, "tol": 0.01})
    assert "marginal (1)" in [t.get_text() for t in ax.get_legend().get_texts()]
    ring = np.hypot(*ax.patches[0].get_xy().T)
    assert ring.max() == pytest.approx(1.25**0.2) and ring.min() == pytest.approx(1.25**-0.2)
    # a Koopman JSON carries its band as tol and b as scale_factor
    ax = plot.spectrum(
        {"eigenvalues": [{"re": 1.04, "im": 0.0, "abs": 1.04}], "scale_factor": 1.25, "tol": 0.1}
    )
    assert "relevant (1)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_distance_curve_forms():
    ax = plot.distance_curve([2.0, 1.0, 0.5, 0.25])
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [2, 1, 0.5, 0.25])
    ax = plot.distance_curve({"A": [1.0, 0.9], "B": {"distance_to_fixed_point": [1.0, None]}}, ax=_new_ax())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    da = xr.DataArray([3.0, 2.0], dims=("round",), coords={"round": [4, 5]})
    ax = plot.distance_curve(da, ax=_new_ax(), log=False)
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [4, 5])


def test_distance_matrix_and_dendrogram():
    x = np.array([[0.0], [0.1], [1.0], [1.15]])
    d = np.abs(x - x.T)
    names = ["a", "b", "c", "d"]
    ax = plot.distance_matrix(d.tolist(), names)
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert len(ax.texts) == 16
    with pytest.raises(ValueError):
        plot.distance_matrix(d, names[:3])
    ax = plot.dendrogram(d, names, threshold=0.5)
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == names
    z = plot.linkage_from_distance(d)
    assert z.shape == (3, 4) and z[-1, 2] == pytest.approx((0.9 + 1.0 + 1.05 + 1.15) / 4)
    ax2 = _new_ax()
    assert plot.dendrogram(z.tolist(), names, ax=ax2) is ax2
    with pytest.raises(ValueError):
        plot.dendrogram(z, names[:2])


def test_transfer_heatmap_rows_are_sources():
    import xarray as xr

    D = xr.DataArray(
        [[0.0, 0.1, np.nan], [0.3, 0.0, np.nan], [np.nan, np.nan, 0.0]],
        dims=("source", "target"),
        coords={"source": ["a", "b", "c"], "target": ["a", "b", "c"]},
    )
    ax = plot.transfer_heatmap(D)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("source (ticket)", "target task")
    assert sorted(t.get_text() for t in ax.texts) == ["0", "0", "0", "0.1", "0.3"]  # NaN cells blank
    assert ax.images[0].get_array()[1, 0] == 0.3  # row = source b, column = target a
    j = {"sources": ["a", "b"], "targets": ["a", "b"], "scores": [[0.0, None], [0.2, 0.0]]}
    assert len(plot.transfer_heatmap(j, ax=_new_ax()).texts) == 3
    with pytest.raises(ValueError, match="2 sources"):
        plot.transfer_heatmap({**j, "scores": [[0.0]]})


def test_plots_take_fitted_objects(tiny_flow):
    """A fitted FlowFit, KoopmanDMD or UniversalityAnalysis draws the same figure as its JSON."""
    from rganalysis.fit.flowfit import FlowFit
    from rganalysis.koopman.dmd import KoopmanDMD
    from rganalysis.universality.analysis import UniversalityAnalysis

    fit = FlowFit(("density_raw",), depth_points=2, ridge=0.1, n_bootstrap=10).fit(tiny_flow)
    a, b = plot.spectrum(fit), plot.spectrum(fit.to_json())
    assert [len(c.get_offsets()) for c in a.collections[1:]] == [
        len(c.get_offsets()) for c in b.collections[1:]
    ]
    assert [t.get_text() for t in a.get_legend().get_texts()] == [
        t.get_text() for t in b.get_legend().get_texts()
    ]
    line_a, line_b = (
        plot.distance_curve(fit).get_lines()[0],
        plot.distance_curve(fit.to_json()).get_lines()[0],
    )
    np.testing.assert_array_equal(line_a.get_ydata(), line_b.get_ydata())
    ax = plot.flow_projection(fit)  # the fit's flows and its finite fixed point (a star)
    assert any(line.get_marker() == "*" for line in ax.get_lines()) == bool(
        np.isfinite(fit.fixed_point_).all()
    )
    dmd = KoopmanDMD(n_bags=0).fit(tiny_flow)
    n_points = sum(len(c.get_offsets()) for c in plot.spectrum(dmd).collections)
    assert n_points == len(dmd.eigenvalues_)
    # two layers have one relative density: two depths of it would be one column twice, so raw densities
    ua = UniversalityAnalysis(("density_raw",), depth_points=2, rank=1).fit(
        [tiny_flow, tiny_flow], names=["x", "y"]
    )
    ax = plot.distance_matrix(ua)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]
    ax = plot.dendrogram(ua)
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == ["x", "y"]
    with pytest.raises(ValueError, match="names are needed"):
        plot.distance_matrix([[0, 1], [1, 0]])


def test_the_dendrogram_shows_a_threshold_above_every_merge():
    from rganalysis.report import plot

    D = np.array([[0, 0.0454, 0.0451], [0.0454, 0, 0.0372], [0.0451, 0.0372, 0]])
    ax = plot.dendrogram(D, ["a", "b", "c"], threshold=0.092)
    assert ax.get_ylim()[1] > 0.092
