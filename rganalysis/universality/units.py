"""Unit-resolved signatures of IMP flows and the distances between them.

Aligned components compare unit by unit (and weight by weight): they need the two flows' units to
correspond, which they do when the flows start from the same weights up to a permutation of units
(tickets of one rewind point on several tasks).  Units are matched on a scale-free fingerprint of
their starting weights (Hungarian matching); when no matching makes the fingerprints equal the
flows are *not aligned* and only the invariant component is defined.  Definitions and units:
docs/universality.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from rganalysis.errors import InvalidParameterError
from rganalysis.fit.units import UnitGroup, survival_rounds, unit_groups, unit_survival

__all__ = [
    "FINGERPRINT_QUANTILES",
    "PROFILE_DEPTHS",
    "PROFILE_LEVELS",
    "Alignment",
    "UnitSignature",
    "align_units",
    "survival_distance",
    "unit_distance",
    "unit_profile_distance",
]

#: Quantile levels of a unit's starting weights (scaled by its tensor's RMS) that fingerprint it.
FINGERPRINT_QUANTILES = np.linspace(0.0, 1.0, 9)
#: Normalised depths of the invariant unit profile.
PROFILE_DEPTHS = np.linspace(0.0, 1.0, 8)
#: Quantile levels of the distribution of unit degrees in the invariant profile.
PROFILE_LEVELS = np.linspace(0.025, 0.975, 20)
_ALIGN_RTOL = 1e-6


@dataclass
class UnitSignature:
    """What the unit components need from one flow (compact: one byte per weight, a few numbers per unit).

    Attributes
    ----------
    name : model label
    n_rounds : R
    global_density : (R,) surviving fraction of the pruned weights per round
    groups : the unit groups (:func:`~rganalysis.fit.units.unit_groups`), in depth order
    shapes : tensor name -> shape, for the tensors of the groups
    survival : tensor name -> (numel,) rounds each weight survives (0..R)
    degree : per group, (R, n_units) fraction of each unit's connections alive per round
    fingerprint : per group, (n_units, 9) quantiles of the unit's starting weights divided by the
        tensor's RMS (scale-free; the starting weights are the rewind point's, else round 0's)
    depth : tensor name -> normalised depth in [0, 1]
    """

    name: str
    n_rounds: int
    global_density: np.ndarray
    groups: list[UnitGroup]
    shapes: dict[str, tuple[int, ...]]
    survival: dict[str, np.ndarray]
    degree: list[np.ndarray]
    fingerprint: list[np.ndarray]
    depth: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_flow(cls, pset: Any, name: str | None = None) -> UnitSignature:
        """The signature of a flow :class:`~rganalysis.store.ParameterSet` (masks read once per tensor)."""
        R = int(pset.n_rounds)
        require_masks(pset, name or pset.attrs.get("name") or "model")
        shapes = {n: tuple(pset.info[n].shape) for n in pset.pruned_names() if len(pset.info[n].shape) >= 2}
        if not shapes:
            raise InvalidParameterError(
                f"{name or pset.attrs.get('name')}: no pruned tensor has units (>= 2 dims)"
            )
        groups = unit_groups(shapes, pset.attrs)
        names = list(shapes)
        depth = {n: (i / (len(names) - 1) if len(names) > 1 else 0.0) for i, n in enumerate(names)}
        survival: dict[str, np.ndarray] = {}
        degree: list[np.ndarray] = []
        fingerprint: list[np.ndarray] = []
        for n, shape in shapes.items():
            masks = pset.read_masks(n)
            survival[n] = (
                survival_rounds(masks)
                if masks is not None
                else np.full(math.prod(shape), R, dtype=np.uint8 if R < 256 else np.int32)
            )
            start = pset.rewind_tensor(n)  # IMP with rewinding starts every round from the rewind point
            w = (start if start is not None and tuple(start.shape) == shape else pset.tensor(n, 0)).detach()
            w = w.to(torch.float64)
            rms = float(w.square().mean().sqrt())
            w = (w / rms if rms > 0 else w).numpy()
            for g in (x for x in groups if x.tensor == n):
                degree.append(unit_survival(survival[n], shape, g, R) / (math.prod(shape) // g.size))
                fingerprint.append(_fingerprint(w, g))
        return cls(
            str(name or pset.attrs.get("name") or "model"),
            R,
            np.asarray(pset.global_density().values, dtype=np.float64),
            groups,
            shapes,
            survival,
            degree,
            fingerprint,
            depth,
        )


def require_masks(pset: Any, name: str) -> None:
    """:class:`~rganalysis.errors.InvalidParameterError` for a store of several rounds without a mask in any
    of them: not an IMP flow."""
    if int(pset.n_rounds) >= 2 and not pset.masked_names():
        raise InvalidParameterError(
            f"{name}: {pset.n_rounds} rounds and no mask in any of them: not an IMP flow (IMP prunes: "
            "record one with `rganalysis flow` from its first round, or ingest the masks with the weights)"
        )


def _unit_rows(w: np.ndarray, g: UnitGroup) -> np.ndarray:
    """(n_units, fan) the connections of each unit of ``g`` in the weight array ``w``."""
    x = np.moveaxis(w, g.axis, 0)
    return x.reshape(g.size, -1)


def _fingerprint(w: np.ndarray, g: UnitGroup) -> np.ndarray:
    return np.quantile(_unit_rows(w, g), FINGERPRINT_QUANTILES, axis=1).T


# --------------------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------------------
@dataclass
class Alignment:
    """How the units of flow B correspond to those of flow A.

    ``aligned``: True when every group was matched with equal fingerprints (the flows start from the
    same weights up to a permutation of units); ``perms``: per group, ``perms[k][u]`` is B's unit for
    A's unit ``u`` (identity when the units already correspond); ``identity``: no unit moved;
    ``residual``: the largest relative fingerprint mismatch after matching; ``why``: the reason when
    not aligned.
    """

    aligned: bool
    perms: list[np.ndarray]
    identity: bool
    residual: float
    why: str = ""


def align_units(a: UnitSignature, b: UnitSignature) -> Alignment:
    """Match B's units to A's, group by group: a classifier head whose output units both stores label
    with the same classes by label; every other group on the units' fingerprints (Hungarian matching on
    the Euclidean distance where the identity does not already match)."""
    if [(g.tensor, g.axis, g.size) for g in a.groups] != [(g.tensor, g.axis, g.size) for g in b.groups]:
        return Alignment(
            False, [], False, math.inf, "different architectures (tensors or unit counts differ)"
        )
    perms, worst, identity = [], 0.0, True
    for ga, gb, fa, fb in zip(a.groups, b.groups, a.fingerprint, b.fingerprint, strict=True):
        if ga.labels is not None and gb.labels is not None and sorted(ga.labels) == sorted(gb.labels):
            p = np.array([gb.labels.index(lab) for lab in ga.labels])  # a classifier head: by class label
            identity = identity and bool(np.array_equal(p, np.arange(len(p))))
            perms.append(p)
            continue
        scale = max(float(np.abs(fa).max()), 1e-30)
        p = np.arange(len(fa))
        if float(np.abs(fa - fb).max()) > _ALIGN_RTOL * scale:
            cost = ((fa[:, None, :] - fb[None, :, :]) ** 2).sum(-1)
            _, p = linear_sum_assignment(cost)
            identity = identity and bool(np.array_equal(p, np.arange(len(fa))))
        worst = max(worst, float(np.abs(fa - fb[p]).max()) / scale)
        perms.append(p)
    ok = worst <= _ALIGN_RTOL
    return Alignment(
        ok,
        perms,
        identity and ok,
        worst,
        "" if ok else f"the starting weights differ (fingerprint mismatch {worst:.3g} after matching)",
    )


def _aligned_survival(b: UnitSignature, al: Alignment, tensor: str) -> np.ndarray:
    """B's per-weight survival of ``tensor`` reordered to A's units (rows and columns permuted)."""
    s = b.survival[tensor].reshape(b.shapes[tensor])
    if al.identity:
        return s.reshape(-1)
    for g, p in zip(b.groups, al.perms, strict=True):
        if g.tensor != tensor:
            continue
        idx = (p[:, None] * g.group + np.arange(g.group)[None, :]).reshape(-1)  # unit perm -> row/col perm
        s = np.take(s, idx, axis=g.axis)
    return s.reshape(-1)


# --------------------------------------------------------------------------------------------------
# components
# --------------------------------------------------------------------------------------------------
def _spearman_discrete(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (mid-ranks for ties) of two integer arrays with few distinct values, from their
    joint histogram: O(n) whatever the ties."""
    x = x.astype(np.int64, copy=False)
    y = y.astype(np.int64, copy=False)
    k = int(max(x.max(initial=0), y.max(initial=0))) + 1
    joint = np.bincount(x * k + y, minlength=k * k).reshape(k, k).astype(np.float64)
    n = joint.sum()
    px, py = joint.sum(1), joint.sum(0)
    rx = np.cumsum(px) - px + (px + 1) / 2  # mid-rank of each value
    ry = np.cumsum(py) - py + (py + 1) / 2
    mx, my = (px * rx).sum() / n, (py * ry).sum() / n
    cov = (joint * np.outer(rx - mx, ry - my)).sum()
    vx, vy = (px * (rx - mx) ** 2).sum(), (py * (ry - my) ** 2).sum()
    return float(cov / math.sqrt(vx * vy)) if vx > 0 and vy > 0 else 0.0


