"""Elementary moves of the masks at one round of a flow, as the response Jacobian perturbs them: per layer
and per band of units (sorted by degree), remove the smallest survivors or restore the most recently
pruned weights; and the couplings of a state edited in one layer, computed on that layer alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rganalysis.fit.couplings import compute_couplings, coupling_values
from rganalysis.store.state import State

__all__ = [
    "BAND_EDGES",
    "LayerCouplings",
    "LayerRound",
    "MaskMove",
    "apply_moves",
    "layer_round",
    "mask_moves",
]

#: Rank-fraction edges of the unit bands of a layer side (units sorted by degree): the bands are centred
#: on the quantiles 10, 25, 50, 75, 90 % that the ``unit`` coupling set reports.
BAND_EDGES = (0.0, 0.175, 0.375, 0.625, 0.825, 1.0)


@dataclass
class LayerRound:
    name: str
    shape: tuple[int, ...]
    mask: torch.Tensor  # (numel,) bool at round n
    weight: torch.Tensor  # (numel,) float64, proxy weights: W_n where alive, the last value alive elsewhere
    remove_order: torch.Tensor  # survivors, smallest |W_n| first
    restore_order: torch.Tensor  # pruned weights, latest death first, then largest last magnitude


def layer_round(pset: Any, name: str, n: int) -> LayerRound:
    """Masks, proxy weights and the remove/restore orders of ``name`` at round ``n``.

    A pruned weight is restored in the order IMP removed it, backwards: the most recently pruned first,
    and among those the largest in magnitude at its last round alive (just below its threshold).
    """
    shape = tuple(pset.info[name].shape)
    masks = pset.read_masks(name)
    numel = int(np.prod(shape, dtype=np.int64))
    if masks is None:
        masks = torch.ones((n + 1, numel), dtype=torch.bool)
    masks = masks[: n + 1].reshape(n + 1, -1)
    alive_rounds = masks.to(torch.int64).sum(0)  # rounds 0..n the weight is alive in (nested masks)
    last = (alive_rounds - 1).clamp(min=0)  # last round alive (round 0 for weights dead from the start)
    mask = masks[n].clone()
    weight = torch.zeros(numel, dtype=torch.float64)
    for a, b in pset.weight_runs(name):
        if a > n:
            break
        sel = (last >= a) & (last < b)
        if bool(sel.any()):
            weight[sel] = pset.tensor(name, a).detach().reshape(-1).to(torch.float64)[sel]
    mag = weight.abs()
    idx = torch.arange(numel)
    surv = idx[mask]
    surv = surv[torch.argsort(mag[surv], stable=True)]
    dead = idx[~mask]
    if dead.numel():
        # latest death first, then largest magnitude at the last round alive: one stable sort per key
        dead = dead[torch.argsort(mag[dead], descending=True, stable=True)]
        dead = dead[torch.argsort(alive_rounds[dead], descending=True, stable=True)]
    return LayerRound(name, shape, mask, weight, surv, dead)


@dataclass
class MaskMove:
    """An elementary mask move: remove (sign -1) or restore (+1) weights of a layer or of a band of its
    units, in magnitude order; at strength ``c`` it moves ``max(1, round(c * epsilon * base))`` weights."""

    layer: str
    scope: str  # "layer", "out" or "in"
    band: int  # -1 for a layer atom
    sign: int
    candidates: torch.Tensor  # flat indices in the order they are moved
    base: int  # the count epsilon is a fraction of (survivors of the layer or band; units of a dead band)

    @property
    def label(self) -> str:
        where = self.layer if self.scope == "layer" else f"{self.layer}:{self.scope}:band{self.band}"
        return f"{'restore' if self.sign > 0 else 'remove'} {where}"

    def count(self, strength: float, epsilon: float) -> int:
        return max(1, int(round(strength * epsilon * self.base)))


def _unit_of(shape: Sequence[int], axis: int) -> torch.Tensor:
    """(numel,) index along ``axis`` of every element of a tensor of ``shape`` (C order)."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return torch.arange(shape[axis]).reshape(view).expand(*shape).reshape(-1)


