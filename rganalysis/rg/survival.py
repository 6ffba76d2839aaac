"""A data-free global IMP flow of any number of rounds in two passes over the weights, the same masks
bit for bit as iterating :func:`~rganalysis.rg.coarse_grain`.  How and why: docs/design.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from rganalysis.rg.budget import survivor_counts
from rganalysis.rg.coarse_graining import GATHER_MIN, Chunk, _Plan, _run, _Workspace

__all__ = ["MAX_ROUNDS", "SHIFT", "survival_rounds"]

#: A key's bucket is its top 16 bits (sign cleared): ``(bits >> SHIFT) & 0xFFFF``.
SHIFT = 15
_BUCKETS = 1 << 16
#: Lookup-table value of a bucket that a cut falls in (its survivors are ranked one by one).
_CUT = 255
#: Longest flow this path computes: counts 0 .. MAX_ROUNDS + 1 fit below :data:`_CUT` in a uint8.
MAX_ROUNDS = 253
#: More gathered survivors than ``max(GATHER_MIN, numel // _GATHER_FRACTION)`` (heavy ties: many weights
#: share a few keys) and the path declines (the caller iterates the rounds instead).
_GATHER_FRACTION = 8


def survival_rounds(
    weights: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    rounds: int,
    rate: float,
    progress: bool = False,
) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The data-free global flow of ``rounds`` rounds at ``rate``, as survival counts.

    Parameters
    ----------
    weights : float32 CPU tensors, any shapes, in layer order (the tie rule's layer position).
    masks : bool CPU tensors of the same shapes: the start (round 0) survivors.
    rounds : int, 1 .. :data:`MAX_ROUNDS`.
    rate : float in (0, 1), the fraction of survivors each round removes.
    progress : show a tqdm bar over the two passes (one tick per chunk of each).

    Returns
    -------
    (counts, survivors), or None where this path does not apply (another device or dtype, more rounds,
    heavy ties), so that the caller iterates :func:`~rganalysis.rg.coarse_grain` instead.
    ``counts[l]``: uint8 array of layer ``l``'s shape, the number of rounds ``0 .. rounds`` each weight is
    alive in (0: pruned at the start); its mask at round ``r`` is ``counts[l] > r``.
    ``survivors``: int64 (rounds + 1, layers), the survivors of each layer at each round.
    """
    if not weights or not 1 <= rounds <= MAX_ROUNDS:
        return None
    if any(w.device.type != "cpu" or w.dtype != torch.float32 for w in weights):
        return None
    if any(m.device.type != "cpu" or m.dtype != torch.bool for m in masks):
        return None
    plan = _Plan.make(weights, masks, None)
    with tqdm(total=2 * len(plan.chunks), desc="IMP (two passes)", unit="chunk", disable=not progress) as bar:
        return _survival(plan, weights, rounds, rate, bar)


