"""Checkpoints and stores: reading checkpoint files, the ParameterSet of a model or flow, HDF5 I/O."""

from rganalysis.store.checks import check_nested
from rganalysis.store.hdf5 import FORMAT, FORMAT_VERSION, load, save
from rganalysis.store.output import AtomicOutput, write_json
from rganalysis.store.parameter_set import (
    EXTRA,
    MASK,
    PARAM,
    LayoutEntry,
    ParameterSet,
    RoundData,
    TensorInfo,
    build_info,
)
from rganalysis.store.state import State, resolve_device

__all__ = [
    "EXTRA",
    "FORMAT",
    "FORMAT_VERSION",
    "MASK",
    "PARAM",
    "AtomicOutput",
    "LayoutEntry",
    "ParameterSet",
    "RoundData",
    "State",
    "TensorInfo",
    "build_info",
    "check_nested",
    "load",
    "resolve_device",
    "save",
    "write_json",
]
