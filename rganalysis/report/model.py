"""The report as data: sections, figures, tables and cells (each cell keeps the exact JSON value)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.report.options import ReportOptions

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rganalysis import __version__
from rganalysis.store.output import AtomicOutput

__all__ = ["Cell", "Figure", "ModelSection", "Report", "Table"]


# ============================================================================================ content
@dataclass
class Cell:
    """A table cell: display ``text``; ``value`` the exact JSON number behind it (None for text cells)."""

    text: str
    value: float | int | None = None
    key: str | None = None  # JSON path of the value, e.g. "eigenvalues[0].abs"


@dataclass
class Table:
    """A table rendered from a JSON object."""

    id: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]


@dataclass
class Figure:
    """A figure: an ``id``, a title, a caption that says how to read it, and the matplotlib figure."""

    id: str
    title: str
    caption: str
    figure: Any  # matplotlib.figure.Figure
    png: bytes = field(default=b"", repr=False)


@dataclass
class ModelSection:
    """Everything the report shows for one flow."""

    label: str
    slug: str
    path: str
    fit_json: dict[str, Any]
    command: str
    info: dict[str, Any]
    koopman_json: dict[str, Any] | None = None
    koopman_command: str | None = None
    warnings: list[str] = field(default_factory=list)  # what the fit warned about (also re-emitted)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Report:
    """A built report; write it with :meth:`write_html` / :meth:`write_pdf`, then :meth:`close`."""

    options: ReportOptions
    depth_points: int | None
    models: list[ModelSection]
    compare_json: dict[str, Any] | None = None
    compare_command: str | None = None
    compare_note: str | None = None
    figures: list[Figure] = field(default_factory=list)  # the comparison section
    tables: list[Table] = field(default_factory=list)
    created: str = ""

    # ------------------------------------------------------------------ html
    def to_html(self) -> str:
        """The whole report as one self-contained HTML page."""
        from rganalysis.report.html import render_html

        return render_html(self)

    def write_html(
        self, path: str | os.PathLike, *, force: bool = False, inputs: Iterable[str | os.PathLike] = ()
    ) -> Path:
        """Write the HTML page as stores are written (:class:`~rganalysis.store.output.AtomicOutput`):
        atomically, and never over an existing file, or one created while this ran, unless ``force``;
        never over one of ``inputs``."""
        text = self.to_html()
        with AtomicOutput(path, force=force, inputs=inputs) as tmp:
            tmp.write_text(text, encoding="utf-8")
            _umask_mode(tmp)
        return Path(path)

    # ------------------------------------------------------------------ pdf
    def pdf_pages(self) -> int:
        """Pages of :meth:`write_pdf`: one per figure, plus one page of tables per model and for the comparison."""
        return sum(len(m.figures) + 1 for m in self.models) + (
            len(self.figures) + 1 if (self.figures or self.tables) else 0
        )

    def write_pdf(
        self, path: str | os.PathLike, *, force: bool = False, inputs: Iterable[str | os.PathLike] = ()
    ) -> Path:
        """Write a PDF, one page per figure (caption below it) and a page of tables per section, as
        :meth:`write_html` writes the page (atomic, exclusive unless ``force``)."""
        from matplotlib.backends.backend_pdf import PdfPages

        from rganalysis.report.pdf import pdf_figure_page, pdf_tables_page

        with AtomicOutput(path, force=force, inputs=inputs) as tmp:
            with PdfPages(
                tmp, metadata={"Creator": f"rganalysis {__version__}", "Title": "rganalysis report"}
            ) as pdf:
                for m in self.models:
                    for f in m.figures:
                        pdf_figure_page(pdf, f, m.label)
                    pdf_tables_page(pdf, m.tables, f"{m.label}: tables", m.command, m.warnings)
                if self.figures or self.tables:
                    for f in self.figures:
                        pdf_figure_page(pdf, f, "comparison")
                    pdf_tables_page(pdf, self.tables, "Comparison: tables", self.compare_command or "")
            _umask_mode(tmp)
        return Path(path)

    def close(self) -> None:
        """Release the matplotlib figures."""
        for f in [f for m in self.models for f in m.figures] + self.figures:
            f.figure = None


def _umask_mode(path: Path) -> None:
    """Give a finished temporary file the mode a plain ``open`` would (mkstemp makes it owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def format_value(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig
