"""Figures of an IMP flow and its RG analysis, for notebooks and for ``rganalysis report``.

Every function takes a fitted object (FlowFit, KoopmanDMD, UniversalityAnalysis) or its JSON, and an
optional matplotlib ``Axes`` (``ax=None`` makes a new figure); it returns the ``Axes`` it drew on, so
figures compose.  Nothing here selects a backend: scripts without a display use Agg.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from rganalysis.store.parameter_set import ParameterSet

__all__ = [
    "CLASS_STYLE",
    "dendrogram",
    "density_heatmap",
    "distance_curve",
    "distance_matrix",
    "flow_projection",
    "linkage_from_distance",
    "magnitude_distributions",
    "project_flow",
    "short_layer_name",
    "spectrum",
]

#: Colour and marker of each eigenvalue class (shared by every spectrum figure).
CLASS_STYLE: dict[str, dict[str, str]] = {
    "relevant": {"color": "#d62728", "marker": "^"},
    "marginal": {"color": "#ff7f0e", "marker": "s"},
    "irrelevant": {"color": "#1f77b4", "marker": "o"},
    "undetermined": {"color": "#7f7f7f", "marker": "D"},
}


def _fitted_json(obj: Any) -> Any:
    """A fitted estimator (FlowFit, KoopmanDMD, UniversalityAnalysis) as its JSON; anything else unchanged."""
    if not isinstance(obj, Mapping) and hasattr(obj, "to_json") and callable(obj.to_json):
        return obj.to_json()
    return obj


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.8)) -> Axes:
    """``ax``, or the axes of a new figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def short_layer_name(name: str) -> str:
    """A layer name for tick labels: the trailing ``.weight`` dropped."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


# ------------------------------------------------------------------------------------------- densities
def _density_table(data: Any) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(values (round, layer), layer names, rounds) of a ParameterSet, DataArray or array."""
    if hasattr(data, "densities") and hasattr(data, "n_rounds"):
        data = data.densities()
    if hasattr(data, "dims") and hasattr(data, "values"):  # xarray.DataArray
        da = data.transpose("round", "layer") if set(data.dims) == {"round", "layer"} else data
        vals = np.asarray(da.values, dtype=np.float64)
        layers = [str(x) for x in da["layer"].values] if "layer" in da.coords else []
        rounds = np.asarray(da["round"].values) if "round" in da.coords else np.arange(vals.shape[0])
    else:
        vals = np.asarray(data, dtype=np.float64)
        layers, rounds = [], np.arange(vals.shape[0] if vals.ndim else 0)
    if vals.ndim == 1:
        vals = vals[None, :]
        rounds = np.arange(1)
    if vals.ndim != 2:
        raise ValueError(f"densities must be (round, layer), got shape {vals.shape}")
    if not layers:
        layers = [f"layer {j}" for j in range(vals.shape[1])]
    return vals, layers, rounds


def density_heatmap(
    pset_or_densities: ParameterSet | Any,
    ax: Axes | None = None,
    *,
    annotate: bool | None = None,
    cmap: str = "viridis",
) -> Axes:
    """Per-layer density over rounds as a heatmap: rounds left to right, layers top (input side) to
    bottom (output side), colour = surviving fraction in [0, 1].

    Parameters
    ----------
    pset_or_densities : a :class:`~rganalysis.store.ParameterSet` (its ``densities()``), a (round, layer)
        ``xarray.DataArray``, or a (round, layer) array
    ax : Axes to draw on (default: a new figure sized to the number of layers)
    annotate : write each cell's density in it (default: when there are at most 16 rounds and 30 layers)
    cmap : matplotlib colour map
    """
    vals, layers, rounds = _density_table(pset_or_densities)
    n_rounds, n_layers = vals.shape
    ax = _axes(ax, (max(5.0, 1.2 + 0.45 * n_rounds), min(16.0, max(3.0, 1.2 + 0.2 * n_layers))))
    im = ax.imshow(vals.T, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label="density (surviving fraction)", fraction=0.05, pad=0.02)
    step = max(1, math.ceil(n_layers / 40))
    ax.set_yticks(np.arange(0, n_layers, step))
    ax.set_yticklabels(
        [short_layer_name(layers[j]) for j in range(0, n_layers, step)], fontsize=7 if n_layers > 12 else 9
    )
    rstep = max(1, math.ceil(n_rounds / 20))
    ax.set_xticks(np.arange(0, n_rounds, rstep))
    ax.set_xticklabels([str(int(r)) for r in rounds[::rstep]])
    ax.set_xlabel("IMP round")
    ax.set_ylabel("layer (input side at top)")
    if annotate is None:
        annotate = n_rounds <= 16 and n_layers <= 30
    if annotate:
        for i in range(n_rounds):
            for j in range(n_layers):
                v = vals[i, j]
                if np.isfinite(v):
                    ax.text(
                        i,
                        j,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v < 0.5 else "black",
                    )
    ax.set_title("Per-layer density over IMP rounds")
    return ax