def mask_moves(layer: LayerRound, units: bool) -> list[MaskMove]:
    """The layer's two layer atoms and, with ``units`` (tensors of >= 2 dims), a remove and a restore
    atom for each band of output and of input units (:data:`BAND_EDGES`, units sorted by degree)."""
    surv = int(layer.mask.sum())
    out = [
        MaskMove(layer.name, "layer", -1, -1, layer.remove_order, max(surv, 1)),
        MaskMove(layer.name, "layer", -1, +1, layer.restore_order, max(surv, 1)),
    ]
    if not units or len(layer.shape) < 2:
        return out
    for axis, side in ((0, "out"), (1, "in")):
        unit = _unit_of(layer.shape, axis)
        n_units = layer.shape[axis]
        deg = torch.bincount(unit[layer.mask], minlength=n_units).to(torch.float64)
        order = torch.argsort(deg, stable=True)  # ties by unit index
        rank = torch.empty(n_units, dtype=torch.float64)
        rank[order] = (torch.arange(n_units, dtype=torch.float64) + 0.5) / n_units
        band = torch.bucketize(rank, torch.tensor(BAND_EDGES[1:-1], dtype=torch.float64), right=True)
        wband = band[unit]
        for b in range(len(BAND_EDGES) - 1):
            members = band == b
            if not bool(members.any()):
                continue
            rem = layer.remove_order[wband[layer.remove_order] == b]
            res = layer.restore_order[wband[layer.restore_order] == b]
            s_b = int(deg[members].sum())
            out.append(MaskMove(layer.name, side, b, -1, rem, max(s_b, 1)))
            out.append(MaskMove(layer.name, side, b, +1, res, max(s_b, int(members.sum()))))
    return out


def apply_moves(
    masks: Mapping[str, torch.Tensor], atoms: Sequence[MaskMove], strengths: Sequence[float], epsilon: float
) -> tuple[dict[str, torch.Tensor], int]:
    """Flat masks with the atoms applied in order at their strengths; the number of atoms that could move
    fewer weights than asked (nothing left to remove or restore)."""
    out = {k: m.clone() for k, m in masks.items()}
    short = 0
    for a, c in zip(atoms, strengths, strict=True):
        if c <= 0:
            continue
        m = out[a.layer]
        want = a.count(c, epsilon)
        cand = a.candidates
        free = cand[m[cand]] if a.sign < 0 else cand[~m[cand]]
        if free.numel() < want:
            short += 1
        m[free[:want]] = a.sign > 0
    return out, short


# ====================================================================================================
# couplings of one edited layer
# ====================================================================================================
class LayerCouplings:
    """Couplings of a state whose masks differ from the base in one layer, computed on that layer alone
    (every registered per-layer set; a set with whole-network couplings falls back to the full state)."""

    def __init__(self, layers: Mapping[str, LayerRound], state: State, sets: tuple[str, ...]):
        self.state, self.sets, self.layers = state, sets, layers
        base = compute_couplings(state, sets)
        self.names = [str(c) for c in base["coupling"].values]
        self.base = np.asarray(base.values, dtype=np.float64)
        self.layer_of = [str(x) for x in base["layer"].values]
        self.groups = [f"{a}.{b}" for a, b in zip(base["set"].values, base["statistic"].values, strict=True)]
        self.per_layer = all(lay in state.weights for lay in self.layer_of)
        self.index = {k: np.flatnonzero(np.asarray(self.layer_of) == k) for k in state.names}

    def values(self, layer: str, flat_mask: torch.Tensor) -> np.ndarray:
        lay = self.layers[layer]
        m = flat_mask.reshape(lay.shape)
        if not self.per_layer:
            masks = dict(self.state.masks)
            masks[layer] = m
            return coupling_values(self.state.with_masks(masks), self.sets)
        one = State(
            {layer: self.state.weights[layer]},
            {layer: m},
            {layer: self.state.depth[layer]},
            {layer: self.state.kinds[layer]},
        )
        out = self.base.copy()
        out[self.index[layer]] = coupling_values(one, self.sets)
        return out

    def of_masks(self, flat: Mapping[str, torch.Tensor]) -> np.ndarray:
        masks = {k: flat[k].reshape(self.layers[k].shape) for k in self.state.names}
        return coupling_values(self.state.with_masks(masks), self.sets)
