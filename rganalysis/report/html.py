"""Rendering a report as one self-contained HTML page (figures as PNG data URIs, CSS inline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rganalysis.report.model import format_value

if TYPE_CHECKING:  # pragma: no cover
    from rganalysis.report.model import Figure, Report, Table

import base64
import html
import json
from dataclasses import asdict

from rganalysis import __version__

# ============================================================================================ rendering
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
 padding:1.5em 2em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{border-bottom:1px solid #bbb;margin-top:2.2em;padding-bottom:.15em}
h3{margin-top:1.6em}
figure{margin:1.2em 0 1.8em;padding:0}
figure img{max-width:100%;height:auto;border:1px solid #e4e4e4}
figcaption{font-size:.92em;color:#333;max-width:60em;margin-top:.4em}
figcaption b{color:#000}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.88em}
th,td{border:1px solid #d0d0d0;padding:.2em .55em;text-align:right}
th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;text-align:left;font-size:.9em;color:#444;padding-top:.3em;max-width:60em}
code,pre{background:#f6f6f6;padding:.1em .3em;font-size:.9em}
pre{padding:.6em;overflow-x:auto}
nav ul{columns:2}
.meta td{text-align:left}
.note{background:#fff6e0;border-left:4px solid #f0b400;padding:.5em .8em}
td.relevant{color:#b71c1c;font-weight:600} td.marginal{color:#c15a00;font-weight:600} td.irrelevant{color:#0d47a1}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _json_script(id_: str, obj: Any) -> str:
    text = json.dumps(obj, allow_nan=False, sort_keys=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{_e(id_)}">{text}</script>'


def _table_html(t: Table) -> str:
    out = [
        f"<h3>{_e(t.title)}</h3>",
        f'<table id="{_e(t.id)}">',
        f"<caption>{_e(t.caption)}</caption>",
        "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in t.header) + "</tr></thead><tbody>",
    ]
    for row in t.rows:
        cells = []
        for c in row:
            attrs = ""
            if c.text in ("relevant", "marginal", "irrelevant"):
                attrs += f' class="{c.text}"'
            if c.key is not None:
                attrs += f' data-key="{_e(c.key)}"'
            if c.value is not None or c.key is not None:
                attrs += f' data-value="{_e(json.dumps(c.value))}"'
            cells.append(f"<td{attrs}>{_e(c.text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _figure_html(f: Figure) -> str:
    b64 = base64.b64encode(f.png).decode("ascii")
    return (
        f'<figure id="{_e(f.id)}"><img src="data:image/png;base64,{b64}" alt="{_e(f.title)}">'
        f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}</figcaption></figure>"
    )


def _model_notes(m: Any) -> list[str]:
    """What a reader must know before trusting the model's section: an untrained model, emptied layers,
    undetermined verdicts, an extrapolated fixed point."""
    info, j = m.info, m.fit_json
    notes = []
    untrained, why = info.get("untrained") or (False, "")
    if untrained:
        notes.append(
            f"This model looks untrained (a random initialisation): {why}. Its flow describes the "
            "initialisation scheme, not what training learnt."
        )
    collapsed = info.get("collapsed_layers") or {}
    if collapsed:
        notes.append(
            f"Layer collapse: global pruning emptied {len(collapsed)} layer(s): "
            + ", ".join(f"{k} from round {v}" for k, v in collapsed.items())
            + ". Their couplings are frozen at 0 from then on."
        )
    if j.get("fixed_point_type") == "undetermined":
        eig = j.get("eigenvalues") or []
        if j.get("underdetermined"):
            why = "the fit has no more one-step pairs than parameters per row, so it measures no fixed point"
        elif eig and all(e.get("ci_low") is None for e in eig):
            why = "no eigenvalue has an interval (the warnings of the fit say why)"
        else:
            why = (
                "the intervals of some eigenvalues do not fix their class (they reach into the marginal band)"
            )
        notes.append(
            f"The fixed-point type is undetermined: {why} (the point estimates would say "
            f"{j.get('fixed_point_type_estimate')})."
        )
    if j.get("fixed_point_extrapolated"):
        out = j.get("fixed_point_outside_domain") or []
        notes.append(
            f"The fitted fixed point is an extrapolation: {len(out)} of its couplings lie outside their "
            f"domain (e.g. {', '.join(out[:3])}); it is no state IMP can reach."
        )
    return notes


def render_html(rep: Report) -> str:
    o = rep.options
    dp = "none (per-layer couplings)" if rep.depth_points is None else str(rep.depth_points)
    opt_rows = [
        ("coupling sets", ", ".join(o.couplings)),
        ("estimator", o.estimator),
        (
            "depth points",
            dp
            + (" (auto)" if o.depth_points == "auto" else "")
            + (
                " in the comparison; each model's fit uses its own (its table)" if len(rep.models) > 1 else ""
            ),
        ),
        ("rank", format_value(o.rank)),
        ("ridge", format_value(o.ridge)),
        ("bootstrap resamples", format_value(o.n_bootstrap)),
        ("tol (near a fixed point)", format_value(o.tol)),
    ]
    if o.estimator == "response":
        opt_rows += [
            ("round", format_value(o.round)),
            ("perturbation", o.perturbation),
            ("samples", format_value(o.n_samples)),
        ]
    cs = (rep.compare_json or {}).get("settings")
    if cs:  # the comparison fits each flow itself; its settings differ from the model fits' and are said here
        opt_rows += [
            ("comparison: estimator", "trajectory, no bootstrap"),
            ("comparison: rank", format_value(cs.get("rank"))),
            ("comparison: fixed-point ridge", format_value(cs.get("fixed_point_ridge"))),
            ("comparison: alignment", str(cs.get("alignment"))),
        ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>rganalysis report: {_e(', '.join(m.label for m in rep.models))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>rganalysis report</h1>",
        f"<p>IMP flows read as renormalization-group flows: {len(rep.models)} model(s), created {_e(rep.created)} "
        f"by rganalysis {_e(__version__)}. Every number in the tables comes from the JSON object embedded in "
        "this page, which is exactly what <code>rganalysis fit --json</code> (and <code>rganalysis compare "
        "--json</code>) write for the options below; the command that reproduces each model's numbers is "
        "given in its section.</p>",
        '<table class="meta" id="report-options"><thead><tr><th>option</th><th>value</th></tr></thead><tbody>'
        + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in opt_rows)
        + "</tbody></table>",
        _json_script(
            "report-options-json",
            {**asdict(o), "depth_points_used": rep.depth_points, "couplings": list(o.couplings)},
        ),
        "<nav><h2>Contents</h2><ul>"
        + "".join(f'<li><a href="#model-{_e(m.slug)}">{_e(m.label)}</a></li>' for m in rep.models)
        + (
            '<li><a href="#comparison">Comparison</a></li>'
            if (rep.figures or rep.tables or rep.compare_note)
            else ""
        )
        + "</ul></nav>",
    ]
    for m in rep.models:
        info = m.info
        flow = info["flow"]
        desc = (
            f"{_e(info['architecture'] or 'model')} <code>{_e(m.path)}</code>: {info['rounds']} rounds, "
            f"{info['layers']} pruned layers, {info['parameters']:,} prunable weights; flow "
            f"{_e(flow.get('kind', ''))}"
            + (f", rate {_e(flow['rate'])}" if flow.get("rate") is not None else "")
            + (f", scope {_e(flow['scope'])}" if flow.get("scope") else "")
            + (f", rescaling {_e(flow['rescaling'])}" if flow.get("rescaling") else "")
            + f"; global density {info['global_density'][0]:.4g} → {info['global_density'][-1]:.4g}."
        )
        parts += [
            f'<section id="model-{_e(m.slug)}">',
            f"<h2>Model {_e(m.label)}</h2>",
            f"<p>{desc}</p>",
            f"<p>Reproduce the numbers of this section: <code>{_e(m.command)}</code>"
            + (f" and <code>{_e(m.koopman_command)}</code>" if m.koopman_command else "")
            + "</p>",
        ]
        notes = _model_notes(m)
        if notes:
            parts.append(
                '<div class="note"><ul>' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></div>"
            )
        if m.warnings:
            parts.append(
                '<div class="note"><p>The fit warned (read the intervals and the classes with care):</p>'
                "<ul>" + "".join(f"<li>{_e(w)}</li>" for w in m.warnings) + "</ul></div>"
            )
        for f in m.figures:
            parts.append(_figure_html(f))
        for t in m.tables:
            parts.append(_table_html(t))
        parts.append(_json_script(f"fit-{m.slug}", m.fit_json))
        if m.koopman_json is not None:
            parts.append(_json_script(f"koopman-{m.slug}", m.koopman_json))
        parts.append("</section>")
    if rep.figures or rep.tables or rep.compare_note:
        parts += ['<section id="comparison">', "<h2>Comparison</h2>"]
        if rep.compare_command:
            parts.append(
                f"<p>Reproduce the numbers of this section: <code>{_e(rep.compare_command)}</code></p>"
            )
        if rep.compare_note:
            parts.append(
                f'<p class="note">No distance matrix, dendrogram or classes: {_e(rep.compare_note)}.</p>'
            )
        for f in rep.figures:
            parts.append(_figure_html(f))
        for t in rep.tables:
            parts.append(_table_html(t))
        if rep.compare_json is not None:
            parts.append(_json_script("compare", rep.compare_json))
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
