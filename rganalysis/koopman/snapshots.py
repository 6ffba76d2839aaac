"""Snapshots of a stored flow for the DMD: one ``(T, numel)`` block of masked weights per tensor (slabs
of rows for very large tensors), read from the store through its public reader, and the exact
O(T N) Gram of data-free blocks.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rganalysis.errors import (
    InvalidParameterError,
    NonFiniteWeightsError,
    TooFewRoundsError,
)
from rganalysis.koopman.dmd import GramResult, snapshot_gram
from rganalysis.store.parameter_set import ParameterSet
from rganalysis.store.state import resolve_device

__all__ = [
    "BlockSpec",
    "DEFAULT_BLOCK_ELEMENTS",
    "SCALES",
    "select_names",
    "snapshot_provider",
    "StoreSnapshots",
    "SUBSETS",
]

SUBSETS = ("prunable", "all")
"""Named subsets; anything else is read as comma-separated ``fnmatch`` globs over tensor names."""
SCALES = ("none", "layer-std")

#: Largest block handed to the DMD core, in elements (``T x columns``): 2**25 float32 = 128 MiB.
#: Tensors with more elements over all rounds are cut into slabs of rows (first tensor axis).
DEFAULT_BLOCK_ELEMENTS = 1 << 25

_EPS64 = float(np.finfo(np.float64).eps)


# ------------------------------------------------------------------------------------------------
# which tensors
# ------------------------------------------------------------------------------------------------
def select_names(pset: ParameterSet, subset: str = "prunable") -> list[str]:
    """Names of the tensors a snapshot covers, in model (depth) order.

    Parameters
    ----------
    pset : ParameterSet
    subset : str
        ``"prunable"``: the tensors IMP acts on (:meth:`ParameterSet.pruned_names`: the masked
        ones, else the prunable conv / linear weights); ``"all"``: every floating-point model
        tensor (norms, biases, embeddings, buffers such as running means); otherwise one or more
        comma-separated ``fnmatch`` globs over the names (``"layer1.*,fc.weight"``), matched
        against the floating-point tensors.

    Raises
    ------
    InvalidParameterError
        When nothing matches.
    """
    if not isinstance(subset, str) or not subset.strip():
        raise InvalidParameterError(f"subset must be 'prunable', 'all' or name globs, got {subset!r}")
    floating = [n for n in pset.names if pset.info[n].dtype.is_floating_point]
    if subset == "prunable":
        names = [n for n in pset.pruned_names() if pset.info[n].dtype.is_floating_point]
    elif subset == "all":
        names = floating
    else:
        globs = [g.strip() for g in subset.split(",") if g.strip()]
        names = [n for n in floating if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    names = [n for n in names if pset.info[n].numel > 0]
    if not names:
        some = ", ".join(floating[:5])
        raise InvalidParameterError(
            f"subset {subset!r} matches no floating-point tensor of this store (it has {len(floating)}, e.g. {some})"
        )
    return names


# ------------------------------------------------------------------------------------------------
# the block provider
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockSpec:
    """Where one block of the provider lies in the model: rows ``row_start:row_stop`` of tensor ``name``.

    The block has shape ``(T, numel of those rows)``; a tensor small enough is one block with
    ``row_start = 0``, ``row_stop = shape[0]`` (0-d tensors: ``0, 1``).
    """

    name: str
    row_start: int
    row_stop: int
    shape: tuple[int, ...]
    """Shape of this slab of the tensor, ``(row_stop - row_start, *tensor_shape[1:])``."""

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _block_dtype(dtype: torch.dtype) -> torch.dtype:
    """Snapshot dtype of a stored tensor: float64 stays float64, everything else becomes float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class StoreSnapshots:
    """A block provider over the masked weights of a stored flow (see :func:`snapshot_provider`).

    Calling the object returns a fresh iterator of blocks of shape ``(T, n_i)`` -- the snapshot
    columns of one tensor (or of a slab of its rows), ``x_n = theta_n * m_n / s`` for rounds
    ``n = 0 .. T-1`` -- in the order of :attr:`specs`.  ``s`` is the tensor's fixed scale (1, or its
    round-0 std with ``scale="layer-std"``), the same in every round.

    Attributes
    ----------
    names : list of str, the tensors covered, in model order
    specs : list of BlockSpec, one per block, in the order blocks are yielded
    n_rounds : int, ``T``
    n_features : int, ``N`` (surviving or not: pruned entries are zeros of the snapshot)
    scales : dict name -> float, each tensor's fixed divisor (filled as tensors are read)
    """

    def __init__(
        self,
        pset: ParameterSet,
        subset: str = "prunable",
        scale: str = "none",
        block_elements: int | None = None,
        progress: bool = False,
    ) -> None:
        if scale not in SCALES:
            raise InvalidParameterError(f"scale must be one of {SCALES}, got {scale!r}")
        self.block_elements = DEFAULT_BLOCK_ELEMENTS if block_elements is None else int(block_elements)
        if self.block_elements < 1:
            raise InvalidParameterError(f"block_elements must be >= 1, got {block_elements!r}")
        self.pset = pset
        self.subset = subset
        self.scale = scale
        self.progress = progress
        self.n_rounds = int(pset.n_rounds)
        self.names = select_names(pset, subset)
        self.specs = [s for n in self.names for s in self._slabs(n)]
        self.n_features = sum(pset.info[n].numel for n in self.names)
        self.scales: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------
    def _slabs(self, name: str) -> list[BlockSpec]:
        shape = tuple(self.pset.info[name].shape)
        if not shape:
            return [BlockSpec(name, 0, 1, ())]
        rows = shape[0]
        inner = int(np.prod(shape[1:], dtype=np.int64))
        per = max(1, self.block_elements // max(1, self.n_rounds * inner))
        return [
            BlockSpec(name, a, min(rows, a + per), (min(rows, a + per) - a, *shape[1:]))
            for a in range(0, rows, per)
        ]

    def _rows(self, spec: BlockSpec) -> slice | None:
        """The row slice of ``spec``, or None for the whole tensor."""
        full = not spec.shape or (spec.row_start == 0 and spec.row_stop == self.pset.info[spec.name].shape[0])
        return None if full else slice(spec.row_start, spec.row_stop)

    def _compute_scale(self, name: str) -> float:
        """Fixed per-tensor divisor: std of the round-0 survivors (RMS if they are constant; else 1)."""
        if self.scale == "none":
            return 1.0
        w = self.pset.tensor(name, 0).to(torch.float64).reshape(-1)
        m = self.pset.mask(name, 0).reshape(-1)
        alive = w[m]
        if alive.numel() == 0:
            return 1.0
        s = float(alive.std(unbiased=False)) if alive.numel() > 1 else 0.0
        if not (s > 0 and math.isfinite(s)):
            s = float(alive.square().mean().sqrt())
        return s if s > 0 and math.isfinite(s) else 1.0

    def scale_of(self, name: str) -> float:
        """The fixed divisor of tensor ``name`` (computed on first use)."""
        if name not in self.scales:
            self.scales[name] = self._compute_scale(name)
        return self.scales[name]

    def read(self, spec: BlockSpec) -> tuple[list[tuple[int, int, torch.Tensor]], torch.Tensor | None]:
        """What the block of ``spec`` is made of, read from the store once.

        Returns
        -------
        runs : list of (first_round, stop_round, w)
            ``w`` (numel,) the stored weights (original dtype, not scaled) of rounds
            ``first_round .. stop_round - 1``: one run for a tensor whose weights never change (a
            data-free flow); consecutive stored values with equal bits are merged.
        masks : (T, numel) uint8 / bool tensor, or None (no mask: all ones)
        """
        runs: list[tuple[int, int, torch.Tensor]] = []
        rows = self._rows(spec)
        for a, b in self.pset.weight_runs(spec.name):
            w = self.pset.tensor(spec.name, a, rows=rows).reshape(-1)
            if runs and runs[-1][2].dtype == w.dtype and torch.equal(runs[-1][2], w):
                runs[-1] = (runs[-1][0], b, runs[-1][2])
            else:
                runs.append((a, b, w))
        masks = self.pset.read_masks(spec.name, rows)
        return runs, None if masks is None else masks.reshape(self.n_rounds, -1)

    def assemble(
        self,
        spec: BlockSpec,
        runs: list[tuple[int, int, torch.Tensor]],
        masks: torch.Tensor | None,
        dtype: torch.dtype | None = None,
        buffer: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The block (T, spec.numel) from what :meth:`read` returned: ``theta_n * m_n / s`` per round.

        ``dtype``: default float32 (float64 for float64 tensors); the Gram and mode passes ask for
        float64, which the DMD core then uses without a strided conversion.  ``buffer``: a flat
        tensor of that dtype with at least ``T * spec.numel`` elements to fill (reused across blocks
        it saves the page faults of a fresh allocation); the block is then a view of it.
        """
        dt = dtype or _block_dtype(self.pset.info[spec.name].dtype)
        inv = 1.0 / self.scale_of(spec.name)
        size = self.n_rounds * spec.numel
        if buffer is not None and buffer.dtype == dt and buffer.numel() >= size:
            out = buffer[:size].view(self.n_rounds, spec.numel)
        else:
            out = torch.empty((self.n_rounds, spec.numel), dtype=dt)
        for a, b, w in runs:
            w = w.to(dt)
            if inv != 1.0:
                w = w * inv
            part = out[a:b]
            if masks is None:
                part.copy_(w.expand_as(part))
            else:  # the masks' 0/1 converted in place, then one multiply (5x faster than a mixed-type mul)
                part.copy_(masks[a:b])
                part.mul_(w)
        return out

    def block(self, spec: BlockSpec, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The block of ``spec``: (T, spec.numel), ``theta_n * m_n / s`` per round, float32 (float64
        when the tensor is float64) unless ``dtype``."""
        return self.assemble(spec, *self.read(spec), dtype=dtype)

    def _structured_gram(
        self, spec: BlockSpec, runs: list[tuple[int, int, torch.Tensor]], masks: torch.Tensor | None
    ) -> np.ndarray | None:
        """Exact partial Gram (T, T) of a block whose weights never change and whose masks are nested.

        Then ``x_i . x_j = sum_p w_p^2 m_ip m_jp = S[max(i, j)]`` with ``S[n]`` = the sum of ``w_p^2``
        over the weights alive at round ``n``: with ``d_p`` = number of rounds weight ``p`` survives,
        ``S[n] = sum_{d_p > n} w_p^2`` (a float64 ``bincount`` of ``d`` weighted by ``w^2``).  Cost:
        O(T numel) byte operations (eight masks per 64-bit word) instead of O(T^2 numel) flops.
        Runs on the CPU (it is bound by reading the masks).  None when it does not apply.
        """
        if len(runs) != 1:
            return None
        T = self.n_rounds
        w = runs[0][2].detach().cpu().to(torch.float64)
        inv = 1.0 / self.scale_of(spec.name)
        if inv != 1.0:
            w = w * inv
        w2 = np.square(w.numpy())
        if masks is None:
            return np.full((T, T), float(w2.sum()))
        m = masks.detach().cpu().numpy()
        if m.dtype == np.bool_:
            m = m.view(np.uint8)
        m = np.ascontiguousarray(m)
        d = _alive_rounds(m)
        if d is None:
            return None  # a weight revived: not nested
        cnt = np.bincount(d, weights=w2, minlength=T + 1)  # cnt[k]: weights alive in rounds 0 .. k-1
        tail = np.cumsum(cnt[::-1])[::-1]  # tail[k] = sum_{j >= k} cnt[j]
        s = tail[1 : T + 1]  # S[n] = tail[n + 1]
        idx = np.arange(T)
        return s[np.maximum(idx[:, None], idx[None, :])]

    def gram(
        self,
        device: str | torch.device | None = "auto",
        chunk_elements: int | None = None,
        shortcut: bool = True,
    ) -> GramResult:
        """One pass over the store: the (T, T) float64 Gram ``Z Z^T`` of all snapshots.

        Blocks of a data-free flow (weights constant over the rounds, nested masks) take the exact
        shortcut of :meth:`_structured_gram`; any other block (weights that change between rounds,
        masks that are not nested) goes through :func:`rganalysis.koopman.dmd.snapshot_gram`
        (float64 column chunks).  Both are exact up to float64 rounding.  ``shortcut=False`` sends
        every block through the dense path (for checks and benchmarks).

        Returns
        -------
        GramResult
            ``gram`` (T, T) float64 numpy, ``n_features``, ``n_blocks``, ``input_eps``.
        """
        dev = resolve_device(device)
        T = self.n_rounds
        k = torch.zeros((T, T), dtype=torch.float64, device=dev)
        eps_in = _EPS64
        specs = self.specs
        if self.progress:
            from tqdm.auto import tqdm

            specs = tqdm(specs, desc="koopman: Gram pass", unit="block", leave=False)
        self.n_structured_ = 0
        buffer: torch.Tensor | None = None
        for spec in specs:
            runs, masks = self.read(spec)
            eps_in = max(eps_in, float(torch.finfo(_block_dtype(self.pset.info[spec.name].dtype)).eps))
            part = self._structured_gram(spec, runs, masks) if shortcut else None
            if part is not None:
                k += torch.as_tensor(part, device=dev)
                self.n_structured_ += 1
                continue
            if buffer is None:
                buffer = torch.empty(max(self.n_rounds * sp.numel for sp in self.specs), dtype=torch.float64)
            block = self.assemble(spec, runs, masks, dtype=torch.float64, buffer=buffer)
            del runs, masks
            ce = (
                chunk_elements
                if chunk_elements is not None
                else (None if dev.type == "cuda" else block.numel())
            )
            k += torch.as_tensor(snapshot_gram([block], device=dev, chunk_elements=ce).gram, device=dev)
            del block
        g = k.cpu().numpy()
        g = 0.5 * (g + g.T)
        if not np.all(np.isfinite(g)):
            raise NonFiniteWeightsError("the snapshots hold NaN or Inf (their Gram matrix is not finite)")
        return GramResult(g, self.n_features, len(self.specs), eps_in)

    def blocks(self, dtype: torch.dtype | None = None) -> Iterator[tuple[BlockSpec, torch.Tensor]]:
        """(spec, block) pairs in order (blocks in ``dtype``, default as :meth:`block`)."""
        specs = self.specs
        if self.progress:
            from tqdm.auto import tqdm

            specs = tqdm(specs, desc="koopman: reading tensors", unit="block", leave=False)
        for spec in specs:
            yield spec, self.block(spec, dtype)

    def __call__(self) -> Iterator[torch.Tensor]:
        return (blk for _, blk in self.blocks())

    def float64(self) -> Callable[[], Iterator[torch.Tensor]]:
        """The same provider with float64 blocks (what the Gram and mode passes use internally)."""
        return lambda: (blk for _, blk in self.blocks(torch.float64))

    def __repr__(self) -> str:
        return (
            f"<StoreSnapshots subset={self.subset!r} scale={self.scale!r} tensors={len(self.names)} "
            f"blocks={len(self.specs)} T={self.n_rounds} N={self.n_features}>"
        )


def _alive_rounds(m: np.ndarray) -> np.ndarray | None:
    """Number of rounds each weight survives, ``d_p = sum_n m_np``, if the masks are nested, else None.

    ``m`` : (T, n) uint8 0/1, C-contiguous.  Nested: ``m_{n+1} <= m_n`` (no weight revived).  When
    ``n % 8 == 0`` and ``T < 256`` the rows are read as 64-bit words, eight masks at a time (the
    byte-wise sums cannot carry since each byte stays <= T).  Returns (n,) uint8 / int64.
    """
    T, n = m.shape
    if T < 256 and n % 8 == 0 and n > 0:
        words = m.view(np.uint64)  # (T, n // 8)
        acc = words[0].copy()
        tmp = np.empty_like(acc)
        for r in range(1, T):
            np.invert(words[r - 1], out=tmp)
            np.bitwise_and(tmp, words[r], out=tmp)
            if tmp.any():
                return None
            acc += words[r]
        return acc.view(np.uint8)
    if T > 1 and np.any(m[1:] > m[:-1]):
        return None
    return m.sum(axis=0, dtype=np.uint8 if T < 256 else np.int64)


def snapshot_provider(
    pset: ParameterSet,
    subset: str = "prunable",
    scale: str = "none",
    *,
    block_elements: int | None = None,
    progress: bool = False,
) -> StoreSnapshots:
    """A block provider for :class:`~rganalysis.koopman.KoopmanDMD` over a stored flow.

    Parameters
    ----------
    pset : ParameterSet
        A flow (``T = pset.n_rounds`` rounds), loaded (read from HDF5) or in memory.
    subset : str
        ``"prunable"`` (default), ``"all"`` or comma-separated name globs; see :func:`select_names`.
    scale : {"none", "layer-std"}
        ``layer-std`` divides each tensor, in every round, by the std of its round-0 survivors
        (the RMS if they are all equal, 1 if zero); the scale is never recomputed per round, so the
        map ``x_n -> x_{n+1}`` stays the same up to a fixed diagonal change of variables (the
        eigenvalues are unchanged for an exactly linear flow; the singular values and the rank
        truncation change, which is the point).
    block_elements : int, optional
        Largest block in elements (``T x columns``, default 2**25): larger tensors come as slabs
        of rows.
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    StoreSnapshots
        ``provider()`` yields blocks of shape (T, n_i); ``provider.specs[i]`` says which tensor
        rows block ``i`` holds.
    """
    return StoreSnapshots(pset, subset, scale, block_elements=block_elements, progress=progress)


# ------------------------------------------------------------------------------------------------
# the fit
# ------------------------------------------------------------------------------------------------
def flow_scale_or_note(pset: ParameterSet) -> tuple[float | None, float | None, list[float], str | None]:
    """(rate, b, b_n, note) of a flow; b is None (with a note) when the flow does not prune."""
    from rganalysis.fit.fixed_points import flow_scale

    try:
        rate, b, b_n = flow_scale(pset)
    except (InvalidParameterError, TooFewRoundsError) as e:
        try:
            b_n = [float(x) for x in pset.scale_factors()]
        except Exception:  # noqa: BLE001 -- the note is informative only
            b_n = []
        return None, None, b_n, f"no scale factor b, so no exponents: {e}"
    if not (b is not None and math.isfinite(b) and b > 1.0):
        return rate, None, b_n, f"no exponents: scale factor b = {b}"
    return rate, float(b), b_n, None
