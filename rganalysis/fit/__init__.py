"""Couplings of a state, Jacobian estimators of the RG map, fixed points, exponents and their theory."""

from rganalysis.fit.couplings import compute_couplings, flow_couplings, register_coupling_set, resample_depth
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
