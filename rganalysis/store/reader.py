"""Reading a store's datasets as numpy arrays, each checked on its first read: the checksum written with
it, finite weights, masks in range and nested where the store says so, and the recorded density
table against the masks.  Torch-free (``rganalysis info`` and ``rganalysis check`` use it directly;
:func:`rganalysis.load` wraps it in a :class:`~rganalysis.store.ParameterSet`).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rganalysis.errors import (
    ChecksumError,
    CorruptStoreError,
    DensityMismatchError,
    MasksNotNestedError,
    NonBinaryMaskError,
    NonFiniteWeightsError,
    StoreClosedError,
)
from rganalysis.store.index import (
    PER_ROUND,
    SURVIVAL,
    Entry,
    StoreIndex,
    open_store,
    read_index,
    survival_dtype,
)

__all__ = ["StoreReader", "crc32", "count_nonfinite"]


def crc32(arr: np.ndarray) -> int:
    """CRC-32 (``zlib.crc32``) of an array's bytes in C order, as stored."""
    a = np.ascontiguousarray(arr) if arr.ndim else arr
    return zlib.crc32(memoryview(a).cast("B")) if a.size else 0


def count_nonfinite(arr: np.ndarray, dtype: str) -> int:
    """Number of NaN/Inf values of a stored array of torch dtype ``dtype`` (0 when all are finite).

    Two reductions (min and max propagate NaN) before any element-wise pass; bfloat16 is read from
    its int16 bits (exponent all ones).
    """
    if arr.size == 0:
        return 0
    if dtype == "bfloat16":
        bad = (arr.view(np.uint16) & 0x7F80) == 0x7F80
        return int(np.count_nonzero(bad))
    if np.isfinite(arr.min()) and np.isfinite(arr.max()):
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def _histogram(values: np.ndarray, n: int, block: int = 1 << 18) -> np.ndarray:
    """Counts of ``0 .. n-1`` in ``values`` (unsigned integers below ``n``), by blocks (bincount widens to
    int64).  uint8 values are counted two at a time (pairs as uint16: half the passes), then split."""
    h = np.zeros(n, dtype=np.int64)
    if values.dtype == np.uint8 and values.size >= 1 << 16:
        even = values.size // 2 * 2
        pairs = values[:even].view(np.uint16)
        acc = np.zeros(1 << 16, dtype=np.int64)
        for i in range(0, pairs.size, 4 * block):
            acc += np.bincount(pairs[i : i + 4 * block], minlength=1 << 16)
        grid = acc.reshape(256, 256)
        h += (grid.sum(axis=0) + grid.sum(axis=1))[:n]
        if even < values.size:
            h[values[-1]] += 1
        return h
    for i in range(0, values.size, block):
        h += np.bincount(values[i : i + block], minlength=n)[:n]
    return h


