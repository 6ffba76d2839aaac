"""Writing and opening stores: one HDF5 file (netCDF-4 layout) per model or flow, written tensor by
tensor through h5py and atomically, opened lazily and checked.  Format: docs/store-format.md.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from rganalysis import __version__
from rganalysis.store.index import (
    ATTRS_CRC_ATTR,
    COMPLETE_ATTR,
    FORMAT,
    FORMAT_VERSION,
    PER_ROUND,
    SURVIVAL,
    survival_dtype,
    text_attr_crcs,
)
from rganalysis.store.netcdf import NetCDFWriter, set_attrs
from rganalysis.store.output import AtomicOutput
from rganalysis.store.parameter_set import DiskRef, LayoutEntry, ParameterSet, TensorInfo, json_text
from rganalysis.store.reader import count_nonfinite, crc32
from rganalysis.store.tensors import dtype_name, to_numpy, torch_dtype

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "save"]

#: target size of one chunk of a chunked (compressed or mask) dataset, bytes
CHUNK_BYTES = 1 << 20


# ====================================================================== writing
def _versions() -> dict[str, str]:
    import sys
    from importlib import metadata

    out = {"python": sys.version.split()[0], "rganalysis": __version__}
    for pkg in ("torch", "numpy", "h5py", "xarray", "torchvision", "transformers", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _row_chunks(shape: Sequence[int], itemsize: int, lead: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Chunks of whole rows (first dimension) of about :data:`CHUNK_BYTES` each."""
    if not shape:
        return lead
    row = itemsize * math.prod(shape[1:])
    rows = max(1, min(shape[0], CHUNK_BYTES // max(1, row)))
    return (*lead, rows, *shape[1:])


def _tensor_attrs(i: TensorInfo, role: str = "model") -> dict[str, Any]:
    return {
        "kind": i.kind,
        "module": i.module,
        "depth": i.depth,
        "prunable": int(i.prunable),
        "torch_dtype": dtype_name(i.dtype),
        "role": role,
    }


_CHECKER: list = []  # the helper thread's executor, made on first use
os.register_at_fork(after_in_child=_CHECKER.clear)  # a forked child has no such thread


def _check_summary(a: np.ndarray, dtype: str, floating: bool) -> tuple[int, int | None]:
    """(CRC-32, 1/0 all finite or None for non-floating tensors) of an array about to be written."""
    return crc32(a), (int(count_nonfinite(a, dtype) == 0) if floating else None)


def _put_tensor(
    nc: NetCDFWriter,
    group: h5py.Group,
    name: str,
    t: torch.Tensor,
    dims: Sequence[str],
    attrs: Mapping[str, Any],
    compress: bool,
) -> dict[str, Any]:
    """Write tensor ``t`` as variable ``name`` of ``group``; its index entry.

    Its checksum and finiteness are computed in a helper thread while HDF5 writes the bytes (zlib and
    numpy's reductions release the GIL)."""
    a = to_numpy(t)
    entry: dict[str, Any] = {"name": name, "shape": list(a.shape), "dtype": dtype_name(t.dtype)}
    for k in ("kind", "module", "depth", "prunable", "role"):
        if k in attrs:
            entry[k] = attrs[k]
    if not _CHECKER:
        from concurrent.futures import ThreadPoolExecutor

        _CHECKER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="rganalysis-crc"))
    pending = _CHECKER[0].submit(_check_summary, a, entry["dtype"], t.is_floating_point())
    ds = nc.variable(
        group,
        name,
        dims,
        data=a,
        chunks=_row_chunks(a.shape, a.itemsize) if compress and a.size else None,
        compression=4 if compress else None,
        shuffle=compress and a.itemsize > 1,
        attrs=attrs,
    )
    crc, finite = pending.result()
    entry["crc32"] = crc
    extra: dict[str, Any] = {"crc32": crc}
    if finite is not None:
        entry["finite"] = extra["finite"] = finite
    set_attrs(ds, extra, new=True)
    return entry


def _extra_dims(t: torch.Tensor) -> list[str]:
    return [f"dim{j}_{s}" for j, s in enumerate(t.shape)]


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def _put_survival(
    nc: NetCDFWriter, mg: h5py.Group, name: str, s: np.ndarray, dims: Sequence[str], R: int, compress: bool
) -> dict[str, Any]:
    """The masks of ``name`` as survival rounds (uint8/16/32 by ``R``), deflated when that pays: when
    the entropy of the survival values is under a quarter of the bits stored per weight (deflate saves
    at least about half then; below that it costs more read time than it saves disk, as every read of
    a round's mask inflates the whole tensor: docs/benchmark-store-io.md), or when ``compress``."""
    s = np.ascontiguousarray(s.astype(survival_dtype(R), copy=False))
    hist = np.bincount(s.reshape(-1), minlength=R + 1)
    bits = 8 * s.itemsize
    deflate = s.size > 0 and (compress or _entropy_bits(hist) < 0.25 * bits)
    crc = crc32(s)
    nc.variable(
        mg,
        name,
        dims,
        data=s,
        chunks=_row_chunks(s.shape, s.itemsize) if deflate else None,
        compression=(4 if compress else 1) if deflate else None,
        shuffle=deflate and s.itemsize > 1,
        attrs={"torch_dtype": "bool", "encoding": SURVIVAL, "rounds": R, "crc32": crc},
    )
    return {"name": name, "encoding": SURVIVAL, "shape": list(s.shape), "stored": s.dtype.str, "crc32": crc}


