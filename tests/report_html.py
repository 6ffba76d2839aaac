"""Reading a report's HTML back in the tests: figures, tables with their JSON values, embedded scripts."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")


FIGURES_PER_MODEL = ("density", "magnitudes", "projection", "spectrum", "distance")


TABLES_PER_MODEL = ("summary", "exponents", "fixedpoint", "distance")


FAST = ["--bootstrap", "20", "--dpi", "40", "--magnitude-samples", "5000", "-q"]


class Page(HTMLParser):
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


def parse_report(path) -> tuple[Page, str]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return page, text


def lookup(obj, key: str):
    """``eigenvalues[0].abs`` -> obj["eigenvalues"][0]["abs"]."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    return obj


def fmt(v) -> str:
    return "—" if v is None else str(v) if isinstance(v, int) else f"{v:.4g}"


def check_tables_equal_json(page: Page, prefix_json: dict[str, dict]) -> int:
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
                expected = lookup(src, cell["data-key"])
                assert json.loads(cell["data-value"]) == expected, (table_id, cell)
                assert cell["text"] == fmt(expected), (table_id, cell)
                n += 1
    return n


def assert_self_contained(page: Page, text: str) -> None:
    assert "://" not in text  # no http(s)://, file://, ... anywhere (base64 never holds ':')
    for u in page.urls:
        assert u.startswith(("data:image/png;base64,", "#")), u
    assert "<link" not in text and "@import" not in text


def pdf_pages(path) -> int:
    return len(re.findall(rb"/Type\s*/Page(?!s)", path.read_bytes()))
