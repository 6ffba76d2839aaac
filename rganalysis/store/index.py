"""The structure of a store file, read and checked without torch: what :func:`rganalysis.load`,
``rganalysis info`` and ``rganalysis check`` see before any tensor is read.

:func:`open_store` opens the HDF5 file and says what is wrong when it cannot (locked by a writer,
interrupted write, not HDF5, not a store, newer format); :func:`read_index` reads the names, shapes,
dtypes, masks, rounds and tables of a store of any format version and checks that they fit together
(:class:`~rganalysis.errors.CorruptStoreError` naming the first thing that does not).  The format:
docs/store-format.md.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rganalysis.errors import (
    CorruptStoreError,
    IncompleteStoreError,
    StoreFormatError,
    StoreLockedError,
)
from rganalysis.store.layers import dim_names
from rganalysis.store.output import is_temp_file

__all__ = [
    "ATTRS_CRC_ATTR",
    "COMPLETE_ATTR",
    "Entry",
    "FORMAT",
    "FORMAT_VERSION",
    "MaskEntry",
    "STORED_DTYPES",
    "StoreIndex",
    "open_store",
    "read_index",
    "survival_dtype",
    "text_attr_crcs",
]

FORMAT = "rganalysis-store"

#: 1: written through h5netcdf, one uint8 mask per weight per round, no checksums (still read).
#: 2: written through h5py in the netCDF-4 layout; group indexes, CRC-32 per dataset, masks as survival rounds.
FORMAT_VERSION = 2

#: root attribute written last: 1 when every byte of the store is written (format 2)
COMPLETE_ATTR = "write_complete"
#: root attribute: JSON ``{group: {attribute: CRC-32}}`` of the text attributes of the root and of every group
#: (the indexes, layouts, provenance).  HDF5 checksums neither variable-length strings nor dense attribute
#: storage, so without it a flipped byte in an index would read back as a renamed tensor.
ATTRS_CRC_ATTR = "attrs_crc32"

#: torch dtype name -> the numpy dtype it is stored as (bfloat16 as its int16 bits, bool as uint8)
STORED_DTYPES: dict[str, str] = {
    "float64": "<f8",
    "float32": "<f4",
    "float16": "<f2",
    "bfloat16": "<i2",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "|i1",
    "uint8": "|u1",
    "bool": "|u1",
}

SURVIVAL, PER_ROUND = "survival", "per_round"


def survival_dtype(n_rounds: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds survival rounds ``0 .. n_rounds``."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n_rounds <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise StoreFormatError(f"{n_rounds} rounds cannot be stored")  # pragma: no cover


@dataclass(frozen=True)
class Entry:
    """One stored tensor: dataset ``var`` of group ``group``.

    ``dtype`` is the torch dtype name (``float32``, ``bfloat16``, ...); ``crc32`` the CRC-32 of the
    stored bytes (None in format 1); ``finite`` whether a floating tensor was all finite when written
    (None: not recorded, checked on read like True).
    """

    group: str
    var: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str = "other"
    module: str = ""
    depth: int = 0
    prunable: bool = False
    role: str = "model"
    crc32: int | None = None
    finite: bool | None = None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dims(self) -> tuple[str, ...]:
        return dim_names(self.kind, self.shape)

    @property
    def floating(self) -> bool:
        return self.dtype in ("float64", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class MaskEntry:
    """The masks of one tensor in ``/masks``: ``encoding`` ``survival`` (one unsigned integer per weight,
    the number of rounds it survives: its mask at round r is ``survival > r``) or ``per_round``
    (``(round, *shape)`` 0/1 bytes)."""

    name: str
    encoding: str
    shape: tuple[int, ...]
    stored: str
    crc32: int | None = None


@dataclass
class StoreIndex:
    """Everything about a store but its tensors' values (see :func:`read_index`)."""

    path: Path
    version: int
    n_rounds: int
    attrs: dict[str, Any]
    flow_attrs: dict[str, Any]
    masks_nested: bool | None
    tensors: dict[str, Entry]
    extras: dict[int, dict[str, Entry]] = field(default_factory=dict)
    weights: dict[int, dict[str, Entry]] = field(default_factory=dict)
    masks: dict[str, MaskEntry] = field(default_factory=dict)
    rewind: dict[str, Entry] | None = None
    rewind_layout: list[dict] | None = None
    layouts: list[list[dict]] = field(default_factory=list)
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    density: np.ndarray | None = None
    density_layers: list[str] = field(default_factory=list)

    # the part of the ParameterSet interface that summaries use
    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def info(self) -> dict[str, Entry]:
        return self.tensors

    def prunable_names(self) -> list[str]:
        return [n for n, e in self.tensors.items() if e.prunable]

    def masked_names(self) -> list[str]:
        return [n for n in self.tensors if n in self.masks]

    def pruned_names(self) -> list[str]:
        return self.masked_names() or self.prunable_names()

    def has_mask(self, name: str) -> bool:
        return name in self.masks


