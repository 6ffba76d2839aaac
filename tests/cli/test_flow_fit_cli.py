"""`rganalysis flow` and `rganalysis fit`: recorded flows, the JSON contract, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.cli import main
from rganalysis.errors import MasksNotNestedError, TooFewRoundsError
from rganalysis.fit.flowfit import FlowFit
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checks import check_nested
from rganalysis.store.parameter_set import ParameterSet


def test_flow_records_nested_masks_and_densities(gaussian_model, tmp_path):
    out = tmp_path / "flow.h5"
    assert (
        main(
            ["flow", str(gaussian_model / "gauss.h5"), "-o", str(out), "--rounds", "6", "--rate", "0.2", "-q"]
        )
        == 0
    )
    f = rganalysis.load(out)
    assert f.n_rounds == 7 and f.flow_attrs["kind"] == "computed" and f.flow_attrs["rate"] == 0.2
    assert f.pruned_names() == ["a.weight", "b.weight", "c.weight"]
    total = sum(f.info[n].numel for n in f.pruned_names())
    alive = total
    for r in range(7):
        assert sum(int(f.mask(n, r).sum()) for n in f.pruned_names()) == alive
        assert f.global_density().values[r] == pytest.approx(alive / total, abs=0)
        alive -= int(round(0.2 * alive))
    np.testing.assert_allclose(f.scale_factors(), 1.25, rtol=1e-3)
    check_nested(f)
    # weights are untouched by a data-free flow, and the source's tensors come back bit-exactly
    src = torch.load(gaussian_model / "gauss.pt", weights_only=True)
    for k, v in src.items():
        assert torch.equal(f.tensor(k, 6), v)
    # masks are the smallest magnitudes: every pruned weight is below every survivor of the round
    surv = torch.cat([f.tensor(n).abs()[f.mask(n, 3)] for n in f.pruned_names()])
    dead = torch.cat([f.tensor(n).abs()[~f.mask(n, 3)] for n in f.pruned_names()])
    assert dead.max() <= surv.min()


def test_fit_json_contract(gaussian_model, tmp_path, capsys):
    flow = tmp_path / "flow.h5"
    main(["flow", str(gaussian_model / "gauss.h5"), "-o", str(flow), "--rounds", "8", "--rate", "0.2", "-q"])
    js = tmp_path / "fit.json"
    # per-layer raw couplings (their old name), full least squares: the density map of the theory
    assert (
        main(
            [
                "fit",
                str(flow),
                "--couplings",
                "density",
                "--json",
                str(js),
                "--bootstrap",
                "20",
                "--depth-points",
                "0",
                "--rank",
                "full",
                "-q",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    j = json.loads(js.read_text())
    assert j["depth_points"] is None and j["rank"] is None
    for key in (
        "rate",
        "b",
        "couplings",
        "jacobian",
        "fixed_point",
        "eigenvalues",
        "fixed_point_type",
        "distance_to_fixed_point",
        "residual",
        "b_n",
    ):
        assert key in j, key
    assert j["rate"] == 0.2 and j["b"] == pytest.approx(1.25)
    assert j["couplings"] == ["density[a.weight]", "density[b.weight]", "density[c.weight]"]
    assert np.array(j["jacobian"]).shape == (3, 3)
    assert len(j["distance_to_fixed_point"]) == 9
    assert len(j["b_n"]) == 8
    for e in j["eigenvalues"]:
        assert set(e) >= {"re", "im", "abs", "exponent", "class", "ci_low", "ci_high"}
        assert e["class_estimate"] in ("relevant", "irrelevant", "marginal")
        from rganalysis.fit.fixed_points import interval_class

        lo, hi = (math.nan if v is None else v for v in (e["exponent_ci_low"], e["exponent_ci_high"]))
        assert e["class"] == interval_class(lo, hi, j["marginal_band_y"])  # the verdict of y's interval
        if e["exponent"] is not None:
            assert e["exponent"] == pytest.approx(np.log(e["abs"]) / np.log(1.25))
    # a global round keeps exactly (1-p) of the survivors, so sum_l N_l rho_l shrinks by 1 - p in every
    # pair: the size vector N is a left eigenvector of the fitted J with eigenvalue 1 - p (docs/theory.md)
    mods = np.array([e["abs"] for e in j["eigenvalues"]])
    assert np.min(np.abs(mods - 0.8)) < 2e-3
    assert "|lambda|" in text


def test_fit_response_estimator_matches_theory(gaussian_model, tmp_path):
    """On the IMP manifold the density Jacobian is rank one with eigenvalue 1 - p (docs/theory.md)."""
    flow = tmp_path / "flow.h5"
    main(["flow", str(gaussian_model / "gauss.h5"), "-o", str(flow), "--rounds", "3", "--rate", "0.2", "-q"])
    for sets in (("density_raw",), ("density_rel",)):  # raw, and the default rescaled set with its scale
        j = (
            FlowFit(sets, estimator="response", n_samples=48, n_bootstrap=0)
            .fit(rganalysis.load(flow))
            .to_json()
        )
        mods = sorted((e["abs"] for e in j["eigenvalues"]), reverse=True)
        assert mods[0] == pytest.approx(0.8, abs=0.02)
        assert max(mods[1:]) < 0.1
        assert j["perturbation"] == "threshold" and j["round"] == 3
    # relative densities are measured with the scale they leave out (docs/theory.md, section 9)
    assert j["couplings"] == ["density_rel[b.weight]", "density_rel[c.weight]", "global_density[network]"]


def test_flow_bad_input(gaussian_model, tmp_path, capsys):
    src = str(gaussian_model / "gauss.h5")
    for bad in (["--rate", "0"], ["--rate", "1.5"], ["--rate", "-0.1"]):
        assert main(["flow", src, "-o", str(tmp_path / "f.h5"), "--rounds", "2", *bad, "-q"]) == 2
        assert "InvalidParameterError" in capsys.readouterr().err
    assert main(["flow", src, "-o", str(tmp_path / "f.h5"), "--rounds", "0", "--rate", "0.2", "-q"]) == 2
    assert "rounds" in capsys.readouterr().err
    assert not (tmp_path / "f.h5").exists()


def test_fit_too_few_rounds(gaussian_model, tmp_path, capsys):
    flow = tmp_path / "flow.h5"
    main(["flow", str(gaussian_model / "gauss.h5"), "-o", str(flow), "--rounds", "2", "--rate", "0.2", "-q"])
    assert main(["fit", str(flow), "--depth-points", "0", "--rank", "full", "-q"]) == 2
    err = capsys.readouterr().err
    assert "TooFewRoundsError" in err and "2 coupling" in err  # density_rel: 3 layers, one the reference
    # a flow of one round-pair is too short for any fit, whatever the settings
    main(
        [
            "flow",
            str(gaussian_model / "gauss.h5"),
            "-o",
            str(tmp_path / "f1.h5"),
            "--rounds",
            "1",
            "--rate",
            "0.2",
            "-q",
        ]
    )
    assert main(["fit", str(tmp_path / "f1.h5"), "-q"]) == 2
    assert "TooFewRoundsError" in capsys.readouterr().err
    with pytest.raises(TooFewRoundsError):
        FlowFit().fit(rganalysis.load(gaussian_model / "gauss.h5"))  # a single model is no flow


def test_fit_refuses_non_nested_masks(gaussian_model, tmp_path, capsys):
    base = rganalysis.load(gaussian_model / "gauss.h5")
    w = {0: {n: base.tensor(n) for n in base.names}}
    m0 = torch.rand(300, 200, generator=torch.Generator().manual_seed(1)) > 0.5
    masks = {"a.weight": [torch.ones(300, 200, dtype=torch.bool), m0, ~m0]}
    with pytest.raises(MasksNotNestedError):
        ParameterSet(base.info, w, masks, n_rounds=3)
    bad = ParameterSet(base.info, w, masks, n_rounds=3, flow_attrs={"kind": "recorded"}, validate=False)
    bad.save(tmp_path / "bad.h5", progress=False)
    assert main(["fit", str(tmp_path / "bad.h5"), "-q"]) == 2
    assert "MasksNotNestedError" in capsys.readouterr().err


def test_minilm_flow_and_fit(tmp_path, capsys):
    from rganalysis.demo import minilm_path

    assert main(["ingest", str(minilm_path()), "-o", str(tmp_path / "m.h5"), "-q"]) == 0
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
                "0.2",
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "fit",
                str(tmp_path / "f.h5"),
                "--depth-points",
                "4",
                "--bootstrap",
                "20",
                "--json",
                str(tmp_path / "fit.json"),
                "-q",
            ]
        )
        == 0
    )
    j = json.loads((tmp_path / "fit.json").read_text())
    assert len(j["couplings"]) == 4 and len(j["eigenvalues"]) == j["rank"] <= 3  # rank auto: at most 3
    assert "|lambda|" in capsys.readouterr().out
    # the defaults run on the flow `rganalysis flow` makes with its own defaults (8 rounds at 0.2)
    assert main(["flow", str(tmp_path / "m.h5"), "-o", str(tmp_path / "d.h5"), "-q"]) == 0
    assert main(["fit", str(tmp_path / "d.h5"), "--json", str(tmp_path / "d.json"), "-q"]) == 0
    d = json.loads((tmp_path / "d.json").read_text())
    # one auto rule (fit, report, compare): 8 pairs determine at most 3 couplings (pairs >= 2 (C + 1))
    assert d["depth_points"] == 3 and len(d["couplings"]) == 3 and 1 <= d["rank"] <= 3 and len(d["b_n"]) == 8


def test_compute_flow_from_pruned_start(gaussian_model):
    base = rganalysis.load(gaussian_model / "gauss.h5")
    f1 = compute_flow(base, 2, 0.5, progress=False)
    f2 = compute_flow(f1, 1, 0.5, progress=False)  # continues from f1's last round
    assert f2.global_density().values[0] == pytest.approx(f1.global_density().values[-1])
    assert f2.global_density().values[1] == pytest.approx(0.125, abs=1e-4)


@pytest.mark.parametrize("model", ["resnet18", "bert-12-layers"])
def test_every_default_flow_fits_with_the_default_fit(model, resnet18_sd, tmp_path, capsys):
    """`flow` with its defaults, then `fit` and `report` with theirs, on many-layer models (ResNet-18: 21
    pruned layers; a 12-layer BERT: 73) whose per-layer couplings outnumber the 8 pairs of the default flow.
    One definition of the defaults (depth points and rank chosen from the data) makes both run."""
    from tests.conftest import write_bert_dir

    if model == "resnet18":
        src = tmp_path / "r18.pth"
        torch.save(resnet18_sd, src)
    else:
        src = tmp_path / "bert"
        write_bert_dir(src, "BertModel", layers=12)
    store, flow = tmp_path / "m.h5", tmp_path / "f.h5"
    assert main(["ingest", str(src), "-o", str(store), "-q"]) == 0
    assert main(["flow", str(store), "-o", str(flow), "-q"]) == 0
    with rganalysis.load(flow) as f:
        n_layers = len(f.pruned_names())
        assert f.n_rounds == 9 and f.flow_attrs["rate"] == 0.2  # the documented defaults: 8 rounds at 0.2
    assert n_layers > 8
    js = tmp_path / "fit.json"
    assert main(["fit", str(flow), "--json", str(js)]) == 0
    j = json.loads(js.read_text())
    assert j["depth_points"] is not None and len(j["couplings"]) <= 8 < n_layers
    assert main(["report", str(flow), "-o", str(tmp_path / "r.html"), "--bootstrap", "10"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("r", ["99", "-1"])
def test_a_round_out_of_range_is_one_line(stores, capsys, r):
    assert main(["fit", str(stores["mlp0"]), "--estimator", "response", "--round", r, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[RoundOutOfRangeError]" in err and "Traceback" not in err, err


def test_a_flow_that_empties_the_network_is_named(stores, tmp_path, capsys):
    """Past the round where the global density reaches 0 relative couplings and b_n are undefined: fit says
    which round, in one line, without numpy's divide-by-zero warnings first."""
    out = tmp_path / "empty.h5"
    assert main(["flow", str(stores["mlp0"]), "-o", str(out), "--rounds", "14", "--rate", "0.7", "-q"]) == 0
    capsys.readouterr()
    with rganalysis.load(out) as p:
        first_empty = int(np.flatnonzero(p.global_density().values == 0)[0])
    assert main(["fit", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeWarning" not in err, err
    assert f"empty from round {first_empty}" in err and f"--rounds {first_empty - 1}" in err
    # a response fit at a round before it is another matter
    assert main(["fit", str(out), "--estimator", "response", "--round", "1", "--bootstrap", "0", "-q"]) == 0