# ------------------------------------------------------------------------------------------- magnitudes
def _survivor_samples(
    pset: ParameterSet, rounds: Sequence[int], max_samples: int, names: Sequence[str] | None = None
) -> tuple[dict[int, np.ndarray], int, dict[int, int]]:
    """|w| of the survivors of each round, on a fixed strided subset of positions (read tensor by tensor).

    The same positions are used at every round, so the histograms of different rounds count the same
    weights; ``stride`` = ceil(total / max_samples) (1 keeps every weight).  Returns (round -> |w|,
    stride, round -> exact number of survivors, counted on the full masks).
    """
    import torch

    names = list(names) if names is not None else pset.pruned_names()
    total = sum(pset.info[n].numel for n in names)
    stride = max(1, math.ceil(total / max(1, int(max_samples))))
    out: dict[int, list[np.ndarray]] = {int(r): [] for r in rounds}
    survivors = {int(r): 0 for r in rounds}
    # a data-free computed flow never changes the weights: read each tensor once
    static = pset.flow_attrs.get("kind") == "computed" and pset.flow_attrs.get("rescaling", "none") == "none"
    offset = 0  # the subset runs over the concatenation of all tensors, so small tensors are not skipped
    for n in names:
        numel = pset.info[n].numel
        start = (-offset) % stride
        offset += numel
        w = None
        for r in rounds:
            mask = pset.mask(n, int(r)).reshape(-1)
            survivors[int(r)] += int(mask.sum())
            if start >= numel:
                continue
            if w is None or not static:
                w = pset.tensor(n, int(r))
            wf = w.reshape(-1)[start::stride].to(torch.float64)
            out[int(r)].append(wf[mask[start::stride]].abs().numpy())
    return {r: (np.concatenate(v) if v else np.zeros(0)) for r, v in out.items()}, stride, survivors


