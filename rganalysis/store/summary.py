"""A plain summary of a store: what ``rganalysis info`` prints and ``--json`` writes.  Torch-free: it
takes a :class:`~rganalysis.store.ParameterSet` or an open :class:`~rganalysis.store.reader.StoreReader`."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from rganalysis.store.diagnostics import collapsed_layers

__all__ = ["format_summary", "summarize"]


def summarize(pset: Any) -> dict[str, Any]:
    """Architecture, parameter counts, layers, and per-round densities and metrics.

    ``pset``: a ParameterSet, or a StoreReader (``rganalysis info`` reads a store without torch); the
    densities are the checked ones (:meth:`~rganalysis.store.ParameterSet.density_table`).
    """
    info = pset.info
    layers, table = pset.density_table()
    sizes = np.array([info[n].numel for n in layers], dtype=np.float64)
    glob = (table * sizes).sum(axis=1) / sizes.sum() if len(layers) else np.ones(pset.n_rounds)
    rounds = []
    for r in range(pset.n_rounds):
        row: dict[str, Any] = {
            "round": r,
            "global_density": float(glob[r]),
            "density": {str(k): float(v) for k, v in zip(layers, table[r], strict=True)},
        }
        for m, vals in pset.metrics.items():
            v = float(vals[r])
            row[m] = None if math.isnan(v) else v
        rounds.append(row)
    attrs = {k: v for k, v in pset.attrs.items() if k not in ("config",)}
    for k in ("sha256", "package_versions"):
        if isinstance(attrs.get(k), str):
            try:
                attrs[k] = json.loads(attrs[k])
            except json.JSONDecodeError:
                pass
    b = glob[:-1] / glob[1:] if pset.n_rounds > 1 else []
    return {
        "name": pset.attrs.get("name"),
        "architecture": pset.attrs.get("architecture"),
        "adapter": pset.attrs.get("adapter"),
        "provenance": attrs,
        "flow": pset.flow_attrs,
        "parameters": {
            "total": sum(i.numel for i in info.values()),
            "prunable": sum(info[n].numel for n in pset.prunable_names()),
            "masked": sum(info[n].numel for n in pset.masked_names()),
        },
        "layers": [
            {
                "name": n,
                "kind": i.kind,
                "shape": list(i.shape),
                "dtype": str(i.dtype).removeprefix("torch."),
                "prunable": i.prunable,
                "masked": pset.has_mask(n),
                "depth": i.depth,
            }
            for n, i in info.items()
        ],
        "rounds": rounds,
        "b": [float(x) for x in b],
        "collapsed_layers": collapsed_layers(pset),
    }


def format_summary(s: dict[str, Any], max_layers: int | None = None) -> str:
    """Human-readable text of :func:`summarize`'s output."""
    p = s["parameters"]
    out = [
        f"{s['name']}: {s['architecture']} (adapter {s['adapter']})",
        f"  source      {s['provenance'].get('source', '')}",
        f"  values      {p['total']:,} in all tensors (parameters and buffers), {p['prunable']:,} prunable"
        + (f", {p['masked']:,} masked" if p["masked"] else ""),
        f"  rounds      {len(s['rounds'])}"
        + (
            f" (rate {s['flow'].get('rate')}, scope {s['flow'].get('scope')})"
            if s["flow"].get("rate")
            else ""
        ),
        "",
        f"  {'layer':<52} {'kind':<9} {'shape':<22} prunable",
    ]
    layers = s["layers"] if max_layers is None else s["layers"][:max_layers]
    for layer in layers:
        shape = "x".join(map(str, layer["shape"])) or "scalar"
        flag = (
            "yes" + (" (masked)" if layer["masked"] else "") if layer["prunable"] or layer["masked"] else ""
        )
        out.append(f"  {layer['name']:<52} {layer['kind']:<9} {shape:<22} {flag}")
    if max_layers is not None and len(s["layers"]) > max_layers:
        out.append(f"  ... {len(s['layers']) - max_layers} more (all with --json)")
    metrics = [k for k in s["rounds"][0] if k not in ("round", "global_density", "density")]
    out += [
        "",
        "  round  global density" + "".join(f"  {m:>10}" for m in metrics) + ("   b_n" if s["b"] else ""),
    ]
    for r, row in enumerate(s["rounds"]):
        vals = "".join(f"  {'' if row[m] is None else format(row[m], '.4g'):>10}" for m in metrics)
        bn = f"   {s['b'][r]:.4f}" if r < len(s["b"]) else ""
        out.append(f"  {row['round']:>5}  {row['global_density']:>14.6f}{vals}{bn}")
    if s.get("collapsed_layers"):
        out += ["", "  layer collapse (global pruning emptied these layers):"]
        out += [f"    {k}: empty from round {v}" for k, v in s["collapsed_layers"].items()]
    layer_names = list(s["rounds"][0]["density"])
    if len(s["rounds"]) > 1 or any(v < 1 for v in s["rounds"][0]["density"].values()):
        out += [
            "",
            "  per-layer density by round",
            "  " + f"{'layer':<52}" + "".join(f" {r:>6}" for r in range(len(s["rounds"]))),
        ]
        shown = layer_names if max_layers is None else layer_names[:max_layers]
        for n in shown:
            out.append(
                "  " + f"{n:<52}" + "".join(f" {_density_text(row['density'][n]):>6}" for row in s["rounds"])
            )
        if len(shown) < len(layer_names):
            out.append(f"  ... {len(layer_names) - len(shown)} more (all with --json)")
    return "\n".join(out)


def _density_text(d: float) -> str:
    """A density in 6 characters: 4 decimals, or one significant digit below 1e-4 but not 0 (a layer that still
    holds weights is not printed as empty)."""
    return f"{d:.4f}" if d == 0 or d >= 1e-4 else f"{d:.0e}".replace("e-0", "e-")
