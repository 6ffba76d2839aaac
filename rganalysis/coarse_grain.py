"""Coarse-graining: one IMP pruning step, as exact magnitude selection by radix select.

One coarse-graining step removes the fraction ``rate`` of the smallest-magnitude *surviving* weights,
either across all prunable layers at once (scope ``"global"``) or within each layer (``"layer"``).
The weights are not touched; only the masks lose entries, so the masks of successive steps are
nested.

Selection order (the tie rule)
------------------------------
Surviving weights are ranked by the key ``(|w|, layer position, flat index)``, ascending, and the
first ``k`` are removed.  ``layer position`` is the order of the layers in the :class:`State`
(restricted to ``prunable``) and ``flat index`` is the row-major (C-order) index within the layer.
So among weights of equal magnitude the one in the earlier layer, then at the smaller flat index,
goes first.  ``+0.0`` and ``-0.0`` have equal magnitude; NaN ranks above every number (it is never
removed before a finite weight).  Magnitudes are compared exactly in the weights' own precision:
float16 and bfloat16 are widened exactly to float32, and if any layer is float64 all keys are
float64.

How it is computed
------------------
No sort and no concatenation of the model.  For non-negative IEEE floats the integer bit pattern of
``|w|`` (the sign bit cleared) is monotone in ``|w|``, so the ``k``-th smallest surviving magnitude
is found digit by digit (16 bits at a time) with histogram passes (``torch.bincount``) over the
layers, chunk by chunk, summing the counts across layers:

1. a histogram of the high 16 bits of every survivor picks the bucket holding the ``k``-th key;
2. a histogram of the next 16 bits, of the survivors in that bucket only, fixes the exact threshold
   key ``T`` (two more such passes for float64);
3. a last pass writes the new masks: keep ``key > T``, and of the survivors with ``key == T`` drop
   the first ones in (layer, flat index) order until exactly ``k`` are gone.

Work memory is a few fixed-size chunk buffers (``chunk_size`` elements, default 2**20 on CPU), so the
extra memory is the new masks (one byte per weight) plus O(chunk_size), whatever the model size.
On CPU the chunks are shared between ``torch.get_num_threads()`` Python threads (torch releases the
GIL, and ``bincount`` is single-threaded); on other devices they are processed in order.

New scopes are one function: see :func:`register_scope`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import torch

from rganalysis.errors import (
    InvalidParameterError,
    MaskShapeError,
    MissingTensorError,
    NonBinaryMaskError,
)
from rganalysis.state import State

__all__ = [
    "SCOPES",
    "ScopeFn",
    "coarse_grain",
    "global_scope",
    "layer_scope",
    "n_removed",
    "register_scope",
    "remove_smallest",
]

#: A pruning scope: ``(weights, masks, rate) -> new masks``, one entry per prunable layer, same order.
ScopeFn = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], float], list[torch.Tensor]]

#: Registered pruning scopes, by name.
SCOPES: dict[str, ScopeFn] = {}

#: Default chunk length (elements) on CPU: big enough to amortise the per-op overhead, small enough
#: for the chunk buffers to stay in cache.  Other devices take whole layers up to 2**26 elements.
CPU_CHUNK = 1 << 20
DEVICE_CHUNK = 1 << 26

_DIGIT = 16  # bits resolved per histogram pass
# Within a float32 seen as two int16 halves: index of the high and of the low half.
_HI, _LO = (1, 0) if sys.byteorder == "little" else (0, 1)

#: The top bucket is resolved by gathering its survivors when it holds at most
#: ``max(GATHER_MIN, numel // GATHER_FRACTION)`` of them (int64 index + int32 key each: at most
#: ~0.05x the size of a float32 model); otherwise by one more histogram pass over the model.
GATHER_MIN = 1 << 16
GATHER_FRACTION = 64

_POOL: ThreadPoolExecutor | None = None


def register_scope(name: str) -> Callable[[ScopeFn], ScopeFn]:
    """Decorator that registers a pruning scope under ``name`` in :data:`SCOPES`.

    A scope is ``fn(weights, masks, rate) -> list of new masks``: ``weights`` and ``masks`` are the
    prunable layers' tensors (same order, any shapes), ``rate`` in (0, 1) is the fraction of
    survivors to remove.  It must return new ``torch.bool`` masks of the same shapes that are subsets
    of the old ones; :func:`remove_smallest` does the exact selection.

    Examples
    --------
    >>> @register_scope("first-half")          # doctest: +SKIP
    ... def first_half(weights, masks, rate):
    ...     h = len(weights) // 2
    ...     return layer_scope(weights[:h], masks[:h], rate) + [m.clone() for m in masks[h:]]
    """

    def deco(fn: ScopeFn) -> ScopeFn:
        SCOPES[name] = fn
        return fn

    return deco


def n_removed(survivors: int, rate: float) -> int:
    """Number of weights one step removes from ``survivors``: ``round(rate * survivors)``.

    Python's ``round`` (halves to even), so e.g. 0.5 * 5 -> 2.
    """
    return int(round(rate * survivors))


@register_scope("global")
def global_scope(
    weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], rate: float
) -> list[torch.Tensor]:
    """Remove ``round(rate * S)`` weights across all layers, ``S`` the total number of survivors."""
    survivors = [_count(m) for m in masks]
    return _select(weights, masks, n_removed(sum(survivors), rate), survivors)


@register_scope("layer")
def layer_scope(
    weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], rate: float
) -> list[torch.Tensor]:
    """Remove ``round(rate * S_l)`` weights from each layer ``l`` separately."""
    out = []
    for w, m in zip(weights, masks, strict=True):
        s = _count(m)
        out += _select([w], [m], n_removed(s, rate), [s])
    return out


def coarse_grain(
    state: State,
    rate: float,
    scope: str = "global",
    prunable: Iterable[str] | None = None,
) -> State:
    """One coarse-graining (IMP pruning) step: drop the ``rate`` smallest-magnitude survivors.

    Parameters
    ----------
    state : State
        Weights and masks at round n (any device; weights float16/bfloat16/float32/float64).
    rate : float
        Fraction of the surviving weights to remove, strictly in (0, 1).
    scope : str
        A key of :data:`SCOPES`: ``"global"`` (one magnitude ranking over all prunable layers,
        ``round(rate * S)`` removed, ``S`` = their survivors) or ``"layer"`` (``round(rate * S_l)``
        removed from each layer).
    prunable : iterable of str, optional
        Layers that may be pruned; default all layers of ``state``.  The other layers keep their
        masks and do not count in ``S``.

    Returns
    -------
    State
        Same weights, depth and kinds; new masks (each a subset of the old one).  The ranking and
        its tie rule are described in the module docstring: ``(|w|, layer position, flat index)``.

    Raises
    ------
    InvalidParameterError
        ``rate`` not in (0, 1), unknown ``scope``, or non-floating-point weights.
    MissingTensorError
        ``prunable`` names a layer the state does not have.
    MaskShapeError, NonBinaryMaskError
        A mask does not fit its weight.
    """
    rate = _check_rate(rate)
    if scope not in SCOPES:
        raise InvalidParameterError(f"unknown scope {scope!r}; known: {sorted(SCOPES)}")
    names = state.names if prunable is None else list(dict.fromkeys(prunable))
    missing = [n for n in names if n not in state.weights]
    if missing:
        raise MissingTensorError(f"prunable layers not in the state: {missing}")
    order = {n: i for i, n in enumerate(state.names)}
    names.sort(key=order.__getitem__)  # layer position = state order, whatever order prunable had
    weights = [state.weights[n] for n in names]
    masks = [_check_mask(n, state.weights[n], state.masks[n]) for n in names]
    new = SCOPES[scope](weights, masks, rate)
    out = dict(state.masks)
    out.update(zip(names, new, strict=True))
    return state.with_masks(out)


def remove_smallest(
    weights: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    k: int,
    chunk_size: int | None = None,
) -> list[torch.Tensor]:
    """New masks with the ``k`` smallest-magnitude survivors of all ``weights`` removed.

    Parameters
    ----------
    weights : sequence of Tensor
        Floating-point tensors, any shapes, on one device.  Not modified.
    masks : sequence of bool Tensor
        Same shapes; True = surviving.  Not modified.
    k : int
        How many survivors to remove, ``0 <= k <= S`` (``S`` = total survivors).
    chunk_size : int, optional
        Elements per work chunk (default :data:`CPU_CHUNK` on CPU, :data:`DEVICE_CHUNK` otherwise).

    Returns
    -------
    list of bool Tensor
        New masks (fresh tensors), ranked and tie-broken by ``(|w|, layer position, flat index)``.
    """
    if len(weights) != len(masks):
        raise InvalidParameterError("weights and masks must have the same length")
    return _select(weights, masks, k, [_count(m) for m in masks], chunk_size)


# --------------------------------------------------------------------------------------------------
# internals
# --------------------------------------------------------------------------------------------------
def _count(m: torch.Tensor) -> int:
    """Number of True entries (``count_nonzero``: ~15x faster than ``sum`` on bool tensors)."""
    return int(torch.count_nonzero(m))


def _select(
    weights: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    k: int,
    survivors: list[int],
    chunk_size: int | None = None,
) -> list[torch.Tensor]:
    """:func:`remove_smallest` with the survivors per layer already counted."""
    for w in weights:
        if not w.is_floating_point():
            raise InvalidParameterError(f"weights must be floating point, got {w.dtype}")
    total = sum(survivors)
    if not 0 <= k <= total:
        raise InvalidParameterError(f"cannot remove {k} of {total} survivors")
    if k == 0 or not weights:
        return [m.clone() for m in masks]
    device = weights[0].device
    if chunk_size is None:
        chunk_size = CPU_CHUNK if device.type == "cpu" else DEVICE_CHUNK
    plan = _Plan(
        [w.reshape(-1) for w in weights],
        [m.reshape(-1) for m in masks],
        [s == m.numel() for s, m in zip(survivors, masks, strict=True)],
        [
            (i, s, min(chunk_size, w.numel() - s))
            for i, w in enumerate(weights)
            for s in range(0, w.numel(), chunk_size)
        ],
        any(w.dtype == torch.float64 for w in weights),
        min(chunk_size, max(w.numel() for w in weights)),
    )
    out = [torch.empty(m.numel(), dtype=torch.bool, device=m.device) for m in plan.masks]
    bits = 64 if plan.wide else 32
    top = bits - _DIGIT
    hist = sum(_map(plan, partial(_top_hist, plan, shift=top)))
    digit, r = _pick(hist, k)
    numel = sum(m.numel() for m in masks)
    if not plan.wide and int(hist[digit]) <= max(GATHER_MIN, numel // GATHER_FRACTION):
        _finish_by_gather(plan, digit, r, out)
    else:
        prefix = digit << top
        for shift in range(top - _DIGIT, -1, -_DIGIT):
            hist = sum(_map(plan, partial(_sub_hist, plan, shift=shift, prefix=prefix)))
            digit, r = _pick(hist, r)
            prefix |= digit << shift
        _write_masks(plan, prefix, r, int(hist[digit]), out)
    return [f.view(m.shape) for f, m in zip(out, masks, strict=True)]


Chunk = tuple[int, int, int]  # (layer, start, length) of a slice of a flattened layer


@dataclass
class _Plan:
    """Flattened inputs and the chunking of one selection."""

    weights: list[torch.Tensor]  # 1-D views (copies only where a layer cannot be viewed flat)
    masks: list[torch.Tensor]  # 1-D bool
    full: list[bool]  # mask all True: skip the masking ops
    chunks: list[Chunk]  # in (layer, start) order
    wide: bool  # 64-bit keys (some layer is float64)
    buf_len: int  # longest chunk


class _Workspace:
    """Reusable buffers of ``n`` elements for one thread (no allocation per chunk)."""

    def __init__(self, n: int, device: torch.device, wide: bool):
        self.n, self.device, self.wide = n, device, wide
        self._bufs: dict[torch.dtype, torch.Tensor] = {}

    def buf(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        b = self._bufs.get(dtype)
        if b is None:
            b = self._bufs[dtype] = torch.empty(self.n, dtype=dtype, device=self.device)
        return b[:n]

    def floats(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` (1-D chunk) as float32 (float64 if wide); a copy only when dtype or layout differ.

        Widening float16/bfloat16 to float32 (and anything to float64) is exact and monotone."""
        ftype = torch.float64 if self.wide else torch.float32
        if w.dtype == ftype and w.is_contiguous():
            return w
        return self.buf(ftype, w.numel()).copy_(w)

    def keys(self, w: torch.Tensor) -> torch.Tensor:
        """Bit patterns of ``|w|`` (sign bit cleared): int32 (int64 if wide), monotone in ``|w|``."""
        f = self.floats(w)
        itype = torch.int64 if self.wide else torch.int32
        return torch.bitwise_and(f.view(itype), _ABS[itype], out=self.buf(itype, w.numel()))

    def high(self, w: torch.Tensor) -> torch.Tensor:
        """Top 16 bits of the float32 keys as int16 in [0, 2**15): the high half of each float32,
        read in place through an int16 view, sign bit cleared (one op, no 32-bit temporary)."""
        f = self.floats(w)
        return torch.bitwise_and(f.view(torch.int16)[_HI::2], 0x7FFF, out=self.buf(torch.int16, w.numel()))


