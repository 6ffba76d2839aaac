"""Units of a network -- neurons of a linear layer, output channels of a convolution, attention heads
and FFN neurons of a transformer block -- and their couplings over an IMP flow: which units keep
their connections, round by round.  Read tensor by tensor from a store; see docs/universality.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from rganalysis.errors import InvalidParameterError, MasksNotNestedError, TooFewRoundsError

__all__ = [
    "UnitGroup",
    "survival_rounds",
    "unit_couplings",
    "unit_degrees",
    "unit_groups",
    "unit_magnitude",
    "unit_survival",
]

_ATTN_OUT = re.compile(r"attention\.self\.(query|key|value)\.weight$")
_ATTN_IN = re.compile(r"attention\.output\.dense\.weight$")
_FFN_OUT = re.compile(r"intermediate\.dense\.weight$")
_FFN_IN = re.compile(r"(?<!attention\.)output\.dense\.weight$")


@dataclass(frozen=True)
class UnitGroup:
    """The units of one side of a pruned weight tensor.

    ``axis`` 0: output units (rows of a linear weight, output channels of a conv); 1: input units
    (columns, input channels).  ``group`` consecutive rows (or columns) form one unit (an attention
    head: ``head_dim`` of them; otherwise 1).  ``kind``: ``neuron``, ``channel``, ``head`` or
    ``ffn``.  ``labels``: class labels of a classifier head's output units (one per unit) when the
    store knows them, else None.
    """

    tensor: str
    axis: int
    size: int
    group: int = 1
    kind: str = "neuron"
    labels: tuple[str, ...] | None = None

    @property
    def side(self) -> str:
        return "out" if self.axis == 0 else "in"

    def unit_names(self) -> list[str]:
        """``tensor:out:17`` (``tensor:out:label=7`` for a labelled output unit)."""
        if self.labels is not None:
            return [f"{self.tensor}:{self.side}:label={lab}" for lab in self.labels]
        return [f"{self.tensor}:{self.side}:{i}" for i in range(self.size)]


def _heads(attrs: Mapping[str, Any]) -> int | None:
    cfg = attrs.get("config")
    if isinstance(cfg, str):
        try:
            cfg = json.loads(cfg)
        except json.JSONDecodeError:
            return None
    return (
        int(cfg["num_attention_heads"])
        if isinstance(cfg, Mapping) and cfg.get("num_attention_heads")
        else None
    )


def _labels(attrs: Mapping[str, Any]) -> tuple[str, ...] | None:
    lab = attrs.get("labels")
    if isinstance(lab, str):
        try:
            lab = json.loads(lab)
        except json.JSONDecodeError:
            return None
    return tuple(str(x) for x in lab) if isinstance(lab, Sequence) and not isinstance(lab, str) else None


def unit_groups(
    shapes: Mapping[str, Sequence[int]], attrs: Mapping[str, Any] | None = None
) -> list[UnitGroup]:
    """The unit groups of the pruned tensors ``shapes`` (name -> shape, in depth order).

    Every tensor with at least two dimensions gets an output group (axis 0) and an input group
    (axis 1).  With a transformer config in ``attrs["config"]`` (``num_attention_heads``), the rows
    of the query/key/value weights and the columns of the attention output weight are grouped by
    head; intermediate rows and FFN output columns are ``ffn`` units.  ``attrs["labels"]`` (a JSON
    list of class labels) names the output units of the last tensor when their number matches.
    """
    attrs = attrs or {}
    heads = _heads(attrs)
    labels = _labels(attrs)
    names = [n for n, s in shapes.items() if len(s) >= 2]
    out: list[UnitGroup] = []
    for n in names:
        shape = tuple(int(x) for x in shapes[n])
        conv = len(shape) > 2
        for axis in (0, 1):
            size, group, kind = shape[axis], 1, ("channel" if conv else "neuron")
            if heads and ((axis == 0 and _ATTN_OUT.search(n)) or (axis == 1 and _ATTN_IN.search(n))):
                if size % heads == 0:
                    size, group, kind = heads, size // heads, "head"
            elif (axis == 0 and _FFN_OUT.search(n)) or (axis == 1 and _FFN_IN.search(n) and heads):
                kind = "ffn"
            lab = (
                labels
                if (axis == 0 and n == names[-1] and labels is not None and len(labels) == size)
                else None
            )
            out.append(UnitGroup(n, axis, size, group, kind, lab))
    return out


def survival_rounds(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """Rounds each weight survives: ``masks`` (R, *shape) bool, nested -> (numel,) uint8/int32 in 0..R.

    Raises :class:`~rganalysis.errors.MasksNotNestedError` when a weight is revived.
    """
    m = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    R = m.shape[0]
    flat = m.reshape(R, -1).astype(np.uint8, copy=False)
    if R > 1 and np.any(flat[1:] > flat[:-1]):
        raise MasksNotNestedError("the masks are not nested: a later round revives a pruned weight")
    return flat.sum(axis=0, dtype=np.uint8 if R < 256 else np.int32)


def _unit_index(shape: Sequence[int], g: UnitGroup) -> np.ndarray:
    """(numel,) unit index of every weight of a tensor of ``shape`` for group ``g`` (C order)."""
    idx = np.arange(shape[g.axis]) // g.group
    view = [1] * len(shape)
    view[g.axis] = shape[g.axis]
    return np.broadcast_to(idx.reshape(view), tuple(shape)).reshape(-1)


def unit_survival(
    survival: np.ndarray, shape: Sequence[int], g: UnitGroup, n_rounds: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Per unit and round, the count (or, with ``weights``, the sum of ``weights``) over the unit's
    connections that are alive: (n_rounds, n_units) float64.

    ``survival`` (numel,): rounds each weight survives (:func:`survival_rounds`); alive at round n
    means ``survival > n``.
    """
    unit = _unit_index(shape, g)
    R = int(n_rounds)
    hist = np.bincount(
        unit * (R + 1) + survival.astype(np.int64), weights=weights, minlength=g.size * (R + 1)
    ).reshape(g.size, R + 1)
    tail = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # tail[u, s] = sum over survival >= s
    return tail[:, 1:].T.astype(np.float64)  # alive at round n: survival >= n + 1


