"""Universality classes: flow signatures, distances between them, classes, and the analysis estimator."""

from rganalysis.universality.analysis import UniversalityAnalysis
from rganalysis.universality.classes import classes_from_distance, hierarchical_clustering
from rganalysis.universality.distances import distance_matrix, flow_distance
from rganalysis.universality.signature import FlowSignature, flow_signature
from rganalysis.universality.text import format_comparison

__all__ = [
    "FlowSignature",
    "UniversalityAnalysis",
    "classes_from_distance",
    "distance_matrix",
    "flow_distance",
    "flow_signature",
    "format_comparison",
    "hierarchical_clustering",
]