_ABS = {torch.int32: 0x7FFFFFFF, torch.int64: (1 << 63) - 1}


def _check_rate(rate: float) -> float:
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"rate must be a number in (0, 1), got {rate!r}") from None
    if not (math.isfinite(rate) and 0.0 < rate < 1.0):
        raise InvalidParameterError(f"rate must be in (0, 1), got {rate}")
    return rate


def _check_mask(name: str, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    if m.shape != w.shape:
        raise MaskShapeError(f"{name}: mask shape {tuple(m.shape)} != weight shape {tuple(w.shape)}")
    if m.dtype != torch.bool:
        if bool(((m != 0) & (m != 1)).any()):
            raise NonBinaryMaskError(f"{name}: mask holds values other than 0 and 1")
        m = m != 0
    return m


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(
            max_workers=max(1, torch.get_num_threads()), thread_name_prefix="rg-select"
        )
    return _POOL


def _map(plan: _Plan, fn: Callable[[list[Chunk], _Workspace], object]) -> list:
    """Run ``fn(chunks, workspace)`` over contiguous groups of chunks; results in chunk order.

    On CPU the groups (balanced by element count) run in parallel threads; elsewhere one group.
    """
    device = plan.weights[0].device
    workers = min(torch.get_num_threads(), len(plan.chunks)) if device.type == "cpu" else 1
    if workers <= 1:
        return [fn(plan.chunks, _Workspace(plan.buf_len, device, plan.wide))]
    total = sum(c[2] for c in plan.chunks)
    groups: list[list[Chunk]] = [[] for _ in range(workers)]
    done = 0
    for c in plan.chunks:
        groups[min(workers - 1, done * workers // total)].append(c)
        done += c[2]
    groups = [g for g in groups if g]
    return list(_pool().map(lambda g: fn(g, _Workspace(plan.buf_len, device, plan.wide)), groups))


def _pick(hist: torch.Tensor, r: int) -> tuple[int, int]:
    """Digit holding the ``r``-th (1-based) smallest key, and ``r`` within that digit's bucket."""
    cum = hist.cpu().cumsum(0)
    d = int(torch.searchsorted(cum, torch.tensor([r], dtype=cum.dtype)).item())
    below = int(cum[d - 1]) if d > 0 else 0
    return d, r - below


def _top_hist(plan: _Plan, chunks: list[Chunk], ws: _Workspace, shift: int) -> torch.Tensor:
    """Histogram (2**15 bins) of the top digit (bits ``shift`` up, sign excluded) of the survivors."""
    hist = torch.zeros(1 << (_DIGIT - 1), dtype=torch.int64, device=plan.weights[0].device)
    pruned = 0
    for i, s, n in chunks:
        w = plan.weights[i][s : s + n]
        d = ws.keys(w).bitwise_right_shift_(shift) if plan.wide else ws.high(w)
        if not plan.full[i]:  # pruned entries go to bin 0, taken off below
            m = plan.masks[i][s : s + n]
            d.mul_(m)
            pruned += n - _count(m)
        hist += torch.bincount(d, minlength=hist.numel())
    hist[0] -= pruned
    return hist


def _sub_hist(plan: _Plan, chunks: list[Chunk], ws: _Workspace, shift: int, prefix: int) -> torch.Tensor:
    """Histogram (2**16 bins) of the digit at ``shift`` of the survivors whose higher bits are ``prefix``."""
    hist = torch.zeros(1 << _DIGIT, dtype=torch.int64, device=plan.weights[0].device)
    up = shift + _DIGIT
    low_f32 = not plan.wide and shift == 0  # float32's low digit: the low int16 half, read in place
    for i, s, n in chunks:
        w = plan.weights[i][s : s + n]
        if low_f32:
            sel = torch.eq(ws.high(w), prefix >> up, out=ws.buf(torch.bool, n))
        else:
            k = ws.keys(w)
            sel = torch.eq(k >> up, prefix >> up, out=ws.buf(torch.bool, n))
        if not plan.full[i]:
            sel &= plan.masks[i][s : s + n]
        if not bool(sel.any()):
            continue
        if low_f32:
            d = ws.floats(w).view(torch.int16)[_LO::2][sel].to(torch.int32) & 0xFFFF
        else:
            d = (k[sel] >> shift) & 0xFFFF
        hist += torch.bincount(d, minlength=hist.numel())
    return hist


def _finish_by_gather(plan: _Plan, digit: int, r: int, out: list[torch.Tensor]) -> None:
    """Float32 keys, small top bucket: write the masks and resolve the bucket in one pass.

    Everything above top digit ``digit`` survives, everything below goes; the survivors in the
    bucket (few: at most :data:`GATHER_FRACTION`-th of the model) are gathered, in (layer, flat
    index) order, and the first ``r`` of them by (low 16 bits, order) are removed.
    """
    found: list[tuple[int, torch.Tensor]] = [
        c for part in _map(plan, partial(_write_gather, plan, digit=digit, out=out)) for c in part
    ]
    keys = torch.cat([plan.weights[i][idx].float().view(torch.int32) for i, idx in found])
    low = keys & 0xFFFF
    cut, r = _pick(torch.bincount(low, minlength=1 << _DIGIT), r)
    tie = low == cut
    keep = (low > cut) | (tie & (tie.cumsum(0) > r))
    for (i, idx), kept in zip(found, torch.split(keep, [len(idx) for _, idx in found]), strict=True):
        out[i][idx[kept]] = True


def _write_gather(
    plan: _Plan, chunks: list[Chunk], ws: _Workspace, digit: int, out: list[torch.Tensor]
) -> list[tuple[int, torch.Tensor]]:
    """Write ``out = survivor & (top digit > digit)``; return the survivors with top digit == digit
    as (layer, flat indices), in order."""
    found = []
    for i, s, n in chunks:
        hi = ws.high(plan.weights[i][s : s + n])
        o = out[i][s : s + n]
        torch.gt(hi, digit, out=o)
        eq = torch.eq(hi, digit, out=ws.buf(torch.bool, n))
        if not plan.full[i]:
            m = plan.masks[i][s : s + n]
            o &= m
            eq &= m
        idx = torch.nonzero(eq).squeeze(1)
        if idx.numel():
            found.append((i, idx + s))
    return found


def _write_masks(plan: _Plan, threshold: int, ties: int, n_equal: int, out: list[torch.Tensor]) -> None:
    """Write ``out``: survivors with key > ``threshold``, and those with key == ``threshold`` after
    the first ``ties`` of them in (layer, flat index) order (``n_equal`` survivors have that key)."""
    if ties == n_equal:  # all ties go: "key > T" is the whole rule and the chunks are independent
        _map(plan, partial(_write_gt, plan, threshold=threshold, out=out))
        return
    ws = _Workspace(plan.buf_len, plan.weights[0].device, plan.wide)
    left = ties  # ties still to remove, walking the chunks in order
    for i, s, n in plan.chunks:
        k = ws.keys(plan.weights[i][s : s + n])
        m = plan.masks[i][s : s + n]
        o = out[i][s : s + n]
        if left == 0:
            torch.ge(k, threshold, out=o)
            o &= m
            continue
        torch.gt(k, threshold, out=o)
        o &= m
        tie = torch.eq(k, threshold, out=ws.buf(torch.bool, n))
        tie &= m
        n_tie = _count(tie)
        if n_tie <= left:
            left -= n_tie
            continue
        o |= tie & (tie.cumsum(0) > left)
        left = 0


def _write_gt(
    plan: _Plan, chunks: list[Chunk], ws: _Workspace, threshold: int, out: list[torch.Tensor]
) -> None:
    for i, s, n in chunks:
        k = ws.keys(plan.weights[i][s : s + n])
        o = out[i][s : s + n]
        torch.gt(k, threshold, out=o)
        if not plan.full[i]:
            o &= plan.masks[i][s : s + n]
