"""The JSON of ``rganalysis koopman`` and its text table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rganalysis.fit.intervals import interval_text
from rganalysis.koopman.dmd import KoopmanDMD

__all__ = ["format_koopman", "koopman_json"]


# ------------------------------------------------------------------------------------------------
# JSON and text
# ------------------------------------------------------------------------------------------------
def koopman_json(dmd: KoopmanDMD, modes: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON of ``rganalysis koopman``: :meth:`KoopmanDMD.to_json` plus where it comes from.

    Keys of ``to_json`` (``snapshots``, ``features``, ``rank``, ``numerical_rank``,
    ``singular_values``, ``tol``, ``ci_method``, ``n_bags_used``, ``scale_factor``, ``eigenvalues``
    with ``re, im, abs, class, ci_low, ci_high[, exponent]``, ``amplitudes``) and ``flow`` (path),
    ``name``, ``subset``, ``scale``, ``tensors`` (count), ``rate``, ``b``, ``b_n``, ``scale_note``,
    ``modes`` (group paths written into the flow file, [] if none).
    """
    j = dmd.to_json()

    def num(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(float(x)) else float(x)

    j.update(
        {
            "flow": getattr(dmd, "source_", None),
            "name": getattr(dmd, "flow_name_", ""),
            "subset": getattr(dmd, "subset_", None),
            "scale": getattr(dmd, "scale_", None),
            "tensors": len(getattr(dmd, "tensor_names_", [])),
            "rate": num(getattr(dmd, "rate_", None)),
            "b": num(getattr(dmd, "b_", None)),
            "b_n": [num(x) for x in getattr(dmd, "b_n_", [])],
            "scale_note": getattr(dmd, "scale_note_", None),
            "modes": list(modes if modes is not None else getattr(dmd, "modes_written_", [])),
        }
    )
    return j


def format_koopman(j: dict[str, Any], max_rows: int = 30) -> str:
    """Readable spectrum table of a :func:`koopman_json` result."""
    feats = j.get("features")
    # a bare KoopmanDMD.to_json() has no store provenance (tensors, subset, scale)
    prov = [f"{j['tensors']} tensors"] if j.get("tensors") is not None else []
    prov += [f"{k} {j[k]}" for k in ("subset", "scale") if j.get(k) is not None]
    head = (
        f"{j.get('flow') or j.get('name') or 'flow'}: {j['snapshots']} snapshots of "
        + (f"{feats:,} parameters" if feats is not None else "features")
        + (f" ({', '.join(prov)})" if prov else "")
    )
    b = j.get("b", j.get("scale_factor"))  # koopman_json: b; a bare to_json: scale_factor
    lines = [
        head,
        f"  rank {j['rank']} (numerical rank {j['numerical_rank']}), "
        + (
            f"b = {b:.4f}" + (f" (rate {j['rate']:.4g})" if j.get("rate") is not None else "")
            if b is not None
            else (j.get("scale_note") or "no scale factor")
        ),
        "  singular values of X: " + " ".join(f"{s:.4g}" for s in j["singular_values"]),
    ]
    any_ci = any(e["ci_low"] is not None for e in j["eigenvalues"])
    if any_ci:
        lines.append(
            f"  {'#':>3} {'|lambda|':>9} {'re':>10} {'im':>10} {'y':>8}  {'class':<12} "
            f"{'95% CI of |lambda|':>20} {'|amplitude|':>12}"
        )
    else:  # no interval anywhere: no verdict either, so no class column
        lines.append(f"  {'#':>3} {'|lambda|':>9} {'re':>10} {'im':>10} {'y':>8}  {'|amplitude|':>12}")
    top = max((e["abs"] for e in j["eigenvalues"]), default=0.0)
    for i, e in enumerate(j["eigenvalues"][:max_rows]):
        if "exponent" not in e:
            y = "-"
        elif e["exponent"] is None or e["abs"] <= 1e-12 * top:  # 0 to round-off: y = ln 0 / ln b
            y = "-inf"
        else:
            y = f"{e['exponent']:.3f}"
        amp = j["amplitudes"][i]["abs"]
        row = f"  {i:>3} {e['abs']:>9.5f} {e['re']:>10.5f} {e['im']:>10.5f} {y:>8}  "
        if any_ci:
            ci = interval_text(e["ci_low"], e["ci_high"])
            row += f"{e['class']:<12} {ci:>20} "
        lines.append(row + f"{amp:>12.4g}")
    if len(j["eigenvalues"]) > max_rows:
        lines.append(f"  ... {len(j['eigenvalues']) - max_rows} more eigenvalues (all in --json)")
    if not any_ci:
        why = j.get("ci_note") or "no usable bags"
        lines.append(
            f"  no confidence intervals ({why}), so no eigenvalue is classified as relevant, irrelevant or "
            "marginal"
        )
    elif any(e["ci_low"] is None for e in j["eigenvalues"]):
        lines.append(
            "  'no interval': the bags do not support one (see the warning); the class is undetermined"
        )
    if any_ci and j.get("b") is not None:
        lines.append(
            f"  classes from the interval of y = ln|lambda| / ln b against the marginal band |y| <= {j['tol']:g}"
        )
    if j.get("modes"):
        lines.append(f"  modes written: {', '.join(j['modes'])}")
    return "\n".join(lines)
