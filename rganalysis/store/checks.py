"""Checks of a store's content: the nesting the analyses rely on (:func:`check_nested`), and the whole
store at once (:func:`check_store`, what ``rganalysis check`` runs).  :func:`check_store` is torch-free."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from rganalysis.errors import ChecksumError, CorruptStoreError, MasksNotNestedError, RGAnalysisError

if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.store.parameter_set import ParameterSet

__all__ = ["StoreCheck", "check_nested", "check_store"]


def check_nested(pset: ParameterSet) -> None:
    """Raise :class:`MasksNotNestedError` unless every round's masks are subsets of the previous round's.

    Stores record whether their masks are nested when they are written (``masks_nested``, and nested
    masks are stored as survival rounds, nested by construction); only a set that does not know is
    checked mask by mask.
    """
    if pset.masks_nested is True:
        return
    for name in pset.masked_names():
        prev = pset.mask(name, 0)
        for r in range(1, pset.n_rounds):
            m = pset.mask(name, r)
            revived = int((m & ~prev).sum())
            if revived:
                raise MasksNotNestedError(
                    f"the masks of this flow are not nested: {name!r} revives {revived} weights at round {r}"
                )
            prev = m
    if pset.masks_nested is False:
        raise MasksNotNestedError(
            "the masks of this flow are not nested (recorded when the store was written)"
        )


class StoreCheck:
    """What :func:`check_store` found: ``problems`` (named errors, one per thing wrong), ``notes``
    (facts that are not errors, e.g. a format-1 store has no checksums) and what was verified."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[RGAnalysisError] = []
        self.notes: list[str] = []
        self.tensors = 0
        self.masks = 0
        self.bytes = 0
        self.version: int | None = None
        self.n_rounds: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: what was verified (when ``ok``)."""
        what = f"{self.tensors} tensors, {self.masks} masked, {self.n_rounds} round(s), {self.bytes:,} bytes read"
        sums = (
            "checksums, values, masks and densities verified"
            if self.version and self.version >= 2
            else ("values, masks and densities verified")
        )
        return f"{self.path}: ok (format {self.version}; {what}; {sums})"


def check_store(path: str | os.PathLike) -> StoreCheck:
    """Read a whole store and verify everything its format records.

    Structure (every group, variable, shape and dtype), the CRC-32 of every dataset (format 2), finite
    weights where recorded, mask values and nesting, the density table against the masks, the global
    density against the density table, and (format 2) that every variable's attributes agree with its
    group's index and that its netCDF dimensions have its lengths.  Every problem is collected, each
    as a named error (:class:`~rganalysis.errors.RGAnalysisError` subclass); a store that cannot be
    opened gives one.
    """
    from rganalysis.store.reader import StoreReader

    out = StoreCheck(Path(path))
    try:
        reader = StoreReader(path)
    except RGAnalysisError as e:
        out.problems.append(e)
        return out
    with reader:
        ix = reader.index
        out.version, out.n_rounds = ix.version, ix.n_rounds
        if ix.version < 2:
            out.notes.append("format 1: no checksums recorded, values checked only")
        entries = list(ix.tensors.values())
        entries += [e for es in ix.extras.values() for e in es.values()]
        entries += [e for es in ix.weights.values() for e in es.values()]
        entries += list((ix.rewind or {}).values())

        def attempt(fn, *a):
            try:
                return fn(*a)
            except RGAnalysisError as e:
                seen = {(type(p), str(p)) for p in out.problems}
                if (type(e), str(e)) not in seen:  # one report per problem
                    out.problems.append(e)
            except _HDF5_ERRORS as e:  # HDF5 cannot read its own metadata (dimension scales, headers, heaps)
                out.problems.append(
                    CorruptStoreError(f"{out.path}: damaged HDF5 metadata ({type(e).__name__}: {e})")
                )
            return None

        for e in entries:
            arr = attempt(reader.read, e)
            if arr is not None:
                out.tensors += 1
                out.bytes += arr.nbytes
            if ix.version >= 2:
                attempt(_check_variable_attrs, reader.file, e, out.path)
        for name in ix.masked_names():
            counts = attempt(reader.mask_counts, name)
            if counts is not None:
                out.masks += 1
                out.bytes += reader.file["masks"][name].nbytes
        table = attempt(reader.density_table)
        rounds = reader.file["rounds"]
        if ix.version >= 2:
            attempt(_check_round_tables, rounds, out)
        if table is not None and "global_density" in rounds:
            layers, dens = table
            sizes = np.array([ix.tensors[n].numel for n in layers], dtype=np.float64)
            if len(layers):
                glob = (dens * sizes).sum(axis=1) / sizes.sum()
                if not np.allclose(rounds["global_density"][()], glob, rtol=1e-12, atol=0):
                    out.problems.append(
                        CorruptStoreError(
                            f"{out.path}: /rounds/global_density disagrees with /rounds/density"
                        )
                    )
    return out


#: what h5py raises when HDF5 cannot read a damaged file's metadata
_HDF5_ERRORS = (OSError, RuntimeError, KeyError, AttributeError, ValueError)


def _check_round_tables(rounds: h5py.Group, out: StoreCheck) -> None:
    from rganalysis.store.reader import crc32

    for vname, ds in rounds.items():
        want = ds.attrs.get("crc32")
        if want is not None and crc32(ds[()]) != int(want):
            out.problems.append(
                ChecksumError(f"{out.path}: /rounds/{vname}: checksum mismatch (bit rot or an edit)")
            )


def _check_variable_attrs(f: h5py.File, e, path: Path) -> None:
    """A format-2 variable's attributes agree with its group's index, and its dimensions with its shape."""
    ds = f[e.group][e.var]
    a = ds.attrs
    want = {"torch_dtype": e.dtype, "crc32": e.crc32, "role": e.role}
    if e.role == "model" and e.group != "rewind":
        want.update(kind=e.kind, module=e.module, depth=e.depth, prunable=int(e.prunable))
    for k, v in want.items():
        got = a.get(k)
        got = got.decode() if isinstance(got, bytes) else (got.item() if hasattr(got, "item") else got)
        if k == "role" and got is None:
            continue
        if got != v:
            raise CorruptStoreError(
                f"{path}: /{e.group}/{e.var} has attribute {k}={got!r}, its group's index says {v!r}"
            )
    dims = ds.dims
    for axis, n in enumerate(ds.shape):
        scales = list(dims[axis].values()) if axis < len(dims) else []
        if len(scales) != 1 or scales[0].shape != (n,):
            got = [s.shape for s in scales]
            raise CorruptStoreError(
                f"{path}: /{e.group}/{e.var} axis {axis} has length {n} but its netCDF dimension is {got or 'missing'}"
            )