def _survival(
    plan: _Plan, weights: Sequence[torch.Tensor], rounds: int, rate: float, bar: tqdm
) -> tuple[list[np.ndarray], np.ndarray] | None:
    hist = np.sum(_run(plan, partial(_histogram_part, plan, bar=bar)), axis=0)
    total = int(hist.sum())
    cuts = total - survivor_counts(np.array([total]), rounds, rate)[1:]  # D_1 <= ... <= D_rounds
    cum = np.cumsum(hist)
    first = cum - hist  # ascending rank of each bucket's first survivor
    count_first = 1 + np.searchsorted(cuts, first, side="right")
    count_last = 1 + np.searchsorted(cuts, cum - 1, side="right")
    cut = (hist > 0) & (count_first != count_last)
    numel = sum(w.numel() for w in weights)
    gathered = int(hist[cut].sum())
    if gathered > max(GATHER_MIN, numel // _GATHER_FRACTION) or gathered >= 1 << 32:
        return None
    table = np.where(cut, _CUT, count_first).astype(np.uint8)
    table_masked = np.concatenate([np.zeros(1, np.uint8), table])  # index 1 + bucket; 0 = pruned
    counts = [np.empty(tuple(w.shape), np.uint8) for w in weights]
    flat = [c.reshape(-1) for c in counts]
    parts = _run(plan, partial(_write_part, plan, flat=flat, table=table, table_masked=table_masked, bar=bar))
    value_hist = np.zeros((len(weights), 256), np.int64)
    layer = np.concatenate([p[0] for p in parts])
    index = np.concatenate([p[1] for p in parts])
    keys = np.concatenate([p[2] for p in parts])
    for p in parts:
        value_hist += p[3]
    if keys.size:
        value = _rank_cut_buckets(keys, first, cuts)
        bounds = np.searchsorted(layer, np.arange(len(weights) + 1))  # gathered in layer order
        for i in np.flatnonzero(np.diff(bounds)):
            sel = slice(bounds[i], bounds[i + 1])
            flat[i][index[sel]] = value[sel]
            value_hist[i] += np.bincount(value[sel], minlength=256)
        value_hist[:, _CUT] = 0
    # alive at round r <=> count > r
    alive = value_hist[:, ::-1].cumsum(axis=1)[:, ::-1]
    return counts, np.ascontiguousarray(alive[:, 1 : rounds + 2].T)


def _digits(plan: _Plan, i: int, s: int, n: int, ws: _Workspace) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's float bits (int32 view) and its buckets, in a worker buffer."""
    bits = plan.weights[i][s : s + n].detach().numpy().view(np.int32)
    d = ws.np_buf(np.int32, n)
    np.right_shift(bits, SHIFT, out=d)
    np.bitwise_and(d, _BUCKETS - 1, out=d)  # the arithmetic shift smeared the sign bit: cleared here
    return bits, d


def _histogram_part(plan: _Plan, chunks: list[Chunk], ws: _Workspace, bar: tqdm) -> np.ndarray:
    hist = np.zeros(_BUCKETS, np.int64)
    for i, s, n in chunks:
        m = plan.masks[i][s : s + n].numpy()
        full = plan.full[(i, s)] = int(np.count_nonzero(m)) == n
        _, d = _digits(plan, i, s, n, ws)
        if full:
            hist += np.bincount(d, minlength=_BUCKETS)
        else:  # pruned -> bin 0
            np.add(d, 1, out=d)
            np.multiply(d, m, out=d)
            hist += np.bincount(d, minlength=_BUCKETS + 1)[1:]
        bar.update()
    return hist


def _write_part(
    plan: _Plan,
    chunks: list[Chunk],
    ws: _Workspace,
    flat: list[np.ndarray],
    table: np.ndarray,
    table_masked: np.ndarray,
    bar: tqdm,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write the counts of ``chunks`` from the table; gather the survivors of the cut buckets.  Returns
    their (layers, flat indices, keys) in chunk order and each layer's histogram of written values."""
    layers, indices, keys = [], [], []
    value_hist = np.zeros((len(flat), 256), np.int64)
    for i, s, n in chunks:
        bits, d = _digits(plan, i, s, n, ws)
        out = flat[i][s : s + n]
        if plan.full[(i, s)]:
            np.take(table, d, out=out)
        else:
            np.add(d, 1, out=d)
            np.multiply(d, plan.masks[i][s : s + n].numpy(), out=d)
            np.take(table_masked, d, out=out)
        value_hist[i] += np.bincount(out, minlength=256)
        e = ws.np_buf(np.bool_, n)
        np.equal(out, _CUT, out=e)
        idx = np.flatnonzero(e)
        if idx.size:
            layers.append(np.full(idx.size, i, np.int32))
            indices.append(idx + s)
            keys.append(np.bitwise_and(bits[idx], 0x7FFFFFFF))
        bar.update()
    if not keys:
        return np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int32), value_hist
    return np.concatenate(layers), np.concatenate(indices), np.concatenate(keys), value_hist


def _rank_cut_buckets(keys: np.ndarray, first: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Counts of the gathered survivors (``keys`` int32, in (layer, flat index) order): each one's rank in
    its bucket by (key, gathered position), plus the bucket's first rank, against the cuts."""
    bucket = (keys >> SHIFT).astype(np.uint16)
    by_bucket = np.argsort(bucket, kind="stable")  # radix sort; keeps the gathered order within a bucket
    b = bucket[by_bucket]
    start = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    stop = np.r_[start[1:], b.size]
    value = np.empty(keys.size, np.uint8)
    for lo, hi in zip(start, stop, strict=True):
        pos = by_bucket[lo:hi]
        # unique sort keys: (key, position in the gathered order); positions are < 2**32 (bounded gather)
        order = pos[np.argsort((keys[pos].astype(np.int64) << 32) | pos)]
        rank = first[b[lo]] + np.arange(order.size)
        value[order] = 1 + np.searchsorted(cuts, rank, side="right")
    return value
