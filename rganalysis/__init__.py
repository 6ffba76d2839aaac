"""rganalysis: iterative magnitude pruning as a renormalization-group flow, measured on checkpoints.

The public verbs are importable from here; each is loaded on first use, so ``import rganalysis`` stays
cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rganalysis._lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> module that defines it
_PUBLIC = {
    "ParameterSet": "rganalysis.store",
    "State": "rganalysis.store",
    "load": "rganalysis.store",
    "save": "rganalysis.store",
    "ingest": "rganalysis.adapters",
    "compute_flow": "rganalysis.rg",
    "map_masks": "rganalysis.rg",
    "MaskedTrainer": "rganalysis.train",
    "bert_trainer": "rganalysis.train",
    "FlowFit": "rganalysis.fit",
    "ResponseJacobian": "rganalysis.fit",
    "response_jacobian": "rganalysis.fit",
    "KoopmanDMD": "rganalysis.koopman",
    "UniversalityAnalysis": "rganalysis.universality",
    "transfer_scores": "rganalysis.universality",
    "write_report": "rganalysis.report",
    "RGAnalysisError": "rganalysis.errors",
}
_MODULES = {"plot": "rganalysis.plot", "errors": "rganalysis.errors"}

__all__ = [
    "FlowFit",
    "KoopmanDMD",
    "MaskedTrainer",
    "ParameterSet",
    "RGAnalysisError",
    "ResponseJacobian",
    "State",
    "UniversalityAnalysis",
    "__version__",
    "bert_trainer",
    "compute_flow",
    "errors",
    "ingest",
    "load",
    "map_masks",
    "plot",
    "response_jacobian",
    "save",
    "transfer_scores",
    "write_report",
]


__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC, _MODULES)


if TYPE_CHECKING:  # pragma: no cover
    from rganalysis import errors, plot
    from rganalysis.adapters import ingest
    from rganalysis.errors import RGAnalysisError
    from rganalysis.fit import FlowFit, ResponseJacobian, response_jacobian
    from rganalysis.koopman import KoopmanDMD
    from rganalysis.report import write_report
    from rganalysis.rg import compute_flow, map_masks
    from rganalysis.store import ParameterSet, State, load, save
    from rganalysis.train import MaskedTrainer, bert_trainer
    from rganalysis.universality import UniversalityAnalysis, transfer_scores
