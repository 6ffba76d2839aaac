"""Checkpoints and stores: reading checkpoint files, the ParameterSet of a model or flow, HDF5 I/O.

Names are loaded on first use, so that the torch-free parts (:mod:`rganalysis.store.index`,
:mod:`rganalysis.store.reader`, :mod:`rganalysis.store.summary`, :mod:`rganalysis.store.output`)
import without torch (``rganalysis info`` and ``rganalysis check`` use only those).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rganalysis._lazy import lazy_exports

#: public name -> module that defines it
_PUBLIC = {
    "check_nested": "rganalysis.store.checks",
    "check_store": "rganalysis.store.checks",
    "FORMAT": "rganalysis.store.index",
    "FORMAT_VERSION": "rganalysis.store.index",
    "load": "rganalysis.store.hdf5",
    "save": "rganalysis.store.hdf5",
    "AtomicOutput": "rganalysis.store.output",
    "guard_outputs": "rganalysis.store.output",
    "write_json": "rganalysis.store.output",
    "EXTRA": "rganalysis.store.parameter_set",
    "MASK": "rganalysis.store.parameter_set",
    "PARAM": "rganalysis.store.parameter_set",
    "LayoutEntry": "rganalysis.store.parameter_set",
    "ParameterSet": "rganalysis.store.parameter_set",
    "RoundData": "rganalysis.store.parameter_set",
    "SurvivalMask": "rganalysis.store.parameter_set",
    "TensorInfo": "rganalysis.store.parameter_set",
    "build_info": "rganalysis.store.parameter_set",
    "StoreReader": "rganalysis.store.reader",
    "State": "rganalysis.store.state",
    "resolve_device": "rganalysis.store.state",
}

__all__ = [
    "AtomicOutput",
    "EXTRA",
    "FORMAT",
    "FORMAT_VERSION",
    "LayoutEntry",
    "MASK",
    "PARAM",
    "ParameterSet",
    "RoundData",
    "State",
    "StoreReader",
    "SurvivalMask",
    "TensorInfo",
    "build_info",
    "check_nested",
    "check_store",
    "guard_outputs",
    "load",
    "resolve_device",
    "save",
    "write_json",
]


__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)


if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.store.checks import check_nested, check_store
    from rganalysis.store.hdf5 import load, save
    from rganalysis.store.index import FORMAT, FORMAT_VERSION
    from rganalysis.store.output import AtomicOutput, guard_outputs, write_json
    from rganalysis.store.parameter_set import (
        EXTRA,
        MASK,
        PARAM,
        LayoutEntry,
        ParameterSet,
        RoundData,
        SurvivalMask,
        TensorInfo,
        build_info,
    )
    from rganalysis.store.reader import StoreReader
    from rganalysis.store.state import State, resolve_device
