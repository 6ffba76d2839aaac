"""Figures and the self-contained HTML/PDF report of ``rganalysis report``.

Names are loaded on first use, so that :mod:`rganalysis.report.options` imports without numpy or torch
(``rganalysis report --help`` is built from it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> module that defines it
_PUBLIC = {
    "build_report": "rganalysis.report.build",
    "write_report": "rganalysis.report.build",
    "Report": "rganalysis.report.model",
    "ReportOptions": "rganalysis.report.options",
}

__all__ = ["Report", "ReportOptions", "build_report", "plot", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "plot":
        value = importlib.import_module("rganalysis.report.plot")
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        raise AttributeError(f"module 'rganalysis.report' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))


if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.report import plot
    from rganalysis.report.build import build_report, write_report
    from rganalysis.report.model import Report
    from rganalysis.report.options import ReportOptions
