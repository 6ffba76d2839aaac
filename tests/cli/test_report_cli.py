"""`rganalysis report`: one model's page against `rganalysis fit --json`, and errors that leave no file."""

from __future__ import annotations

import json
import re
import shlex
from html import unescape

import matplotlib

matplotlib.use("Agg")


from rganalysis.cli import main  # noqa: E402

from report_html import (
    FAST,
    FIGURES_PER_MODEL,
    TABLES_PER_MODEL,
    assert_self_contained,
    check_tables_equal_json,
    parse_report,
    pdf_pages,
)


def test_single_model_report_matches_fit_json(flows, tmp_path, capsys):
    html, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    assert main(["report", str(flows["alpha"]), "-o", str(html), "--pdf", str(pdf), "--koopman", *FAST]) == 0
    assert "5 figures" in capsys.readouterr().out
    page, text = parse_report(html)
    assert_self_contained(page, text)

    # every figure: one embedded PNG and a caption; every table present
    assert len(page.images) == 5
    assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)
    for f in FIGURES_PER_MODEL:
        fig = page.figures[f"fig-{f}-alpha"]
        assert fig["img"] == 1 and len(fig["caption"]) > 80, f
    for t in TABLES_PER_MODEL:
        assert page.tables[f"{t}-alpha"], t
    assert "<h2>Model alpha</h2>" in text

    # the embedded JSON is what `rganalysis fit` writes with the command the report prints
    m = re.search(r"Reproduce the numbers of this section: <code>([^<]+)</code>", text)
    cmd = shlex.split(unescape(m.group(1)))
    assert cmd[:3] == ["rganalysis", "fit", str(flows["alpha"])] and "--depth-points" in cmd
    assert cmd[cmd.index("--depth-points") + 1] == "2"  # auto: 6 one-step pairs determine 2 couplings
    js = tmp_path / "fit.json"
    args = cmd[1:]
    args[args.index("--json") + 1] = str(js)
    assert main([*args, "-q"]) == 0
    fit_json = json.loads(js.read_text())
    assert json.loads(page.scripts["fit-alpha"]) == fit_json
    # ... and every number in the tables is that JSON's number
    assert check_tables_equal_json(
        page,
        {"summary-": fit_json, "exponents-": fit_json, "fixedpoint-": fit_json, "distance-": fit_json},
    ) >= 4 * len(fit_json["eigenvalues"]) + len(fit_json["couplings"]) + len(
        fit_json["distance_to_fixed_point"]
    )
    # the Koopman spectrum is what `rganalysis koopman` writes, with the command printed
    kcmd = shlex.split(unescape(re.search(r"</code> and <code>([^<]+)</code>", text).group(1)))
    assert kcmd[:3] == ["rganalysis", "koopman", str(flows["alpha"])]
    args = kcmd[1:]
    args[args.index("--json") + 1] = str(tmp_path / "koopman.json")
    assert main([*args, "-q"]) == 0
    assert json.loads(page.scripts["koopman-alpha"]) == json.loads((tmp_path / "koopman.json").read_text())
    assert "Koopman" in page.figures["fig-spectrum-alpha"]["caption"]
    exp_rows = page.tables["exponents-alpha"]
    assert len(exp_rows) == len(fit_json["eigenvalues"])
    assert [r[5]["text"] for r in exp_rows] == [e["class"] for e in fit_json["eigenvalues"]]

    # the PDF: one page per figure and one page of tables
    assert pdf_pages(pdf) == 5 + 1
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".*rganalysis-partial*"))


def test_report_errors_leave_no_file(flows, tmp_path, capsys):
    html = tmp_path / "r.html"
    html.write_text("old")
    # a single-round store is no flow: `fit`'s own error, exit status 2, the old file untouched
    # (--force: without it the existing file is refused before anything runs)
    assert main(["report", str(flows["model_only"]), "-o", str(html), "-q", "--force"]) == 2
    assert "TooFewRoundsError" in capsys.readouterr().err
    assert html.read_text() == "old"
    assert (
        main(["report", str(flows["alpha"]), "-o", str(tmp_path / "x.html"), "--depth-points", "many", "-q"])
        == 2
    )
    assert "InvalidParameterError" in capsys.readouterr().err
    assert (
        main(
            [
                "report",
                str(flows["alpha"]),
                str(flows["beta"]),
                "-o",
                str(tmp_path / "x.html"),
                "--koopman-json",
                str(html),
                "-q",
            ]
        )
        == 2
    )
    assert "once per flow" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