def magnitude_distributions(
    pset: ParameterSet,
    rounds: Sequence[int] | None = None,
    ax: Axes | None = None,
    *,
    bins: int = 60,
    max_samples: int = 200_000,
    names: Sequence[str] | None = None,
    stacked: bool = True,
    cmap: str = "viridis",
) -> Axes:
    """Histograms of the magnitudes |w| of the surviving weights per round (log x axis, log-spaced bins).

    With ``stacked`` (default) each round has its own baseline, round 0 at the top, and each curve is
    scaled to its own peak (a ridgeline plot: shapes and the moving cut stay readable even where the
    curves of a data-free flow coincide); otherwise the curves overlap on one axis of weight counts.

    Parameters
    ----------
    pset : the flow (any :class:`~rganalysis.store.ParameterSet`)
    rounds : rounds to draw (default: all, thinned to at most 9 evenly spaced ones, first and last kept)
    ax : Axes to draw on
    bins : number of log-spaced bins between the 0.1% quantile of the round-0 survivors and the largest |w|
    max_samples : models larger than this are subsampled deterministically: every ``stride``-th weight
        of the concatenated pruned tensors, the same positions at every round; bin counts are scaled back
        by the stride so they estimate numbers of weights (the survivor totals are exact)
    names : tensors to include (default: ``pset.pruned_names()``)
    stacked : one baseline per round (ridgeline) instead of overlapping curves
    cmap : colour map of the rounds (early rounds dark, late rounds bright)
    """
    import matplotlib as mpl

    if rounds is None:
        n = pset.n_rounds
        rounds = sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, 9))})
    rounds = [int(r) for r in rounds]
    ax = _axes(ax, (6.4, max(4.0, 1.5 + 0.55 * len(rounds))) if stacked else (6.4, 4.8))
    samples, stride, survivors = _survivor_samples(pset, rounds, max_samples, names)
    pos = np.concatenate([s[s > 0] for s in samples.values()]) if samples else np.zeros(0)
    if pos.size == 0:
        ax.text(0.5, 0.5, "no non-zero surviving weights", ha="center", va="center", transform=ax.transAxes)
        return ax
    first = samples[rounds[0]]
    first = first[first > 0] if (first > 0).any() else pos
    lo, hi = float(np.quantile(first, 1e-3)), float(pos.max())
    if hi <= lo:
        hi = lo * 1.01 + 1e-30
    edges = np.geomspace(lo, hi, int(bins) + 1)
    colours = mpl.colormaps[cmap](np.linspace(0.0, 0.9, max(2, len(rounds))))
    ticks: list[str] = []
    for i, r in enumerate(rounds):
        s = samples[r]
        counts, _ = np.histogram(np.clip(s[s > 0], lo, hi), bins=edges)
        label = f"round {r}: {survivors[r]:,} survivors"
        ticks.append(f"round {r}\n{survivors[r]:,}")
        if stacked:
            base = len(rounds) - 1 - i
            h = counts / counts.max() * 0.9 if counts.max() > 0 else counts.astype(float)
            ax.stairs(base + h, edges, baseline=base, fill=True, color=colours[i], alpha=0.35)
            ax.stairs(base + h, edges, baseline=None, color=colours[i], linewidth=1.2)
        else:
            ax.stairs(counts * stride, edges, color=colours[i], linewidth=1.4, label=label)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("|w| of surviving weights" + (f" (sampled 1 in {stride})" if stride > 1 else ""))
    if stacked:
        ax.set_yticks(np.arange(len(rounds)) + 0.3)
        ax.set_yticklabels(list(reversed(ticks)), fontsize=7)
        ax.set_ylim(0, len(rounds))
        ax.set_ylabel("survivors per bin, each round scaled to its peak\n(tick: round, number of survivors)")
    else:
        ax.set_ylabel("number of weights per bin")
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_title("Magnitude distribution of the survivors per round")
    return ax


# ------------------------------------------------------------------------------------------- flow plane
def _flow_arrays(couplings: Any) -> list[np.ndarray]:
    """A list of (round, coupling) float arrays from one DataArray/array or a list of them."""
    if hasattr(couplings, "dims") or isinstance(couplings, np.ndarray):
        items = [couplings]
    elif (
        isinstance(couplings, Sequence)
        and couplings
        and (hasattr(couplings[0], "dims") or np.ndim(couplings[0]) == 2)
    ):
        items = list(couplings)
    else:
        items = [couplings]
    out = []
    for c in items:
        if hasattr(c, "dims") and "coupling" in c.dims:
            c = c.transpose(..., "coupling").values
        a = np.asarray(c, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"couplings must be (round, coupling), got shape {a.shape}")
        out.append(a)
    widths = {a.shape[1] for a in out}
    if len(widths) != 1:
        raise ValueError(f"flows live in different coupling spaces (widths {sorted(widths)})")
    return out


