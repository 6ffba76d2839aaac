"""The text report of a comparison (``rganalysis compare``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_comparison"]


def format_comparison(j: Mapping[str, Any], digits: int = 3) -> str:
    """Text report of a comparison JSON: the total matrix, each component, classes, merges."""
    names = list(j["models"])
    w = max(8, *(len(n) for n in names)) if names else 8

    def table(title: str, M: Sequence[Sequence[float | None]]) -> list[str]:
        lines = [title, " " * w + " " + " ".join(f"{n[:w]:>{w}}" for n in names)]
        for n, row in zip(names, M, strict=True):
            cells = " ".join(f"{'-':>{w}}" if x is None else f"{x:>{w}.{digits}f}" for x in row)
            lines.append(f"{n:<{w}} {cells}")
        return lines

    wtxt = " + ".join(f"{v:g}*{k}" for k, v in j["weights"].items() if v > 0)
    out = table(f"total distance = {wtxt}", j["distance"])
    if j.get("mode"):
        out += [f"mode: {j['mode']} ({j.get('weights_rule', '')})"]
    for k, M in j["components"].items():
        note = "" if (j.get("informative") or {}).get(k, True) else ", no information over these flows"
        out += [""] + table(f"component {k} (weight {j['weights'].get(k, 0):g}{note})", M)
    out += [
        "",
        f"classes (graph components, total <= {j['threshold']:.4g}, {j['threshold_rule']} threshold):",
    ]
    out += [f"  {i + 1}: {', '.join(c)}" for i, c in enumerate(j["classes"])]
    h = j["hierarchical"]
    if h.get("merges"):
        out += [f"hierarchical clustering ({h['method']} linkage), merges:"]
        out += [
            f"  {m['height']:.{digits}f}: {{{', '.join(m['left'])}}} + {{{', '.join(m['right'])}}}"
            for m in h["merges"]
        ]
        if "clusters" in h:
            out += [
                f"  clusters cut at {j['threshold']:.4g}: " + " | ".join(", ".join(c) for c in h["clusters"])
            ]
    from rganalysis.fit.options import MARGINAL_Y

    for name, f in j.get("fits", {}).items():
        ys = [e["exponent"] for e in f["eigenvalues"] if e["retained"]]
        ytxt = ", ".join("-inf" if y is None else f"{y:.3f}" for y in ys) or "none"
        out.append(
            f"fit {name}: rank {f['rank']}, b = {f['b']:.4g}, exponents y >= -{MARGINAL_Y:g} compared by the spectrum "
            f"component [{ytxt}] (point estimates, no intervals: not a verdict; `rganalysis fit` gives those), "
            f"fixed point ({f['fixed_point_method']})"
            + (f"; {len(f['warnings'])} warning(s)" if f.get("warnings") else "")
        )
    return "\n".join(out)
