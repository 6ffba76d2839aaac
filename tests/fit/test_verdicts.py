"""Verdicts only where the data support them: interval-supported classes that do not flip when a flow is
extended, fixed points outside their couplings' domain flagged, layer collapse and untrained models said."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.cli import main
from rganalysis.fit.couplings import coupling_domain
from rganalysis.fit.flowfit import FlowFit
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.diagnostics import collapsed_layers, looks_untrained


def _pset(sd, name="m"):
    return make_parameter_set([single_round(sd)], adapter="generic", architecture="x", sources=[], name=name)


@pytest.fixture(scope="module")
def resnet18_flows(resnet18_sd):
    """The data-free flow of a random-init ResNet-18, 12 rounds at rate 0.2, and its first 8 rounds."""
    base = _pset(resnet18_sd, "r18")
    long = rganalysis.compute_flow(base, 12, 0.2, device="cpu", progress=False)
    short = rganalysis.compute_flow(base, 8, 0.2, device="cpu", progress=False)
    return short, long


def test_verdicts_do_not_flip_when_the_flow_is_extended(resnet18_flows):
    """The issue's example: saddle (|lambda| 1.071) at 8 rounds, stable (0.939) at 12.  Every verdict that is
    given must be the same at both lengths; where the data do not decide, it says undetermined."""
    fits = [FlowFit(depth_points=4, n_bootstrap=200).fit(f) for f in resnet18_flows]
    lead = [sorted(zip(np.abs(f.eigenvalues_), f.eigenvalue_classes_, strict=True))[-1] for f in fits]
    classes = {c for _, c in lead} - {"undetermined"}
    assert len(classes) <= 1, lead
    types = {f.fixed_point_type_ for f in fits} - {"undetermined"}
    assert len(types) <= 1, [f.fixed_point_type_ for f in fits]
    for f in fits:
        ci = f.estimator_.eigenvalue_ci_
        for (lo, hi), c in zip(ci, f.eigenvalue_classes_, strict=True):
            if c == "relevant":
                assert lo > 1.05
            elif c == "irrelevant":
                assert hi < 0.95
            elif c == "marginal":
                assert lo >= 0.95 and hi <= 1.05


def test_a_fixed_point_outside_the_domain_is_an_extrapolation(resnet18_flows):
    fit = FlowFit(depth_points=4, n_bootstrap=20).fit(resnet18_flows[1])
    j = fit.to_json()
    fp = np.array(j["fixed_point"], dtype=float)
    outside = [
        c
        for c, v in zip(j["couplings"], fp, strict=True)
        if not coupling_domain(c)[0] <= v <= coupling_domain(c)[1]
    ]
    assert j["fixed_point_outside_domain"] == outside and j["fixed_point_extrapolated"] == bool(outside)
    from rganalysis.fit.flowfit import format_spectrum

    text = format_spectrum(j)
    if outside:
        assert "extrapolated, not reached" in text and "near (" not in text
        assert j["fixed_point_type"] == "extrapolated"


def test_layer_collapse_is_detected_and_reported(tmp_path, capsys):
    """A layer of tiny weights is emptied by global pruning; flow, info, fit and the report say so."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": torch.randn(40, 30, generator=g),
        "b.weight": torch.randn(30, 40, generator=g),
        "head.weight": torch.randn(10, 30, generator=g) * 1e-3,
    }
    torch.save(sd, tmp_path / "m.pt")
    assert main(["ingest", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.h5"), "-q"]) == 0
    assert (
        main(
            [
                "flow",
                str(tmp_path / "m.h5"),
                "-o",
                str(tmp_path / "f.h5"),
                "--rounds",
                "6",
                "--rate",
                "0.3",
                "-q",
            ]
        )
        == 0
    )
    assert "layer collapse: 1 layer(s) emptied: head.weight (from round" in capsys.readouterr().out
    with rganalysis.load(tmp_path / "f.h5") as f:
        col = collapsed_layers(f)
        assert list(col) == ["head.weight"]
        r = col["head.weight"]
        assert (
            f.densities().sel(layer="head.weight").values[r] == 0
            and f.densities().sel(layer="head.weight").values[r - 1] > 0
        )
    assert main(["info", str(tmp_path / "f.h5"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["collapsed_layers"] == {"head.weight": r}
    assert (
        main(
            [
                "fit",
                str(tmp_path / "f.h5"),
                "--depth-points",
                "2",
                "--bootstrap",
                "20",
                "--json",
                str(tmp_path / "fit.json"),
                "-q",
            ]
        )
        == 0
    )
    assert "layer collapse: 1 layer(s) emptied by the flow: head.weight" in capsys.readouterr().out
    assert json.loads((tmp_path / "fit.json").read_text())["collapsed_layers"] == {"head.weight": r}


def test_untrained_models_are_recognised(resnet18_sd):
    ok, why = looks_untrained(_pset(resnet18_sd))
    assert ok and "kaiming normal" in why
    torch.manual_seed(1)
    trained = {
        k: (v + 0.5 * v.std() * torch.randn_like(v) if v.dim() == 4 else v) for k, v in resnet18_sd.items()
    }
    ok, why = looks_untrained(_pset(trained))  # a spread 12 % wider than the initialisation's
    assert not ok and "matches no common initialisation" in why
    from rganalysis.demo import minilm_path

    assert not looks_untrained(rganalysis.ingest(minilm_path()))[0]


def test_flowfit_takes_store_paths(stores):
    """FlowFit().fit accepts paths as KoopmanDMD and UniversalityAnalysis do: the same fit as on the loaded
    flows."""
    paths = [stores["mlp0"], stores["mlp1"]]
    by_path = FlowFit(n_bootstrap=20).fit([str(p) for p in paths])
    with rganalysis.load(paths[0]) as a, rganalysis.load(paths[1]) as b:
        by_set = FlowFit(n_bootstrap=20).fit([a, b])
    np.testing.assert_array_equal(by_path.eigenvalues_, by_set.eigenvalues_)
    np.testing.assert_array_equal(
        FlowFit(n_bootstrap=20).fit(paths[0]).eigenvalues_,
        FlowFit(n_bootstrap=20).fit(rganalysis.load(paths[0])).eigenvalues_,
    )


def test_a_layer_scope_flow_gives_its_densities_no_verdict():
    """Layer scope prunes every layer by the rate, so density couplings are fixed by it (density_rel = 1 up
    to rounding): the trajectory fit of them says so, with no interval and no class; magnitude couplings,
    which the scope does not fix, are fitted as usual."""
    from rganalysis.fit.intervals import IntervalWarning
    from rganalysis.rg.flow import compute_flow

    g = torch.Generator().manual_seed(0)
    sd = {
        f"{i}.weight": torch.randn(s, generator=g)
        for i, s in enumerate([(40, 30), (30, 40), (20, 30), (5, 20)])
    }
    model = make_parameter_set([single_round(sd)], adapter="generic", architecture="mlp", sources=[])
    flow = compute_flow(model, 10, 0.2, scope="layer", progress=False)
    with pytest.warns(IntervalWarning, match="layer-scope flow prunes every layer by the same fraction"):
        f = FlowFit(n_bootstrap=50).fit(flow)
    assert set(f.eigenvalue_classes_) == {"undetermined"} and f.fixed_point_type_ in (
        "undetermined",
        "extrapolated",
    )
    assert np.isnan(f.estimator_.eigenvalue_ci_).all()
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        FlowFit(couplings=("magnitude_rel",), n_bootstrap=50).fit(flow)
    assert not any("layer-scope" in str(w.message) for w in seen)


def test_a_fixed_point_on_the_domain_boundary_is_not_an_extrapolation():
    """The data-free flow's global density has its fixed point at 0 (the empty network, reached in the
    limit); a fit puts it a hair below (the intercept's noise), which is on the boundary, not outside it."""
    from rganalysis.fit import flowfit

    g = torch.Generator().manual_seed(1)
    sd = {f"{i}.weight": torch.randn(s, generator=g) for i, s in enumerate([(40, 30), (30, 40), (5, 30)])}
    model = make_parameter_set([single_round(sd)], adapter="generic", architecture="mlp", sources=[])
    flow = rganalysis.compute_flow(model, 12, 0.2, progress=False)
    f = FlowFit(couplings=("global_density",), n_bootstrap=0).fit(flow)
    k = float(np.asarray(f.fixed_point_)[0])
    assert abs(k) < flowfit.BOUNDARY_RTOL * float(np.ptp(f.couplings_[0].values))  # ~0, either side
    assert f.fixed_point_outside_ == []
    assert coupling_domain("global_density[network]")[0] == 0.0


def test_response_only_options_are_refused_for_the_trajectory_fit():
    g = torch.Generator().manual_seed(2)
    sd = {f"{i}.weight": torch.randn(s, generator=g) for i, s in enumerate([(40, 30), (30, 40), (5, 30)])}
    model = make_parameter_set([single_round(sd)], adapter="generic", architecture="mlp", sources=[])
    flow = rganalysis.compute_flow(model, 8, 0.2, progress=False)
    with pytest.raises(
        rganalysis.errors.InvalidParameterError, match=r"round \(--round\), n_samples \(--samples\)"
    ):
        FlowFit(round=-1, n_samples=2).fit(flow)


def test_a_joint_fit_of_flows_at_other_rates_claims_no_one_rate():
    g = torch.Generator().manual_seed(2)
    sd = {f"{i}.weight": torch.randn(s, generator=g) for i, s in enumerate([(40, 30), (30, 40), (5, 30)])}
    model = make_parameter_set([single_round(sd)], adapter="generic", architecture="mlp", sources=[])
    a, b = (rganalysis.compute_flow(model, 10, p, progress=False) for p in (0.2, 0.3))
    f = FlowFit(couplings=("global_density",), n_bootstrap=0).fit([a, b])
    assert f.rate_ is None and f.to_json()["rate"] is None
    assert 1.25 < f.b_ < 1 / 0.7  # the joint scale factor lies between the two flows' b
    with pytest.warns(UserWarning, match="fitted once"):
        assert FlowFit(couplings=("global_density",), n_bootstrap=0).fit([a, a]).rate_ == pytest.approx(
            0.2, abs=1e-3
        )


def test_the_refused_options_are_the_response_estimators_with_their_defaults():
    import inspect

    from rganalysis.fit.flowfit import _RESPONSE_OPTIONS

    params = inspect.signature(FlowFit).parameters
    assert {k: params[k].default for k in _RESPONSE_OPTIONS} == {
        k: v for k, (_, v) in _RESPONSE_OPTIONS.items()
    }


def test_fitted_results_before_fit_say_so_and_predict_checks_its_input():
    from rganalysis.errors import NotFittedError
    from rganalysis.fit import TrajectoryEstimator

    with pytest.raises(
        NotFittedError, match=r"TrajectoryEstimator is not fitted \(jacobian_ is set by fit\)"
    ):
        TrajectoryEstimator().predict(np.zeros(2))
    with pytest.raises(NotFittedError, match="call fit"):
        FlowFit().to_json()
    assert not hasattr(FlowFit(), "eigenvalues_")  # still an AttributeError for hasattr
    rng = np.random.default_rng(0)
    flows = [np.cumsum(rng.normal(size=(12, 2)), axis=0) * 0.1 + 1.0 for _ in range(2)]
    est = TrajectoryEstimator(n_bootstrap=0).fit(flows)
    assert est.predict(np.ones(2)).shape == (2,) and est.predict(np.ones((5, 2))).shape == (5, 2)
    with pytest.raises(rganalysis.errors.InvalidParameterError, match=r"shape \(\.\.\., 2\)"):
        est.predict(np.zeros(5))


def test_two_seeds_of_one_architecture_get_no_opposite_verdicts(resnet18_flows):
    """A new user's trial: ResNet-18 at init seeds 0 and 1, 8 data-free rounds (densities within 0.009 of
    each other): the automatic rank was 1 for one (0.85, irrelevant) and 3 for the other (1.62, relevant),
    each rank picked by about half of the resamples of either flow.  A verdict the rank decides is not
    given (rank_agreement_ below RANK_AGREEMENT: no interval, undetermined)."""
    import torchvision

    from rganalysis.fit.auto import RANK_AGREEMENT
    from rganalysis.fit.intervals import IntervalWarning

    torch.manual_seed(1)
    other = _pset(torchvision.models.resnet18(weights=None).state_dict(), "r18-seed1")
    flows = [resnet18_flows[0], rganalysis.compute_flow(other, 8, 0.2, device="cpu", progress=False)]
    with pytest.warns(IntervalWarning, match="of resamples of the one-step pairs"):
        fits = [FlowFit().fit(f) for f in flows]
    lead = [
        c
        for f in fits
        for _, c in sorted(zip(np.abs(f.eigenvalues_), f.eigenvalue_classes_, strict=True))[-1:]
    ]
    assert not {"relevant", "irrelevant"} <= set(lead), lead
    for f in fits:  # both ranks are coin flips here (about half of the resamples each)
        assert f.rank_agreement_ is not None and f.rank_agreement_ < RANK_AGREEMENT
        assert np.isnan(f.estimator_.eigenvalue_ci_).all()
        assert set(f.eigenvalue_classes_) == {"undetermined"}
        text = rganalysis.fit.flowfit.format_spectrum(f.to_json())
        assert f"{f.rank_agreement_:.0%} of pair resamples pick it" in text


def test_rank_agreement_of_a_clear_rank():
    """A noiseless rank-1 linear flow (every coupling decays by 0.8 about its fixed point): every resample of
    its pairs gives the rule's rank 1."""
    import xarray as xr

    from rganalysis.fit.auto import auto_rank, rank_agreement

    k0 = np.array([1.0, 0.5, 2.0])
    K = np.array([3.0 + 0.8**n * k0 for n in range(9)])
    da = xr.DataArray(
        K, dims=("round", "coupling"), coords={"round": np.arange(9), "coupling": ["a", "b", "c"]}
    )
    assert auto_rank(da) == 1
    assert rank_agreement([da], 1, n_resamples=50) == 1.0
    assert rank_agreement([da], 2, n_resamples=50) == 0.0


def test_a_fit_that_passes_through_its_pairs_measures_no_fixed_point(resnet18_sd):
    """2 rounds: 2 one-step pairs for a rank-1 fit's 2 parameters per row.  The map passes through them (a
    new user's BERT flow printed |lambda| 6.2 and "near" from such a fit): no type, no nearness verdict."""
    from rganalysis.fit.fixed_points import fixed_point_wording

    flow = rganalysis.compute_flow(_pset(resnet18_sd), 2, 0.2, device="cpu", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = FlowFit().fit(flow)
    assert fit.underdetermined_ and fit.fixed_point_type_ == "undetermined" and fit.near_fixed_point_ is None
    kind, where = fixed_point_wording(fit.to_json())
    assert kind == "undetermined" and "2 one-step pairs for 2 parameters per row" in where


def test_a_rank_below_the_couplings_says_which_directions_it_classifies():
    """A rank-1 fit of 3 couplings classifies one direction: "stable" is said of that direction only."""
    from rganalysis.fit.fixed_points import fixed_point_wording

    j = {"fixed_point_type": "stable", "rank": 1, "couplings": ["a", "b", "c"], "near_fixed_point": None}
    kind, _ = fixed_point_wording(j)
    assert kind == "stable along the 1 fitted direction(s) of 3 (rank 1: the others are not estimated)"
    assert fixed_point_wording({**j, "rank": 3})[0] == "stable"
    assert fixed_point_wording({**j, "rank": None})[0] == "stable"


def test_more_depth_points_than_layers_is_said(resnet18_flows):
    with pytest.warns(UserWarning, match="50 depth points for flows of 21 pruned layers"):
        FlowFit(depth_points=50, n_bootstrap=0).fit(resnet18_flows[0])


def test_the_same_flow_twice_is_fitted_once(resnet18_flows):
    """Its pairs would count twice and narrow the intervals into a verdict the one flow does not support."""
    one = FlowFit(rank=1).fit(resnet18_flows[0])
    with pytest.warns(UserWarning, match="fitted once, as their pairs are the same data"):
        many = FlowFit(rank=1).fit([resnet18_flows[0]] * 4)
    np.testing.assert_array_equal(many.eigenvalues_, one.eigenvalues_)
    np.testing.assert_array_equal(many.estimator_.eigenvalue_ci_, one.estimator_.eigenvalue_ci_)


def test_train_without_rewinding_is_refused(resnet18_sd):
    from rganalysis.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="pass rescaling='rewind'"):
        rganalysis.compute_flow(_pset(resnet18_sd), 2, 0.2, train=lambda w, m: w, progress=False)
    with pytest.raises(InvalidParameterError, match="compute_flow takes a ParameterSet"):
        rganalysis.compute_flow("model.pth", 2, 0.2)
