"""Writing and opening stores: one HDF5 file (netCDF-4 layout) per model or flow, written tensor by
tensor and atomically.  Format: docs/store-format.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from rganalysis import __version__
from rganalysis.errors import (
    StoreFormatError,
)
from rganalysis.store.layers import dim_names
from rganalysis.store.output import AtomicOutput
from rganalysis.store.parameter_set import DiskRef, LayoutEntry, ParameterSet, TensorInfo, json_text
from rganalysis.store.tensors import dtype_name, stored_dtype, to_numpy, torch_dtype

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "save"]


FORMAT = "rganalysis-store"


FORMAT_VERSION = 1


# ====================================================================== writing
def _versions() -> dict[str, str]:
    import sys
    from importlib import metadata

    out = {"python": sys.version.split()[0], "rganalysis": __version__}
    for pkg in ("torch", "numpy", "h5py", "h5netcdf", "xarray", "torchvision", "transformers", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _put(
    group,
    name: str,
    t: torch.Tensor,
    dims: Sequence[str],
    attrs: Mapping[str, Any],
    compress: bool,
    lead: tuple[str, int] | None = None,
):
    """Create variable ``name`` in ``group`` (h5netcdf) from tensor ``t``."""
    all_dims = ((lead[0],) if lead else ()) + tuple(dims)
    shape = ((lead[1],) if lead else ()) + tuple(t.shape)
    for d, s in zip(all_dims, shape, strict=True):
        if d not in group.dimensions:
            group.dimensions[d] = s
    kw: dict[str, Any] = {}
    if compress and t.numel() > 0 and t.dim() > 0:
        kw.update(compression="gzip", compression_opts=4, shuffle=True)
    if lead and t.dim() > 0:
        kw["chunks"] = (1, *t.shape)
    v = group.create_variable(name, all_dims, dtype=stored_dtype(t.dtype), **kw)
    for k, a in attrs.items():
        v.attrs[k] = a
    return v


def _tensor_attrs(i: TensorInfo, role: str = "model") -> dict[str, Any]:
    return {
        "kind": i.kind,
        "module": i.module,
        "depth": i.depth,
        "prunable": int(i.prunable),
        "torch_dtype": dtype_name(i.dtype),
        "role": role,
    }


def save(
    pset: ParameterSet,
    path: str | os.PathLike,
    *,
    force: bool = False,
    compress: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``pset`` to ``path``, tensor by tensor, atomically.  Returns the path."""
    import h5netcdf
    from tqdm.auto import tqdm

    path = Path(path)
    R = pset.n_rounds
    steps = len(pset.names) * (1 + (R > 1)) + sum(len(pset.changed_names(r)) for r in range(1, R))
    with (
        AtomicOutput(path, force) as tmp,
        h5netcdf.File(tmp, "w") as f,
        tqdm(
            total=steps, desc=f"writing {path.name}", unit="tensor", disable=not progress, leave=False
        ) as bar,
    ):
        f.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "package_versions": json_text(_versions()),
                "flow": json_text(pset.flow_attrs),
                "rounds": R,
            }
        )
        for k, v in pset.attrs.items():
            f.attrs[k] = v if isinstance(v, (str, int, float)) else json_text(v)

        params = f.create_group("parameters")
        params.attrs["order"] = json_text(pset.names)
        for name in pset.names:
            i = pset.info[name]
            v = _put(params, name, pset.tensor(name, 0), i.dims, _tensor_attrs(i), compress)
            v[...] = to_numpy(pset.tensor(name, 0))
            bar.update()
        for key in pset.changed_extra_keys(0):
            t = pset.extra(key, 0)
            v = _put(
                params,
                key,
                t,
                [f"dim{j}_{s}" for j, s in enumerate(t.shape)],
                {"torch_dtype": dtype_name(t.dtype), "role": "extra"},
                compress,
            )
            v[...] = to_numpy(t)

        nested = True
        if pset.masked_names():
            mg = f.create_group("masks")
            mg.dimensions["round"] = R
            mg.create_variable("round", ("round",), dtype="i8")[...] = np.arange(R)
            for name in pset.masked_names():
                i = pset.info[name]
                v = _put(
                    mg,
                    name,
                    torch.ones((), dtype=torch.bool).expand(i.shape),
                    i.dims,
                    {"torch_dtype": "bool"},
                    compress,
                    lead=("round", R),
                )
                prev = None
                for r in range(R):
                    m = pset.mask(name, r)
                    v[r] = to_numpy(m)
                    if nested and prev is not None and bool((m & ~prev).any()):
                        nested = False  # recorded so that readers need not re-read every mask
                    prev = m
                bar.update()

        for r in range(1, R):
            ws, es = pset.changed_names(r), pset.changed_extra_keys(r)
            if not ws and not es:
                continue
            g = f.create_group(f"weights/round_{r:04d}")
            for name in ws:
                t = pset.tensor(name, r)
                i = pset.info[name]
                _put(g, name, t, i.dims, _tensor_attrs(i), compress)[...] = to_numpy(t)
                bar.update()
            for key in es:
                t = pset.extra(key, r)
                _put(
                    g,
                    key,
                    t,
                    [f"dim{j}_{s}" for j, s in enumerate(t.shape)],
                    {"torch_dtype": dtype_name(t.dtype), "role": "extra"},
                    compress,
                )[...] = to_numpy(t)

        rewind = pset.rewind_state()
        if rewind is not None:
            g = f.create_group("rewind")
            g.attrs["layout"] = json_text([e.__dict__ for e in pset.rewind_layout])
            for name, t in rewind.items():
                i = pset.info.get(name)
                dims = (
                    i.dims
                    if i is not None and tuple(t.shape) == i.shape
                    else [f"dim{j}_{s}" for j, s in enumerate(t.shape)]
                )
                _put(g, name, t, dims, {"torch_dtype": dtype_name(t.dtype)}, compress)[...] = to_numpy(t)

        rg = f.create_group("rounds")
        rg.dimensions["round"] = R
        rg.create_variable("round", ("round",), dtype="i8")[...] = np.arange(R)
        dens = pset.densities()
        rg.dimensions["layer"] = dens.sizes["layer"]
        lv = rg.create_variable("layer", ("layer",), dtype=h5py.string_dtype())
        lv[...] = np.array(dens.layer.values, dtype=object)
        rg.create_variable("density", ("round", "layer"), dtype="f8")[...] = dens.values
        rg.create_variable("global_density", ("round",), dtype="f8")[...] = pset.global_density().values
        for mname, vals in pset.metrics.items():
            rg.create_variable(mname, ("round",), dtype="f8")[...] = np.asarray(vals, dtype=np.float64)
        rg.attrs["layouts"] = json_text([[e.__dict__ for e in lay] for lay in pset.layouts])
        rg.attrs["metrics"] = json_text(list(pset.metrics))
        f.attrs["masks_nested"] = int(nested)
    return path