def survival_distance(a: UnitSignature, b: UnitSignature, al: Alignment) -> float:
    """``1 - rho`` with rho Spearman's correlation, over every pruned weight, of the number of rounds
    it survives in the two flows (weights matched through the units).  In [0, 2]: 0 when the flows
    prune the weights in the same order, ~1 for unrelated orders.  NaN when not aligned."""
    if not al.aligned:
        return math.nan
    x = np.concatenate([a.survival[t] for t in a.shapes])
    y = np.concatenate([_aligned_survival(b, al, t) for t in a.shapes])
    if np.array_equal(x, y):
        return 0.0  # exactly (rho can round to 1 + 2e-16)
    return float(np.clip(1.0 - _spearman_discrete(x, y), 0.0, 2.0))


def _shares(sig: UnitSignature, perms: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(R, U): per round, each unit's share of its group's alive connections, groups concatenated."""
    out = []
    for k, d in enumerate(sig.degree):
        alive = d if perms is None else d[:, perms[k]]
        tot = alive.sum(axis=1, keepdims=True)
        out.append(np.divide(alive, tot, out=np.zeros_like(alive), where=tot > 0))
    return np.concatenate(out, axis=1)


def _density_grid(a: UnitSignature, b: UnitSignature) -> np.ndarray | None:
    """Log global densities on which two flows are compared: from the first pruned round to the sparsest
    one both reach, ``min(R_a, R_b) - 1`` points (None when they do not overlap beyond round 0)."""
    la, lb = np.log(a.global_density), np.log(b.global_density)
    lo, hi = max(la.min(), lb.min()), min(la[1:].max(initial=-np.inf), lb[1:].max(initial=-np.inf))
    if not hi >= lo:
        return None
    return np.linspace(hi, lo, max(1, min(a.n_rounds, b.n_rounds) - 1))


def _at_densities(values: np.ndarray, density: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(len(grid), ...) rows of ``values`` (R, ...) linearly interpolated in log global density."""
    ld = np.log(density)
    order = np.argsort(ld, kind="stable")
    x, y = ld[order], values[order]
    hi = np.clip(np.searchsorted(x, grid), 1, len(x) - 1)
    span = x[hi] - x[hi - 1]
    w = np.divide(grid - x[hi - 1], span, out=np.zeros_like(grid), where=span > 0).clip(0.0, 1.0)
    w = w.reshape(-1, *([1] * (values.ndim - 1)))
    return y[hi - 1] * (1 - w) + y[hi] * w


def unit_distance(a: UnitSignature, b: UnitSignature, al: Alignment) -> float:
    """Mean over rounds 1..R-1 of the cosine distance between the two flows' unit share vectors (each
    unit's share of its group's surviving connections, all groups concatenated; units matched).  Flows of
    other lengths or rates are compared at matched global densities (log scale, where both flows reach;
    :func:`_density_grid`), so that a flow at rate 0.3 and one at 0.2 of the same data-free IMP, whose masks
    at one density are the same, are 0 apart.  In [0, 1]: 0 when every unit keeps the same share at every
    density.  NaN when not aligned."""
    if not al.aligned:
        return math.nan
    sa, sb = _shares(a), _shares(b, al.perms)
    if a.n_rounds == b.n_rounds and np.array_equal(a.global_density, b.global_density):
        sa, sb = sa[1:], sb[1:]  # the same rounds: compared round by round
    else:
        grid = _density_grid(a, b)
        if grid is None:
            return math.nan
        sa, sb = _at_densities(sa, a.global_density, grid), _at_densities(sb, b.global_density, grid)
    vals = []
    for x, y in zip(sa, sb, strict=True):
        if np.array_equal(x, y):  # exactly 0 for equal shares (the cosine rounds to ~1e-16)
            vals.append(0.0)
            continue
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        vals.append(
            max(0.0, 1.0 - float(x @ y) / (nx * ny)) if nx > 0 and ny > 0 else (0.0 if nx == ny else 1.0)
        )
    return float(np.mean(vals)) if vals else 0.0


def _profile(sig: UnitSignature) -> np.ndarray:
    """(R, 2, depths, levels): per round and side, the quantile function of the *relative* unit degrees
    (each unit's degree divided by the mean degree of its side, i.e. by the layer's density; 0 for an empty
    layer) of the tensor nearest to each normalised depth of :data:`PROFILE_DEPTHS`."""
    tensors = list(sig.shapes)
    dep = np.array([sig.depth[t] for t in tensors])
    out = np.zeros((sig.n_rounds, 2, len(PROFILE_DEPTHS), len(PROFILE_LEVELS)))
    for k, g in enumerate(sig.groups):
        ti = tensors.index(g.tensor)
        for j, d in enumerate(PROFILE_DEPTHS):
            if int(np.argmin(np.abs(dep - d))) == ti:
                d = sig.degree[k]
                rho = d.mean(axis=1, keepdims=True)
                rel = np.divide(d, rho, out=np.zeros_like(d), where=rho > 0)
                out[:, g.axis, j, :] = np.quantile(rel, PROFILE_LEVELS, axis=1).T
    return out


def unit_profile_distance(a: UnitSignature, b: UnitSignature) -> float:
    """Permutation-invariant: the 1-Wasserstein distance between the two flows' distributions of relative
    unit degrees (the fraction of a unit's connections alive, divided by its layer's density), per side
    (input / output units) and normalised depth, averaged over those and over the rounds matched by global
    density (log scale, the overlap of the two flows).  Dimensionless: 0.1 = units differ from each other
    by 10 % of their layer's density more in one flow than in the other.  Relative degrees see how
    unevenly IMP thins the units of a layer (what a shuffle of the weights destroys), not the layer's
    density.  Defined for any two flows (other seeds, other architectures)."""
    pa, pb = _profile(a), _profile(b)
    la, lb = np.log(a.global_density), np.log(b.global_density)
    grid = _density_grid(a, b)
    if grid is None:
        return math.nan  # the flows do not overlap in density beyond round 0

    def at(p: np.ndarray, ld: np.ndarray) -> np.ndarray:
        order = np.argsort(ld)
        flat = p.reshape(p.shape[0], -1)[order]
        return np.stack([np.interp(grid, ld[order], flat[:, c]) for c in range(flat.shape[1])], axis=1)

    return float(np.abs(at(pa, la) - at(pb, lb)).mean())
