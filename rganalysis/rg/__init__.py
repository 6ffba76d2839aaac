"""The RG transformation itself: coarse-graining (magnitude pruning), rescaling, IMP flows, and masks
mapped across depth (:mod:`~rganalysis.rg.depth_mapping`)."""

from rganalysis.rg.coarse_graining import SCOPES, coarse_grain, register_scope
from rganalysis.rg.depth_mapping import DEPTH_RULES, map_masks, register_depth_rule
from rganalysis.rg.flow import compute_flow
from rganalysis.rg.imp import imp_flow
from rganalysis.rg.rescaling import RESCALINGS, register_rescaling, rescale

__all__ = [
    "DEPTH_RULES",
    "RESCALINGS",
    "SCOPES",
    "coarse_grain",
    "compute_flow",
    "imp_flow",
    "map_masks",
    "register_depth_rule",
    "register_rescaling",
    "register_scope",
    "rescale",
]