# ================================================================================================ opening
def _text(x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.size == 1:
        x = x.reshape(()).item()
    if isinstance(x, np.generic):
        x = x.item()
    return x.decode() if isinstance(x, bytes) else x


def integer_attr(attrs: Any, name: str, default: int, path: Path) -> int:
    """The integer mark ``name`` of a store (``format_version``, ``write_complete``), or ``default`` when
    absent; any other type (a string, a float, a bool, an array) is a damaged store
    (:class:`~rganalysis.errors.CorruptStoreError`), never read as if it were valid."""
    raw = attrs.get(name)
    if raw is None:
        return default
    x = raw.reshape(()).item() if isinstance(raw, np.ndarray) and raw.shape in ((), (1,)) else raw
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, int):
        shown = x.decode(errors="replace") if isinstance(x, bytes) else x
        raise CorruptStoreError(
            f"{path}: the {name} attribute is {type(shown).__name__} {shown!r}, not an integer"
        )
    return x


def open_store(path: str | os.PathLike) -> h5py.File:
    """Open a store read-only, or raise the error that says what the file is.

    Raises :class:`FileNotFoundError`, :class:`~rganalysis.errors.StoreLockedError` (another process
    is writing it), :class:`~rganalysis.errors.IncompleteStoreError` (an interrupted write, or the
    temporary file of a running one) or :class:`~rganalysis.errors.StoreFormatError` (not HDF5, not
    a store, or a newer format).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "no such file", str(path))
    if path.is_dir():
        raise StoreFormatError(f"{path} is a folder, not a store file")
    temp = is_temp_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        msg = str(e)
        if temp:
            raise IncompleteStoreError(
                f"{path}: incomplete file (interrupted write): the temporary file of an rganalysis write"
            ) from None
        if "unable to lock file" in msg or "already open for write" in msg:
            raise StoreLockedError(
                f"{path} is being written by another process (its HDF5 file lock is held); "
                "wait for that process to finish"
            ) from None
        if "truncated file" in msg:
            raise IncompleteStoreError(
                f"{path}: incomplete file (interrupted write, or a truncated copy): {_hdf5_reason(msg)}"
            ) from None
        if "file signature not found" in msg:
            what = "an empty file" if path.stat().st_size == 0 else "not an HDF5 file"
            raise StoreFormatError(f"{path} is {what}, so not an rganalysis store") from None
        raise StoreFormatError(f"{path} is not a readable HDF5 file ({_hdf5_reason(msg)})") from None
    try:
        fmt = _text(f.attrs.get("format"))
        if fmt != FORMAT:
            raise StoreFormatError(
                f"{path} is an HDF5 file but not an rganalysis store (no format={FORMAT!r} attribute)"
            )
        version = integer_attr(f.attrs, "format_version", -1, path)
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{path} has format version {version}, newer than this rganalysis reads ({FORMAT_VERSION})"
            )
        if version < 1:
            raise CorruptStoreError(f"{path}: invalid format_version {version}")
        if temp:
            raise IncompleteStoreError(
                f"{path}: incomplete file (interrupted write): the temporary file of an rganalysis write"
            )
        if version >= 2 and integer_attr(f.attrs, COMPLETE_ATTR, 0, path) != 1:
            raise IncompleteStoreError(f"{path}: incomplete file (interrupted write)")
    except (KeyError, OSError, RuntimeError) as e:  # HDF5 cannot read its own metadata
        f.close()
        raise CorruptStoreError(f"{path}: damaged HDF5 metadata ({_hdf5_reason(str(e))})") from None
    except BaseException:
        f.close()
        raise
    return f


def _text_bytes(x: Any) -> bytes | None:
    """The stored bytes of a text attribute (h5py decodes invalid UTF-8 with surrogate escapes), else None."""
    x = _text(x)
    if isinstance(x, str):
        return x.encode("utf-8", "surrogateescape")
    return None


def text_attr_crcs(f: h5py.File) -> dict[str, dict[str, int]]:
    """:data:`ATTRS_CRC_ATTR`'s map for an open store: the CRC-32 of every text attribute of the root and of
    every group (dataset attributes are checked against the group indexes by ``check``)."""
    groups: list[h5py.Group] = [f]
    f.visititems(lambda _, obj: groups.append(obj) if isinstance(obj, h5py.Group) else None)
    out: dict[str, dict[str, int]] = {}
    for g in groups:
        crcs = {}
        for k, v in g.attrs.items():
            b = _text_bytes(v)
            if b is not None and k != ATTRS_CRC_ATTR:
                crcs[k] = zlib.crc32(b)
        if crcs:
            out[g.name] = crcs
    return out


def _check_text_attrs(f: h5py.File, path: Path) -> None:
    """Every text attribute listed in :data:`ATTRS_CRC_ATTR` that is there has its CRC-32 (a missing group
    or attribute is left to the structure checks, which name it; stores written before the map was added
    have none)."""
    raw = f.attrs.get(ATTRS_CRC_ATTR)
    if raw is None:
        return
    for gname, crcs in json.loads(_text(raw)).items():
        g = f.get(gname) if gname != "/" else f
        if not isinstance(g, h5py.Group):
            continue
        for k, want in crcs.items():
            b = _text_bytes(g.attrs.get(k))
            if b is not None and zlib.crc32(b) != int(want):
                raise CorruptStoreError(
                    f"{path}: the attribute {k!r} of {gname} fails its CRC-32 (a damaged index: the names, "
                    "shapes or provenance it holds cannot be trusted)"
                )


def _hdf5_reason(msg: str) -> str:
    m = re.search(r"\(([^()]*)\)\s*$", msg)
    return m.group(1) if m else msg


# ================================================================================================ reading
def read_index(f: h5py.File, path: str | os.PathLike | None = None) -> StoreIndex:
    """The :class:`StoreIndex` of an open store, its structure checked.

    Checked: every group and variable the format requires is there; every tensor has a known dtype
    and the shape and stored dtype its index says; per-round weights have their round-0 shape and
    dtype; masks name existing tensors and have their shapes; the tables of ``/rounds`` have one
    row per round.  Anything else raises :class:`~rganalysis.errors.CorruptStoreError`.
    """
    path = Path(path or f.filename)
    try:
        version = integer_attr(f.attrs, "format_version", -1, path)
        return _read_index(f, path, version)
    except (KeyError, IndexError, TypeError, ValueError, json.JSONDecodeError, AttributeError) as e:
        raise CorruptStoreError(f"{path}: damaged store structure ({type(e).__name__}: {e})") from None
    except (OSError, RuntimeError) as e:  # HDF5 cannot read its own metadata
        raise CorruptStoreError(f"{path}: damaged HDF5 metadata ({_hdf5_reason(str(e))})") from None


def _require(f: h5py.File | h5py.Group, name: str, path: Path, kind: type = h5py.Group):
    what = "group" if kind is h5py.Group else "variable"
    obj = f.get(name)
    where = f"{f.name.rstrip('/')}/{name}"
    if obj is None:
        if (
            f.name == "/"
            and name in ("rounds", "parameters")
            and integer_attr(f.attrs, "format_version", 1, path) < 2
        ):
            # format 1 has no completion mark; its writer made /rounds last
            raise IncompleteStoreError(f"{path}: incomplete file (interrupted write): no {where} group")
        raise CorruptStoreError(f"{path}: the store has no {where} {what}")
    if not isinstance(obj, kind):
        raise CorruptStoreError(f"{path}: {where} is not a {what}")
    return obj


def open_dataset(g: h5py.Group, name: str, path: Path) -> h5py.h5d.DatasetID:
    """The dataset ``name`` of ``g`` through HDF5's own API (a third of h5py's per-object cost), or
    :class:`~rganalysis.errors.CorruptStoreError` when it is missing or not a dataset."""
    try:
        return h5py.h5d.open(g.id, name.encode())
    except (KeyError, ValueError, OSError):
        what = "a group, not a variable" if isinstance(g.get(name), h5py.Group) else "missing"
        raise CorruptStoreError(f"{path}: variable {g.name.rstrip('/')}/{name} is {what}") from None


def _check_dataset(ds: h5py.h5d.DatasetID, where: str, e: Entry, path: Path) -> None:
    want = STORED_DTYPES.get(e.dtype)
    if want is None:
        raise CorruptStoreError(f"{path}: {where} has unknown torch dtype {e.dtype!r}")
    if tuple(ds.shape) != tuple(e.shape):
        raise CorruptStoreError(
            f"{path}: {where} has shape {tuple(ds.shape)}, its index says {tuple(e.shape)}"
        )
    if ds.dtype != np.dtype(want):
        raise CorruptStoreError(
            f"{path}: {where} is stored as {ds.dtype}, expected {np.dtype(want)} for {e.dtype}"
        )


def _entries_v2(g: h5py.Group, gpath: str, path: Path) -> list[Entry]:
    raw = json.loads(_text(g.attrs["tensors"]))
    out = []
    for d in raw:
        e = Entry(
            group=gpath,
            var=d["name"],
            name=d["name"],
            shape=tuple(int(x) for x in d["shape"]),
            dtype=str(d["dtype"]),
            kind=str(d.get("kind", "other")),
            module=str(d.get("module", "")),
            depth=int(d.get("depth", 0)),
            prunable=bool(d.get("prunable", False)),
            role=str(d.get("role", "model")),
            crc32=None if d.get("crc32") is None else int(d["crc32"]),
            finite=None if d.get("finite") is None else bool(d["finite"]),
        )
        _check_dataset(open_dataset(g, e.var, path), f"/{gpath}/{e.var}", e, path)
        out.append(e)
    return out


def _entries_v1(g: h5py.Group, gpath: str, path: Path) -> list[Entry]:
    out = []
    for name, ds in g.items():
        if not isinstance(ds, h5py.Dataset) or "torch_dtype" not in ds.attrs:
            continue  # netCDF dimension scales and coordinates
        a = ds.attrs
        e = Entry(
            group=gpath,
            var=name,
            name=name,
            shape=tuple(ds.shape),
            dtype=_text(a["torch_dtype"]),
            kind=_text(a.get("kind", "other")),
            module=_text(a.get("module", "")),
            depth=int(_text(a.get("depth", 0))),
            prunable=bool(_text(a.get("prunable", 0))),
            role=_text(a.get("role", "model")),
        )
        _check_dataset(ds.id, ds.name, e, path)
        out.append(e)
    return out


def _read_index(f: h5py.File, path: Path, version: int) -> StoreIndex:
    _check_text_attrs(f, path)
    entries = _entries_v2 if version >= 2 else _entries_v1
    R = int(_text(f.attrs["rounds"]))
    if R < 1:
        raise CorruptStoreError(f"{path}: the store says it has {R} rounds")
    params = _require(f, "parameters", path)
    found = entries(params, "parameters", path)
    model = {e.name: e for e in found if e.role != "extra"}
    extras0 = {e.name: e for e in found if e.role == "extra"}
    order = json.loads(_text(params.attrs["order"]))
    missing = [n for n in order if n not in model]
    if missing:
        raise CorruptStoreError(
            f"{path}: the store has no /parameters variable {missing[0]!r} (of {len(missing)} missing)"
        )
    unlisted = [n for n in model if n not in order]
    if unlisted:
        raise CorruptStoreError(f"{path}: /parameters/{unlisted[0]} is not in the group's order")
    tensors = {n: model[n] for n in order}

    masks: dict[str, MaskEntry] = {}
    if "masks" in f:
        mg = _require(f, "masks", path)
        if version >= 2:
            raw = json.loads(_text(mg.attrs["tensors"]))
            for d in raw:
                masks[d["name"]] = MaskEntry(
                    d["name"],
                    str(d["encoding"]),
                    tuple(int(x) for x in d["shape"]),
                    str(d["stored"]),
                    None if d.get("crc32") is None else int(d["crc32"]),
                )
        else:
            for name, ds in mg.items():
                if isinstance(ds, h5py.Dataset) and "torch_dtype" in ds.attrs:
                    masks[name] = MaskEntry(name, PER_ROUND, tuple(ds.shape), ds.dtype.str)
        for name, m in masks.items():
            if name not in tensors:
                raise CorruptStoreError(f"{path}: /masks/{name} names a tensor the model does not have")
            ds = open_dataset(mg, name, path)
            want = tensors[name].shape if m.encoding == SURVIVAL else (R, *tensors[name].shape)
            if m.encoding not in (SURVIVAL, PER_ROUND):
                raise CorruptStoreError(f"{path}: /masks/{name} has unknown encoding {m.encoding!r}")
            if tuple(ds.shape) != want or tuple(m.shape) != want:
                raise CorruptStoreError(
                    f"{path}: /masks/{name} has shape {tuple(ds.shape)}, expected {want} "
                    f"({m.encoding} masks of a {tensors[name].shape} tensor over {R} rounds)"
                )
            if ds.dtype.kind != "u" or (
                m.encoding == SURVIVAL and ds.dtype.itemsize < survival_dtype(R).itemsize
            ):
                raise CorruptStoreError(
                    f"{path}: /masks/{name} is stored as {ds.dtype}, not as {m.encoding} masks"
                )

    weights: dict[int, dict[str, Entry]] = {}
    extras: dict[int, dict[str, Entry]] = {0: extras0}
    if "weights" in f:
        wg = _require(f, "weights", path)
        for gname, g in wg.items():
            m = re.fullmatch(r"round_(\d+)", gname)
            if m is None or not isinstance(g, h5py.Group):
                raise CorruptStoreError(f"{path}: /weights/{gname} is not a round_NNNN group")
            r = int(m.group(1))
            if not 1 <= r < R:
                raise CorruptStoreError(f"{path}: /weights/{gname} is outside rounds 1..{R - 1}")
            for e in entries(g, f"weights/{gname}", path):
                if e.role == "extra":
                    extras.setdefault(r, {})[e.name] = e
                    continue
                ref = tensors.get(e.name)
                if ref is None:
                    raise CorruptStoreError(
                        f"{path}: /weights/{gname}/{e.name} names a tensor the model does not have"
                    )
                if ref.shape != e.shape or ref.dtype != e.dtype:
                    raise CorruptStoreError(
                        f"{path}: /weights/{gname}/{e.name} is {e.dtype} {e.shape}, the model's tensor is "
                        f"{ref.dtype} {ref.shape}"
                    )
                weights.setdefault(r, {})[e.name] = e

    rewind = rewind_layout = None
    if "rewind" in f:
        rg = _require(f, "rewind", path)
        rewind = {e.name: e for e in entries(rg, "rewind", path)}
        rewind_layout = json.loads(_text(rg.attrs["layout"]))

    rounds = _require(f, "rounds", path)
    layouts = json.loads(_text(rounds.attrs["layouts"]))
    if len(layouts) != R:
        raise CorruptStoreError(f"{path}: /rounds has {len(layouts)} layouts for {R} rounds")
    metrics = {}
    for mname in json.loads(_text(rounds.attrs["metrics"])):
        ds = _require(rounds, mname, path, h5py.Dataset)
        if ds.shape != (R,):
            raise CorruptStoreError(f"{path}: /rounds/{mname} has shape {ds.shape}, expected ({R},)")
        metrics[mname] = np.asarray(ds[()], dtype=np.float64)
    dens = _require(rounds, "density", path, h5py.Dataset)
    layer = _require(rounds, "layer", path, h5py.Dataset)
    layers = [_text(x) for x in layer[()]]
    if dens.shape != (R, len(layers)):
        raise CorruptStoreError(
            f"{path}: /rounds/density has shape {dens.shape}, expected ({R}, {len(layers)})"
        )
    density = np.asarray(dens[()], dtype=np.float64)

    skip = {
        "format",
        "format_version",
        "rounds",
        "flow",
        "created",
        "package_versions",
        "masks_nested",
        COMPLETE_ATTR,
        ATTRS_CRC_ATTR,
    }
    attrs = {k: _text(v) for k, v in f.attrs.items() if k not in skip and not k.startswith("_")}
    attrs["created"] = _text(f.attrs.get("created"))
    attrs["package_versions"] = _text(f.attrs.get("package_versions"))
    nested = f.attrs.get("masks_nested")
    return StoreIndex(
        path=path,
        version=version,
        n_rounds=R,
        attrs=attrs,
        flow_attrs=json.loads(_text(f.attrs["flow"])),
        masks_nested=None if nested is None else bool(_text(nested)),
        tensors=tensors,
        extras=extras,
        weights=weights,
        masks=masks,
        rewind=rewind,
        rewind_layout=rewind_layout,
        layouts=layouts,
        metrics=metrics,
        density=density,
        density_layers=layers,
    )