def unit_degrees(survival: np.ndarray, shape: Sequence[int], g: UnitGroup, n_rounds: int) -> np.ndarray:
    """Fraction of each unit's connections alive per round: (n_rounds, n_units) in [0, 1]."""
    fan = math.prod(shape) // g.size
    return unit_survival(survival, shape, g, n_rounds) / fan


def unit_magnitude(
    survival: np.ndarray, shape: Sequence[int], g: UnitGroup, n_rounds: int, magnitudes: np.ndarray
) -> np.ndarray:
    """Sum of ``magnitudes`` (numel,) over each unit's alive connections per round: (n_rounds, n_units)."""
    return unit_survival(survival, shape, g, n_rounds, weights=magnitudes)


def _flow_tensors(pset: Any) -> Iterator[tuple[str, tuple[int, ...], np.ndarray]]:
    """(name, shape, survival) of every pruned tensor with >= 2 dims, masks read once per tensor."""
    for name in pset.pruned_names():
        shape = tuple(pset.info[name].shape)
        if len(shape) < 2:
            continue
        masks = pset.read_masks(name)
        if masks is None:
            masks = torch.ones((pset.n_rounds, *shape), dtype=torch.bool)
        try:
            yield name, shape, survival_rounds(masks)
        except MasksNotNestedError:
            raise MasksNotNestedError(f"the masks of {name!r} are not nested: no unit survival") from None


