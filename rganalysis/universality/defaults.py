"""The defaults of a comparison (class thresholds, distance weights, alignments, fixed-point ridge), in
one module without numpy or torch: ``rganalysis compare --help`` shows them without importing the
analysis.  :mod:`~rganalysis.universality.classes`, :mod:`~rganalysis.universality.distances` and
:mod:`~rganalysis.universality.signature` use and re-export them."""

from __future__ import annotations

__all__ = [
    "ALIGNMENTS",
    "DEFAULT_FIXED_POINT_RIDGE",
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_WEIGHTS_ALIGNED",
    "DEFAULT_WEIGHTS_INVARIANT",
    "DEFAULT_WEIGHTS_V1",
]

#: Default class thresholds on the total distance, per comparison mode, calibrated on the calibration
#: seeds of examples/transfer_benchmark.py: the cut that best separates pairs of tasks whose tickets
#: transfer both ways (within 0.05 accuracy) from the others (docs/universality.md).  ``fit``: the
#: threshold of the fitted-map distance of version 1 (used when no unit signature is available).
DEFAULT_THRESHOLDS: dict[str, float] = {"aligned": 0.97, "invariant": 0.092, "fit": 0.3}
#: The threshold when the mode is unknown (fewer than two models): the invariant one.
DEFAULT_THRESHOLD = DEFAULT_THRESHOLDS["invariant"]
#: Default weights of the total between *aligned* flows (same starting weights up to a permutation of
#: units), chosen on the calibration seeds of examples/transfer_benchmark.py (docs/universality.md).
DEFAULT_WEIGHTS_ALIGNED: dict[str, float] = {
    "spectrum": 0.0,
    "fixed_point": 0.0,
    "subspace": 0.0,
    "koopman": 0.0,
    "survival": 1.0,
    "units": 10.0,
    "unit_profile": 0.0,
    "response_spectrum": 0.0,
}
#: Default weights between flows that are not aligned (other seeds, other architectures).
DEFAULT_WEIGHTS_INVARIANT: dict[str, float] = {
    "spectrum": 0.0,
    "fixed_point": 0.0,
    "subspace": 0.0,
    "koopman": 0.0,
    "survival": 0.0,
    "units": 0.0,
    "unit_profile": 1.0,
    "response_spectrum": 0.0,
}
#: The weights of compare v1 (the density-fit distance), kept for reference (``--weights`` can ask for them).
DEFAULT_WEIGHTS_V1: dict[str, float] = {"spectrum": 1.0, "fixed_point": 1.0, "subspace": 1.0}
#: How flows are compared: ``auto`` (aligned when every pair is), ``aligned`` or ``invariant``.
ALIGNMENTS = ("auto", "aligned", "invariant")
#: Default ridge of :func:`ridge_fixed_point` (standardised couplings; 0: FlowFit's exact fixed point).
DEFAULT_FIXED_POINT_RIDGE = 0.05