def project_flow(
    couplings: Any, n_components: int = 2
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """PCA of the couplings of one or more flows (rounds pooled; NaN couplings dropped).

    Returns (projected flows, each (round, n_components); mean (coupling,); components
    (n_components, coupling), unit rows; explained variance ratio (n_components,)).  Missing components
    (fewer couplings or rounds than ``n_components``) are zero.
    """
    flows = _flow_arrays(couplings)
    stacked = np.concatenate(flows, axis=0)
    keep = np.isfinite(stacked).all(axis=0)
    mean = np.zeros(stacked.shape[1])
    comps = np.zeros((n_components, stacked.shape[1]))
    ratio = np.zeros(n_components)
    if keep.any():
        x = stacked[:, keep]
        mean[keep] = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean[keep], full_matrices=False)
        k = min(n_components, vt.shape[0])
        for i in range(k):  # sign convention: the largest loading is positive (stable across runs)
            v = vt[i] * (1.0 if vt[i][np.argmax(np.abs(vt[i]))] >= 0 else -1.0)
            comps[i, keep] = v
        var = s**2
        if var.sum() > 0:
            ratio[:k] = var[:k] / var.sum()
    proj = [np.nan_to_num(f - mean) @ comps.T for f in flows]
    return proj, mean, comps, ratio


def _away(a: np.ndarray, b: np.ndarray, span: np.ndarray) -> tuple[float, float]:
    """A label offset (points) from point ``a`` pointing away from point ``b``, so labels avoid the arrows."""
    d = (a - b) / span
    n = float(np.hypot(*d))
    return (0.0, 8.0) if n == 0 else (float(9 * d[0] / n), float(9 * d[1] / n))


def flow_projection(
    couplings: Any,
    ax: Axes | None = None,
    *,
    fixed_point: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = "Flow projected on its two leading directions",
) -> Axes:
    """The flow in coupling space projected on its two leading principal directions, rounds as arrows.

    Parameters
    ----------
    couplings : a fitted :class:`~rganalysis.fit.flowfit.FlowFit` (its flows and fixed point), the
        (round, coupling) couplings of a flow (``FlowFit.couplings_[0]``, an array), or a list of such flows
        in one coupling space (projected on their pooled principal directions)
    ax : Axes to draw on
    fixed_point : optional (coupling,) fixed point ``K*`` of the fit, projected into the same plane (a star)
    labels : legend label per flow
    title : axes title (None: none)
    """
    import matplotlib as mpl

    if hasattr(couplings, "couplings_") and hasattr(couplings, "fixed_point_"):  # a fitted FlowFit
        fit = couplings
        couplings = fit.couplings_ if len(fit.couplings_) > 1 else fit.couplings_[0]
        if fixed_point is None and np.isfinite(fit.fixed_point_).all():
            fixed_point = list(fit.fixed_point_)
    ax = _axes(ax)
    proj, mean, comps, ratio = project_flow(couplings)
    colours = mpl.colormaps["tab10"](np.arange(len(proj)) % 10)
    span = np.ptp(np.concatenate(proj), axis=0) + 1e-30
    for i, p in enumerate(proj):
        c = colours[i]
        lab = (
            labels[i] if labels is not None and i < len(labels) else (None if len(proj) == 1 else f"flow {i}")
        )
        ax.plot(p[:, 0], p[:, 1], "o", color=c, markersize=4, label=lab)
        for r in range(len(p) - 1):
            ax.annotate(
                "",
                xy=(p[r + 1, 0], p[r + 1, 1]),
                xytext=(p[r, 0], p[r, 1]),
                arrowprops={"arrowstyle": "->", "color": c, "lw": 1.3, "shrinkA": 2, "shrinkB": 2},
            )
        if len(p) > 1:
            for r, nb in ((0, 1), (len(p) - 1, len(p) - 2)):
                ax.annotate(
                    str(r),
                    (p[r, 0], p[r, 1]),
                    textcoords="offset points",
                    xytext=_away(p[r], p[nb], span),
                    fontsize=8,
                    color=c,
                    ha="center",
                    va="center",
                )
    if fixed_point is not None:
        fp = np.asarray([np.nan if v is None else v for v in fixed_point], dtype=np.float64)
        if fp.shape == mean.shape and np.isfinite(fp).all():
            q = (fp - mean) @ comps.T
            ax.plot(q[0], q[1], "*", color="black", markersize=14, label="fixed point K*")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.margins(0.12)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of the variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}%)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return ax


# ------------------------------------------------------------------------------------------- spectrum
def _class_of(mod: float, b: float | None, band: float) -> str:
    """The class of a bare |lambda| from its exponent y = ln|lambda| / ln b (``undetermined`` without b)."""
    from rganalysis.fit.fixed_points import exponent_class, exponents

    if b is None or not (b > 1.0) or not (mod > 0.0):
        return "undetermined"
    return exponent_class(float(exponents([mod], b)[0]), band)


