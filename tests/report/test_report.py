"""`rganalysis report`: a self-contained HTML (and PDF) whose tables equal the JSON of `fit` / `compare`."""

from __future__ import annotations

import json
import re
import shlex
from html import unescape

import matplotlib

matplotlib.use("Agg")


import rganalysis  # noqa: E402
from rganalysis.cli import main  # noqa: E402
from rganalysis.report.build import build_report, write_report  # noqa: E402
from rganalysis.report.options import ReportOptions  # noqa: E402

from report_html import (
    FIGURES_PER_MODEL,
    TABLES_PER_MODEL,
    assert_self_contained,
    check_tables_equal_json,
    parse_report,
    pdf_pages,
)


def test_several_models_report(flows, tmp_path):
    """Two flows: a section each, one shared coupling space, the joint projection; the comparison when the
    universality module is there, with its JSON and tables equal to `rganalysis compare`."""
    from rganalysis.koopman.dmd import KoopmanDMD, blocks_from_states

    with rganalysis.load(flows["beta"]) as p:
        states = [p.state(r, "cpu") for r in range(p.n_rounds)]
        kj = KoopmanDMD(n_bags=8, device="cpu").fit(blocks_from_states(states), b=p.scale_factors()).to_json()
    opts = ReportOptions(n_bootstrap=20, dpi=40, magnitude_samples=5000)
    html, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    rep = write_report([flows["alpha"], flows["beta"]], html, pdf, opts, koopman=[None, kj])
    page, text = parse_report(html)
    assert_self_contained(page, text)
    assert [m.label for m in rep.models] == ["alpha", "beta"]
    # auto: one rule, whatever the rank truncation: 6 one-step pairs determine at most 2 couplings
    assert rep.depth_points == 2
    for name in ("alpha", "beta"):
        assert f"<h2>Model {name}</h2>" in text
        for f in FIGURES_PER_MODEL:
            assert page.figures[f"fig-{f}-{name}"]["img"] == 1
        fit_json = json.loads(page.scripts[f"fit-{name}"])
        with rganalysis.load(flows[name]) as p:  # each model's fit is `rganalysis fit` on its own file
            expected = opts.flowfit(opts.resolve_depth_points([p])).fit(p).to_json()
        assert fit_json == json.loads(json.dumps(expected))
        assert check_tables_equal_json(page, {f"{t}-{name}": fit_json for t in TABLES_PER_MODEL}) > 0
    assert json.loads(page.scripts["koopman-beta"]) == kj and "koopman-alpha" not in page.scripts
    assert "Koopman" in page.figures["fig-spectrum-beta"]["caption"]
    assert page.figures["fig-projection-all"]["img"] == 1
    assert "Each row is a source" in page.figures["fig-transfer-scores"]["caption"]

    n_figs = 5 * 2 + len(rep.figures)
    assert len(page.images) == n_figs
    assert pdf_pages(pdf) == rep.pdf_pages() == n_figs + 2 + 1

    cj = json.loads(page.scripts["compare"])
    for f in ("distance-matrix", "dendrogram"):
        fig = page.figures[f"fig-{f}"]
        assert fig["img"] == 1 and fig["caption"]
    assert page.tables["compare-distance"] and page.tables["compare-classes"] and page.tables["compare-fits"]
    shown = {row[0]["text"]: row[1]["text"] for row in page.tables["report-options"]}
    assert shown["ridge"] == "0" and shown["comparison: fixed-point ridge"] == "0.05"  # each fit's own ridge
    for name in cj["components"]:
        assert page.tables[f"compare-component-{name}"]
    cmd = shlex.split(unescape(re.search(r'id="comparison">.*?<code>([^<]+)</code>', text, re.S).group(1)))
    js = tmp_path / "compare.json"
    args = cmd[1:]
    args[args.index("--json") + 1] = str(js)
    assert main([*args, "-q"]) == 0
    assert cj == json.loads(js.read_text())
    assert check_tables_equal_json(page, {"compare-": cj}) >= 4
    shown = [[c["text"] for c in row] for row in page.tables["compare-classes"]]
    assert [r[1] for r in shown] == [", ".join(c) for c in cj["classes"]]