def _put_per_round(
    nc: NetCDFWriter,
    mg: h5py.Group,
    pset: ParameterSet,
    name: str,
    dims: Sequence[str],
    R: int,
    compress: bool,
) -> dict[str, Any]:
    """The masks of ``name`` round by round (masks that are not nested): ``(round, *shape)`` 0/1 bytes,
    one round per chunk row block, deflated."""
    shape = pset.info[name].shape
    full = (R, *shape)
    v = nc.variable(
        mg,
        name,
        ("round", *dims),
        shape=full,
        dtype=np.uint8,
        chunks=_row_chunks(shape, 1, lead=(1,)) if shape else None,
        compression=4 if compress else 1,
        attrs={"torch_dtype": "bool", "encoding": PER_ROUND},
    )
    crc = 0
    for r in range(R):
        m = to_numpy(pset.mask(name, r).to(torch.uint8))
        v[r] = m
        crc = zlib.crc32(memoryview(np.ascontiguousarray(m)).cast("B"), crc) if m.size else crc
    set_attrs(v, {"crc32": crc})
    return {"name": name, "encoding": PER_ROUND, "shape": list(full), "stored": "|u1", "crc32": crc}


def save(
    pset: ParameterSet,
    path: str | os.PathLike,
    *,
    force: bool = False,
    compress: bool = False,
    progress: bool = True,
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write ``pset`` to ``path``, tensor by tensor, atomically (:class:`~rganalysis.store.AtomicOutput`:
    refused over an existing file unless ``force``, and over any of ``inputs``).  Returns the path.

    ``compress``: deflate every tensor (gzip level 4 with the shuffle filter); masks are deflated
    whenever that pays, with or without it.
    """
    path = Path(path)
    R = pset.n_rounds
    bar = None
    if progress:
        from tqdm.auto import tqdm

        steps = len(pset.names) * (1 + (R > 1)) + sum(len(pset.changed_names(r)) for r in range(1, R))
        bar = tqdm(total=steps, desc=f"writing {path.name}", unit="tensor", leave=False)
    try:
        with AtomicOutput(path, force, inputs) as tmp, NetCDFWriter(tmp, f"rganalysis={__version__},") as nc:
            _write(nc, pset, compress, bar)
    finally:
        if bar is not None:
            bar.close()
    return path


def _write(nc: NetCDFWriter, pset: ParameterSet, compress: bool, bar) -> None:
    R = pset.n_rounds
    f = nc.h5
    tick = bar.update if bar is not None else (lambda n=1: None)
    set_attrs(
        f,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "package_versions": json_text(_versions()),
            "flow": json_text(pset.flow_attrs),
            "rounds": R,
        },
    )
    set_attrs(f, {k: v if isinstance(v, str | int | float) else json_text(v) for k, v in pset.attrs.items()})

    params = nc.group("parameters")
    index = []
    for name in pset.names:
        i = pset.info[name]
        index.append(_put_tensor(nc, params, name, pset.tensor(name, 0), i.dims, _tensor_attrs(i), compress))
        tick()
    for key in pset.changed_extra_keys(0):
        t = pset.extra(key, 0)
        attrs = {"torch_dtype": dtype_name(t.dtype), "role": "extra"}
        index.append(_put_tensor(nc, params, key, t, _extra_dims(t), attrs, compress))
    set_attrs(params, {"order": json_text(pset.names), "tensors": json_text(index)})

    nested = True
    if pset.masked_names():
        mg = nc.group("masks")
        nc.coordinate(mg, "round", np.arange(R, dtype=np.int64))
        mindex = []
        for name in pset.masked_names():
            dims = pset.info[name].dims
            s = pset.survival_array(name)
            if s is not None:
                mindex.append(_put_survival(nc, mg, name, s, dims, R, compress))
            else:
                nested = False
                mindex.append(_put_per_round(nc, mg, pset, name, dims, R, compress))
            tick()
        set_attrs(mg, {"tensors": json_text(mindex)})

    if R > 1 and any(pset.changed_names(r) or pset.changed_extra_keys(r) for r in range(1, R)):
        nc.group("weights")
    for r in range(1, R):
        ws, es = pset.changed_names(r), pset.changed_extra_keys(r)
        if not ws and not es:
            continue
        g = nc.group(f"weights/round_{r:04d}")
        index = []
        for name in ws:
            i = pset.info[name]
            index.append(_put_tensor(nc, g, name, pset.tensor(name, r), i.dims, _tensor_attrs(i), compress))
            tick()
        for key in es:
            t = pset.extra(key, r)
            attrs = {"torch_dtype": dtype_name(t.dtype), "role": "extra"}
            index.append(_put_tensor(nc, g, key, t, _extra_dims(t), attrs, compress))
        set_attrs(g, {"tensors": json_text(index)})

    names = pset.rewind_names()
    if names:
        g = nc.group("rewind")
        index = []
        for name in names:
            t = pset.rewind_tensor(name)
            i = pset.info.get(name)
            dims = i.dims if i is not None and tuple(t.shape) == i.shape else _extra_dims(t)
            index.append(_put_tensor(nc, g, name, t, dims, {"torch_dtype": dtype_name(t.dtype)}, compress))
        set_attrs(
            g, {"layout": json_text([e.__dict__ for e in pset.rewind_layout]), "tensors": json_text(index)}
        )

    rg = nc.group("rounds")
    nc.coordinate(rg, "round", np.arange(R, dtype=np.int64))
    layers, dens = pset.density_table()
    nc.coordinate(rg, "layer", np.array(layers, dtype=object))
    sizes = np.array([pset.info[n].numel for n in layers], dtype=np.float64)
    glob = (dens * sizes).sum(axis=1) / sizes.sum() if len(layers) else np.ones(R)
    tables = {"density": (("round", "layer"), dens), "global_density": (("round",), glob)}
    for mname, vals in pset.metrics.items():
        tables[mname] = (("round",), np.asarray(vals, dtype=np.float64))
    for vname, (dims, a) in tables.items():
        a = np.ascontiguousarray(a, dtype=np.float64)
        nc.variable(rg, vname, dims, data=a, attrs={"crc32": crc32(a)})
    set_attrs(
        rg,
        {
            "layouts": json_text([[e.__dict__ for e in lay] for lay in pset.layouts]),
            "metrics": json_text(list(pset.metrics)),
        },
    )
    set_attrs(f, {"masks_nested": int(nested)})
    set_attrs(f, {ATTRS_CRC_ATTR: json_text(text_attr_crcs(f))})
    nc.attach_scales()
    f.flush()
    set_attrs(f, {COMPLETE_ATTR: 1})  # last: a store without it is an interrupted write


# ====================================================================== reading
def load(path: str | os.PathLike) -> ParameterSet:
    """Open a store lazily: tensors are read from disk when asked for, each checked on its first read.

    The structure is checked here (:func:`rganalysis.store.index.read_index`); values on first read
    (:class:`rganalysis.store.reader.StoreReader`).  Named errors: FileNotFoundError,
    :class:`~rganalysis.errors.StoreFormatError` and its subclasses.
    """
    from rganalysis.store.reader import StoreReader

    reader = StoreReader(path)
    try:
        return _parameter_set(reader)
    except BaseException:
        reader.close()
        raise


def _ref(e) -> DiskRef:
    return DiskRef(e.group, e.var, e.dtype, entry=e)


def _parameter_set(reader) -> ParameterSet:
    ix = reader.index
    R = ix.n_rounds
    info = {
        n: TensorInfo(n, e.shape, torch_dtype(e.dtype), e.kind, e.module, e.depth, e.prunable, e.dims)
        for n, e in ix.tensors.items()
    }
    weights = {0: {n: _ref(e) for n, e in ix.tensors.items()}}
    for r, es in sorted(ix.weights.items()):
        weights[r] = {n: _ref(es[n]) for n in ix.tensors if n in es}
    extras = {r: {k: _ref(e) for k, e in es.items()} for r, es in ix.extras.items()}
    masks = {
        n: [DiskRef("masks", n, "bool", r, encoding=ix.masks[n].encoding) for r in range(R)]
        for n in ix.tensors
        if n in ix.masks
    }
    rewind = None if ix.rewind is None else {n: _ref(e) for n, e in ix.rewind.items()}
    pset = ParameterSet(
        info,
        weights,
        masks,
        n_rounds=R,
        extras=extras,
        layouts=[[LayoutEntry(**e) for e in lay] for lay in ix.layouts],
        metrics=ix.metrics,
        rewind=rewind,
        rewind_layout=None if ix.rewind_layout is None else [LayoutEntry(**e) for e in ix.rewind_layout],
        attrs=ix.attrs,
        flow_attrs=ix.flow_attrs,
        reader=reader,
    )
    pset.masks_nested = ix.masks_nested
    pset.path = Path(reader.path)
    return pset
