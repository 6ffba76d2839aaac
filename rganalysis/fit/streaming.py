"""The per-layer couplings of every round of a stored flow, computed tensor by tensor (one weight
tensor and its masks in memory at a time), equal to :func:`~rganalysis.fit.couplings.flow_couplings`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from rganalysis.errors import InvalidParameterError
from rganalysis.fit.couplings import (
    NETWORK_COUPLING_SETS,
    coupling_coords,
    coupling_name,
    get_coupling_set,
    normalise_sets,
    relative_densities,
)
from rganalysis.store.state import State, resolve_device

__all__ = ["stream_flow_couplings"]


# ====================================================================================================
# streaming couplings
# ====================================================================================================
def stream_flow_couplings(
    source: str | os.PathLike | Any,
    sets: str | Sequence[str] = ("density",),
    *,
    names: Sequence[str] | None = None,
    device: str | None = "auto",
) -> xr.DataArray:
    """Couplings of every round of a flow, one tensor at a time.

    Parameters
    ----------
    source : path of a store, or a :class:`~rganalysis.store.ParameterSet` (read lazily)
    sets : registered per-layer coupling-set names (``density``, ``magnitude``, ``spectral``, ...)
    names : layers, in depth order (default ``pset.pruned_names()``, as :meth:`ParameterSet.state`)
    device : where each tensor's couplings are computed (``"auto"`` default: CUDA when present, else CPU)

    Returns
    -------
    xarray.DataArray, shape (n_rounds, n_couplings), float64
        Exactly what ``flow_couplings(pset, sets)`` returns (dims ``(round, coupling)``; coordinates
        ``coupling``, ``layer``, ``set``, ``statistic``, ``depth``).

    Memory
    ------
    Holds one weight tensor (re-read only when the store records a new value for it), one mask,
    and the coupling set's working copies of that one layer; per-layer results are scalars.
    """
    from rganalysis.store.hdf5 import load

    own = not hasattr(source, "n_rounds")
    pset = load(Path(source)) if own else source
    try:
        return _stream(pset, normalise_sets(sets), names, resolve_device(device))
    finally:
        if own:
            pset.close()


def _stream(pset: Any, set_names: list[str], names: Sequence[str] | None, dev: Any) -> xr.DataArray:
    layers = list(names) if names is not None else list(pset.pruned_names())
    if not layers:
        raise InvalidParameterError("the store has no prunable tensors to compute couplings of")
    n_layers = len(layers)
    depth = {k: (i / (n_layers - 1) if n_layers > 1 else 0.0) for i, k in enumerate(layers)}
    R = int(pset.n_rounds)
    layer_sets = [s for s in set_names if s not in NETWORK_COUPLING_SETS]
    fns = [get_coupling_set(s) for s in layer_sets]
    # values[set][stat][layer] = list over rounds
    values: dict[str, dict[str, dict[str, list[float]]]] = {s: {} for s in set_names}
    dens: dict[str, list[float]] = {}  # per-layer densities per round, for the whole-network sets
    sizes: dict[str, int] = {}
    for layer in layers:
        versions = {a for a, _ in pset.weight_runs(layer)}
        w = None
        w_round = -1
        for r in range(R):
            if w is None or (r in versions and r != w_round):
                w = pset.tensor(layer, r, dev)
                w_round = r
            m = pset.mask(layer, r, dev)
            sizes[layer] = m.numel()
            dens.setdefault(layer, [math.nan] * R)[r] = int(torch.count_nonzero(m)) / max(1, m.numel())
            st = State(
                {layer: w}, {layer: m}, depth={layer: depth[layer]}, kinds={layer: pset.info[layer].kind}
            )
            for s, fn in zip(layer_sets, fns, strict=True):
                raw = fn(st)
                extra = [k for k in raw if k != layer]
                if extra:
                    raise InvalidParameterError(
                        f"coupling set {s!r} yields couplings not tied to one layer ({extra[:3]}); "
                        "it cannot be streamed tensor by tensor: use rganalysis.fit.couplings.flow_couplings"
                    )
                if layer not in raw:
                    continue  # e.g. spectral skips 1-d tensors
                val = raw[layer]
                items = list(val.items()) if hasattr(val, "items") else [(s, val)]
                for stat, v in items:
                    per_layer = values[s].setdefault(str(stat), {})
                    per_layer.setdefault(layer, [math.nan] * R)[r] = float(v)
            del m, st
        del w
    for r in range(R):  # the sets that need every layer at once, from the densities
        per_round = {k: dens[k][r] for k in layers}
        if "density_rel" in values:
            for k, v in relative_densities(per_round, sizes).items():
                values["density_rel"].setdefault("density_rel", {}).setdefault(k, [math.nan] * R)[r] = v
        if "global_density" in values:
            g = sum(per_round[k] * sizes[k] for k in layers) / float(sum(sizes.values()))
            values["global_density"].setdefault("global_density", {}).setdefault("network", [math.nan] * R)[
                r
            ] = g
    rows: list[tuple[str, str, str, str, float]] = []
    cols: list[list[float]] = []
    for s in set_names:
        for stat, per_layer in values[s].items():
            for layer in [*layers, *(k for k in per_layer if k not in depth)]:
                if layer in per_layer:
                    d = float(depth[layer]) if layer in depth else math.nan
                    rows.append((coupling_name(s, stat, layer), layer, s, stat, d))
                    cols.append(per_layer[layer])
    if not rows:
        raise InvalidParameterError(f"coupling sets {set_names} gave no couplings for these layers")
    arr = np.asarray(cols, dtype=np.float64).T.reshape(R, len(rows))
    return xr.DataArray(
        arr,
        dims=("round", "coupling"),
        coords={"round": np.arange(R), **coupling_coords(rows)},
        name="couplings",
        attrs={"sets": ",".join(set_names)},
    )
