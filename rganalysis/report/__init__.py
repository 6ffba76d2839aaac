"""Figures and the self-contained HTML/PDF report of ``rganalysis report``."""

from rganalysis.report import plot
from rganalysis.report.build import build_report, write_report
from rganalysis.report.model import Report
from rganalysis.report.options import ReportOptions

__all__ = ["Report", "ReportOptions", "build_report", "plot", "write_report"]
