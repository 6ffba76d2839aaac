"""The response estimator's default number of perturbed states (``samples="auto"``, issue 25): chosen from
the live couplings, so a long data-free flow whose narrow layers are nearly empty is measured as the
theory says (rank one: 1 - p, then 0) with intervals, without the user knowing to ask for more states."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rganalysis.cli import main
from rganalysis.fit.auto import auto_samples
from rganalysis.fit.flowfit import FlowFit
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set, single_round

P = 0.2
SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0)  # five widths: after 6 rounds 0.05 is dead, 0.2 nearly empty


@pytest.fixture(scope="module")
def long_flow(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    sd = {
        f"l{i:02d}.weight": torch.randn(40 + 10 * (i % 4), 50, generator=g) * SIGMAS[i % len(SIGMAS)]
        for i in range(60)
    }
    pset = make_parameter_set([single_round(sd)], adapter="generic", architecture="t", sources=[], name="g")
    flow = compute_flow(pset, 6, P, device="cpu", progress=False)
    path = tmp_path_factory.mktemp("auto_samples") / "flow.h5"
    flow.save(path, progress=False)
    return flow, path


def test_default_samples_give_the_data_free_theory_at_the_last_round(long_flow):
    flow, _ = long_flow
    dens = flow.state(6).densities()
    assert min(dens.values()) == 0.0 and 0 < sorted(set(dens.values()))[1] < 1e-3  # dead and nearly empty
    ff = FlowFit(["density"], "response", device="cpu").fit([flow])  # the defaults
    est = ff.estimator_
    live = sum(d > 0 for d in dens.values())
    assert est.n_samples_ == auto_samples(live) == 6 * (live + 1)  # 264 for 43 live layers
    mods = np.abs(ff.eigenvalues_)
    assert abs(mods[0] - (1 - P)) < 0.02  # measured 0.8002
    assert np.all(mods[1:] < 0.1)  # measured max 0.049 (64 states, the old default: 0.18)
    ci = np.asarray(est.eigenvalue_ci_)
    assert np.isfinite(ci).all() and est.n_bootstrap_ == est.n_bootstrap
    assert ci[0, 0] <= mods[0] <= ci[0, 1]


def test_samples_option_still_overrides(long_flow, tmp_path, capsys):
    _, path = long_flow
    out = tmp_path / "fit.json"
    rc = main(
        [
            "fit",
            str(path),
            "--couplings",
            "density",
            "--estimator",
            "response",
            "--samples",
            "100",
            "--json",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    assert json.loads(out.read_text())["diagnostics"]["n_samples"] == 100
    assert (
        main(["fit", str(path), "--estimator", "response", "--couplings", "density", "--samples", "20"]) == 2
    )
    assert "too few to fit 43 live couplings" in capsys.readouterr().err


def test_auto_samples_rule():
    assert [auto_samples(n) for n in (0, 9, 10, 51)] == [64, 64, 66, 312]
    with pytest.raises(ValueError):
        auto_samples(-1)
