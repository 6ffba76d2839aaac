"""The plot functions under their public name (``import rganalysis.plot``); defined in
:mod:`rganalysis.report.plot`, where the report uses them."""

from rganalysis.report.plot import *  # noqa: F403
from rganalysis.report.plot import __all__  # noqa: F401
