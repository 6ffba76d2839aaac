"""rganalysis: iterative magnitude pruning as a renormalization-group flow.

Measure the flow that IMP induces on saved checkpoints, fit its linearisation, classify fixed
points and compare models by universality class.
"""

__version__ = "0.1.0"

from .errors import RGAnalysisError  # noqa: E402
from .state import State  # noqa: E402
from .store import ParameterSet, load, save  # noqa: E402

__all__ = ["ParameterSet", "RGAnalysisError", "State", "__version__", "load", "save"]
