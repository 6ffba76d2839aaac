"""Writing HDF5 in the netCDF-4 layout with h5py directly: groups, shared dimensions (HDF5 dimension
scales), variables with their attributes, coordinate variables.  What plain ``xarray.open_dataset(...,
engine="h5netcdf", group=...)`` and netCDF-C read; written without h5netcdf's per-variable overhead
(docs/store-format.md says why).  Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5ds, h5s, h5t

__all__ = ["NOT_A_VARIABLE", "NetCDFWriter", "set_attrs"]

#: the NAME of a dimension scale that is not also a coordinate variable (netCDF-C's convention)
NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable."

_STR = h5py.string_dtype()
_TID_STR = h5t.py_create(_STR, logical=True)
_TID_I8 = h5t.py_create(np.dtype("<i8"))
_TID_F8 = h5t.py_create(np.dtype("<f8"))


_SCALAR = h5s.create(h5s.SCALAR)


def set_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any], *, new: bool = False) -> None:
    """Write attributes fast (HDF5's attribute API, not h5py's high-level manager): ``str`` as a
    variable-length UTF-8 scalar, ``bool``/``int`` as an int64 scalar, ``float`` as a float64 scalar,
    anything else through h5py.  Replaces existing attributes of the same name (``new``: the object
    was just created and has none, so nothing is looked up)."""
    scalar = _SCALAR
    oid = obj.id
    for name, val in attrs.items():
        key = name.encode()
        if not new and h5a.exists(oid, key):
            h5a.delete(oid, key)
        if isinstance(val, str):
            h5a.create(oid, key, _TID_STR, scalar).write(np.array(val, dtype=_STR))
        elif isinstance(val, bool | int | np.integer):
            h5a.create(oid, key, _TID_I8, scalar).write(np.array(int(val), dtype="<i8"))
        elif isinstance(val, float | np.floating):
            h5a.create(oid, key, _TID_F8, scalar).write(np.array(float(val), dtype="<f8"))
        else:
            obj.attrs[name] = val


class NetCDFWriter:
    """A new HDF5 file in the netCDF-4 layout.

    Groups and the root track creation order (as netCDF-C makes them), so variables list in the
    order written.  A dimension is a dataset of its group (``>f4``, never written) marked as an HDF5
    dimension scale named :data:`NOT_A_VARIABLE` + its length, with ``_Netcdf4Dimid``; a coordinate
    variable is its own dimension scale.  Scales are attached to the variables when the file is closed
    (``DIMENSION_LIST`` on each variable, ``REFERENCE_LIST`` on each scale).
    """

    def __init__(self, path: str | os.PathLike, properties: str = ""):
        self.h5 = h5py.File(path, "w", libver=("v108", "v108"), track_order=True)
        self._next_dimid = 0
        self._scales: dict[tuple[str, str], h5py.Dataset] = {}
        self._attach: list[tuple[h5py.Dataset, tuple[h5py.Dataset, ...]]] = []  # variable, its scales
        self._dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        self._dcpl.set_obj_track_times(False)
        props = f"version=2,{properties}hdf5={h5py.version.hdf5_version},h5py={h5py.__version__}"
        self.h5.attrs["_NCProperties"] = np.array(
            props, dtype=h5py.string_dtype(encoding="ascii", length=len(props))
        )

    def __enter__(self) -> NetCDFWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.attach_scales()
        self.h5.close()

    # ------------------------------------------------------------------------------------ structure
    def group(self, path: str) -> h5py.Group:
        """The group at ``path`` (``"weights/round_0001"``), created with its parents if needed."""
        g = self.h5
        for part in path.strip("/").split("/"):
            g = g[part] if part in g else g.create_group(part, track_order=True)
        return g

    def _dimid(self, ds: h5py.Dataset) -> None:
        ds.attrs.create("_Netcdf4Dimid", np.int32(self._next_dimid))
        self._next_dimid += 1

    def dimension(self, group: h5py.Group, name: str, size: int) -> h5py.Dataset:
        """The dimension ``name`` of ``group`` (created on first use)."""
        key = (group.name, name)
        ds = self._scales.get(key)
        if ds is None:
            ds = group.create_dataset(name, shape=(size,), dtype=">f4", track_times=False)
            ds.make_scale(NOT_A_VARIABLE + f"{size:10}".encode())
            self._dimid(ds)
            self._scales[key] = ds
        elif ds.shape != (size,):
            raise ValueError(f"dimension {name!r} of {group.name} has length {ds.shape[0]}, not {size}")
        return ds

    def coordinate(
        self, group: h5py.Group, name: str, values: np.ndarray, attrs: Mapping[str, Any] = ()
    ) -> h5py.Dataset:
        """A 1-d coordinate variable ``name`` (its own dimension of the same name) holding ``values``."""
        values = np.asarray(values)
        dtype = _STR if values.dtype.kind in "OUS" else values.dtype
        ds = group.create_dataset(
            name, data=values.astype(dtype) if dtype is _STR else values, dtype=dtype, track_times=False
        )
        ds.make_scale(name)
        self._dimid(ds)
        set_attrs(ds, dict(attrs))
        self._scales[(group.name, name)] = ds
        return ds

    def variable(
        self,
        group: h5py.Group,
        name: str,
        dims: Sequence[str],
        *,
        data: np.ndarray | None = None,
        shape: Sequence[int] | None = None,
        dtype: Any = None,
        chunks: Sequence[int] | None = None,
        compression: int | None = None,
        shuffle: bool = False,
        attrs: Mapping[str, Any] = (),
    ) -> h5py.Dataset:
        """A variable of ``group`` over the dimensions ``dims`` (created with the lengths of its shape),
        written from ``data`` or left to be filled.  ``compression``: a gzip level (needs ``chunks``)."""
        shape = tuple(data.shape) if data is not None else tuple(shape or ())
        if len(dims) != len(shape):
            raise ValueError(f"{name}: {len(dims)} dimensions for shape {shape}")
        gname = group.name  # an HDF5 call each time
        for d, s in zip(dims, shape, strict=True):
            if (gname, d) not in self._scales:
                self.dimension(group, d, s)
            elif self._scales[(gname, d)].shape != (s,):
                raise ValueError(f"{name}: dimension {d!r} has another length than {s}")
        if chunks is None and data is not None and data.dtype.kind in "biuf" and data.flags.c_contiguous:
            ds = self._contiguous(group, name, data)
        else:
            kw: dict[str, Any] = {"track_times": False}
            if chunks is not None and shape and all(shape):
                kw["chunks"] = tuple(chunks)
                if compression is not None:
                    kw.update(compression="gzip", compression_opts=int(compression), shuffle=shuffle)
            dt = dtype if dtype is not None else data.dtype
            ds = group.create_dataset(name, shape=shape, dtype=dt, data=data, **kw)
        set_attrs(ds, dict(attrs), new=True)
        if dims:
            self._attach.append((ds, tuple(self._scales[(gname, d)] for d in dims)))
        return ds

    def _contiguous(self, group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
        """A contiguous dataset written from ``data`` through HDF5's API (h5py's ``create_dataset`` costs
        a quarter of a millisecond of Python per variable)."""
        space = h5s.create_simple(data.shape) if data.ndim else h5s.create(h5s.SCALAR)
        dsid = h5py.h5d.create(group.id, name.encode(), h5t.py_create(data.dtype), space, dcpl=self._dcpl)
        if data.size:
            dsid.write(h5s.ALL, h5s.ALL, data)
        return h5py.Dataset(dsid)

    def attach_scales(self) -> None:
        """Attach every variable's dimension scales (called on close)."""
        for ds, scales in self._attach:
            for axis, scale in enumerate(scales):
                h5ds.attach_scale(ds.id, scale.id, axis)  # what ds.dims[axis].attach_scale calls
        self._attach.clear()
