"""Figures and the self-contained HTML/PDF report of ``rganalysis report``.

Names are loaded on first use, so that :mod:`rganalysis.report.options` imports without numpy or torch
(``rganalysis report --help`` is built from it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rganalysis._lazy import lazy_exports

#: public name -> module that defines it
_PUBLIC = {
    "build_report": "rganalysis.report.build",
    "write_report": "rganalysis.report.build",
    "Report": "rganalysis.report.model",
    "ReportOptions": "rganalysis.report.options",
}

__all__ = ["Report", "ReportOptions", "build_report", "plot", "write_report"]


__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC, {"plot": "rganalysis.report.plot"})


if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.report import plot
    from rganalysis.report.build import build_report, write_report
    from rganalysis.report.model import Report
    from rganalysis.report.options import ReportOptions