# ====================================================================== reading
def load(path: str | os.PathLike) -> ParameterSet:
    """Open a store lazily: tensors are read from disk when asked for."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StoreFormatError(f"{path} is not a readable HDF5 file: {e}") from None

    def s(x):
        if isinstance(x, np.ndarray) and x.size == 1:
            x = x.reshape(()).item()
        return x.decode() if isinstance(x, bytes) else x

    if s(f.attrs.get("format")) != FORMAT:
        f.close()
        raise StoreFormatError(f"{path} is not an rganalysis store (no format={FORMAT!r} attribute)")
    if int(s(f.attrs.get("format_version", -1))) > FORMAT_VERSION:
        f.close()
        raise StoreFormatError(f"{path} has a format version newer than this rganalysis")

    R = int(s(f.attrs["rounds"]))
    info: dict[str, TensorInfo] = {}
    weights: dict[int, dict] = {0: {}}
    extras: dict[int, dict] = {0: {}}
    params = f["parameters"]
    for name, ds in params.items():
        a = ds.attrs
        if name in ("round",) or not isinstance(ds, h5py.Dataset) or "torch_dtype" not in a:
            continue
        dt = s(a["torch_dtype"])
        if s(a.get("role", "model")) == "extra":
            extras[0][name] = DiskRef("parameters", name, dt)
            continue
        info[name] = TensorInfo(
            name=name,
            shape=tuple(ds.shape),
            dtype=torch_dtype(dt),
            kind=s(a["kind"]),
            module=s(a["module"]),
            depth=int(s(a["depth"])),
            prunable=bool(s(a["prunable"])),
            dims=tuple(dim_names(s(a["kind"]), tuple(ds.shape))),
        )
        weights[0][name] = DiskRef("parameters", name, dt)
    # h5py lists variables alphabetically; the stored order restores the model's.
    info = {n: info[n] for n in json.loads(s(params.attrs["order"]))}
    masks: dict[str, list] = {}
    if "masks" in f:
        for name in f["masks"]:
            if name == "round":
                continue
            masks[name] = [DiskRef("masks", name, "bool", r) for r in range(R)]
    if "weights" in f:
        for gname, g in f["weights"].items():
            r = int(gname.split("_")[1])
            for name, ds in g.items():
                if "torch_dtype" not in ds.attrs:  # a netCDF dimension scale, not a tensor
                    continue
                dt = s(ds.attrs["torch_dtype"])
                target = extras if s(ds.attrs.get("role", "model")) == "extra" else weights
                target.setdefault(r, {})[name] = DiskRef(f"weights/{gname}", name, dt)
    rewind = rewind_layout = None
    if "rewind" in f:
        rewind = {
            n: DiskRef("rewind", n, s(ds.attrs["torch_dtype"]))
            for n, ds in f["rewind"].items()
            if "torch_dtype" in ds.attrs
        }
        rewind_layout = [LayoutEntry(**e) for e in json.loads(s(f["rewind"].attrs["layout"]))]
    rg = f["rounds"]
    layouts = [[LayoutEntry(**e) for e in lay] for lay in json.loads(s(rg.attrs["layouts"]))]
    metrics = {m: rg[m][()] for m in json.loads(s(rg.attrs["metrics"]))}
    skip = {"format", "format_version", "rounds", "flow", "created", "package_versions", "masks_nested"}
    attrs = {k: s(v) for k, v in f.attrs.items() if k not in skip and not k.startswith("_")}
    attrs["created"] = s(f.attrs.get("created"))
    attrs["package_versions"] = s(f.attrs.get("package_versions"))
    pset = ParameterSet(
        info,
        weights,
        masks,
        n_rounds=R,
        extras=extras,
        layouts=layouts,
        metrics=metrics,
        rewind=rewind,
        rewind_layout=rewind_layout,
        attrs=attrs,
        flow_attrs=json.loads(s(f.attrs["flow"])),
        densities=np.asarray(rg["density"][()]),
        density_layers=[s(x) for x in rg["layer"][()]],
        file=f,
    )
    if "masks_nested" in f.attrs:
        pset.masks_nested = bool(s(f.attrs["masks_nested"]))
    pset.path = path
    return pset
