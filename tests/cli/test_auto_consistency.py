"""One ``auto`` rule for depth points and rank: ``fit``, ``report`` and ``compare`` (and the demo, which is
a report) give the same choice and the same leading eigenvalue for the same file, and never more
couplings than the one-step pairs determine (pairs >= 2 (couplings + 1))."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rganalysis.cli import main

from report_html import parse_report


@pytest.fixture(scope="module")
def deep_and_shallow(tmp_path_factory):
    """A 12-layer model's data-free flow (8 rounds at 0.2, as the demo's MiniLM) and a 3-layer one of 6
    rounds at 0.25, written by the CLI."""
    d = tmp_path_factory.mktemp("auto")
    g = torch.Generator().manual_seed(3)
    deep = {f"l{i}.weight": torch.randn(40, 40, generator=g) * (0.5 + 0.15 * i) for i in range(12)}
    shallow = {f"s{i}.weight": torch.randn(30, 30, generator=g) * (1.0 + i) for i in range(3)}
    out = {}
    for name, sd, extra in (("deep", deep, []), ("shallow", shallow, ["--rounds", "6", "--rate", "0.25"])):
        torch.save(sd, d / f"{name}.pt")
        assert main(["ingest", str(d / f"{name}.pt"), "-o", str(d / f"{name}.h5"), "-q"]) == 0
        assert main(["flow", str(d / f"{name}.h5"), "-o", str(d / f"{name}-flow.h5"), *extra, "-q"]) == 0
        out[name] = d / f"{name}-flow.h5"
    return out


def _lead(eigenvalues) -> float:
    return max(e["abs"] for e in eigenvalues)


def test_fit_report_and_compare_make_one_auto_choice(deep_and_shallow, tmp_path, capsys):
    deep, shallow = deep_and_shallow["deep"], deep_and_shallow["shallow"]
    assert main(["fit", str(deep), "--bootstrap", "20", "--json", str(tmp_path / "fit.json"), "-q"]) == 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    # 8 one-step pairs determine at most 3 couplings (today's main: 8 couplings from 8 pairs)
    assert fit["depth_points"] == 3 and len(fit["couplings"]) == 3
    assert 1 <= fit["rank"] <= 3

    # the report of both flows fits each model as `fit` does on its file; the comparison shares one space
    html = tmp_path / "r.html"
    assert main(["report", str(deep), str(shallow), "-o", str(html), "--bootstrap", "20", "-q"]) == 0
    page, text = parse_report(html)
    rep_fit = json.loads(page.scripts["fit-deep"])
    assert rep_fit["depth_points"] == fit["depth_points"] and rep_fit["rank"] == fit["rank"]
    assert rep_fit["couplings"] == fit["couplings"]
    assert _lead(rep_fit["eigenvalues"]) == pytest.approx(_lead(fit["eigenvalues"]), rel=1e-12)
    shallow_fit = json.loads(page.scripts["fit-shallow"])
    assert shallow_fit["depth_points"] == 2  # 6 pairs: 2 couplings

    # compare of the file with a copy of itself: the same depth points, rank and leading eigenvalue
    twin = tmp_path / "twin-flow.h5"
    shutil.copy(deep, twin)
    cj = tmp_path / "c.json"
    assert main(["compare", str(deep), str(twin), "--names", "deep,twin", "--json", str(cj), "-q"]) == 0
    c = json.loads(cj.read_text())
    assert c["settings"]["depth_points"] == fit["depth_points"]
    assert c["fits"]["deep"]["rank"] == fit["rank"]
    assert _lead(c["fits"]["deep"]["eigenvalues"]) == pytest.approx(_lead(fit["eigenvalues"]), rel=1e-9)
    capsys.readouterr()