def unit_couplings(source: Any, *, magnitude: bool = True) -> xr.Dataset:
    """The unit-resolved couplings of every round of a flow, tensor by tensor from the store.

    Parameters
    ----------
    source : a flow :class:`~rganalysis.store.ParameterSet` (or a path), nested masks
    magnitude : also compute each unit's share of its layer's surviving magnitude (reads the weights
        once per stored version)

    Returns
    -------
    xarray.Dataset with dims ``round`` (R) and ``unit`` (U):
        ``degree`` (round, unit): fraction of the unit's connections alive, in [0, 1];
        ``share`` (round, unit): the unit's share of its tensor side's surviving connections (sums to 1
        over a group's units; 0 when the layer is empty);
        ``magnitude_share`` (round, unit): the unit's share of the tensor's surviving ``|w|``
        (dimensionless; with ``magnitude``);
        ``death_round`` (unit): the first round in which the unit has no connection left (R when it
        survives the whole flow).
        Coordinates ``unit`` (``tensor:out:17``), ``tensor``, ``side`` (out/in), ``index`` (unit
        index within its group), ``kind``, ``label`` ('' when none) and ``depth`` (normalised depth of
        the tensor).
    """
    from rganalysis.store.hdf5 import load
    from rganalysis.store.parameter_set import ParameterSet

    opened = not isinstance(source, ParameterSet)
    pset = load(source) if opened else source
    try:
        R = int(pset.n_rounds)
        if R < 1:
            raise TooFewRoundsError("a store without rounds has no units to follow")
        shapes = {n: pset.info[n].shape for n in pset.pruned_names()}
        groups = unit_groups(shapes, pset.attrs)
        if not groups:
            raise InvalidParameterError("the store has no pruned tensor with units (>= 2 dimensions)")
        tensors = [n for n in shapes if len(shapes[n]) >= 2]
        depth = {n: (i / (len(tensors) - 1) if len(tensors) > 1 else 0.0) for i, n in enumerate(tensors)}
        cols: dict[str, list[np.ndarray]] = {
            "degree": [],
            "share": [],
            "magnitude_share": [],
            "death_round": [],
        }
        coords: dict[str, list[Any]] = {
            k: [] for k in ("unit", "tensor", "side", "index", "kind", "label", "depth")
        }
        for name, shape, surv in _flow_tensors(pset):
            runs = pset.weight_runs(name) if magnitude else []
            for g in (x for x in groups if x.tensor == name):
                alive = unit_survival(surv, shape, g, R)
                fan = math.prod(shape) // g.size
                cols["degree"].append(alive / fan)
                total = alive.sum(axis=1, keepdims=True)
                cols["share"].append(np.divide(alive, total, out=np.zeros_like(alive), where=total > 0))
                cols["death_round"].append(np.count_nonzero(alive > 0, axis=0))
                if magnitude:
                    m = np.zeros((R, g.size))
                    for a, b in runs:
                        w = pset.tensor(name, a).detach().abs().to(torch.float64).reshape(-1).numpy()
                        m[a:b] = unit_magnitude(surv, shape, g, R, w)[a:b]
                    tot = m.sum(axis=1, keepdims=True)
                    cols["magnitude_share"].append(np.divide(m, tot, out=np.zeros_like(m), where=tot > 0))
                names = g.unit_names()
                coords["unit"] += names
                coords["tensor"] += [name] * g.size
                coords["side"] += [g.side] * g.size
                coords["index"] += list(range(g.size))
                coords["kind"] += [g.kind] * g.size
                coords["label"] += list(g.labels) if g.labels is not None else [""] * g.size
                coords["depth"] += [depth[name]] * g.size
        data = {
            k: (("round", "unit"), np.concatenate(v, axis=1))
            for k, v in cols.items()
            if v and k != "death_round"
        }
        data["death_round"] = (("unit",), np.concatenate(cols["death_round"]).astype(np.int64))
        c = {
            "round": np.arange(R),
            "unit": coords["unit"],
            **{k: ("unit", np.asarray(v)) for k, v in coords.items() if k != "unit"},
        }
        return xr.Dataset(data, coords=c, attrs={"n_rounds": R, "name": str(pset.attrs.get("name", ""))})
    finally:
        if opened:
            pset.close()
