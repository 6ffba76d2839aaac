"""`rganalysis report` writes its HTML and PDF as stores are written (issue 25): a target that appears
while the report is being built is not replaced without --force (it was, by os.replace)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import rganalysis.report.build as build  # noqa: E402
from rganalysis.cli import main  # noqa: E402

from report_html import FAST  # noqa: E402


@pytest.fixture
def late_targets(monkeypatch, tmp_path):
    """build_report that, once the outputs were checked, has another writer create them meanwhile."""
    html, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    real = build.build_report

    def build_then_race(*a, **kw):
        rep = real(*a, **kw)
        html.write_text("another writer's page")
        pdf.write_text("another writer's pdf")
        return rep

    monkeypatch.setattr(build, "build_report", build_then_race)
    return html, pdf


def test_report_targets_that_appear_meanwhile_are_replaced_only_with_force(flows, late_targets, capsys):
    html, pdf = late_targets
    rc = main(["report", str(flows["alpha"]), "-o", str(html), "--pdf", str(pdf), "--no-compare", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "[OutputExistsError]" in err[0] and str(pdf) in err[0]
    assert html.read_text() == "another writer's page" and pdf.read_text() == "another writer's pdf"
    assert sorted(p.name for p in html.parent.iterdir()) == ["r.html", "r.pdf"]  # no temporary file left

    # with --force they are replaced
    rc = main(["report", str(flows["alpha"]), "-o", str(html), "--pdf", str(pdf), "--force", *FAST])
    assert rc == 0, capsys.readouterr().err
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert pdf.read_bytes().startswith(b"%PDF")


def test_report_api_is_exclusive_and_never_writes_over_a_flow(flows, tmp_path):
    from rganalysis.errors import OutputExistsError, OutputIsInputError
    from rganalysis.report.options import ReportOptions

    opts = ReportOptions(n_bootstrap=20, dpi=40, magnitude_samples=5000)
    html = tmp_path / "r.html"
    html.write_text("mine")
    with pytest.raises(OutputExistsError):
        build.write_report([flows["alpha"]], html, None, opts)
    assert html.read_text() == "mine"
    with pytest.raises(OutputIsInputError):
        build.write_report([flows["alpha"]], flows["alpha"], None, opts, force=True)
