"""The RG transformation itself: coarse-graining (magnitude pruning), rescaling, IMP flows."""

from rganalysis.rg.coarse_graining import SCOPES, coarse_grain, register_scope
from rganalysis.rg.flow import compute_flow
from rganalysis.rg.imp import imp_flow
from rganalysis.rg.rescaling import RESCALINGS, register_rescaling, rescale

__all__ = [
    "RESCALINGS",
    "SCOPES",
    "coarse_grain",
    "compute_flow",
    "imp_flow",
    "register_rescaling",
    "register_scope",
    "rescale",
]