class StoreReader:
    """An open store (:func:`~rganalysis.store.index.open_store` + :func:`~rganalysis.store.index.read_index`)
    whose datasets are checked on their first whole read.

    Errors: :class:`~rganalysis.errors.ChecksumError` (data differ from the CRC-32 recorded when
    written), :class:`~rganalysis.errors.NonFiniteWeightsError` (NaN/Inf in a tensor recorded as
    finite), :class:`~rganalysis.errors.NonBinaryMaskError` (a mask value out of range),
    :class:`~rganalysis.errors.MasksNotNestedError` (masks the store says are nested revive a weight),
    :class:`~rganalysis.errors.DensityMismatchError` (the density table disagrees with the masks) and
    :class:`~rganalysis.errors.CorruptStoreError` (HDF5 cannot read a dataset).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.file: h5py.File = open_store(self.path)
        try:
            self.index: StoreIndex = read_index(self.file, self.path)
        except BaseException:
            self.file.close()
            raise
        self._gids: dict[str, Any] = {}
        self._verified: set[tuple[str, str]] = set()
        self._counts: dict[str, np.ndarray] = {}
        self._table: tuple[list[str], np.ndarray] | None = None

    # ------------------------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the file (arrays already read stay valid)."""
        if self.file:
            self.file.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, group: str, var: str, sel: Any = ()) -> np.ndarray:
        if not self.file:  # h5py: a closed File is false
            raise StoreClosedError(
                f"{self.path} is closed, and /{group}/{var} had not been read: objects that read it lazily "
                "(a flow computed from it, a set loaded from it) need it open; close it after using them"
            )
        try:
            if sel == ():  # a whole dataset: HDF5's read into a new array, without h5py's selection machinery
                gid = self._gids.get(group)
                if gid is None:
                    gid = self._gids[group] = self.file[group].id
                ds = h5py.h5d.open(gid, var.encode())
                out = np.empty(ds.shape, dtype=ds.dtype)
                if out.size:
                    ds.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
                return out
            return self.file[group][var][sel]
        except (OSError, KeyError) as e:
            raise CorruptStoreError(f"{self.path}: cannot read /{group}/{var} ({e})") from None

    def _check_crc(self, arr: np.ndarray, want: int | None, where: str) -> None:
        if want is not None and crc32(arr) != want:
            raise ChecksumError(
                f"{self.path}: {where}: checksum mismatch (the data changed since they were written: "
                "bit rot or an edit)"
            )

    # ------------------------------------------------------------------------------------ tensors
    def read(self, entry: Entry, rows: slice | None = None) -> np.ndarray:
        """The stored array of a tensor (``rows``: that slice of its first dimension only).

        A whole read is checked once (checksum, finite values); a partial one for finite values until
        the tensor has been read whole.
        """
        where = f"/{entry.group}/{entry.var}"
        key = (entry.group, entry.var)
        arr = self._read(entry.group, entry.var, () if rows is None else rows)
        if key in self._verified:
            return arr
        if rows is None:
            self._check_crc(arr, entry.crc32, where)
        check = (
            entry.finite if entry.finite is not None else (self.index.version < 2 and entry.role == "model")
        )
        if check and entry.floating:
            bad = count_nonfinite(arr, entry.dtype)
            if bad:
                raise NonFiniteWeightsError(f"{self.path}: {where} holds {bad} NaN/Inf values")
        if rows is None:
            self._verified.add(key)
        return arr

    # ------------------------------------------------------------------------------------ masks
    def survival(self, name: str, rows: slice | None = None) -> np.ndarray | None:
        """The number of rounds each weight of ``name`` survives (its mask at round r is ``survival > r``),
        or None when its masks are not nested (stored round by round)."""
        m = self.index.masks[name]
        if m.encoding != SURVIVAL:  # round by round: survival rounds when they are nested
            arr = (
                self._verified_masks(name) if rows is None else self._read("masks", name, (slice(None), rows))
            )
            flat = arr.reshape(arr.shape[0], -1)
            if any(np.any(flat[r] > flat[r - 1]) for r in range(1, flat.shape[0])):
                return None
            return flat.sum(axis=0, dtype=survival_dtype(self.index.n_rounds)).reshape(arr.shape[1:])
        if rows is None:
            return self._verified_masks(name)
        arr = self._read("masks", name, rows)
        self._check_values(name, arr)
        return arr

    def mask_rounds(self, name: str, rows: slice | None = None) -> np.ndarray:
        """Every round's mask of ``name``: ``(n_rounds, *shape)`` bool (``rows``: of that slice)."""
        R = self.index.n_rounds
        m = self.index.masks[name]
        if m.encoding == SURVIVAL:
            s = self.survival(name, rows)
            return s[None] > np.arange(R, dtype=s.dtype).reshape((R,) + (1,) * s.ndim)
        arr = self._verified_masks(name) if rows is None else self._read("masks", name, (slice(None), rows))
        if rows is not None:
            self._check_values(name, arr)
        return arr.astype(np.bool_, copy=False) if arr.dtype != np.uint8 else arr.view(np.bool_)

    def mask_round(self, name: str, r: int) -> np.ndarray:
        """The mask of ``name`` at round ``r``: bool array of the tensor's shape (one round's worth read)."""
        m = self.index.masks[name]
        if m.encoding == SURVIVAL:
            return self._verified_masks(name) > r
        if name not in self._counts:
            return self._verified_masks(name)[r].view(np.bool_)
        return self._read("masks", name, r).view(np.bool_)

    def mask_counts(self, name: str) -> np.ndarray:
        """Surviving weights of ``name`` per round, ``(n_rounds,)`` int64, from its checked masks."""
        if name not in self._counts:
            self._verified_masks(name)
        return self._counts[name]

    def _check_values(self, name: str, arr: np.ndarray) -> None:
        m = self.index.masks[name]
        if arr.size == 0:
            return
        top = int(arr.max())
        if m.encoding == SURVIVAL and top > self.index.n_rounds:
            raise NonBinaryMaskError(
                f"{self.path}: /masks/{name} holds survival round {top}, beyond the store's "
                f"{self.index.n_rounds} rounds"
            )
        if m.encoding == PER_ROUND and top > 1:
            raise NonBinaryMaskError(f"{self.path}: /masks/{name} is not 0/1: holds {top}")

    def _verified_masks(self, name: str) -> np.ndarray:
        """The whole mask dataset of ``name``, checked: checksum, values, nesting, density row."""
        m = self.index.masks[name]
        R = self.index.n_rounds
        arr = self._read("masks", name)
        if name in self._counts:
            return arr
        self._check_crc(arr, m.crc32, f"/masks/{name}")
        if m.encoding == SURVIVAL:
            flat = arr.reshape(-1)
            if flat.dtype == np.uint8:  # every byte value counted at once: the range check comes free
                hist = _histogram(flat, 256)
                if hist[R + 1 :].any():
                    self._check_values(name, arr)
            else:
                self._check_values(name, arr)
                hist = _histogram(flat, R + 1)
            counts = arr.size - np.cumsum(hist[: R + 1])[:R]  # alive at round r: survival > r
        else:
            self._check_values(name, arr)
            flat = arr.reshape(R, -1)
            counts = np.count_nonzero(flat, axis=1).astype(np.int64)
            if self.index.masks_nested:
                for r in range(1, R):
                    revived = int(np.count_nonzero(flat[r] > flat[r - 1]))
                    if revived:
                        raise MasksNotNestedError(
                            f"{self.path}: the masks of {name!r} are not nested, though the store says they are: "
                            f"round {r} revives {revived} weights"
                        )
        self._check_density(name, counts)
        self._counts[name] = counts
        return arr

    def _check_density(self, name: str, counts: np.ndarray) -> None:
        ix = self.index
        if ix.density is None or ix.density_layers != ix.pruned_names() or name not in ix.density_layers:
            return
        j = ix.density_layers.index(name)
        n = ix.tensors[name].numel
        bad = np.flatnonzero(np.abs(ix.density[:, j] * n - counts) > 0.5)
        if bad.size:
            r = int(bad[0])
            raise DensityMismatchError(
                f"{self.path}: /rounds/density says {name!r} has density {ix.density[r, j]:.6g} at round {r}, "
                f"its masks give {counts[r] / n:.6g}"
            )

    # ------------------------------------------------------------------------------------ tables
    def density_table(self) -> tuple[list[str], np.ndarray]:
        """(layers, densities ``(n_rounds, layers)``) over the pruned tensors, checked against the masks
        (recomputed from them when the recorded table is for other layers)."""
        if self._table is None:
            ix = self.index
            names = ix.pruned_names()
            table = np.ones((ix.n_rounds, len(names)))
            for j, n in enumerate(names):
                if n in ix.masks:
                    table[:, j] = self.mask_counts(n) / ix.tensors[n].numel
            if ix.density is not None and ix.density_layers == names:
                unmasked = [j for j, n in enumerate(names) if n not in ix.masks]
                if unmasked and not np.all(ix.density[:, unmasked] == 1.0):
                    j = unmasked[int(np.argmax(np.any(ix.density[:, unmasked] != 1.0, axis=0)))]
                    raise DensityMismatchError(
                        f"{self.path}: /rounds/density gives {names[j]!r} densities below 1, but it has no masks"
                    )
                table = ix.density  # equal to the recomputed table within one weight, per layer
            self._table = (names, table)
        return self._table

    # ------------------------------------------------------------------------------------ summary interface
    @property
    def n_rounds(self) -> int:
        return self.index.n_rounds

    @property
    def names(self) -> list[str]:
        return self.index.names

    @property
    def info(self) -> dict[str, Entry]:
        return self.index.tensors

    @property
    def attrs(self) -> dict[str, Any]:
        return self.index.attrs

    @property
    def flow_attrs(self) -> dict[str, Any]:
        return self.index.flow_attrs

    @property
    def metrics(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v] for k, v in self.index.metrics.items()}

    def prunable_names(self) -> list[str]:
        return self.index.prunable_names()

    def masked_names(self) -> list[str]:
        return self.index.masked_names()

    def pruned_names(self) -> list[str]:
        return self.index.pruned_names()

    def has_mask(self, name: str) -> bool:
        return self.index.has_mask(name)