def _band_and_b(x: Mapping[str, Any], b: float | None, band: float) -> tuple[float | None, float]:
    """``b`` and the marginal band in y of a fit, response or Koopman JSON.  A fit's ``tol`` is its
    near-fixed-point tolerance, not a band; a Koopman JSON's ``tol`` is its band in y and its ``b`` is
    ``scale_factor``."""
    if "scale_factor" in x:
        return x.get("scale_factor") or b, float(x.get("tol", band))
    return x.get("b") or b, band


def _eigen_records(eigenvalues: Any, ci: Any, b: float | None, band: float) -> list[dict[str, Any]]:
    """Records {re, im, abs, class, ci_low, ci_high} from JSON (list of dicts or a fit JSON) or an array;
    ``b`` and ``band`` as resolved by :func:`spectrum`."""
    if isinstance(eigenvalues, Mapping):
        eigenvalues = eigenvalues["eigenvalues"]
    if isinstance(eigenvalues, Sequence) and eigenvalues and isinstance(eigenvalues[0], Mapping):
        recs = []
        for e in eigenvalues:
            re, im = float(e.get("re") or 0.0), float(e.get("im") or 0.0)
            mod = e.get("abs")
            mod = abs(complex(re, im)) if mod is None else float(mod)
            recs.append(
                {
                    "re": re,
                    "im": im,
                    "abs": mod,
                    "class": e.get("class") or _class_of(mod, b, band),
                    "ci_low": e.get("ci_low"),
                    "ci_high": e.get("ci_high"),
                }
            )
    else:
        lam = np.asarray(eigenvalues, dtype=np.complex128).reshape(-1)
        recs = [
            {
                "re": float(z.real),
                "im": float(z.imag),
                "abs": float(abs(z)),
                "class": _class_of(float(abs(z)), b, band),
                "ci_low": None,
                "ci_high": None,
            }
            for z in lam
        ]
    if ci is not None:
        ci = np.asarray(ci, dtype=np.float64)
        if ci.shape != (len(recs), 2):
            raise ValueError(f"ci must have shape ({len(recs)}, 2), got {ci.shape}")
        for r, (lo, hi) in zip(recs, ci, strict=True):
            r["ci_low"], r["ci_high"] = (
                (float(lo) if np.isfinite(lo) else None),
                (float(hi) if np.isfinite(hi) else None),
            )
    return recs


