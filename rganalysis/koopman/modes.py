"""Exact DMD modes written back into the flow file, one group per mode (``/koopman/mode_NNN``),
atomically (partial groups moved into place at the end).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rganalysis.errors import (
    InvalidParameterError,
    StoreInUseError,
)
from rganalysis.koopman.dmd import KoopmanDMD
from rganalysis.koopman.snapshots import snapshot_provider
from rganalysis.koopman.summary import koopman_json
from rganalysis.store.hdf5 import load
from rganalysis.store.output import open_for_update

__all__ = ["mode_groups", "MODES_GROUP", "StoreInUseError", "write_modes"]


MODES_GROUP = "koopman"


_PARTIAL = "partial_"


_MODE = "mode_"


# ------------------------------------------------------------------------------------------------
# modes into the store
# ------------------------------------------------------------------------------------------------
def mode_groups(path: str | os.PathLike) -> list[str]:
    """Paths (``koopman/mode_000``, ...) of the mode groups in a flow file, sorted."""
    import h5py

    with h5py.File(path, "r") as f:
        if MODES_GROUP not in f:
            return []
        return sorted(f"{MODES_GROUP}/{k}" for k in f[MODES_GROUP] if k.startswith(_MODE))


def _remove_partial(path: Path) -> list[str]:
    """Delete leftover ``koopman/partial_*`` groups (from an interrupted write); their names."""
    with open_for_update(path) as f:
        if MODES_GROUP not in f:
            return []
        g = f[MODES_GROUP]
        stale = [k for k in g if k.startswith(_PARTIAL)]
        for k in stale:
            del g[k]
        return stale


def _mode_attrs(dmd: KoopmanDMD, i: int, pos: int) -> dict[str, Any]:
    lam = complex(dmd.eigenvalues_[i])
    amp = complex(dmd.amplitudes_[i])
    out: dict[str, Any] = {
        "index": int(pos),
        "eigenvalue_index": int(i),
        "eigenvalue_re": lam.real,
        "eigenvalue_im": lam.imag,
        "eigenvalue_abs": abs(lam),
        "class": str(dmd.classes_[i]),
        "amplitude_re": amp.real,
        "amplitude_im": amp.imag,
        "complex": int(lam.imag != 0.0),
        "subset": str(getattr(dmd, "subset_", "")),
        "scale": str(getattr(dmd, "scale_", "none")),
        "units": "parameters (per-layer scales undone)",
    }
    if dmd.exponents_ is not None and math.isfinite(float(dmd.exponents_[i])):
        out["exponent"] = float(dmd.exponents_[i])
    return out


def write_modes(
    path: str | os.PathLike,
    dmd: KoopmanDMD,
    *,
    limit: int | None = None,
    indices: Sequence[int] | None = None,
    dtype: str = "float32",
    block_elements: int | None = None,
    progress: bool = False,
) -> list[str]:
    """Write exact DMD modes into the flow file, one netCDF group per mode (a second streaming pass).

    Mode ``j`` (the ``j``-th eigenvalue by descending ``|lambda|``) goes to group
    ``koopman/mode_{j:03d}``: one variable per tensor under the model's name, shape and dimension
    names, holding the real part, plus ``NAME.imag`` for the imaginary part when the eigenvalue is
    complex (a real eigenvalue has a real mode).  Values are in parameter units: a per-layer scale
    used by the fit is undone.  Group attributes: ``eigenvalue_re``, ``eigenvalue_im``,
    ``eigenvalue_abs``, ``class``, ``amplitude_re``, ``amplitude_im``, ``exponent`` (when known),
    ``index``, ``subset``, ``scale``.  ``amplitude * mode`` is that mode's component of ``x_0``
    (PyDMD's normalisation).

    Safety: groups are written as ``koopman/partial_mode_*`` and moved into place only when every
    block is written; earlier ``mode_*`` groups (of an earlier fit) are deleted just before the
    move, leftover ``partial_*`` groups first.  A failure leaves the earlier modes untouched.

    Parameters
    ----------
    path : the flow store the fit read (it is opened for writing: close any ParameterSet on it)
    dmd : a KoopmanDMD fitted on this flow store (:meth:`KoopmanDMD.fit` given the store)
    limit : write only the ``limit`` leading modes
    indices : or exactly these eigenvalue positions
    dtype : "float32" (default) or "float64" for the stored parts

    Returns
    -------
    list of str
        The group paths written, e.g. ``["koopman/mode_000", "koopman/mode_001"]``.
    """
    import h5netcdf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    for attr in ("eigenvalues_", "subset_", "scale_", "tensor_names_"):
        if not hasattr(dmd, attr):
            raise InvalidParameterError(
                "write_modes needs a KoopmanDMD fitted on a flow store (KoopmanDMD().fit(flow))"
            )
    if dtype not in ("float32", "float64"):
        raise InvalidParameterError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    r = int(dmd.rank_)
    if indices is not None and limit is not None:
        raise InvalidParameterError("give either limit or indices, not both")
    if indices is not None:
        idx = [int(i) for i in indices]
        if any(not 0 <= i < r for i in idx) or len(set(idx)) != len(idx):
            raise InvalidParameterError(f"mode indices must be distinct and in [0, {r}), got {idx}")
    else:
        if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
            raise InvalidParameterError(f"limit must be a positive integer, got {limit!r}")
        idx = list(range(r if limit is None else min(int(limit), r)))
    if not idx:
        return []
    np_dtype = np.float32 if dtype == "float32" else np.float64
    tdtype = torch.complex64 if dtype == "float32" else torch.complex128

    _remove_partial(path)
    partial = [f"{_PARTIAL}{_MODE}{j:03d}" for j in range(len(idx))]
    ok = False
    try:
        with h5netcdf.File(path, "r+") as nf:
            with load(path) as pset:
                snaps = snapshot_provider(
                    pset, dmd.subset_, dmd.scale_, block_elements=block_elements, progress=progress
                )
                if snaps.names != list(dmd.tensor_names_) or pset.n_rounds != dmd.n_snapshots_:
                    raise InvalidParameterError(
                        f"{path} is not the flow this fit was made on (tensors or number of rounds differ)"
                    )
                root = nf[MODES_GROUP] if MODES_GROUP in nf.groups else nf.create_group(MODES_GROUP)
                groups, variables = [], []
                for pos, (name_g, i) in enumerate(zip(partial, idx, strict=True)):
                    g = root.create_group(name_g)
                    for k, v in _mode_attrs(dmd, i, pos).items():
                        g.attrs[k] = v
                    is_complex = dmd.eigenvalues_[i].imag != 0.0
                    vs: dict[str, tuple[Any, Any]] = {}
                    for name in snaps.names:
                        info = pset.info[name]
                        for d, s in zip(info.dims, info.shape, strict=True):
                            if d not in g.dimensions:
                                g.dimensions[d] = s
                        re_v = g.create_variable(name, info.dims, dtype=np_dtype)
                        im_v = (
                            g.create_variable(f"{name}.imag", info.dims, dtype=np_dtype)
                            if is_complex
                            else None
                        )
                        vs[name] = (re_v, im_v)
                    groups.append(g)
                    variables.append(vs)
                specs = iter(snaps.specs)
                for phi in dmd.modes(snaps.float64(), indices=idx, dtype=tdtype):
                    spec = next(specs)
                    s = snaps.scale_of(spec.name)
                    phi = phi.cpu()
                    if s != 1.0:
                        phi = phi * s
                    re = phi.real.numpy()
                    im = phi.imag.numpy()
                    full = not spec.shape or (
                        spec.row_start == 0 and spec.row_stop == pset.info[spec.name].shape[0]
                    )
                    sel = (...,) if full else (slice(spec.row_start, spec.row_stop),)
                    for j in range(len(idx)):
                        re_v, im_v = variables[j][spec.name]
                        re_v[sel] = re[:, j].reshape(spec.shape).astype(np_dtype, copy=False)
                        if im_v is not None:
                            im_v[sel] = im[:, j].reshape(spec.shape).astype(np_dtype, copy=False)
        ok = True
    finally:
        if not ok:
            _remove_partial(path)
    final = [f"{_MODE}{j:03d}" for j in range(len(idx))]
    with open_for_update(path) as f:
        g = f[MODES_GROUP]
        for k in [k for k in g if k.startswith(_MODE)]:
            del g[k]
        for a, b in zip(partial, final, strict=True):
            g.move(a, b)
        g.attrs["modes"] = json.dumps(final)
        g.attrs["summary"] = json.dumps(
            koopman_json(dmd, modes=[f"{MODES_GROUP}/{b}" for b in final]), allow_nan=False
        )
    written = [f"{MODES_GROUP}/{b}" for b in final]
    dmd.modes_written_ = written
    return written
