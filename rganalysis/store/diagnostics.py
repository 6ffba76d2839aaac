"""Facts about a model and its flow that a reader must know before trusting a fit: layers that IMP
emptied, and weights that look like a random initialisation (a model that was never trained)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.store.parameter_set import ParameterSet

__all__ = ["collapsed_layers", "looks_untrained"]


def collapsed_layers(pset: ParameterSet) -> dict[str, int]:
    """Pruned tensors that IMP emptied (``pset``: a ParameterSet or a StoreReader): name -> the first round at which no weight survives, in depth
    order (global pruning can kill a whole layer, e.g. a classifier head).  Reads the checked density
    table only (no torch)."""
    layers, table = pset.density_table()
    out: dict[str, int] = {}
    for j, name in enumerate(layers):
        dead = np.flatnonzero(np.asarray(table)[:, j] == 0)
        if dead.size:
            out[str(name)] = int(dead[0])
    return out


#: Standard deviations of the initialisations PyTorch and its model zoos use, as functions of
#: (fan_in, fan_out): PyTorch's default (kaiming-uniform with a = sqrt(5)), He / Kaiming (fan in or
#: fan out), Glorot / Xavier, and the fixed 0.02 of BERT-style initialisers.
_INIT_STDS: dict[str, Any] = {
    "pytorch default U(-1/sqrt(fan_in), 1/sqrt(fan_in))": lambda fi, fo: 1.0 / math.sqrt(3.0 * fi),
    "kaiming normal, fan_in": lambda fi, fo: math.sqrt(2.0 / fi),
    "kaiming normal, fan_out": lambda fi, fo: math.sqrt(2.0 / fo),
    "xavier": lambda fi, fo: math.sqrt(2.0 / (fi + fo)),
    "normal(0, 0.02)": lambda fi, fo: 0.02,
}


def looks_untrained(
    pset: ParameterSet, round: int = 0, rtol: float = 0.05, min_numel: int = 1000
) -> tuple[bool, str]:
    """Do the weights at ``round`` look like a random initialisation (a model that was never trained)?

    True when every pruned tensor with at least ``min_numel`` weights has a mean within four standard
    errors of 0 and a standard deviation within ``rtol`` of one of the common initialisations
    (:data:`_INIT_STDS`, from its fan-in ``shape[1:]`` and fan-out ``shape[0] * shape[2:]``).  Training
    moves the spread of most layers by more than a few percent; a model that passes is reported as
    probably untrained.  Returns (verdict, explanation).
    """
    import torch

    seen = 0
    schemes: dict[str, int] = {}
    for name in pset.pruned_names():
        shape = pset.info[name].shape
        if len(shape) < 2 or pset.info[name].numel < min_numel:
            continue
        w = pset.tensor(name, round).detach().to(torch.float64).reshape(-1)
        n = w.numel()
        mean, std = float(w.mean()), float(w.std())
        receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
        fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
        if not (std > 0 and abs(mean) <= 4 * std / math.sqrt(n)):
            return False, f"{name}: mean {mean:.3g} is not centred (std {std:.3g})"
        match = [k for k, f in _INIT_STDS.items() if abs(std / f(fan_in, fan_out) - 1) <= rtol]
        if not match:
            return (
                False,
                f"{name}: std {std:.4g} matches no common initialisation (fan in {fan_in}, out {fan_out})",
            )
        schemes[match[0]] = schemes.get(match[0], 0) + 1
        seen += 1
    if not seen:
        return False, f"no pruned tensor with at least {min_numel} weights to judge"
    used = ", ".join(f"{k} ({v})" for k, v in schemes.items())
    return (
        True,
        f"every one of the {seen} large weight tensors has the spread of a random initialisation: {used}",
    )
