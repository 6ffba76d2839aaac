"""Couplings of a state, Jacobian estimators of the RG map, fixed points, exponents and their theory.

Names are loaded on first use, so that :mod:`rganalysis.fit.options` (the options the command line is
built from) imports without torch: ``rganalysis fit --help`` needs only those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rganalysis._lazy import lazy_exports

#: public name -> module that defines it
_PUBLIC = {
    "compute_couplings": "rganalysis.fit.couplings",
    "flow_couplings": "rganalysis.fit.couplings",
    "register_coupling_set": "rganalysis.fit.couplings",
    "resample_depth": "rganalysis.fit.couplings",
    "classify_eigenvalues": "rganalysis.fit.fixed_points",
    "exponents": "rganalysis.fit.fixed_points",
    "fixed_point_type": "rganalysis.fit.fixed_points",
    "flow_scale": "rganalysis.fit.fixed_points",
    "scale_factor": "rganalysis.fit.fixed_points",
    "FlowFit": "rganalysis.fit.flowfit",
    "ResponseEstimator": "rganalysis.fit.jacobian",
    "TrajectoryEstimator": "rganalysis.fit.jacobian",
    "ResponseJacobian": "rganalysis.fit.response",
    "response_jacobian": "rganalysis.fit.response",
    "read_response": "rganalysis.fit.response_store",
    "write_response": "rganalysis.fit.response_store",
    "stream_flow_couplings": "rganalysis.fit.streaming",
}

__all__ = [
    "FlowFit",
    "ResponseEstimator",
    "ResponseJacobian",
    "TrajectoryEstimator",
    "classify_eigenvalues",
    "compute_couplings",
    "exponents",
    "fixed_point_type",
    "flow_couplings",
    "flow_scale",
    "read_response",
    "register_coupling_set",
    "resample_depth",
    "response_jacobian",
    "scale_factor",
    "stream_flow_couplings",
    "write_response",
]


__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)


if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.fit.couplings import (
        compute_couplings,
        flow_couplings,
        register_coupling_set,
        resample_depth,
    )
    from rganalysis.fit.fixed_points import (
        classify_eigenvalues,
        exponents,
        fixed_point_type,
        flow_scale,
        scale_factor,
    )
    from rganalysis.fit.flowfit import FlowFit
    from rganalysis.fit.jacobian import ResponseEstimator, TrajectoryEstimator
    from rganalysis.fit.response import ResponseJacobian, response_jacobian
    from rganalysis.fit.response_store import read_response, write_response
    from rganalysis.fit.streaming import stream_flow_couplings
