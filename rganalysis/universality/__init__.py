"""Universality classes: flow signatures, distances between them, classes, and the analysis estimator.

Names are loaded on first use, so that :mod:`rganalysis.universality.defaults` imports without numpy or
torch (``rganalysis compare --help`` shows those defaults).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rganalysis._lazy import lazy_exports

#: public name -> module that defines it
_PUBLIC = {
    "UniversalityAnalysis": "rganalysis.universality.analysis",
    "classes_from_distance": "rganalysis.universality.classes",
    "hierarchical_clustering": "rganalysis.universality.classes",
    "distance_matrix": "rganalysis.universality.distances",
    "flow_distance": "rganalysis.universality.distances",
    "FlowSignature": "rganalysis.universality.signature",
    "flow_signature": "rganalysis.universality.signature",
    "format_comparison": "rganalysis.universality.text",
    "transfer_scores": "rganalysis.universality.transfer",
}

__all__ = [
    "FlowSignature",
    "UniversalityAnalysis",
    "classes_from_distance",
    "distance_matrix",
    "flow_distance",
    "flow_signature",
    "format_comparison",
    "hierarchical_clustering",
    "transfer_scores",
]


__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)


if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.universality.analysis import UniversalityAnalysis
    from rganalysis.universality.classes import classes_from_distance, hierarchical_clustering
    from rganalysis.universality.distances import distance_matrix, flow_distance
    from rganalysis.universality.signature import FlowSignature, flow_signature
    from rganalysis.universality.text import format_comparison
    from rganalysis.universality.transfer import transfer_scores
