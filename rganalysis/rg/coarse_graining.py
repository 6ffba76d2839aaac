"""Coarse-graining: one IMP pruning step, exact magnitude selection by radix select on the float bits
(no sort, no concatenation), with a deterministic tie rule.  New scopes are one function
(:func:`register_scope`).  The tie rule and the algorithm: docs/design.md.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided

from rganalysis.errors import (
    InvalidParameterError,
    MaskShapeError,
    MissingTensorError,
    NonBinaryMaskError,
)
from rganalysis.store.state import State

__all__ = [
    "Chunk",
    "coarse_grain",
    "CPU_CHUNK",
    "DEVICE_CHUNK",
    "GATHER_FRACTION",
    "GATHER_MIN",
    "SAMPLE",
    "SAMPLE_BLOCK",
    "SAMPLE_MIN",
    "SAMPLE_SIGMAS",
    "global_scope",
    "layer_scope",
    "n_removed",
    "register_scope",
    "remove_smallest",
    "ScopeFn",
    "SCOPES",
]

#: A pruning scope: ``(weights, masks, rate) -> new masks``, one entry per prunable layer, same order.
ScopeFn = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], float], list[torch.Tensor]]

#: Registered pruning scopes, by name.
SCOPES: dict[str, ScopeFn] = {}

#: Default chunk length (elements) on CPU: long enough to amortise the ~10 us launch of each op,
#: short enough for the buffers (~5 MiB per thread) to stay small.  Other devices take whole layers
#: up to 2**26 elements.
CPU_CHUNK = 1 << 19
DEVICE_CHUNK = 1 << 26

_DIGIT = 16  # bits resolved per histogram pass

#: Float32 keys: when the top-digit bucket of the k-th key holds at most
#: ``max(GATHER_MIN, numel // GATHER_FRACTION)`` survivors, the masks are written and the bucket's
#: survivors gathered (int64 flat indices: <= 0.03x a float32 model) in the same pass, and the bucket
#: is resolved on the gathered few; otherwise (heavy ties) by one more histogram pass over the model.
GATHER_MIN = 1 << 16
GATHER_FRACTION = 64

#: Float32 keys, one writing pass (the default): the survivors' keys at about ``SAMPLE`` evenly
#: spaced positions bracket the k-th key, ``[lo, hi]`` (``SAMPLE_SIGMAS`` binomial standard
#: deviations either side of its expected rank in the sample); one pass writes the masks
#: (``key > hi``), counts them and gathers the survivors in the bracket, and the bracket is resolved
#: exactly on those few.  Exact whatever the sample: a bracket that misses the k-th key, or holds more
#: than ``max(GATHER_MIN, numel // GATHER_FRACTION)`` survivors, falls back to the radix select
#: (two more passes).  Needs at least ``SAMPLE_MIN`` sampled survivors.
SAMPLE = 1 << 18
#: ... read in runs of this many consecutive positions (one cache line of float32 weights holds 16).
SAMPLE_BLOCK = 8
SAMPLE_SIGMAS = 4.0
SAMPLE_MIN = 4096


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
    return _select(weights, masks, partial(n_removed, rate=rate))


@register_scope("layer")
def layer_scope(
    weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], rate: float
) -> list[torch.Tensor]:
    """Remove ``round(rate * S_l)`` weights from each layer ``l`` separately."""
    return [_select([w], [m], partial(n_removed, rate=rate))[0] for w, m in zip(weights, masks, strict=True)]


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
    rate = check_rate(rate)
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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidParameterError(f"k must be an integer count of survivors, got {k!r}")
    if k == 0:
        return [m.clone() for m in masks]
    return _select(weights, masks, lambda survivors: int(k), chunk_size)


# --------------------------------------------------------------------------------------------------
# internals
# --------------------------------------------------------------------------------------------------
# Speed notes (CPU, measured with torch 2.x): comparisons are ~2x faster written into uint8 than into
# bool, so masks are written through ``.view(torch.uint8)``; ``amin`` on uint8 is ~40x faster than
# ``bool.all()``; ``nonzero`` costs per element scanned, so sparse 0/1 bytes are scanned 8 at a time
# through an int64 view; multiplying int32 by a bool tensor converts it first (2x slower than
# converting into a reused buffer).  Every pass writes into per-call buffers, never per chunk.
Chunk = tuple[int, int, int]  # (layer, start, length) of a slice of a flattened layer


def _select(
    weights: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    how_many: Callable[[int], int],
    chunk_size: int | None = None,
) -> list[torch.Tensor]:
    """New masks without the ``how_many(S)`` smallest survivors (``S`` = number of survivors,
    counted by the first histogram pass)."""
    for w in weights:
        if not w.is_floating_point():
            raise InvalidParameterError(f"weights must be floating point, got {w.dtype}")
    if not weights or all(w.numel() == 0 for w in weights):
        return [m.clone() for m in masks]
    plan = _Plan.make(weights, masks, chunk_size)
    if not plan.wide:
        survivors = sum(_run(plan, partial(_count_part, plan)))
        k = how_many(survivors)
        if not 0 <= k <= survivors:
            raise InvalidParameterError(f"cannot remove {k} of {survivors} survivors")
        if k == 0:
            return [m.clone() for m in masks]
        out = [torch.empty(m.numel(), dtype=torch.bool, device=m.device) for m in plan.masks]
        if _finish_by_bracket(plan, survivors, k, out):
            return [f.view(m.shape) for f, m in zip(out, masks, strict=True)]
        how_many = lambda _survivors: k  # noqa: E731  (the radix select below, with the same k)
    bits = 64 if plan.wide else 32
    shift = bits - _DIGIT
    hist = _histogram(plan, shift, None)
    survivors = int(hist[1:].sum())
    k = how_many(survivors)
    if not 0 <= k <= survivors:
        raise InvalidParameterError(f"cannot remove {k} of {survivors} survivors")
    if k == 0:
        return [m.clone() for m in masks]
    digit, r = _pick(hist[1:], k)
    out = [torch.empty(m.numel(), dtype=torch.bool, device=m.device) for m in plan.masks]
    numel = sum(w.numel() for w in weights)
    if not plan.wide and int(hist[1 + digit]) <= max(GATHER_MIN, numel // GATHER_FRACTION):
        _finish_by_gather(plan, digit, r, out)
    else:
        prefix = digit << shift
        for shift in range(bits - 2 * _DIGIT, -1, -_DIGIT):
            hist = _histogram(plan, shift, prefix)[1:-1]
            digit, r = _pick(hist, r)
            prefix |= digit << shift
        _write_masks(plan, prefix, r, int(hist[digit]), out)
    return [f.view(m.shape) for f, m in zip(out, masks, strict=True)]


@dataclass
class _Plan:
    """Flattened inputs and their chunking, for one selection."""

    weights: list[torch.Tensor]  # 1-D views (copies only where a layer cannot be viewed flat)
    masks: list[torch.Tensor]  # 1-D contiguous bool
    full: dict[tuple[int, int], bool]  # (layer, start) -> chunk's mask all True (set by the first pass)
    chunks: list[Chunk]  # in (layer, start) order
    wide: bool  # 64-bit keys (some layer is float64)
    buf_len: int  # longest chunk
    spaces: list[_Workspace] = field(default_factory=list)  # one per concurrent group, kept across passes

    def workspace(self, g: int) -> _Workspace:
        """Buffers of group ``g`` (reused by every pass of this selection)."""
        while len(self.spaces) <= g:
            self.spaces.append(_Workspace(self.buf_len, self.weights[0].device, self.wide))
        return self.spaces[g]

    @classmethod
    def make(
        cls, weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], chunk_size: int | None
    ) -> _Plan:
        device = weights[0].device
        if chunk_size is None:
            chunk_size = CPU_CHUNK if device.type == "cpu" else DEVICE_CHUNK
        flat_masks = [m.reshape(-1).contiguous() for m in masks]
        wide = any(w.dtype == torch.float64 for w in weights)
        return cls(
            [w.reshape(-1) for w in weights],
            flat_masks,
            {},
            [
                (i, s, min(chunk_size, w.numel() - s))
                for i, w in enumerate(weights)
                for s in range(0, w.numel(), chunk_size)
            ],
            wide,
            min(chunk_size, max(w.numel() for w in weights)),
        )


class _Workspace:
    """Chunk buffers of one worker for one pass (no allocation per chunk)."""

    def __init__(self, n: int, device: torch.device, wide: bool):
        self.n, self.device, self.wide = -(-n // 8) * 8, device, wide  # multiple of 8: int64 views
        self.itype = torch.int64 if wide else torch.int32
        self._bufs: dict[tuple[torch.dtype, int], torch.Tensor] = {}
        self._np: dict[tuple[type, int], np.ndarray] = {}

    def buf(self, dtype: torch.dtype, n: int, slot: int = 0, size: int | None = None) -> torch.Tensor:
        """The first ``n`` entries of buffer ``slot`` of this dtype (``size`` entries, default a
        chunk's)."""
        b = self._bufs.get((dtype, slot))
        if b is None:
            b = self._bufs[(dtype, slot)] = torch.empty(size or self.n, dtype=dtype, device=self.device)
        return b[:n]

    def np_buf(self, dtype: type, n: int, slot: int = 0, size: int | None = None) -> np.ndarray:
        """The first ``n`` entries of this worker's numpy buffer ``slot`` of ``dtype`` (CPU; ``size``
        entries, default a chunk's)."""
        b = self._np.get((dtype, slot))
        if b is None:
            b = self._np[(dtype, slot)] = np.empty(size or self.n, dtype=dtype)
        return b[:n]

    def keys(self, w: torch.Tensor) -> torch.Tensor:
        """Bit patterns of ``|w|`` (1-D chunk), sign bit cleared: int32 (int64 if wide), monotone in
        ``|w|``.  float16/bfloat16 are first widened to float32 (exact, monotone), anything to
        float64 if wide."""
        ftype = torch.float64 if self.wide else torch.float32
        if w.dtype != ftype or not w.is_contiguous():
            w = self.buf(ftype, w.numel()).copy_(w)
        return torch.bitwise_and(w.view(self.itype), _ABS[self.itype], out=self.buf(self.itype, w.numel()))


_ABS = {torch.int32: 0x7FFFFFFF, torch.int64: (1 << 63) - 1}


def check_rate(rate: float) -> float:
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


def _pick(hist: np.ndarray, r: int) -> tuple[int, int]:
    """Digit (bin of ``hist``) holding the ``r``-th (1-based) smallest key, and ``r`` within it."""
    cum = np.cumsum(hist)
    d = int(np.searchsorted(cum, r))
    below = int(cum[d - 1]) if d > 0 else 0
    return d, r - below


def _histogram(plan: _Plan, shift: int, prefix: int | None) -> np.ndarray:
    """Counts of the survivors' digit at ``shift`` (16 bits; 15 for the top digit, whose sign bit is
    clear), in bin ``1 + digit``.  With ``prefix``: only survivors whose bits above ``shift + 16``
    equal ``prefix``'s; the others land in bin 0 or the last bin (2**16 + 1).  Bin 0 also takes
    the pruned entries."""
    nbins = (1 << (_DIGIT - 1)) + 1 if prefix is None else (1 << _DIGIT) + 2
    parts = _run(plan, partial(_histogram_part, plan, shift=shift, prefix=prefix, nbins=nbins))
    return np.sum([h.cpu().numpy() for h in parts], axis=0)  # numpy: no torch thread team here


def _histogram_part(
    plan: _Plan, chunks: list[Chunk], ws: _Workspace, shift: int, prefix: int | None, nbins: int
) -> torch.Tensor:
    hist = torch.zeros(nbins, dtype=torch.int64, device=ws.device)
    for i, s, n in chunks:
        m = plan.masks[i][s : s + n].view(torch.uint8)
        if prefix is None:  # the first pass: note which chunks have no pruned entry
            plan.full[(i, s)] = bool(m.amin() == 1)
        full = plan.full[(i, s)]
        b = ws.keys(plan.weights[i][s : s + n])
        if prefix is None:
            b.bitwise_right_shift_(shift)
        else:  # in the prefix's bucket iff 0 <= (key - prefix) >> shift < 2**16
            b.sub_(prefix).bitwise_right_shift_(shift).clamp_(-1, 1 << _DIGIT)
        if full and prefix is None:
            hist[1:] += torch.bincount(b, minlength=nbins - 1)
            continue
        b.add_(1)
        if not full:  # pruned -> bin 0
            b.mul_(ws.buf(ws.itype, n, slot=1).copy_(m))
        hist += torch.bincount(b, minlength=nbins)
    return hist


def _count_part(plan: _Plan, chunks: list[Chunk], ws: _Workspace) -> int:
    """Survivors in ``chunks``; notes which chunks have no pruned entry (``plan.full``)."""
    total = 0
    for i, s, n in chunks:
        m = plan.masks[i][s : s + n]
        if m.device.type == "cpu":  # numpy's count_nonzero on bool is a SIMD loop (~0.04 ns per byte)
            c = int(np.count_nonzero(m.numpy()))
            plan.full[(i, s)] = c == n
            total += c
            continue
        full = plan.full[(i, s)] = bool(m.view(torch.uint8).amin() == 1)
        total += n if full else _count_ones(m.view(torch.uint8), ws)
    return total


def _sample_keys(plan: _Plan) -> np.ndarray:
    """Keys of the survivors in runs of :data:`SAMPLE_BLOCK` consecutive flat positions, one run every
    ``SAMPLE_BLOCK * step`` positions of the concatenated layers (``step`` odd and prime to 3, 5 and 7, so
    that the runs do not follow a kernel's or a row's period).  Runs, not single positions: a strided read
    costs a cache miss per element read (of the weights, and of the masks after the first round), a run of
    eight costs one."""
    numel = sum(w.numel() for w in plan.weights)
    step = max(1, numel // SAMPLE) | 1
    while step > 1 and any(step % q == 0 for q in (3, 5, 7)):
        step += 2
    block = SAMPLE_BLOCK if step > 1 else 1
    stride = block * step
    parts, alive, start = [], [], 0
    cpu = plan.weights[0].device.type == "cpu"
    dense = dict.fromkeys(range(len(plan.weights)), True)  # every chunk of the layer is all alive
    for i, s, _ in plan.chunks:
        dense[i] = dense[i] and plan.full.get((i, s), False)
    masked = not all(dense.values())  # the first round needs no mask read
    for i, (w, m) in enumerate(zip(plan.weights, plan.masks, strict=True)):
        off = (-start) % stride
        start += w.numel()
        runs = (w.numel() - off - block) // stride + 1 if w.numel() - off >= block else 0
        if runs <= 0:
            continue
        # numpy copies a strided float32 view several times faster than torch's CPU copy (and a strided
        # bool view too); the runs are copied contiguous, then the survivors picked once from them all
        if cpu and w.dtype == torch.float32:
            parts.append(as_strided(w.detach().numpy()[off:], (runs, block), (4 * stride, 4)).reshape(-1))
        else:
            x = w.detach().as_strided((runs, block), (stride, 1), w.storage_offset() + off)
            parts.append(x.float().cpu().numpy().reshape(-1))
        if masked:
            if dense[i]:
                alive.append(np.ones(runs * block, bool))
            elif cpu:
                alive.append(as_strided(m.numpy()[off:], (runs, block), (stride, 1)).reshape(-1))
            else:
                alive.append(
                    m.as_strided((runs, block), (stride, 1), m.storage_offset() + off)
                    .cpu()
                    .numpy()
                    .reshape(-1)
                )
    keys = np.concatenate(parts).view(np.int32) if parts else np.empty(0, np.int32)
    if masked and parts:
        keys = keys[np.concatenate(alive)]
    return np.bitwise_and(keys, _ABS[torch.int32], out=keys)


def _finish_by_bracket(plan: _Plan, survivors: int, k: int, out: list[torch.Tensor]) -> bool:
    """Float32 keys: remove the ``k`` smallest of ``survivors`` in one writing pass, bracketing the
    k-th key by a sample (see :data:`SAMPLE`).  False (``out`` to be rewritten) if the bracket missed."""
    sample = _sample_keys(plan)
    n_s = sample.size
    if n_s < SAMPLE_MIN:
        return False
    q = k / survivors
    mid, half = q * n_s, SAMPLE_SIGMAS * math.sqrt(n_s * q * (1 - q)) + 2
    lo_rank, hi_rank = max(-1, math.floor(mid - half)), min(n_s, math.ceil(mid + half))
    ranks = [r for r in (lo_rank, hi_rank) if 0 <= r < n_s]
    part = np.partition(sample, ranks) if ranks else sample
    lo = int(part[lo_rank]) if lo_rank >= 0 else 0
    hi = int(part[hi_rank]) if hi_rank < n_s else int(_ABS[torch.int32])
    del sample, part  # before the pass: peak memory
    numel = sum(w.numel() for w in plan.weights)
    limit = max(GATHER_MIN, numel // GATHER_FRACTION)
    parts = _run(plan, partial(_write_bracket, plan, lo=lo, hi=hi, out=out, limit=limit))
    kept = sum(p[0] for p in parts)
    found = [c for p in parts for c in p[1]]
    found_keys = [c for p in parts for c in p[3]]  # the CPU pass's keys of `found` (None: gather them)
    n_bucket = sum(len(idx) for _, idx in found)
    r = k - (survivors - kept - n_bucket)  # to remove from the bracket
    if any(p[2] for p in parts) or not 1 <= r <= n_bucket:
        return False
    # the keys of the bracket's survivors: kept by the numpy CPU pass, else gathered from the weights
    idxs = [idx.cpu().numpy() for _, idx in found]
    keys = np.concatenate(
        [
            _gathered_keys(plan.weights[i], idx) if kk is None else kk
            for (i, idx), kk in zip(found, found_keys, strict=True)
        ]
    )
    cut = int(np.partition(keys, r - 1)[r - 1])  # the r-th smallest key
    ties = r - int(np.count_nonzero(keys < cut))  # of the keys == cut, the first `ties` go
    tie = keys == cut
    if ties == int(np.count_nonzero(tie)):  # every key == cut goes (distinct floats: the one at the cut)
        keep = keys > cut
    else:
        keep = (keys > cut) | (tie & (np.cumsum(tie) > ties))
    bounds = np.cumsum([ix.size for ix in idxs])[:-1]
    for (i, idx), ix, kept_ in zip(found, idxs, np.split(keep, bounds), strict=True):
        if out[i].device.type == "cpu":
            out[i].numpy()[ix[kept_]] = True
        else:
            out[i][idx[torch.from_numpy(kept_).to(idx.device)]] = True
    return True


def _gathered_keys(w: torch.Tensor, idx: torch.Tensor) -> np.ndarray:
    """The float32 keys (as in :meth:`_Workspace.keys`) of ``w[idx]``, on the host."""
    return (w.index_select(0, idx).float().view(torch.int32) & _ABS[torch.int32]).cpu().numpy()


def _write_bracket(
    plan: _Plan, chunks: list[Chunk], ws: _Workspace, lo: int, hi: int, out: list[torch.Tensor], limit: int
) -> tuple[int, list[tuple[int, torch.Tensor]], bool, list[np.ndarray | None]]:
    """Write ``out = survivor & (key > hi)`` over ``chunks``; return (number written True, the
    survivors with ``lo <= key <= hi`` as (layer, flat indices) in order, overflowed ``limit``, their
    keys per entry where the numpy CPU path had them in cache, else None)."""
    found, found_keys, kept, n_found = [], [], 0, 0
    for i, s, n in chunks:
        w = plan.weights[i][s : s + n]
        if w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous():
            kept_c, idx, key = _bracket_chunk_numpy(w, out[i][s : s + n], plan, i, s, n, ws, lo, hi)
            kept += kept_c
            if n_found <= limit and 0 < idx.size <= limit - n_found:
                gathered = ws.buf(torch.int64, limit, slot=4, size=limit)[n_found : n_found + idx.size]
                found.append((i, torch.add(torch.from_numpy(idx), s, out=gathered)))
                # their keys while the chunk's are in cache (gathering them from the weights later cost more)
                kk = ws.np_buf(np.int32, limit, slot=1, size=limit)[n_found : n_found + idx.size]
                found_keys.append(np.take(key, idx, out=kk))
            n_found += idx.size
            continue
        k = ws.keys(w)
        o = out[i][s : s + n].view(torch.uint8)
        torch.gt(k, hi, out=o)
        e = ws.buf(torch.uint8, -(-n // 8) * 8)
        if n % 8:
            e[n:].zero_()
        torch.ge(k, lo, out=e[:n])
        e[:n] ^= o  # lo <= key <= hi (o implies key >= lo)
        if not plan.full[(i, s)]:
            m = plan.masks[i][s : s + n].view(torch.uint8)
            o &= m
            e[:n] &= m
        kept += _count_ones(o, ws)
        if n_found <= limit:
            idx = _sparse_nonzero(e)
            if 0 < idx.numel() <= limit - n_found:
                # into one buffer per worker, not a tensor per chunk: those scattered among the
                # freed temporaries of each worker thread's malloc arena held ~13 MiB more RSS
                # (ResNet-50, 2 threads)
                gathered = ws.buf(torch.int64, limit, slot=4, size=limit)[n_found : n_found + idx.numel()]
                found.append((i, torch.add(idx, s, out=gathered)))
                found_keys.append(None)
            n_found += idx.numel()
    return kept, found, n_found > limit, found_keys


def _bracket_chunk_numpy(
    w: torch.Tensor,
    out: torch.Tensor,
    plan: _Plan,
    i: int,
    s: int,
    n: int,
    ws: _Workspace,
    lo: int,
    hi: int,
) -> tuple[int, np.ndarray, np.ndarray]:
    """One float32 CPU chunk of :func:`_write_bracket` in numpy, on zero-copy views: numpy's comparisons
    and ``count_nonzero`` are SIMD loops, 2-5x faster per element than torch's CPU kernels here
    (docs/benchmark-coarse-grain.md), and release the GIL for the worker threads.  Returns (survivors
    written True, flat indices of the bracket's survivors within the chunk, the chunk's keys)."""
    key = ws.np_buf(np.int32, n)
    np.bitwise_and(w.detach().numpy().view(np.int32), _ABS[torch.int32], out=key)
    o = out.numpy()
    np.greater(key, hi, out=o)
    e = ws.np_buf(np.bool_, n)
    np.greater_equal(key, lo, out=e)
    np.bitwise_xor(e, o, out=e)  # lo <= key <= hi (o implies key >= lo)
    if not plan.full[(i, s)]:
        m = plan.masks[i][s : s + n].numpy()
        np.bitwise_and(o, m, out=o)
        np.bitwise_and(e, m, out=e)
    return int(np.count_nonzero(o)), np.flatnonzero(e), key


def _finish_by_gather(plan: _Plan, digit: int, r: int, out: list[torch.Tensor]) -> None:
    """Float32 keys with a small top bucket: write the masks and gather the bucket in one pass.

    Survivors above top digit ``digit`` are kept and those below removed; the survivors in the
    bucket are gathered (flat indices, in (layer, flat index) order) and the first ``r`` of them by
    (low 16 bits, that order) removed.
    """
    found = [c for part in _run(plan, partial(_write_gather, plan, digit=digit, out=out)) for c in part]
    keys = torch.cat([plan.weights[i][idx].float().view(torch.int32) for i, idx in found])
    low = keys & 0xFFFF  # the bits below the top digit (which holds the sign bit)
    cut, r = _pick(torch.bincount(low, minlength=1 << _DIGIT).cpu().numpy(), r)
    tie = low == cut
    keep = (low > cut) | (tie & (tie.cumsum(0) > r))
    for (i, idx), kept in zip(found, torch.split(keep, [len(idx) for _, idx in found]), strict=True):
        out[i][idx[kept]] = True


def _write_gather(
    plan: _Plan, chunks: list[Chunk], ws: _Workspace, digit: int, out: list[torch.Tensor]
) -> list[tuple[int, torch.Tensor]]:
    """Write ``out = survivor & (top digit > digit)`` over ``chunks``; return the survivors whose
    top digit is ``digit`` as (layer, flat indices), in order."""
    found = []
    above = (digit << _DIGIT) | ((1 << _DIGIT) - 1)  # largest key with this top digit
    for i, s, n in chunks:
        k = ws.keys(plan.weights[i][s : s + n])
        o = out[i][s : s + n].view(torch.uint8)
        torch.gt(k, above, out=o)
        e = ws.buf(torch.uint8, -(-n // 8) * 8)
        if n % 8:
            e[n:].zero_()
        torch.eq(k.bitwise_right_shift_(_DIGIT), digit, out=e[:n])
        if not plan.full[(i, s)]:
            m = plan.masks[i][s : s + n].view(torch.uint8)
            o &= m
            e[:n] &= m
        idx = _sparse_nonzero(e)
        if idx.numel():
            found.append((i, idx + s))
    return found


def _count_ones(u: torch.Tensor, ws: _Workspace) -> int:
    """Number of ones in a 0/1 uint8 tensor (1-D): 8 bytes at a time where aligned (an int64 view;
    ``word * 0x0101010101010101 >> 56`` is the sum of its 8 bytes), ``count_nonzero`` (25x slower
    per byte) for the unaligned ends."""
    head = min(u.numel(), -u.storage_offset() % 8)
    n_words = (u.numel() - head) // 8
    total = int(torch.count_nonzero(u[:head])) if head else 0
    if n_words:
        words = u[head : head + 8 * n_words].view(torch.int64)
        buf = ws.buf(torch.int64, n_words, slot=2, size=ws.n // 8)
        total += int(torch.mul(words, 0x0101010101010101, out=buf).bitwise_right_shift_(56).sum())
    tail = u[head + 8 * n_words :]
    return total + (int(torch.count_nonzero(tail)) if tail.numel() else 0)


def _sparse_nonzero(e: torch.Tensor) -> torch.Tensor:
    """Indices of the set entries of a sparse 0/1 uint8 tensor (length a multiple of 8), ascending:
    non-zero 8-byte words first (an int64 view), then the set bytes within those few words.
    (About 100 ns per set entry on CPU: with ~0.5 % of the weights in a bracket, this is the
    largest part of a round; see docs/benchmark-coarse-grain.md.)"""
    words = torch.nonzero(e.view(torch.int64)).squeeze(1)
    if words.numel() == 0:
        return words
    row, col = torch.nonzero(e.view(-1, 8)[words], as_tuple=True)
    return words[row] * 8 + col


def _write_masks(plan: _Plan, threshold: int, ties: int, n_equal: int, out: list[torch.Tensor]) -> None:
    """Write ``out``: survivors with key > ``threshold``, and those with key == ``threshold`` after
    the first ``ties`` of them in (layer, flat index) order (``n_equal`` survivors have that key)."""
    if ties == n_equal:  # all ties go: "key > T" is the whole rule and the chunks are independent
        _run(plan, partial(_write_gt, plan, threshold=threshold, out=out))
        return
    ws = plan.workspace(0)
    left = ties  # ties still to remove, walking the chunks in order
    for i, s, n in plan.chunks:
        k = ws.keys(plan.weights[i][s : s + n])
        m = plan.masks[i][s : s + n].view(torch.uint8)
        o = out[i][s : s + n].view(torch.uint8)
        if left == 0:  # past the removed ties: keep the rest of them
            torch.ge(k, threshold, out=o)
            o &= m
            continue
        torch.gt(k, threshold, out=o)
        o &= m
        tie = torch.eq(k, threshold, out=ws.buf(torch.uint8, n))
        tie &= m
        n_tie = int(torch.count_nonzero(tie))
        if n_tie <= left:
            left -= n_tie
            continue
        o |= tie & (tie.cumsum(0) > left)
        left = 0


def _write_gt(
    plan: _Plan, chunks: list[Chunk], ws: _Workspace, threshold: int, out: list[torch.Tensor]
) -> None:
    for i, s, n in chunks:
        o = out[i][s : s + n].view(torch.uint8)
        torch.gt(ws.keys(plan.weights[i][s : s + n]), threshold, out=o)
        if not plan.full[(i, s)]:
            o &= plan.masks[i][s : s + n].view(torch.uint8)


# --- running the chunks ---------------------------------------------------------------------------
# On CPU the chunks are split into contiguous groups, one per worker thread (as many as
# ``torch.get_num_threads()`` of the caller).  Each worker runs its torch ops single-threaded (its
# OpenMP thread count is set to 1 through libgomp, which only changes that thread's own setting), so
# the workers run side by side (torch releases the GIL; ``bincount`` is single-threaded anyway) and
# meet only once per pass, instead of at every op's OpenMP barrier: on a busy machine each barrier
# waits for a descheduled thread (we measured 3-8 s instead of 0.1 s for ResNet-50 with two threads
# and a load average of 5).  Without libgomp (another parallel backend) or off CPU: one group, in
# the calling thread.
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (process id, workers) -> pool


def _libgomp() -> ctypes.CDLL | None:
    if not torch.__config__.parallel_info().rstrip().endswith("OpenMP"):
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "libgomp" in line.rsplit("/", 1)[-1]})
        return ctypes.CDLL(paths[0]) if paths else None
    except (OSError, IndexError):
        return None


def _single_threaded(gomp: ctypes.CDLL) -> None:
    torch.get_num_threads()  # torch's per-thread lazy init first, or it would undo the next line
    gomp.omp_set_num_threads(1)


def _pool(workers: int) -> ThreadPoolExecutor | None:
    key = (os.getpid(), workers)  # a forked child has none of its parent's threads: new pool
    if key not in _POOLS:
        gomp = _libgomp()
        if gomp is None:
            return None
        _POOLS[key] = ThreadPoolExecutor(workers, "rg-select", initializer=_single_threaded, initargs=(gomp,))
    return _POOLS[key]


def _run(plan: _Plan, fn: Callable[[list[Chunk], _Workspace], object]) -> list:
    """``[fn(group, workspace) for group in groups]``: the chunks in contiguous groups (balanced by
    element count), run in parallel on CPU; results in chunk order."""
    device = plan.weights[0].device
    workers = max(1, min(torch.get_num_threads(), len(plan.chunks)))
    pool = _pool(workers) if device.type == "cpu" else None  # even one worker: no thread team
    if pool is None:
        return [fn(plan.chunks, plan.workspace(0))]
    total = sum(c[2] for c in plan.chunks)
    groups: list[list[Chunk]] = [[] for _ in range(workers)]
    done = 0
    for c in plan.chunks:
        groups[min(workers - 1, (2 * done + c[2]) * workers // (2 * total))].append(c)
        done += c[2]
    spaces = [plan.workspace(g) for g in range(workers)]  # created here, not in the threads
    return list(pool.map(fn, [g for g in groups if g], [w for g, w in zip(groups, spaces, strict=True) if g]))