def test_options_mirror_fit():
    o = ReportOptions(
        couplings="density, magnitude", depth_points="none", rank=2, ridge=0.1, n_bootstrap=50, tol=0.1
    )
    assert o.couplings == ("density", "magnitude") and o.depth_points is None
    assert o.fit_args(None) == [
        "--couplings",
        "density,magnitude",
        "--depth-points",
        "0",
        "--rank",
        "2",
        "--ridge",
        "0.1",
        "--bootstrap",
        "50",
        "--tol",
        "0.1",
    ]
    f = o.flowfit(None)
    assert (f.couplings, f.depth_points, f.rank, f.ridge, f.n_bootstrap, f.tol) == (
        ["density", "magnitude"],
        None,
        2,
        0.1,
        50,
        0.1,
    )
    assert ReportOptions(depth_points="5").depth_points == 5
    assert ReportOptions(estimator="response").resolve_depth_points([]) is None


def test_report_object_api(flows):
    rep = build_report(
        [rganalysis.load(flows["alpha"])], ReportOptions(n_bootstrap=10, dpi=30, magnitude_samples=2000)
    )
    try:
        assert len(rep.models) == 1 and rep.compare_json is None and rep.pdf_pages() == 6
        assert all(f.png.startswith(b"\x89PNG") for f in rep.models[0].figures)
        assert rep.to_html().count("data:image/png;base64,") == 5
    finally:
        rep.close()


def test_one_layer_model_report(tmp_path, capsys):
    """A model with one prunable layer: `fit` handles it with its defaults, and so must `report` (no depth
    resampling of a single layer: one density coupling, the map rho -> (1 - p) rho exactly)."""
    import torch

    torch.manual_seed(0)
    torch.save({"fc.weight": torch.randn(64, 32), "fc.bias": torch.randn(64)}, tmp_path / "one.pth")
    store, flow, html = tmp_path / "one.h5", tmp_path / "one-f.h5", tmp_path / "one.html"
    assert main(["ingest", str(tmp_path / "one.pth"), "-o", str(store), "-q"]) == 0
    assert main(["flow", str(store), "-o", str(flow), "-q"]) == 0
    assert main(["report", str(flow), "-o", str(html), "--bootstrap", "10", "-q"]) == 0
    page, text = parse_report(html)
    assert_self_contained(page, text)
    fit_json = json.loads(page.scripts["fit-one"])
    # one layer has no relative couplings: the rescaled fit is that of the scale itself
    assert fit_json["depth_points"] is None and fit_json["couplings"] == ["global_density[network]"]
    (lam,) = fit_json["eigenvalues"]
    with rganalysis.load(flow) as f:
        g = f.global_density().values
    # one layer: the density map is the global one, lambda = rho_{n+1} / rho_n = 1 - p up to rounding
    assert abs(lam["abs"] - 0.8) < 2 / (64 * 32 * g[-1])
    capsys.readouterr()


def test_distance_caption_says_what_the_weighted_components_measure():
    from rganalysis.report.build import _closeness

    unit_total = _closeness({"survival": 1.0, "units": 10.0, "spectrum": 0.0, "fixed_point": 0.0})
    assert "same weights" in unit_total and "fixed point" not in unit_total
    assert "up to a permutation" in _closeness({"unit_profile": 1.0, "spectrum": 0.0})
    fitted = _closeness({"spectrum": 1.0, "fixed_point": 1.0, "subspace": 1.0, "units": 0.0})
    assert fitted == "the same fixed point and relevant spectrum"


def test_the_undetermined_note_gives_the_fits_own_reason():
    from types import SimpleNamespace

    from rganalysis.report.html import _model_notes

    none = [{"ci_low": None, "ci_high": None}]
    some = [{"ci_low": 0.9, "ci_high": 1.1}]
    base = {"fixed_point_type": "undetermined", "fixed_point_type_estimate": "stable"}
    note = lambda j: " ".join(_model_notes(SimpleNamespace(info={}, fit_json=j)))  # noqa: E731
    assert "no eigenvalue has an interval" in note({**base, "eigenvalues": none})
    assert "reach into the marginal band" in note({**base, "eigenvalues": some})
    assert "no more one-step pairs than parameters" in note(
        {**base, "eigenvalues": none, "underdetermined": True}
    )
