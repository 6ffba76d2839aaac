"""`rganalysis report`: a self-contained HTML (and PDF) whose tables equal the JSON of `fit` / `compare`."""

from __future__ import annotations

import json
import re
import shlex
from html import unescape
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import rganalysis  # noqa: E402
from rganalysis.cli import main  # noqa: E402
from rganalysis.report.build import build_report, write_report  # noqa: E402
from rganalysis.report.options import ReportOptions  # noqa: E402

FIGURES_PER_MODEL = ("density", "magnitudes", "projection", "spectrum", "distance")
TABLES_PER_MODEL = ("summary", "exponents", "fixedpoint", "distance")
FAST = ["--bootstrap", "20", "--dpi", "40", "--magnitude-samples", "5000", "-q"]


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """Two small flows (3 and 4 layers of Gaussian weights, 7 rounds each) written by the CLI."""
    d = tmp_path_factory.mktemp("report_flows")
    g = torch.Generator().manual_seed(0)
    models = {
        "alpha": {"a.weight": torch.randn(120, 80, generator=g), "a.bias": torch.zeros(120),
                  "b.weight": torch.randn(60, 120, generator=g) * 0.5, "c.weight": torch.randn(10, 60, generator=g) * 2},
        "beta": {"a.weight": torch.randn(100, 80, generator=g), "b.weight": torch.randn(80, 100, generator=g) * 0.7,
                 "c.weight": torch.randn(40, 80, generator=g) * 1.5, "d.weight": torch.randn(10, 40, generator=g)},
    }
    out = {}
    for name, sd in models.items():
        torch.save(sd, d / f"{name}.pt")
        assert main(["ingest", str(d / f"{name}.pt"), "-o", str(d / f"{name}.h5"), "-q"]) == 0
        assert main(["flow", str(d / f"{name}.h5"), "-o", str(d / f"{name}_flow.h5"), "--rounds", "6",
                     "--rate", "0.25", "-q"]) == 0
        out[name] = d / f"{name}_flow.h5"
    out["model_only"] = d / "alpha.h5"
    return out


class _Page(HTMLParser):
    """What a headless reader sees: images, captions, tables (cells with their data-value), JSON blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.figures: dict[str, dict] = {}
        self.tables: dict[str, list[list[dict]]] = {}
        self.scripts: dict[str, str] = {}
        self.urls: list[str] = []
        self._fig = self._table = self._script = None
        self._cell: dict | None = None
        self._caption = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.urls.append(a[k])
        if tag == "figure":
            self._fig = a["id"]
            self.figures[self._fig] = {"img": 0, "caption": ""}
        elif tag == "img":
            self.images.append(a)
            if self._fig:
                self.figures[self._fig]["img"] += 1
        elif tag == "figcaption":
            self._caption = True
        elif tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = {"text": "", **a}
        elif tag == "script" and a.get("type") == "application/json":
            self._script = a["id"]
            self.scripts[self._script] = ""

    def handle_endtag(self, tag):
        if tag == "figure":
            self._fig = None
        elif tag == "figcaption":
            self._caption = False
        elif tag == "table" and self._table:
            self.tables[self._table] = [r for r in self.tables[self._table] if r]  # drop the header row
            self._table = None
        elif tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        elif tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._caption and self._fig:
            self.figures[self._fig]["caption"] += data
        if self._cell is not None:
            self._cell["text"] += data
        if self._script:
            self.scripts[self._script] += data


def _parse(path) -> tuple[_Page, str]:
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return page, text


def _lookup(obj, key: str):
    """``eigenvalues[0].abs`` -> obj["eigenvalues"][0]["abs"]."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    return obj


def _fmt(v) -> str:
    return "—" if v is None else str(v) if isinstance(v, int) else f"{v:.4g}"


def _check_tables_equal_json(page: _Page, prefix_json: dict[str, dict]) -> int:
    """Every cell with a data-key holds exactly the JSON value (and shows it rounded); returns cells checked."""
    n = 0
    for table_id, rows in page.tables.items():
        src = next((j for p, j in prefix_json.items() if table_id.startswith(p)), None)
        if src is None:
            continue
        for row in rows:
            for cell in row:
                if "data-key" not in cell:
                    continue
                expected = _lookup(src, cell["data-key"])
                assert json.loads(cell["data-value"]) == expected, (table_id, cell)
                assert cell["text"] == _fmt(expected), (table_id, cell)
                n += 1
    return n


def _assert_self_contained(page: _Page, text: str) -> None:
    assert "://" not in text  # no http(s)://, file://, ... anywhere (base64 never holds ':')
    for u in page.urls:
        assert u.startswith(("data:image/png;base64,", "#")), u
    assert "<link" not in text and "@import" not in text


def _pdf_pages(path) -> int:
    return len(re.findall(rb"/Type\s*/Page(?!s)", path.read_bytes()))


