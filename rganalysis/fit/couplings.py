"""Couplings: the numbers that describe a pruned network at one IMP round, as registered coupling sets
(:func:`register_coupling_set`), and the resampling onto normalised depth that puts networks of
different depth into one space.  The built-in sets and the naming of couplings: docs/design.md.

Two kinds of built-in sets.  *Rescaled* sets (:data:`RESCALED_COUPLING_SETS`: ``density_rel``,
``unit_rel``, ``magnitude_rel``) measure each layer relative to the current state of the whole network
(densities relative to the global density, unit degrees relative to their layer's density, magnitudes
relative to the median surviving magnitude): they are the RG's rescaling step, so the common decay of
a flow towards the empty network is divided out and a flow can approach a fixed point at finite
couplings.  They are the default of ``fit``, ``report``, ``compare`` and the demo.  *Raw* sets
(:data:`RAW_COUPLING_SETS`: ``density_raw``, ``unit_raw``, ``magnitude_raw``, ``spectral_raw``) are the
absolute numbers; their old names ``density``, ``unit``, ``magnitude``, ``spectral`` keep working and
mean the same raw sets.  ``global_density`` is the scale itself (one whole-network coupling).  The
data-free flow in these coordinates: docs/theory.md, section 9.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from rganalysis.errors import InvalidParameterError
from rganalysis.store.state import State

__all__ = [
    "COUPLING_DOMAINS",
    "RAW_COUPLING_SETS",
    "RESCALED_COUPLING_SETS",
    "NETWORK_COUPLING_SETS",
    "relative_densities",
    "relative_reference_layer",
    "UNIT_QUANTILES",
    "coupling_coords",
    "coupling_domain",
    "available_coupling_sets",
    "compute_couplings",
    "coupling_name",
    "coupling_values",
    "CouplingFunction",
    "flow_couplings",
    "get_coupling_set",
    "register_coupling_set",
    "resample_depth",
    "unregister_coupling_set",
]

#: A coupling set: ``state -> {layer: value}`` or ``state -> {layer: {statistic: value}}``.
#: Values may be Python numbers or 0-d tensors.  A key that is not a layer of the state is kept,
#: with depth NaN (a coupling of the whole network).
CouplingFunction = Callable[[State], Mapping[str, Any]]

_REGISTRY: dict[str, CouplingFunction] = {}


def register_coupling_set(
    name: str, *, overwrite: bool = False
) -> Callable[[CouplingFunction], CouplingFunction]:
    """Decorator registering a coupling set under ``name``.

    >>> @register_coupling_set("l1")
    ... def l1(state):
    ...     return {k: float(w.abs().sum()) for k, w in state.masked()}

    Raises :class:`InvalidParameterError` if the name is taken (unless ``overwrite``) or malformed.
    """
    if not isinstance(name, str) or not name or any(c in name for c in "[].\n"):
        raise InvalidParameterError(f"coupling set name must be a non-empty string without '[].': {name!r}")

    def deco(fn: CouplingFunction) -> CouplingFunction:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not fn:
            raise InvalidParameterError(f"coupling set {name!r} is already registered (pass overwrite=True)")
        _REGISTRY[name] = fn
        return fn

    return deco


def unregister_coupling_set(name: str) -> None:
    """Remove a registered coupling set (no error if absent)."""
    _REGISTRY.pop(name, None)


def available_coupling_sets() -> list[str]:
    """Names of the registered coupling sets, in registration order."""
    return list(_REGISTRY)


def get_coupling_set(name: str) -> CouplingFunction:
    """The function registered under ``name``; :class:`InvalidParameterError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidParameterError(
            f"unknown coupling set {name!r}; available: {', '.join(available_coupling_sets())}"
        ) from None


def coupling_name(set_name: str, statistic: str, layer: str) -> str:
    """``"set[layer]"`` when the statistic is the set itself, else ``"set.statistic[layer]"``."""
    head = set_name if statistic == set_name else f"{set_name}.{statistic}"
    return f"{head}[{layer}]"


# --- built-in sets ---------------------------------------------------------------------------------
#: The raw (absolute) built-in sets; ``density``, ``unit``, ``magnitude`` and ``spectral`` are their old
#: names and give the same numbers (coupling names then carry the old set name).
RAW_COUPLING_SETS = ("density_raw", "unit_raw", "magnitude_raw", "spectral_raw")
#: The rescaled built-in sets: every layer measured relative to the whole network's current state.
RESCALED_COUPLING_SETS = ("density_rel", "unit_rel", "magnitude_rel")


def _register_as(*names: str) -> Callable[[CouplingFunction], CouplingFunction]:
    def deco(fn: CouplingFunction) -> CouplingFunction:
        for n in names:
            register_coupling_set(n)(fn)
        return fn

    return deco


@_register_as("density_raw", "density")
def _density(state: State) -> dict[str, float]:
    """Per-layer surviving fraction."""
    return state.densities()


def relative_reference_layer(sizes: Mapping[str, int]) -> str:
    """The layer ``density_rel`` leaves out: the one with the most weights (the first of equals).

    Relative densities ``x_l = rho_l / rho`` obey ``sum_l N_l x_l = sum_l N_l`` exactly, so one of them
    is fixed by the others; keeping all ``L`` would make every regression on them singular.
    ``sizes``: layer -> number of weights, in layer order.
    """
    if not sizes:
        raise InvalidParameterError("a state without layers has no couplings")
    order = list(sizes)
    return max(order, key=lambda k: (sizes[k], -order.index(k)))


def relative_densities(densities: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, float]:
    """``x_l = rho_l / rho`` (``rho`` the size-weighted global density) for every layer but
    :func:`relative_reference_layer`; NaN when the network is empty."""
    tot = float(sum(sizes.values()))
    rho = sum(float(densities[k]) * sizes[k] for k in sizes) / tot if tot else 0.0
    ref = relative_reference_layer(sizes)
    return {k: (float(densities[k]) / rho if rho > 0 else math.nan) for k in sizes if k != ref}


#: Sets that need every layer of a state at once (they cannot be computed tensor by tensor; the
#: streamed couplings build them from the per-layer densities).
NETWORK_COUPLING_SETS = ("density_rel", "global_density")


@register_coupling_set("density_rel")
def _density_rel(state: State) -> dict[str, float]:
    """Per-layer density relative to the global density, ``x_l = rho_l / rho`` (1: the layer is as dense
    as the network), for every layer but :func:`relative_reference_layer`; NaN for the empty network.
    Invariant under the rescaling ``rho_l -> c rho_l``: the global decay of the flow is divided out."""
    return relative_densities(state.densities(), state.sizes())


@register_coupling_set("global_density")
def _global_density(state: State) -> dict[str, float]:
    """The scale of the rescaled sets: the surviving fraction of the whole network (one whole-network
    coupling named ``global_density[network]``, depth NaN)."""
    return {"network": state.global_density()}


def _sorted_quantile(sorted_values: torch.Tensor, q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of an ascending 1-d tensor."""
    n = sorted_values.numel()
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a = float(sorted_values[lo])
    b = float(sorted_values[hi])
    return a + (b - a) * frac


_MAGNITUDE_STATS = ("mean", "std", "q25", "q50", "q75", "kurtosis")


@_register_as("magnitude_raw", "magnitude")
def _magnitude(state: State) -> dict[str, dict[str, float]]:
    """Per-layer statistics of the surviving weights (see module docstring)."""
    out: dict[str, dict[str, float]] = {}
    for name, w in state.weights.items():
        surv = w[state.masks[name]].to(torch.float64)
        if surv.numel() == 0:
            out[name] = {s: math.nan for s in _MAGNITUDE_STATS}
            continue
        mag = surv.abs()
        mean = float(mag.mean())
        std = float(mag.std(correction=0))
        centred = surv - surv.mean()
        m2 = float((centred**2).mean())
        m4 = float((centred**4).mean())
        kurt = m4 / m2**2 if m2 > 0 else math.nan
        srt = torch.sort(mag).values
        out[name] = {
            "mean": mean,
            "std": std,
            "q25": _sorted_quantile(srt, 0.25),
            "q50": _sorted_quantile(srt, 0.50),
            "q75": _sorted_quantile(srt, 0.75),
            "kurtosis": kurt,
        }
    return out


@register_coupling_set("magnitude_rel")
def _magnitude_rel(state: State) -> dict[str, dict[str, float]]:
    """``magnitude`` normalised by the layer's own survivors: std and quartiles of ``|w|`` divided by
    the mean surviving ``|w|`` (``std``, ``q25``, ``q50``, ``q75``; invariant under any per-layer weight
    scale) and the kurtosis as it is; NaN for an empty layer."""
    out: dict[str, dict[str, float]] = {}
    for layer, stats in _magnitude(state).items():
        mean = stats["mean"]
        scale = mean if mean > 0 else math.nan
        out[layer] = {k: (v if k == "kurtosis" else v / scale) for k, v in stats.items() if k != "mean"}
    return out


@_register_as("spectral_raw", "spectral")
def _spectral(state: State) -> dict[str, dict[str, float]]:
    """Per-layer top singular value and stable rank of the masked weight matrix."""
    out: dict[str, dict[str, float]] = {}
    for name, wm in state.masked():
        if wm.dim() < 2:
            continue
        mat = wm.reshape(wm.shape[0], -1)
        mat = mat.to(torch.float64 if mat.device.type == "cpu" else torch.float32)
        fro2 = float((mat * mat).sum())
        top = float(torch.linalg.matrix_norm(mat, ord=2)) if mat.numel() else 0.0
        out[name] = {"top_sv": top, "stable_rank": fro2 / top**2 if top > 0 else math.nan}
    return out


#: Quantiles of the per-layer distribution of unit degrees in the ``unit`` coupling set.
UNIT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _unit_stats(state: State, relative: bool) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, m in state.masks.items():
        if m.dim() < 2:
            continue
        mf = m.to(torch.float64)
        layer_density = float(mf.mean())
        stats: dict[str, float] = {}
        for side, dims in (("out", tuple(range(1, m.dim()))), ("in", (0, *range(2, m.dim())))):
            deg = mf.mean(dims)
            q = torch.quantile(deg, torch.tensor(UNIT_QUANTILES, dtype=torch.float64, device=deg.device))
            for qq, v in zip(UNIT_QUANTILES, q.tolist(), strict=True):
                if relative:
                    v = v / layer_density if layer_density > 0 else math.nan
                stats[f"{side}_q{round(qq * 100):02d}"] = v
            stats[f"{side}_dead"] = float((deg == 0).to(torch.float64).mean())
        out[name] = stats
    return out


@_register_as("unit_raw", "unit")
def _unit(state: State) -> dict[str, dict[str, float]]:
    """Per layer, the distribution of its units' degrees (the fraction of each unit's connections that
    survive), for output and input units: quantiles ``out_q10 .. out_q90``, ``in_q10 .. in_q90``
    (:data:`UNIT_QUANTILES`) and the fraction of dead units ``out_dead``, ``in_dead``.  These are
    invariant under permutations of the units and under a global weight scale; layers with fewer than
    two dimensions are skipped."""
    return _unit_stats(state, relative=False)


@register_coupling_set("unit_rel")
def _unit_rel(state: State) -> dict[str, dict[str, float]]:
    """``unit`` with the degree quantiles divided by their layer's density (the mean unit degree): 1 is
    a unit as connected as its layer's average; dead fractions as they are; NaN for an empty layer."""
    return _unit_stats(state, relative=True)


#: Where the couplings of each built-in set live: (low, high) per set, or per ``set.statistic``.  A
#: fixed point outside these bounds is an extrapolation of the fitted map, not a state IMP can reach.
COUPLING_DOMAINS: dict[str, tuple[float, float]] = {
    **{s: (0.0, 1.0) for s in ("density", "density_raw", "unit", "unit_raw", "global_density")},
    **{f"{s}.{side}_dead": (0.0, 1.0) for s in ("unit_rel",) for side in ("out", "in")},
    **{
        s: (0.0, math.inf) for s in ("magnitude", "magnitude_raw", "magnitude_rel", "density_rel", "unit_rel")
    },
    **{f"{s}.kurtosis": (1.0, math.inf) for s in ("magnitude", "magnitude_raw", "magnitude_rel")},
    **{s: (0.0, math.inf) for s in ("spectral", "spectral_raw")},
    **{f"{s}.stable_rank": (1.0, math.inf) for s in ("spectral", "spectral_raw")},
}


def coupling_domain(name: str) -> tuple[float, float]:
    """The (low, high) bounds of a coupling named ``set[...]`` or ``set.statistic[...]`` (also after
    :func:`resample_depth`); ``(-inf, inf)`` for a set without declared bounds."""
    head = name.split("[", 1)[0]
    return COUPLING_DOMAINS.get(head, COUPLING_DOMAINS.get(head.split(".", 1)[0], (-math.inf, math.inf)))


# --- computing ---------------------------------------------------------------------------------------
def normalise_sets(sets: str | Sequence[str]) -> list[str]:
    names = [sets] if isinstance(sets, str) else list(sets)
    if not names:
        raise InvalidParameterError("at least one coupling set is needed")
    for n in names:
        get_coupling_set(n)
    return names


def _coupling_table(
    state: State, names: Sequence[str]
) -> tuple[list[tuple[str, str, str, str, float]], np.ndarray]:
    """Rows ``(coupling, layer, set, statistic, depth)`` and float64 values of :func:`compute_couplings`."""
    layer_order = {k: i for i, k in enumerate(state.names)}
    rows: list[tuple[str, str, str, str, float]] = []
    values: list[float] = []
    for set_name in names:
        raw = get_coupling_set(set_name)(state)
        per_stat: dict[str, list[tuple[str, float]]] = {}
        for layer, val in raw.items():
            items = list(val.items()) if isinstance(val, Mapping) else [(set_name, val)]
            for stat, v in items:
                per_stat.setdefault(str(stat), []).append((str(layer), float(v)))
        for stat, entries in per_stat.items():
            entries.sort(key=lambda e: layer_order.get(e[0], len(layer_order)))
            for layer, v in entries:
                depth = float(state.depth[layer]) if layer in state.depth else math.nan
                rows.append((coupling_name(set_name, stat, layer), layer, set_name, stat, depth))
                values.append(v)
    return rows, np.asarray(values, dtype=np.float64)


def coupling_values(state: State, sets: str | Sequence[str] = ("density",)) -> np.ndarray:
    """The values of :func:`compute_couplings` as a plain (n_couplings,) float64 array (no xarray)."""
    return _coupling_table(state, normalise_sets(sets))[1]


def compute_couplings(state: State, sets: str | Sequence[str] = ("density",)) -> xr.DataArray:
    """Couplings of one state.

    Parameters
    ----------
    state : State
        The network at one round (any device).
    sets : str or sequence of str
        Registered coupling-set names, e.g. ``("density", "magnitude")``.

    Returns
    -------
    xarray.DataArray, shape (n_couplings,), float64
        Dimension ``coupling``; coordinates ``coupling`` (name), ``layer``, ``set``, ``statistic``,
        ``depth``.  Order: set, then statistic, then layer in depth order.
    """
    names = normalise_sets(sets)
    rows, values = _coupling_table(state, names)
    coupling = [r[0] for r in rows]
    if len(set(coupling)) != len(coupling):
        raise InvalidParameterError("coupling sets produced duplicate coupling names")
    return xr.DataArray(
        values,
        dims=("coupling",),
        coords=coupling_coords(rows),
        name="couplings",
        attrs={"sets": ",".join(names)},
    )


def coupling_coords(rows: Sequence[tuple[str, str, str, str, float]]) -> dict[str, Any]:
    """The coordinates of the ``coupling`` dimension from ``(name, layer, set, statistic, depth)`` rows:
    ``coupling`` (names) and ``layer``, ``set``, ``statistic``, ``depth`` along it."""
    return {
        "coupling": [r[0] for r in rows],
        "layer": ("coupling", [r[1] for r in rows]),
        "set": ("coupling", [r[2] for r in rows]),
        "statistic": ("coupling", [r[3] for r in rows]),
        "depth": ("coupling", np.asarray([r[4] for r in rows], dtype=np.float64)),
    }


def flow_couplings(states: Iterable[State] | Any, sets: str | Sequence[str] = ("density",)) -> xr.DataArray:
    """Couplings of every round of a flow.

    Parameters
    ----------
    states : iterable of State, or a ParameterSet
        States in round order.  An object with ``n_rounds`` and ``state(round)`` (a
        :class:`~rganalysis.store.ParameterSet`) is read round by round.
    sets : coupling-set names, as in :func:`compute_couplings`.

    Returns
    -------
    xarray.DataArray, shape (n_rounds, n_couplings)
        Dimensions ``(round, coupling)``; ``round`` = 0, 1, ...; coupling coordinates as in
        :func:`compute_couplings`.
    """
    if hasattr(states, "n_rounds") and hasattr(states, "state"):
        pset = states
        states = (pset.state(round=r) for r in range(int(pset.n_rounds)))
    per_round: list[xr.DataArray] = []
    for i, st in enumerate(states):
        k = compute_couplings(st, sets)
        if per_round and list(k["coupling"].values) != list(per_round[0]["coupling"].values):
            raise InvalidParameterError(f"round {i} has different couplings from round 0 (layers differ?)")
        per_round.append(k)
    if not per_round:
        raise InvalidParameterError("flow_couplings needs at least one state")
    out = xr.concat(per_round, dim="round", coords="minimal", compat="override", join="override")
    out = out.assign_coords(round=np.arange(len(per_round)))
    return out.transpose("round", "coupling")


def resample_depth(couplings: xr.DataArray, n_points: int = 16) -> xr.DataArray:
    """Resample per-layer couplings onto a fixed grid of normalised depth.

    For each (set, statistic) the per-layer values are linearly interpolated over the layers'
    normalised depth onto ``n_points`` equally spaced depths in [0, 1] (constant extrapolation at the
    ends; layers sharing a depth are averaged; NaN layers are skipped).  Couplings with a NaN depth
    (whole-network couplings) are kept unchanged.  A ResNet-18 and a ResNet-50 then live in one
    coupling space of size ``n_sets_statistics * n_points``.

    Parameters
    ----------
    couplings : DataArray with a ``coupling`` dimension (e.g. ``(coupling,)`` or ``(round, coupling)``)
        and the coordinates of :func:`compute_couplings`.
    n_points : int >= 2

    Returns
    -------
    DataArray, same other dimensions, ``coupling`` of length ``groups * n_points`` (+ kept couplings),
    names ``"set[depth=0.000]"`` / ``"set.statistic[depth=0.000]"``, ``layer`` = "".
    """
    if int(n_points) != n_points or n_points < 2:
        raise InvalidParameterError(f"n_points must be an integer >= 2, got {n_points!r}")
    for c in ("set", "statistic", "depth"):
        if c not in couplings.coords:
            raise InvalidParameterError(f"couplings need a {c!r} coordinate (from compute_couplings)")
    da = couplings.transpose(..., "coupling")
    other_dims = [d for d in da.dims if d != "coupling"]
    vals = np.asarray(da.values, dtype=np.float64)
    lead_shape = vals.shape[:-1]
    flat = vals.reshape(-1, vals.shape[-1])
    sets = list(da["set"].values)
    stats = list(da["statistic"].values)
    depth = np.asarray(da["depth"].values, dtype=np.float64)
    grid = np.linspace(0.0, 1.0, int(n_points))

    groups: dict[tuple[str, str], list[int]] = {}
    for j, key in enumerate(zip(sets, stats, strict=True)):
        groups.setdefault(key, []).append(j)

    cols: list[np.ndarray] = []
    names: list[str] = []
    c_set: list[str] = []
    c_stat: list[str] = []
    c_depth: list[float] = []
    kept_layer: list[str] = []
    for (s, st), idx in groups.items():
        idx_a = np.asarray(idx)
        d = depth[idx_a]
        fin = np.isfinite(d)
        for j in idx_a[~fin]:  # whole-network couplings: keep
            cols.append(flat[:, j])
            names.append(str(da["coupling"].values[j]))
            c_set.append(s)
            c_stat.append(st)
            c_depth.append(math.nan)
            kept_layer.append(str(da["layer"].values[j]) if "layer" in da.coords else "")
        if not fin.any():
            continue
        idx_f = idx_a[fin]
        d_f = d[fin]
        block = np.full((flat.shape[0], grid.size), np.nan)
        for r in range(flat.shape[0]):
            y = flat[r, idx_f]
            ok = np.isfinite(y)
            if not ok.any():
                continue
            xs = d_f[ok]
            ys = y[ok]
            ux = np.unique(xs)
            uy = np.array([ys[xs == u].mean() for u in ux]) if ux.size != xs.size else ys[np.argsort(xs)]
            block[r] = np.interp(grid, ux, uy)
        head = s if st == s else f"{s}.{st}"
        for g_i, g in enumerate(grid):
            cols.append(block[:, g_i])
            names.append(f"{head}[depth={g:.3f}]")
            c_set.append(s)
            c_stat.append(st)
            c_depth.append(float(g))
            kept_layer.append("")
    out_vals = np.stack(cols, axis=-1).reshape(*lead_shape, len(cols))
    coords: dict[str, Any] = {d: da.coords[d] for d in other_dims if d in da.coords}
    coords.update(
        {
            "coupling": names,
            "layer": ("coupling", kept_layer),
            "set": ("coupling", c_set),
            "statistic": ("coupling", c_stat),
            "depth": ("coupling", np.asarray(c_depth)),
        }
    )
    attrs = dict(couplings.attrs)
    attrs["resampled_depth_points"] = int(n_points)
    return xr.DataArray(
        out_vals, dims=(*other_dims, "coupling"), coords=coords, name=couplings.name, attrs=attrs
    )
