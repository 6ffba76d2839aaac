"""Building a report: per flow the fit of ``rganalysis fit`` (its JSON embedded verbatim, tables
rendered from it), figures, and with several flows the comparison of ``rganalysis compare``.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import re
import shlex
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rganalysis.errors import InvalidParameterError
from rganalysis.fit.fixed_points import fixed_point_wording
from rganalysis.fit.options import MARGINAL_Y
from rganalysis.report.model import Cell, Figure, ModelSection, Report, Table, format_value, new_figure
from rganalysis.report.options import ReportOptions
from rganalysis.store.diagnostics import collapsed_layers, looks_untrained
from rganalysis.store.parameter_set import ParameterSet

__all__ = ["build_report", "write_report"]


# ============================================================================================ building
def _num(x: Any, key: str | None = None) -> Cell:
    """A cell holding a JSON number (``value`` exact, text rounded)."""
    if x is None or isinstance(x, (int, float)) and not isinstance(x, bool):
        return Cell(format_value(x), x, key)
    return Cell(format_value(x), None, key)


def _slug(label: str, taken: set[str]) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-") or "model"
    out, i = s, 2
    while out in taken:
        out, i = f"{s}-{i}", i + 1
    taken.add(out)
    return out


def _labels(psets: Sequence[ParameterSet], paths: Sequence[str]) -> list[str]:
    """Model labels as ``rganalysis compare`` names models: the store's ``name`` attribute, else the
    file stem; names that repeat are told apart by their file stems (else ``#2``, ``#3``, ...)."""
    from rganalysis.universality.labels import unique_labels

    names = [
        str(p.attrs.get("name") or "") or Path(path).stem or "model"
        for p, path in zip(psets, paths, strict=True)
    ]
    return unique_labels(names, [str(x) for x in paths])


def _png(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _class_counts(eigs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out = {"relevant": 0, "marginal": 0, "irrelevant": 0}
    for e in eigs:
        out[e["class"]] = out.get(e["class"], 0) + 1
    return out


def _model_info(pset: ParameterSet) -> dict[str, Any]:
    g = pset.global_density().values
    return {
        "name": str(pset.attrs.get("name", "")),
        "architecture": str(pset.attrs.get("architecture", "")),
        "rounds": int(pset.n_rounds),
        "layers": len(pset.pruned_names()),
        "parameters": int(sum(pset.info[n].numel for n in pset.pruned_names())),
        "flow": {
            k: v for k, v in pset.flow_attrs.items() if isinstance(v, (str, int, float, bool)) or v is None
        },
        "global_density": [float(x) for x in g],
        "collapsed_layers": collapsed_layers(pset),
        "untrained": looks_untrained(pset, 0),
    }


def _model_figures(sec: ModelSection, pset: ParameterSet, fit: Any, opts: ReportOptions) -> None:
    from rganalysis.report import plot

    j = sec.fit_json
    s = sec.slug
    n_layers = len(pset.pruned_names())
    n_rounds = pset.n_rounds
    dp = (
        ("resampled onto " + f"{len(j['couplings'])} couplings")
        if fit.depth_points
        else f"{len(j['couplings'])} couplings"
    )

    fig = new_figure((max(6.0, 1.6 + 0.5 * n_rounds), min(16.0, max(3.5, 1.3 + 0.22 * n_layers))))
    plot.density_heatmap(pset, ax=fig.subplots())
    sec.figures.append(
        Figure(
            f"fig-density-{s}",
            "Per-layer density over rounds",
            f"Each row is one of the {n_layers} pruned layers in depth order (input side at the top), each column "
            f"an IMP round (0 = the starting model); the colour"
            + (" and the number" if n_rounds <= 16 and n_layers <= 30 else "")
            + f" of a cell give{'s' if not (n_rounds <= 16 and n_layers <= 30) else ''} the layer's surviving "
            f"fraction ρ_l. Global magnitude pruning removes the smallest weights of the whole network, so layers "
            f"with small weights thin out faster (darker rows) and layers with large weights keep their density. "
            f"These per-layer densities are the couplings of the fit ({dp}).",
            fig,
        )
    )

    rounds = sorted({int(round(x)) for x in np.linspace(0, n_rounds - 1, min(n_rounds, 9))})
    fig = new_figure((7.5, max(4.0, 1.6 + 0.55 * len(rounds))))
    total = sum(pset.info[n].numel for n in pset.pruned_names())
    stride = max(1, math.ceil(total / max(1, opts.magnitude_samples)))
    plot.magnitude_distributions(pset, rounds, ax=fig.subplots(), max_samples=opts.magnitude_samples)
    rescaling = pset.flow_attrs.get("rescaling", "none")
    sec.figures.append(
        Figure(
            f"fig-magnitudes-{s}",
            "Magnitude distributions per round",
            "One histogram of the magnitudes |w| of the surviving weights per round (round 0 at the top; log-spaced "
            "bins on a log axis; each round scaled to its own peak, the tick gives its number of survivors). "
            "Magnitude pruning cuts the left tail: the sharp left edge of a round is its pruning threshold, moving "
            "right round by round. "
            + (
                "This flow is data-free (no rescaling), so the survivors keep their values and the shape right of "
                "the cut does not change. "
                if rescaling == "none"
                else f"This flow rescales the survivors ({rescaling}), so the whole shape may change between rounds. "
            )
            + (
                f"The model has {total:,} prunable weights; the histograms use the same deterministic 1-in-{stride} "
                "subset of positions at every round."
                if stride > 1
                else "All weights are counted."
            ),
            fig,
        )
    )

    fp = j["fixed_point"]
    fp_ok = all(v is not None for v in fp)
    fig = new_figure((6.4, 5.0))
    plot.flow_projection(fit.couplings_[0], ax=fig.subplots(), fixed_point=fp if fp_ok else None)
    sec.figures.append(
        Figure(
            f"fig-projection-{s}",
            "Flow in coupling space",
            f"The flow's couplings K_n ({len(j['couplings'])} numbers per round) projected on the two principal "
            "directions of the flow itself (PCA over its rounds; the axis labels give each direction's share of the "
            "flow's variance). Arrows go from round n to n+1; the first and last rounds are numbered. "
            + (
                "The star is the fitted fixed point K* in the same projection (its distance from this plane is not "
                "shown: compare with the distance curve). "
                if fp_ok
                else "The fit has no finite fixed point. "
            )
            + "A flow that slows down and bends towards K* approaches it along its least irrelevant direction; "
            "a spiral means a complex eigenvalue pair.",
            fig,
        )
    )

    eig = j["eigenvalues"]
    cnt = _class_counts(eig)
    lead = max(eig, key=lambda e: e["abs"] or 0.0) if eig else None
    spec_caption = (
        f"Eigenvalues λ of the fitted Jacobian of the RG map ({j['estimator']} estimator, {len(eig)} eigenvalues) in "
        f"the complex plane. Outside the unit circle and its grey marginal band (|y| ≤ {MARGINAL_Y:g} in the exponent, "
        f"|λ| in [{j['b'] ** -MARGINAL_Y:.4f}, {j['b'] ** MARGINAL_Y:.4f}] at b = {j['b']:.4g}) a direction "
        "is relevant (it grows under IMP, exponent y = ln|λ| / ln b > 0, red triangles); inside it is irrelevant "
        "(it decays, y < 0, blue circles); in the band marginal (orange squares). Each radial bar spans the "
        "95% bootstrap interval of |λ|: a bar that crosses the band means the class is not resolved. Complex "
        f"pairs rotate the flow. Here: {cnt['relevant']} relevant, {cnt['marginal']} marginal, "
        f"{cnt['irrelevant']} irrelevant; fixed point {fixed_point_wording(j)[0]}"
        + (f"; leading |λ| = {format_value(lead['abs'])} ({lead['class']})." if lead else ".")
    )
    if sec.koopman_json is not None:
        fig = new_figure((11.0, 5.4))
        a1, a2 = fig.subplots(1, 2)
        plot.spectrum(j, ax=a1, title="coupling space (rganalysis fit)")
        plot.spectrum(sec.koopman_json, ax=a2, title="parameter space (Koopman DMD)")
        kc = _class_counts(sec.koopman_json["eigenvalues"])
        spec_caption += (
            " Right: the spectrum of the Koopman operator fitted by exact DMD to the surviving parameters "
            "themselves (not the couplings), read the same way: "
            f"{kc['relevant']} relevant, {kc['marginal']} marginal, {kc['irrelevant']} irrelevant. "
            "Directions that agree between the panels are properties of the flow, not of the chosen couplings."
        )
    else:
        fig = new_figure((6.0, 6.2))
        plot.spectrum(j, ax=fig.subplots())
    sec.figures.append(Figure(f"fig-spectrum-{s}", "Eigenvalue spectrum", spec_caption, fig))
    response_figure(sec)

    near = j["near_fixed_point"]
    fig = new_figure((6.4, 4.4))
    plot.distance_curve(j, ax=fig.subplots())
    kind, where = fixed_point_wording(j)
    verdict = (
        "The fit found no finite fixed point (I − J singular), so there is no distance."
        if near is None
        else f"Verdict at round {near['round']}: fixed point {kind}; {where}."
    )
    sec.figures.append(
        Figure(
            f"fig-distance-{s}",
            "Distance to the fixed point",
            "‖K_n − K*‖ per round in coupling units (log axis when all are positive). Approaching a stable fixed point "
            "the distance shrinks like |λ_lead|^n, a straight line on the log axis whose slope per round is ln|λ_lead| "
            "of the slowest irrelevant direction; a distance that grows means the flow leaves K* along a relevant "
            "direction; a curve that flattens away from zero means the flow passes the fixed point at a distance. "
            + verdict,
            fig,
        )
    )


def response_figure(sec: ModelSection) -> Figure | None:
    """The spectrum of the response Jacobian stored in the flow (``fit_json["response"]``, written by
    :func:`rganalysis.response_jacobian`), beside the trajectory spectrum: appended to ``sec.figures``, with
    a caption that says which map each linearises (the trajectory figure's caption is told as well).
    Nothing when the store has none.  Returns the figure."""
    from rganalysis.report import plot

    resp = next(iter((sec.fit_json.get("response") or {}).values()), None)
    if resp is None:
        return None
    fig = new_figure((6.0, 6.2))
    ax = fig.subplots()
    plot.spectrum(resp, ax=ax, title=f"response Jacobian at round {resp['round']} (real IMP step)")
    floor = resp.get("noise_floor")
    if floor is not None and floor > 0:
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(floor * np.cos(t), floor * np.sin(t), color="0.5", ls="--", lw=0.9, label="noise floor")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    cnt = _class_counts(resp["eigenvalues"])
    n_noise = sum(1 for e in resp["eigenvalues"] if e.get("in_noise"))
    caption = (
        f"Eigenvalues of the response Jacobian stored in this flow: it linearises the real IMP step at round "
        f"{resp['round']} -- rewind, retrain (the user's training, {len(resp['seeds'][0])} seeds per state) and "
        f"global pruning at rate {format_value(resp['rate'])} -- measured from {resp['n_states']} perturbed masks "
        f"along {resp['n_directions']} directions of the {', '.join(resp['coupling_sets'])} couplings "
        f"({resp['n_retrains']} retrains). The previous figure linearises a different map: the trajectory fit of the "
        "recorded flow, an affine map through its own one-step pairs, which fixes the Jacobian only along the flow. "
        "Read the same way (unit circle, marginal band, radial 95% bars: "
        f"{resp.get('bootstrap_method') or 'the bootstrap of the regression'}); grey "
        "diamonds are undetermined (their interval straddles a class boundary). The dashed circle is the noise floor "
        f"|λ| = {format_value(floor)}: the {resp['noise_level']:.0%} quantile of the largest |λ| of the Jacobian of "
        f"seed noise alone, so eigenvalues inside it are indistinguishable from noise. Here: {cnt.get('relevant', 0)} "
        f"relevant, {cnt.get('marginal', 0)} marginal, {cnt.get('irrelevant', 0)} irrelevant, "
        f"{cnt.get('undetermined', 0)} undetermined; {n_noise} inside the noise floor."
    )
    spec = next((f for f in sec.figures if f.id.startswith("fig-spectrum-")), None)
    if spec is not None:
        spec.caption += (
            " (This is the trajectory fit's spectrum; the next figure is the response Jacobian of the real IMP step "
            "stored with the flow.)"
        )
    f = Figure(f"fig-response-{sec.slug}", "Response spectrum (real IMP step)", caption, fig)
    sec.figures.append(f)
    return f


def _model_tables(sec: ModelSection, pset: ParameterSet, fit: Any) -> None:
    j = sec.fit_json
    s = sec.slug
    near = j["near_fixed_point"]
    rows = [
        [Cell("models"), Cell(", ".join(j["models"]))],
        [Cell("estimator"), Cell(j["estimator"])],
        [Cell("rate p"), _num(j["rate"], "rate")],
        [Cell("scale factor b"), _num(j["b"], "b")],
        [Cell("couplings"), _num(len(j["couplings"]))],
        [
            Cell("depth points"),
            Cell("none (per-layer)" if j.get("depth_points") is None else str(j["depth_points"])),
        ],
        [Cell("rank"), Cell("full" if j.get("rank") is None else str(j["rank"]))],
        [Cell("fixed point type"), Cell(j["fixed_point_type"])],
        [
            Cell("near fixed point"),
            Cell(
                "—"
                if near is None
                else "no verdict (extrapolated, not reached)"
                if j.get("fixed_point_extrapolated")
                else ("yes" if near["near"] else "no")
            ),
        ],
        [
            Cell("distance at last round (" + ("—" if near is None else near["measure"]) + ")"),
            _num(None if near is None else near["distance"], "near_fixed_point.distance"),
        ],
        [Cell("tol"), _num(j["tol"], "tol")],
        [Cell("residual"), _num(j["residual"], "residual")],
    ]
    for k, v in sorted((j.get("diagnostics") or {}).items()):
        rows.append([Cell(f"diagnostics: {k}"), _num(v, f"diagnostics.{k}")])
    sec.tables.append(
        Table(
            f"summary-{s}",
            "Fit summary",
            "The fit of this flow, as in the JSON of rganalysis fit.",
            ["quantity", "value"],
            rows,
        )
    )

    rows = []
    for i, e in enumerate(j["eigenvalues"]):
        rows.append(
            [
                Cell(str(i)),
                _num(e["re"], f"eigenvalues[{i}].re"),
                _num(e["im"], f"eigenvalues[{i}].im"),
                _num(e["abs"], f"eigenvalues[{i}].abs"),
                _num(e["exponent"], f"eigenvalues[{i}].exponent"),
                Cell(e["class"]),
                _num(e["ci_low"], f"eigenvalues[{i}].ci_low"),
                _num(e["ci_high"], f"eigenvalues[{i}].ci_high"),
            ]
        )
    sec.tables.append(
        Table(
            f"exponents-{s}",
            "Eigenvalues and exponents",
            f"One row per eigenvalue λ of the Jacobian, in the order of the JSON; y = ln|λ| / ln b with b = {format_value(j['b'])} "
            f"(y = — for λ = 0); the class compares the interval of y with the marginal band |y| ≤ {MARGINAL_Y:g}; "
            "the last columns are the 95% bootstrap interval of |λ|.",
            ["#", "Re λ", "Im λ", "|λ|", "exponent y", "class", "CI low", "CI high"],
            rows,
        )
    )

    k0 = np.asarray(fit.couplings_[0].values, dtype=np.float64)
    rows = []
    for i, (c, v) in enumerate(zip(j["couplings"], j["fixed_point"], strict=True)):
        rows.append([Cell(c), _num(v, f"fixed_point[{i}]"), _num(float(k0[0, i])), _num(float(k0[-1, i]))])
    sec.tables.append(
        Table(
            f"fixedpoint-{s}",
            "Fixed point",
            "The fixed point K* of the fitted map, coupling by coupling, beside the flow's first and last rounds.",
            ["coupling", "K*", "K at round 0", f"K at round {k0.shape[0] - 1}"],
            rows,
        )
    )

    g = sec.info["global_density"]
    rows = []
    for r, d in enumerate(j["distance_to_fixed_point"]):
        b_n = j["b_n"][r] if r < len(j["b_n"]) else None
        rows.append(
            [
                Cell(str(r)),
                _num(d, f"distance_to_fixed_point[{r}]"),
                _num(g[r] if r < len(g) else None),
                _num(b_n, f"b_n[{r}]") if b_n is not None else Cell("—"),
            ]
        )
    sec.tables.append(
        Table(
            f"distance-{s}",
            "Distance to the fixed point per round",
            "‖K_n − K*‖ per round (coupling units), the global density ρ_n of the store and the round's scale factor "
            "b_n = ρ_n / ρ_(n+1).",
            ["round", "‖K_n − K*‖", "global density", "b_n"],
            rows,
        )
    )


def _koopman_json(pset: ParameterSet, opts: ReportOptions) -> dict[str, Any]:
    """The JSON of ``rganalysis koopman`` for one flow (its defaults, with the report's device)."""
    from rganalysis.koopman.dmd import KoopmanDMD
    from rganalysis.koopman.summary import koopman_json

    return koopman_json(KoopmanDMD(device=opts.device).fit(pset))


def _compare(
    flows: Sequence[str | ParameterSet], opts: ReportOptions, depth_points: int | None
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The JSON of ``rganalysis compare`` for the flows and its command, or (None, None, why not)."""
    from rganalysis.universality.analysis import UniversalityAnalysis

    kw: dict[str, Any] = {"rank": opts.rank}
    if opts.threshold is not None:
        kw["threshold"] = opts.threshold
    ua = UniversalityAnalysis(list(opts.couplings), depth_points, tol=opts.tol, **kw)
    j = ua.fit(list(flows)).to_json()
    if all(s.units is not None for s in ua.signatures_):
        from rganalysis.universality.transfer import transfer_scores, transfer_scores_json

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # other architectures: NaN cells, drawn blank
            j["directed"] = transfer_scores_json(transfer_scores(ua.signatures_, names=list(ua.names_)))
    paths = [f if isinstance(f, str) else str(f.attrs.get("name", "flow")) + ".h5" for f in flows]
    return (
        j,
        shlex.join(
            [
                "rganalysis",
                "compare",
                *paths,
                *opts.compare_args(depth_points),
                *(["--directed"] if "directed" in j else []),
                "--json",
                "compare.json",
            ]
        ),
        None,
    )


def _transfer_section(rep: Report, tr: Any) -> None:
    """Measured ticket transfers beside the distances: a table per pair and a scatter per target."""
    from scipy.stats import spearmanr

    j = rep.compare_json
    names = [str(n) for n in j["models"]]
    D = np.array([[np.nan if x is None else x for x in row] for row in j["distance"]], dtype=np.float64)
    idx = [names.index(lab) for lab in tr.labels]
    gap = tr.gap
    n = len(tr.labels)
    rhos = []
    rows = []
    for t in range(n):
        src = [s for s in range(n) if s != t]
        d = [D[idx[s], idx[t]] for s in src]
        g = [gap[s, t] for s in src]
        r = spearmanr(d, g).statistic if n > 2 and np.ptp(d) > 0 and np.ptp(g) > 0 else float("nan")
        rhos.append(float(r))
        for s, dd, gg in zip(src, d, g, strict=True):
            rows.append(
                [
                    Cell(tr.tasks[s]),
                    Cell(tr.tasks[t]),
                    _num(float(dd)),
                    _num(float(tr.accuracy[s, t])),
                    _num(float(gg)),
                ]
            )
    fin = [r for r in rhos if np.isfinite(r)]
    mean_rho = float(np.mean(fin)) if fin else float("nan")
    rep.tables.append(
        Table(
            "transfer-pairs",
            "Ticket transfers beside the distances",
            "Each row: the winning ticket (mask) of the source task, applied to the shared rewind point and trained on "
            "the target task; its test accuracy, and the gap to the target's own ticket (negative: the transferred "
            "ticket is worse). A distance that predicts transfers ranks the gaps: larger distance, more negative gap.",
            ["source ticket", "target task", "distance", "accuracy", "gap"],
            rows,
        )
    )
    rows = [
        [
            Cell(tr.tasks[i]),
            _num(float(tr.accuracy[i, i])),
            _num(float(tr.random_mask_accuracy[i])),
            _num(rhos[i] if np.isfinite(rhos[i]) else None),
        ]
        for i in range(n)
    ]
    rep.tables.append(
        Table(
            "transfer-targets",
            "Tickets and targets",
            "Per task: its own ticket's test accuracy, a random mask with the ticket's per-layer densities trained the "
            "same way (a ticket that does not beat it is no winning ticket), and Spearman's rho between the distance "
            "and the gap over the other tasks' tickets (negative = the distance ranks the transfers).",
            ["task", "own ticket", "random mask", "rho(distance, gap)"],
            rows,
        )
    )
    fig = new_figure((6.8, 4.6))
    ax = fig.subplots()
    import matplotlib as mpl

    colours = mpl.colormaps["tab10"](np.arange(n) % 10)
    for t in range(n):
        src = [s for s in range(n) if s != t]
        ax.scatter(
            [D[idx[s], idx[t]] for s in src],
            [gap[s, t] for s in src],
            color=colours[t],
            s=28,
            label=f"target {tr.tasks[t]}",
        )
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_xlabel("universality distance (source, target)")
    ax.set_ylabel("transfer gap (accuracy)")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Do tickets transfer between near flows?")
    rep.figures.append(
        Figure(
            "fig-transfers",
            "Distance and transfer",
            "One point per (source ticket, target task): the distance between the two tasks' IMP flows (x) and how much "
            "accuracy the source's ticket loses on the target against the target's own ticket (y). Points of one colour "
            f"share a target; within each target the distance should rank the gaps. Mean within-target Spearman rho: "
            f"{format_value(mean_rho)} over {len(fin)} targets (the benchmark behind the default distance: "
            "docs/universality.md, section 10).",
            fig,
        )
    )


def _compare_section(rep: Report, fits: Sequence[Any]) -> None:
    from rganalysis.report import plot

    j = rep.compare_json
    labels = [m.label for m in rep.models]
    if j is not None:
        names = [str(n) for n in j["models"]]
        dist = j["distance"]
        threshold = j.get("threshold")
        hier = j.get("hierarchical") or {}
        linkage = hier.get("linkage") or j.get("linkage")
        classes = j.get("classes") or []
        weights = j.get("weights") or {}
        n = len(names)
        wtxt = " + ".join(f"{v:g} × {k}" for k, v in weights.items() if v)
        fig = new_figure((max(5.0, 2.0 + 0.65 * n), max(4.2, 1.6 + 0.55 * n)))
        plot.distance_matrix(dist, names, ax=fig.subplots(), label="total distance")
        rep.figures.append(
            Figure(
                "fig-distance-matrix",
                "Distance matrix",
                "The total distance between every pair of models as rganalysis compare computes it"
                + (f" ({wtxt}; the components are in the tables below)" if wtxt else "")
                + f": 0 on the diagonal; light cells are models whose flows are close ({_closeness(weights)}), "
                "dark cells models far apart. Blocks of light cells along the diagonal are candidate "
                f"universality classes; two models whose distance is at most {format_value(threshold)} share a class.",
                fig,
            )
        )
        if j.get("directed"):
            fig = new_figure((max(5.0, 2.0 + 0.65 * n), max(4.2, 1.6 + 0.55 * n)))
            plot.transfer_heatmap(j["directed"], ax=fig.subplots())
            rep.figures.append(
                Figure(
                    "fig-transfer-scores",
                    "Directed transfer scores",
                    "Will the ticket of one task serve another? Each row is a source (the task whose IMP found the "
                    "ticket), each column a target task; the cell is how much of what the target's IMP keeps (its "
                    "units, weighted by how long they survive) the source's flow lacks: light = the source's ticket "
                    "is expected to lose little on the target, dark = much. Read a column to rank the tickets for "
                    "one task, a row to rank the tasks one ticket will serve; the matrix is not symmetric (a ticket "
                    "of a broader task serves a narrower one better than the reverse). Blank cells: no unit "
                    "correspondence (another architecture, or another start than the tickets that align). "
                    "rganalysis compare --directed; docs/universality.md.",
                    fig,
                )
            )
        fig = new_figure((max(5.5, 2.0 + 0.65 * n), 4.4))
        z = linkage if linkage else plot.linkage_from_distance(dist)
        plot.dendrogram(z, names, ax=fig.subplots(), threshold=threshold)
        rep.figures.append(
            Figure(
                "fig-dendrogram",
                "Dendrogram",
                "Hierarchical clustering of the models on the distance matrix ("
                + (
                    f"{hier.get('method', 'average')} linkage, as computed by rganalysis compare"
                    if linkage
                    else "average linkage"
                )
                + "): leaves are models, and two groups join at the height of their (average) distance. Groups that "
                f"join below the dashed threshold line ({format_value(threshold)}) are one class of the clustering; the "
                "universality classes listed below are the connected groups of the graph whose edges are the pairs "
                "at most the threshold apart, which can join a chain of models the average linkage keeps apart.",
                fig,
            )
        )
        rows = [
            [Cell(names[i])] + [_num(dist[i][k], f"distance[{i}][{k}]") for k in range(n)] for i in range(n)
        ]
        rep.tables.append(
            Table(
                "compare-distance",
                "Total distance",
                "Pairwise total distances of rganalysis compare" + (f" ({wtxt})." if wtxt else "."),
                ["model", *names],
                rows,
            )
        )
        for cname, mat in (j.get("components") or {}).items():
            rows = [
                [Cell(names[i])] + [_num(mat[i][k], f"components.{cname}[{i}][{k}]") for k in range(n)]
                for i in range(n)
            ]
            w = weights.get(cname)
            rep.tables.append(
                Table(
                    f"compare-component-{_slug(cname, set())}",
                    f"Component: {cname}",
                    f"The {cname} distance, pair by pair (weight {format_value(w)} in the total; — where undefined)."
                    + (
                        " It carries no information over these flows (undefined, zero or constant for every pair), so "
                        "it takes no weight in the default total."
                        if not (j.get("informative") or {}).get(cname, True)
                        else ""
                    )
                    + (f" Comparison mode: {j['mode']}." if j.get("mode") else ""),
                    ["model", *names],
                    rows,
                )
            )
        rows = [[Cell(str(i + 1)), Cell(", ".join(map(str, c)))] for i, c in enumerate(classes)]
        rep.tables.append(
            Table(
                "compare-classes",
                "Universality classes",
                f"Models joined by distances of at most {format_value(threshold)} "
                f"({j.get('threshold_rule', 'fixed')} threshold) share a class.",
                ["class", "models"],
                rows,
            )
        )
        cfits = j.get("fits") or {}
        if cfits:
            rows = []
            for name in names:
                f = cfits.get(name)
                if f is None:
                    continue
                ys = [e["exponent"] for e in f.get("eigenvalues", []) if e.get("retained")]
                rows.append(
                    [
                        Cell(name),
                        _num(f.get("rank")),
                        _num(f.get("b")),
                        Cell(", ".join("-inf" if y is None else f"{y:.4g}" for y in ys) or "none"),
                        Cell(str(f.get("fixed_point_method", ""))),
                        _num(len(f.get("warnings") or [])),
                    ]
                )
            rep.tables.append(
                Table(
                    "compare-fits",
                    "The fits behind the comparison",
                    "rganalysis compare fits each flow itself (trajectory estimator, its own rank rule, no bootstrap), "
                    "so its spectra can differ from the model sections above; these are the exponents y of its "
                    "retained (relevant and marginal) eigenvalues.",
                    ["model", "rank", "b", "retained exponents y", "fixed point", "warnings"],
                    rows,
                )
            )
    spaces = {tuple(m.fit_json["couplings"]) for m in rep.models}
    if len(spaces) == 1:
        fig = new_figure((7.0, 5.2))
        plot.flow_projection(
            [f.couplings_[0] for f in fits],
            ax=fig.subplots(),
            labels=labels,
            title="All flows projected on their two leading directions",
        )
        rep.figures.append(
            Figure(
                "fig-projection-all",
                "All flows in one coupling plane",
                "Every model's flow projected on the two principal directions of all flows together (the couplings "
                "are the same for every model). Flows that run along the same path towards the same region share a "
                "fixed point; parallel but separate paths differ by a relevant or marginal coupling.",
                fig,
            )
        )


def build_report(
    flows: Sequence[str | os.PathLike | ParameterSet],
    options: ReportOptions | None = None,
    *,
    koopman: Sequence[Mapping[str, Any] | None] | Mapping[str, Mapping[str, Any]] | None = None,
    compare: bool = True,
    transfers: Any = None,
    progress: bool = False,
) -> Report:
    """Fit every flow (and compare them when there are several) and draw every figure.

    Parameters
    ----------
    flows : stores (paths or opened :class:`~rganalysis.store.ParameterSet`) written by ``rganalysis flow``
    options : the fit options (default :class:`ReportOptions`)
    koopman : optional Koopman/DMD JSON (``KoopmanDMD.to_json()``) per flow, a list aligned with ``flows``
        or a mapping label -> JSON; drawn beside the coupling-space spectrum
    compare : with several flows, add the comparison section (``rganalysis compare``)
    transfers : optional :class:`~rganalysis.demo.digits.TicketTransfers` (measured ticket transfers
        between some of the flows, named by their labels): the comparison is then made over those flows,
        and the section shows each pair's distance beside its transfer gap
    progress : print one line per step to stderr

    Returns
    -------
    :class:`Report`; its JSON objects are exactly those of ``rganalysis fit`` / ``compare`` for these options.
    """
    import sys

    import rganalysis

    opts = options or ReportOptions()
    if not flows:
        raise InvalidParameterError("no flow given")
    opened: list[ParameterSet] = []
    psets: list[ParameterSet] = []
    paths: list[str] = []
    sources: list[str | ParameterSet] = []  # what `compare` is given: the paths, as the CLI gives them
    try:
        for f in flows:
            if isinstance(f, ParameterSet):
                psets.append(f)
                paths.append(str(f.path or f.attrs.get("name", "flow")))
                sources.append(str(f.path) if f.path else f)
            else:
                p = rganalysis.load(f)
                opened.append(p)
                psets.append(p)
                paths.append(str(f))
                sources.append(str(Path(f)))
        labels = _labels(psets, paths)
        depth_points = opts.resolve_depth_points(psets)
        if isinstance(koopman, Mapping):
            kj = [koopman.get(lab) for lab in labels]
        else:
            kj = list(koopman) if koopman is not None else [None] * len(psets)
            if len(kj) != len(psets):
                raise InvalidParameterError(f"{len(kj)} Koopman spectra for {len(psets)} flows")
        if opts.koopman and any(k is not None for k in kj):
            raise InvalidParameterError("give Koopman spectra or ask for them (koopman=True), not both")
        taken: set[str] = set()
        rep = Report(
            opts, depth_points, [], created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        )
        fits = []
        for pset, path, label, k in zip(psets, paths, labels, kj, strict=True):
            if progress:
                print(f"report: fitting {label} ({path})", file=sys.stderr)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                own_dp = opts.resolve_depth_points([pset])  # the one auto rule: what `fit` uses on this file
                fit = opts.flowfit(own_dp).fit(pset)
            for w in caught:  # shown in the report, and passed on to the caller's filters
                warnings.warn_explicit(
                    w.message, w.category, w.filename, w.lineno, module="rganalysis.report"
                )
            fits.append(fit)
            # the JSON exactly as `rganalysis fit --json` writes it (a JSON round trip included)
            fit_json = json.loads(json.dumps(fit.to_json(), allow_nan=False))
            if pset.path is not None:  # a stored response Jacobian, embedded as `rganalysis fit` does
                from rganalysis.fit.response_store import read_response

                resp = read_response(pset.path)
                if resp is not None:
                    fit_json["response"] = {fit_json["models"][0]: resp}
            cmd = shlex.join(
                ["rganalysis", "fit", path, *opts.fit_args(own_dp), "--json", f"fit-{label}.json"]
            )
            kcmd = None
            if opts.koopman:
                if progress:
                    print(f"report: Koopman spectrum of {label}", file=sys.stderr)
                with warnings.catch_warnings(record=True) as kcaught:
                    warnings.simplefilter("always")
                    k = _koopman_json(pset, opts)
                for w in kcaught:
                    warnings.warn_explicit(
                        w.message, w.category, w.filename, w.lineno, module="rganalysis.report"
                    )
                caught = [*caught, *kcaught]
                kcmd = shlex.join(
                    ["rganalysis", "koopman", path, *opts.koopman_args(), "--json", f"koopman-{label}.json"]
                )
            sec = ModelSection(
                label,
                _slug(label, taken),
                path,
                fit_json,
                cmd,
                _model_info(pset),
                koopman_json=None if k is None else json.loads(json.dumps(dict(k), allow_nan=False)),
                koopman_command=kcmd,
                warnings=list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)),
            )
            if progress:
                print(f"report: drawing {label}", file=sys.stderr)
            _model_figures(sec, pset, fit, opts)
            _model_tables(sec, pset, fit)
            rep.models.append(sec)
        compared = sources
        if transfers is not None:
            missing = [lab for lab in transfers.labels if lab not in labels]
            if missing:
                raise InvalidParameterError(f"transfers name flows the report does not have: {missing}")
            compared = [sources[labels.index(lab)] for lab in transfers.labels]
        if compare and len(compared) > 1:
            if progress:
                print("report: comparing the models", file=sys.stderr)
            cj, ccmd, note = _compare(compared, opts, depth_points)
            rep.compare_json = None if cj is None else json.loads(json.dumps(cj, allow_nan=False))
            rep.compare_command, rep.compare_note = ccmd, note
            _compare_section(rep, fits)
            if transfers is not None and rep.compare_json is not None:
                _transfer_section(rep, transfers)
        for f in [f for m in rep.models for f in m.figures] + rep.figures:
            f.png = _png(f.figure, opts.dpi)
        return rep
    finally:
        for p in opened:
            p.close()


def write_report(
    flows: Sequence[str | os.PathLike | ParameterSet],
    html_path: str | os.PathLike,
    pdf_path: str | os.PathLike | None = None,
    options: ReportOptions | None = None,
    *,
    force: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    **kw: Any,
) -> Report:
    """Build the report of ``flows`` and write the HTML (and the PDF when ``pdf_path``) as stores are
    written: atomically, never over an existing file (nor one that appeared while the report was built)
    unless ``force``, never over ``inputs`` (the flow stores are always inputs).

    Other keyword arguments go to :func:`build_report`.  Returns the (closed) :class:`Report`.
    """
    ins = [*inputs, *(f for f in flows if isinstance(f, (str, os.PathLike)))]
    rep = build_report(flows, options, **kw)
    try:
        if pdf_path is not None:
            rep.write_pdf(pdf_path, force=force, inputs=ins)
        rep.write_html(html_path, force=force, inputs=ins)
    finally:
        rep.close()
    return rep


_CLOSE = {
    "survival": "their IMP keeps the same weights for as long",
    "units": "IMP thins the same units alike",
    "unit_profile": "their IMP thins the units alike (up to a permutation)",
}


def _closeness(weights: dict) -> str:
    """What a small total distance means, for the components that carry weight."""
    used = [k for k, v in weights.items() if v]
    says = [_CLOSE[k] for k in _CLOSE if k in used]
    if any(k not in _CLOSE for k in used):
        says.append("the same fixed point and relevant spectrum")
    return "; ".join(says) or "no component carries weight"