def spectrum(
    eigenvalues_json_or_array: Any,
    ax: Axes | None = None,
    ci: Any = None,
    *,
    b: float | None = None,
    band: float | None = None,
    title: str | None = "Eigenvalue spectrum of the linearised RG map",
) -> Axes:
    """Eigenvalues in the complex plane with the unit circle and the marginal band, ``|y| <= band`` in the
    exponent y = ln|lambda| / ln b, i.e. the ring ``b**-band <= |lambda| <= b**band`` (drawn when b is
    known; it is the band the classes use, so its width depends on the pruning rate in |lambda|, not in y);
    colour and marker by class; the confidence interval of |lambda| drawn as a radial error bar.

    Parameters
    ----------
    eigenvalues_json_or_array : a fitted FlowFit or KoopmanDMD, a fit JSON (``FlowFit.to_json()``, uses its
        ``eigenvalues``, ``b``), a Koopman JSON (``scale_factor``, its band ``tol``), a list of
        ``{re, im, abs, class, ci_low, ci_high}`` records, or an array of complex eigenvalues
    ax : Axes to draw on
    ci : optional (k, 2) interval of |lambda| per eigenvalue (overrides the records' ``ci_low``/``ci_high``)
    b : scale factor 1 / (1 - p), when the input does not carry it; without it no band is drawn and
        eigenvalues without a class are ``undetermined``
    band : marginal half-width in y (default :data:`~rganalysis.fit.options.MARGINAL_Y`, or a Koopman
        JSON's ``tol``)
    title : axes title (None: none)
    """
    from rganalysis.fit.options import MARGINAL_Y

    eigenvalues_json_or_array = _fitted_json(eigenvalues_json_or_array)
    ax = _axes(ax, (5.6, 5.4))
    band = MARGINAL_Y if band is None else float(band)
    if isinstance(eigenvalues_json_or_array, Mapping):
        b, band = _band_and_b(eigenvalues_json_or_array, b, band)
    recs = _eigen_records(eigenvalues_json_or_array, ci, b, band)
    t = np.linspace(0, 2 * np.pi, 400)
    if b is not None and b > 1.0:
        lo, hi = b**-band, b**band
        ax.fill(
            np.concatenate([hi * np.cos(t), lo * np.cos(t[::-1])]),
            np.concatenate([hi * np.sin(t), lo * np.sin(t[::-1])]),
            color="0.92",
            zorder=0,
            label=f"marginal band |y| ≤ {band:g}: |λ| in [{lo:.4f}, {hi:.4f}] (b = {b:.4g})",
        )
    ax.plot(np.cos(t), np.sin(t), color="0.35", lw=1.0, zorder=1, label="unit circle")
    reach = 1.15
    for cls in ("irrelevant", "marginal", "relevant", "undetermined"):
        sel = [r for r in recs if r["class"] == cls]
        if not sel:
            continue
        st = CLASS_STYLE.get(cls, {"color": "0.3", "marker": "x"})
        for r in sel:
            lo, hi = r["ci_low"], r["ci_high"]
            if lo is None or hi is None or r["abs"] <= 0:
                continue
            u = complex(r["re"], r["im"]) / r["abs"]
            ax.plot(
                [float(lo) * u.real, float(hi) * u.real],
                [float(lo) * u.imag, float(hi) * u.imag],
                color=st["color"],
                lw=1.2,
                alpha=0.55,
                zorder=2,
                solid_capstyle="butt",
            )
        ax.scatter(
            [r["re"] for r in sel],
            [r["im"] for r in sel],
            c=st["color"],
            marker=st["marker"],
            s=42,
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
            label=f"{cls} ({len(sel)})",
        )
        reach = max(reach, max(r["abs"] for r in sel) * 1.15)
    # the view holds every eigenvalue; a wide interval runs off the edge rather than shrink the plane
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.8", lw=0.6, zorder=0)
    ax.axvline(0, color="0.8", lw=0.6, zorder=0)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    if any(r["ci_low"] is not None for r in recs):
        ax.plot([], [], color="0.4", lw=1.2, alpha=0.55, label="95% CI of |λ| (radial)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    if title:
        ax.set_title(title)
    return ax


# ------------------------------------------------------------------------------------------- distances
def distance_curve(
    distances: Any, ax: Axes | None = None, *, label: str | None = None, log: bool | None = None
) -> Axes:
    """Distance ``||K_n - K*||`` to the fixed point per round.

    Parameters
    ----------
    distances : per-round distances (list, array, (round,) DataArray), a fitted FlowFit or its JSON (its
        ``distance_to_fixed_point``), or a mapping label -> any of these (one curve each)
    ax : Axes to draw on
    label : legend label of a single curve
    log : log y axis (default: when all distances are positive and span more than a factor 1.5; a geometric
        approach to the fixed point is then a straight line of slope ln|lambda| per round)
    """
    distances = _fitted_json(distances)
    ax = _axes(ax)
    if isinstance(distances, Mapping) and "distance_to_fixed_point" not in distances:
        series = dict(distances)
    else:
        series = {label: distances}
    all_vals = []
    for lab, d in series.items():
        if isinstance(d, Mapping):
            d = d["distance_to_fixed_point"]
        if hasattr(d, "dims"):
            rounds = np.asarray(d["round"].values) if "round" in d.coords else np.arange(d.size)
            vals = np.asarray(d.values, dtype=np.float64)
        else:
            vals = np.asarray([np.nan if v is None else v for v in d], dtype=np.float64)
            rounds = np.arange(vals.size)
        ax.plot(rounds, vals, "o-", markersize=4, label=lab)
        all_vals.append(vals)
    vals = np.concatenate(all_vals) if all_vals else np.zeros(0)
    fin = vals[np.isfinite(vals)]
    if fin.size == 0:
        ax.text(
            0.5,
            0.5,
            "no fixed point: the fit found none (I - J singular)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    if log is None:
        log = fin.size > 0 and bool((fin > 0).all()) and fin.max() / fin.min() > 1.5
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        if fin.max() / fin.min() < 1e3:  # a short range: plain numbers at 1, 2, 5 x 10^k
            subs = tuple(range(1, 10)) if fin.max() / fin.min() < 10 else (1.0, 2.0, 5.0)
            ax.yaxis.set_major_locator(LogLocator(subs=subs))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("IMP round")
    ax.set_ylabel("‖K_n − K*‖ (coupling units)")
    if any(lab is not None for lab in series):
        ax.legend(fontsize=8, frameon=False)
    ax.set_title("Distance to the fixed point")
    return ax


def distance_matrix(
    matrix: Any,
    names: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    annotate: bool | None = None,
    cmap: str = "magma_r",
    label: str = "distance",
) -> Axes:
    """A symmetric distance matrix between models as a heatmap (dark = far, light = close).

    Parameters
    ----------
    matrix : a fitted UniversalityAnalysis (its total distance and model names), or (n, n) distances (list
        of lists or array; None / NaN cells are left blank)
    names : n model names (tick labels; taken from the analysis when one is given)
    ax : Axes to draw on
    annotate : write the values in the cells (default: n <= 12)
    cmap : colour map
    label : colour bar label
    """
    if hasattr(matrix, "distance_") and hasattr(matrix, "names_"):
        names = list(matrix.names_) if names is None else names
        matrix = matrix.distance_.values
    m = np.asarray([[np.nan if v is None else v for v in row] for row in matrix], dtype=np.float64)
    n = m.shape[0]
    if names is None:
        raise ValueError("names are needed with a plain distance matrix")
    if m.shape != (n, n) or len(names) != n:
        raise ValueError(
            f"distance matrix must be square with one name per row, got {m.shape} and {len(names)}"
        )
    ax = _axes(ax, (max(4.5, 1.5 + 0.6 * n), max(3.8, 1.2 + 0.55 * n)))
    _heatmap(
        ax,
        m,
        list(names),
        list(names),
        annotate=n <= 12 if annotate is None else annotate,
        cmap=cmap,
        label=label,
    )
    ax.set_title("Distance between models")
    return ax


def _heatmap(
    ax: Axes,
    m: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    annotate: bool,
    cmap: str,
    label: str,
) -> None:
    """``m`` (len(rows), len(cols)) as an image with labelled ticks, a colour bar and (``annotate``) values;
    non-finite cells blank."""
    im = ax.imshow(m, cmap=cmap, interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label=label, fraction=0.046, pad=0.04)
    ax.set_xticks(np.arange(len(cols)))
    ax.set_yticks(np.arange(len(rows)))
    ax.set_xticklabels(list(cols), rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(list(rows), fontsize=8)
    if annotate:
        fin = m[np.isfinite(m)]
        mid = (fin.min() + fin.max()) / 2 if fin.size else 0.0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.3g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if m[i, j] > mid else "black",
                    )


def transfer_heatmap(scores: Any, ax: Axes | None = None, *, annotate: bool | None = None) -> Axes:
    """Directed transfer scores as a heat map: rows = source (the ticket's task), columns = target; light =
    the source's ticket is expected to lose little on the target.

    Parameters
    ----------
    scores : the DataArray (source, target) of :func:`rganalysis.transfer_scores`, or the ``"directed"``
        entry of ``rganalysis compare --directed --json`` (``sources``, ``targets``, ``scores``)
    ax : Axes to draw on
    annotate : write the values in the cells (default: at most 12 rows)
    """
    if hasattr(scores, "dims"):
        rows, cols, m = (
            [str(x) for x in scores.source.values],
            [str(x) for x in scores.target.values],
            scores.values,
        )
    else:
        rows, cols, m = scores["sources"], scores["targets"], scores["scores"]
    m = np.asarray([[np.nan if v is None else v for v in row] for row in m], dtype=np.float64)
    if m.shape != (len(rows), len(cols)):
        raise ValueError(f"scores of shape {m.shape} for {len(rows)} sources and {len(cols)} targets")
    ax = _axes(ax, (max(4.5, 1.5 + 0.6 * len(cols)), max(3.8, 1.2 + 0.55 * len(rows))))
    _heatmap(
        ax,
        m,
        rows,
        cols,
        annotate=len(rows) <= 12 if annotate is None else annotate,
        cmap="magma_r",
        label="directed transfer score",
    )
    ax.set_xlabel("target task")
    ax.set_ylabel("source (ticket)")
    ax.set_title("Directed transfer scores")
    return ax


def linkage_from_distance(matrix: Any, method: str = "average") -> np.ndarray:
    """SciPy linkage of a square symmetric distance matrix (default: average linkage, UPGMA)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    m = np.asarray([[np.nan if v is None else v for v in row] for row in matrix], dtype=np.float64)
    m = 0.5 * (m + m.T)
    np.fill_diagonal(m, 0.0)
    if not np.isfinite(m).all():
        raise ValueError("the distance matrix has missing entries: no linkage")
    return linkage(squareform(m, checks=False), method=method)


def _as_linkage(linkage_or_distance: Any, n: int) -> np.ndarray:
    """A linkage matrix for ``n`` leaves from a linkage ((n-1, 4)) or a distance matrix ((n, n))."""
    a = np.asarray(
        [[np.nan if v is None else v for v in row] for row in linkage_or_distance], dtype=np.float64
    )
    if a.shape == (n, n):
        return linkage_from_distance(a)
    if a.shape == (n - 1, 4):
        return a
    raise ValueError(
        f"expected a ({n - 1}, 4) linkage matrix or an ({n}, {n}) distance matrix for {n} names, "
        f"got shape {a.shape}"
    )


def dendrogram(
    linkage_or_distance: Any,
    names: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    threshold: float | None = None,
) -> Axes:
    """Hierarchical clustering of the models: leaves are models, the height of a join is the distance
    at which two groups merge.

    Parameters
    ----------
    linkage_or_distance : a fitted UniversalityAnalysis (its linkage, names and threshold), a SciPy linkage
        matrix ((n-1, 4), e.g. the ``linkage`` of ``rganalysis compare``) or an (n, n) distance matrix
        (clustered here with average linkage)
    names : n leaf labels (taken from the analysis when one is given)
    ax : Axes to draw on
    threshold : the distance below which models share a class (a dashed line; joins below it coloured)
    """
    from scipy.cluster.hierarchy import dendrogram as _dendrogram

    if hasattr(linkage_or_distance, "hierarchy_") and hasattr(linkage_or_distance, "names_"):
        ua = linkage_or_distance
        names = list(ua.names_) if names is None else names
        threshold = ua.threshold_ if threshold is None else threshold
        linkage_or_distance = ua.hierarchy_["linkage"] or ua.distance_.values
    if names is None:
        raise ValueError("names are needed with a plain linkage or distance matrix")
    z = _as_linkage(linkage_or_distance, len(names))
    ax = _axes(ax, (max(5.0, 1.5 + 0.6 * len(names)), 4.0))
    kw: dict[str, Any] = {"labels": list(names), "ax": ax, "leaf_rotation": 45}
    if threshold is not None and np.isfinite(threshold):
        kw["color_threshold"] = float(threshold)
        kw["above_threshold_color"] = "0.45"
    else:
        kw["color_threshold"] = 0.0
        kw["above_threshold_color"] = "0.3"
    _dendrogram(z, **kw)
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(
            float(threshold), color="#d62728", ls="--", lw=1.0, label=f"class threshold {threshold:.3g}"
        )
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, max(hi, 1.08 * float(threshold)))  # the line is drawn even above every merge
        ax.legend(fontsize=8, frameon=True, framealpha=0.9, loc="best")
    ax.set_ylabel("merge distance")
    ax.set_title("Hierarchical clustering of the models")
    for lab in ax.get_xticklabels():
        lab.set_ha("right")
    return ax
