"""Rendering a report as a PDF: one page per figure with its caption, a page of tables per section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rganalysis.report.model import Figure, Table, new_figure


# ============================================================================================ pdf pages
def pdf_figure_page(pdf: Any, f: Figure, section: str) -> None:
    """The figure with its title and caption below it, on one page."""
    import textwrap

    fig = f.figure
    w, h = fig.get_size_inches()
    lines = textwrap.wrap(f"{f.title} ({section}). {f.caption}", width=int(w * 16.5))
    extra = 0.16 * len(lines) + 0.3
    fig.set_size_inches(w, h + extra)
    fig.get_layout_engine().set(rect=(0, extra / (h + extra), 1, 1 - extra / (h + extra)))
    txt = fig.text(
        0.02, (extra - 0.12) / (h + extra), "\n".join(lines), fontsize=8, va="top", ha="left", wrap=False
    )
    pdf.savefig(fig)
    txt.remove()
    fig.get_layout_engine().set(rect=(0, 0, 1, 1))
    fig.set_size_inches(w, h)


def _table_text(t: Table, max_rows: int) -> str:
    cols = [t.header] + [[c.text for c in r] for r in t.rows[:max_rows]]
    widths = [min(44, max(len(str(row[i])) for row in cols)) for i in range(len(t.header))]
    lines = []
    for k, row in enumerate(cols):
        cells = []
        for i, x in enumerate(row):
            x = str(x)
            x = x if len(x) <= widths[i] else x[: widths[i] - 1] + "…"
            cells.append(x.ljust(widths[i]) if i == 0 else x.rjust(widths[i]))
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("  ".join("-" * wd for wd in widths))
    if len(t.rows) > max_rows:
        lines.append(f"... {len(t.rows) - max_rows} more rows in the HTML report")
    return "\n".join(lines)


def pdf_tables_page(
    pdf: Any, tables: Sequence[Table], title: str, command: str, notes: Sequence[str] = ()
) -> None:
    """One A4 page with the section's tables as monospaced text (the same cell texts as the HTML)."""
    import textwrap

    fig = new_figure((8.27, 11.69))
    fig.set_layout_engine(None)
    fig.text(0.05, 0.97, title, fontsize=13, weight="bold", va="top")
    y = 0.94
    budget = 108  # lines of 6.5 pt text on the page
    if command:
        fig.text(0.05, y, command, fontsize=6.5, family="monospace", va="top")
        y -= 0.025
    for note in notes:
        lines = textwrap.wrap(note, 150)[:4]
        fig.text(0.05, y, "\n".join(lines), fontsize=6, va="top", color="#8a5a00")
        y -= 0.0095 * len(lines) + 0.006
        budget -= len(lines) + 1
    for t in tables:
        if budget <= 4:
            fig.text(
                0.05, y, f"({t.title} and the remaining tables: see the HTML report)", fontsize=7, va="top"
            )
            break
        body = _table_text(t, max_rows=max(1, min(len(t.rows), budget - 5)))
        fig.text(0.05, y, t.title, fontsize=9, weight="bold", va="top")
        y -= 0.016
        fig.text(0.05, y, body, fontsize=6.5, family="monospace", va="top")
        n = body.count("\n") + 1
        y -= 0.0098 * n + 0.02
        budget -= n + 3
    pdf.savefig(fig)