def test_single_model_report_matches_fit_json(flows, tmp_path, capsys):
    html, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    assert main(["report", str(flows["alpha"]), "-o", str(html), "--pdf", str(pdf), "--koopman", *FAST]) == 0
    assert "5 figures" in capsys.readouterr().out
    page, text = _parse(html)
    _assert_self_contained(page, text)

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
    assert cmd[cmd.index("--depth-points") + 1] == "2"  # auto: 6 pairs -> at most 2 couplings
    js = tmp_path / "fit.json"
    args = cmd[1:]
    args[args.index("--json") + 1] = str(js)
    assert main([*args, "-q"]) == 0
    fit_json = json.loads(js.read_text())
    assert json.loads(page.scripts["fit-alpha"]) == fit_json
    # ... and every number in the tables is that JSON's number
    assert _check_tables_equal_json(page, {"summary-": fit_json, "exponents-": fit_json, "fixedpoint-": fit_json,
                                           "distance-": fit_json}) >= 4 * 8 + 4 + 3
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
    assert _pdf_pages(pdf) == 5 + 1
    assert not list(tmp_path.glob(".*.tmp"))


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
    page, text = _parse(html)
    _assert_self_contained(page, text)
    assert [m.label for m in rep.models] == ["alpha", "beta"]
    assert rep.depth_points == 2
    for name in ("alpha", "beta"):
        assert f"<h2>Model {name}</h2>" in text
        for f in FIGURES_PER_MODEL:
            assert page.figures[f"fig-{f}-{name}"]["img"] == 1
        fit_json = json.loads(page.scripts[f"fit-{name}"])
        expected = opts.flowfit(2).fit(rganalysis.load(flows[name])).to_json()
        assert fit_json == json.loads(json.dumps(expected))
        assert _check_tables_equal_json(page, {f"{t}-{name}": fit_json for t in TABLES_PER_MODEL}) > 0
    assert json.loads(page.scripts["koopman-beta"]) == kj and "koopman-alpha" not in page.scripts
    assert "Koopman" in page.figures["fig-spectrum-beta"]["caption"]
    assert page.figures["fig-projection-all"]["img"] == 1

    n_figs = 5 * 2 + len(rep.figures)
    assert len(page.images) == n_figs
    assert _pdf_pages(pdf) == rep.pdf_pages() == n_figs + 2 + 1

    cj = json.loads(page.scripts["compare"])
    for f in ("distance-matrix", "dendrogram"):
        fig = page.figures[f"fig-{f}"]
        assert fig["img"] == 1 and fig["caption"]
    assert page.tables["compare-distance"] and page.tables["compare-classes"] and page.tables["compare-fits"]
    for name in cj["components"]:
        assert page.tables[f"compare-component-{name}"]
    cmd = shlex.split(unescape(re.search(r'id="comparison">.*?<code>([^<]+)</code>', text, re.S).group(1)))
    js = tmp_path / "compare.json"
    args = cmd[1:]
    args[args.index("--json") + 1] = str(js)
    assert main([*args, "-q"]) == 0
    assert cj == json.loads(js.read_text())
    assert _check_tables_equal_json(page, {"compare-": cj}) >= 4
    shown = [[c["text"] for c in row] for row in page.tables["compare-classes"]]
    assert [r[1] for r in shown] == [", ".join(c) for c in cj["classes"]]


def test_report_errors_leave_no_file(flows, tmp_path, capsys):
    html = tmp_path / "r.html"
    html.write_text("old")
    # a single-round store is no flow: `fit`'s own error, exit status 2, the old file untouched
    assert main(["report", str(flows["model_only"]), "-o", str(html), "-q"]) == 2
    assert "TooFewRoundsError" in capsys.readouterr().err
    assert html.read_text() == "old"
    assert main(["report", str(flows["alpha"]), "-o", str(tmp_path / "x.html"), "--depth-points", "many", "-q"]) == 2
    assert "InvalidParameterError" in capsys.readouterr().err
    assert main(["report", str(flows["alpha"]), str(flows["beta"]), "-o", str(tmp_path / "x.html"),
                 "--koopman-json", str(html), "-q"]) == 2
    assert "once per flow" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_options_mirror_fit():
    o = ReportOptions(couplings="density, magnitude", depth_points="none", rank=2, ridge=0.1, n_bootstrap=50,
                      tol=0.1)
    assert o.couplings == ("density", "magnitude") and o.depth_points is None
    assert o.fit_args(None) == ["--couplings", "density,magnitude", "--rank", "2", "--ridge", "0.1",
                                "--bootstrap", "50", "--tol", "0.1"]
    f = o.flowfit(None)
    assert (f.couplings, f.depth_points, f.rank, f.ridge, f.n_bootstrap, f.tol) == (
        ["density", "magnitude"], None, 2, 0.1, 50, 0.1)
    assert ReportOptions(depth_points="5").depth_points == 5
    assert ReportOptions(estimator="response").resolve_depth_points([]) is None


def test_report_object_api(flows):
    rep = build_report([rganalysis.load(flows["alpha"])], ReportOptions(n_bootstrap=10, dpi=30,
                                                                        magnitude_samples=2000))
    try:
        assert len(rep.models) == 1 and rep.compare_json is None and rep.pdf_pages() == 6
        assert all(f.png.startswith(b"\x89PNG") for f in rep.models[0].figures)
        assert rep.to_html().count("data:image/png;base64,") == 5
    finally:
        rep.close()
