"""A directed transfer score between IMP flows: will the ticket found on task S serve task T?

Transfers of winning tickets are asymmetric (a 10-class ticket serves a 5-class task, not the reverse), so
no symmetric distance can rank them both ways.  Both scores here ask, unit by unit, whether the *source's*
IMP kept what the *target's* IMP needs.  The default, the coverage deficit (:func:`coverage_deficit`), is the
share of the target's unit mass the source lacks,

.. math::

    c(S \\to T) = \\frac{1}{G} \\sum_{g=1}^{G} \\frac{\\sum_u \\max(0, m_T(u) - m_S(u))}{\\sum_u m_T(u)},

so it sees how much of each layer a ticket keeps as well as which units; the unit divergence
(:func:`directed_unit_divergence`, ``score="divergence"``) compares only how each layer's mass is spread:

.. math::

    d(S \\to T) = \\frac{1}{G} \\sum_{g=1}^{G} \\frac{\\mathrm{KL}(p^g_T \\,\\|\\, p^g_S)}{\\ln n_g},
    \\qquad p^g_F(u) = \\frac{m_F(u) + \\varepsilon_g}{\\sum_v (m_F(v) + \\varepsilon_g)},
    \\qquad m_F(u) = \\sum_{n=1}^{R-1} \\mathrm{degree}_F(u, n)

over the ``G`` unit groups (output and input units of every pruned tensor, attention heads grouped), with
``degree_F(u, n)`` the fraction of unit ``u``'s connections alive after round ``n`` of flow ``F``, so
``m_F(u)`` counts how long, and with how many connections, IMP keeps the unit: its survival-weighted mass
(rounds ``1 .. R-1``; round 0 is dense for every unit).  ``eps_g = 1 / (2 fan_g)`` is half a connection
for one round (it keeps the divergence finite where the source kills a unit the target needs); ``n_g`` is
the group's number of units (``ln n_g`` is the divergence of a one-unit distribution from the uniform
one, so groups of any width weigh alike).

``KL(p_T || p_S)`` is large where the target's IMP keeps a unit the source's prunes early (the ticket lacks
what the task needs) and small where the source keeps units the target does not need (spare capacity):
lower = the source's ticket is expected to lose less on the target; 0 on the diagonal.  It uses only which
units IMP keeps and when, so it does not see a permutation of the units (they are matched first), nor a
global weight scale (magnitude pruning's order does not change with it), but it does see a shuffle of the
weights inside a layer (that changes which units survive).

Unit matching: flows that start from the same weights up to a permutation of units (tickets of one rewind
point) are matched on the fingerprints of their starting weights
(:func:`~rganalysis.universality.units.align_units`); otherwise the units of every group are paired in the
order of their survival-weighted mass ``m`` (ties by their degree trajectories; classifier outputs that carry
class labels by label): the optimal assignment for the squared difference of ``m``, the quantity the score
compares (a Hungarian matching on the whole degree trajectories cost 60 ms per wide group and pair and made
``compare --directed`` 3.3x ``compare`` on unaligned ResNet-18 flows).  One architecture's scores use one
matching (:func:`transfer_scores`).  Flows of other lengths or rates are scored at matched global densities.
Flows of different architectures (other tensors or unit counts) get NaN.  Choice and measurements:
docs/universality.md, section 11.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from rganalysis.errors import InvalidParameterError
from rganalysis.universality.labels import unique_labels
from rganalysis.universality.units import UnitSignature, _at_densities, _density_grid, align_units

__all__ = [
    "COVERAGE_FORMULA",
    "MATCHINGS",
    "NO_COMMON_DENSITY",
    "SCORES",
    "TRANSFER_FORMULA",
    "TRANSFER_READING",
    "coverage_deficit",
    "directed_unit_divergence",
    "format_transfer_scores",
    "match_units",
    "transfer_scores",
    "transfer_scores_json",
]

TRANSFER_FORMULA = (
    "d(S->T) = mean over unit groups g of KL(p_T^g || p_S^g) / ln(n_g); p_F^g(u) proportional to "
    "m_F(u) + 1/(2 fan_g), m_F(u) = sum over rounds 1..R-1 of the fraction of unit u's connections alive"
)

COVERAGE_FORMULA = (
    "c(S->T) = mean over unit groups g of sum_u max(0, m_T(u) - m_S(u)) / sum_u m_T(u), m_F(u) = sum over "
    "rounds 1..R-1 of the fraction of unit u's connections alive"
)

TRANSFER_READING = (
    "row = the ticket's source task, column = the target task; lower = the source's ticket is expected to "
    "lose less on the target (0 on the diagonal).  Read a column to rank the tickets for one task, a row to "
    "rank the tasks one ticket will serve; the matrix is not symmetric."
)


def _architecture(a: UnitSignature) -> tuple:
    return tuple((g.tensor, g.axis, g.size) for g in a.groups)


def _same_architecture(a: UnitSignature, b: UnitSignature) -> bool:
    return _architecture(a) == _architecture(b)


#: How :func:`transfer_scores` pairs the units of two flows (:func:`match_units`).
MATCHINGS = ("auto", "aligned", "mass rank")
#: ``attrs["matching"]`` of a pair not scored because its flows share no pruned density.
NO_COMMON_DENSITY = "no common density"


def match_units(a: UnitSignature, b: UnitSignature, how: str = "auto") -> tuple[list[np.ndarray] | None, str]:
    """Per unit group, ``perm[u]`` = B's unit for A's unit ``u``, and how they were matched (``"aligned"``:
    same starting weights; ``"mass rank"``: paired in the order of their survival-weighted mass).  ``how``:
    ``"auto"`` aligns where the flows start from the same weights (up to a permutation of units), else pairs
    by mass rank; ``"aligned"`` returns ``(None, "none")`` where they do not; ``"mass rank"`` never aligns.
    Needs the same architecture (:class:`~rganalysis.errors.InvalidParameterError` otherwise)."""
    if how not in MATCHINGS:
        raise InvalidParameterError(f"unknown unit matching {how!r}; known: {list(MATCHINGS)}")
    if not _same_architecture(a, b):
        raise InvalidParameterError(f"{a.name} and {b.name}: different architectures, no unit correspondence")
    if how != "mass rank" and _may_align(a, b):
        al = align_units(a, b)
        if al.aligned:
            return al.perms, "aligned"
    if how == "aligned":
        return None, "none"
    perms = []
    grid = _common_densities(a, b)
    for ga, gb, da, db in zip(a.groups, b.groups, a.degree, b.degree, strict=True):
        if ga.labels is not None and gb.labels is not None and sorted(ga.labels) == sorted(gb.labels):
            perms.append(np.array([gb.labels.index(lab) for lab in ga.labels]))
            continue
        # the optimal matching on a 1-D key is by rank: units paired in the order of their survival-weighted
        # mass where the score compares it (the common densities), ties by the rest of their degree trajectory
        ta, tb = _trajectory(da, a.global_density), _trajectory(db, b.global_density)
        ma = _mass(da, a, grid) if grid is not None else da[1:].sum(axis=0)
        mb = _mass(db, b, grid) if grid is not None else db[1:].sum(axis=0)
        oa = np.lexsort((*ta.T[::-1], ma))
        ob = np.lexsort((*tb.T[::-1], mb))
        p = np.empty(len(oa), dtype=np.intp)
        p[oa] = ob
        perms.append(p)
    return perms, "mass rank"


def _may_align(a: UnitSignature, b: UnitSignature) -> bool:
    """A necessary condition for :func:`align_units` to succeed, in O(n log n): a permutation of units keeps
    each fingerprint column's sorted values (skips its Hungarian matching for flows of other initialisations)."""
    for fa, fb in zip(a.fingerprint, b.fingerprint, strict=True):
        scale = max(float(np.abs(fa).max(initial=0.0)), 1e-30)
        if float(np.abs(np.sort(fa, axis=0) - np.sort(fb, axis=0)).max(initial=0.0)) > 1e-6 * scale:
            return False
    return True


def _trajectory(degree: np.ndarray, density: np.ndarray, n: int = 8) -> np.ndarray:
    """(n_units, n) each unit's degree against the flow's log global density, linearly interpolated on a
    common grid of ``n`` points from dense to the flow's sparsest round (flows of different lengths become
    comparable)."""
    ld = np.log(np.maximum(density, 1e-300))
    order = np.argsort(ld)
    x, y = ld[order], degree[order]
    grid = np.linspace(0.0, x[0], n)
    hi = np.clip(np.searchsorted(x, grid), 1, len(x) - 1)
    lo = hi - 1
    span = x[hi] - x[lo]
    w = np.divide(grid - x[lo], span, out=np.zeros_like(grid), where=span > 0).clip(0.0, 1.0)
    return (y[lo] * (1 - w)[:, None] + y[hi] * w[:, None]).T


_SAME_ROUNDS = "same rounds"


def _common_densities(a: UnitSignature, b: UnitSignature) -> np.ndarray | str | None:
    """Where two flows' unit masses are compared: :data:`_SAME_ROUNDS` for flows of the same rounds and global
    densities (rounds ``1 .. R-1``), else the log global densities both reach
    (:func:`~rganalysis.universality.units._density_grid`), None if they share none beyond round 0."""
    if a.n_rounds == b.n_rounds and np.array_equal(a.global_density, b.global_density):
        return _SAME_ROUNDS
    return _density_grid(a, b)


def _mass(degree: np.ndarray, sig: UnitSignature, grid: np.ndarray | str) -> np.ndarray:
    """Each unit's survival-weighted mass on ``grid`` (:func:`_common_densities`): its degrees summed over
    rounds ``1 .. R-1``, or interpolated in log global density at the grid's densities and summed."""
    if isinstance(grid, str):
        return degree[1:].sum(axis=0)
    return _at_densities(degree, sig.global_density, grid).sum(axis=0)


def _masses(
    source: UnitSignature, target: UnitSignature, perms: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per unit group, ``(m_T, m_S)``: each target unit's survival-weighted mass and that of its matched
    source unit (``perms``), where the two are compared (:func:`_common_densities`: a flow cut a round short,
    or run at another rate, is scored on the masks of the densities both have).  Empty if they share none."""
    grid = _common_densities(source, target)
    if grid is None:
        return []
    return [
        (_mass(dt, target, grid), _mass(ds[:, p], source, grid))
        for dt, ds, p in zip(target.degree, source.degree, perms, strict=True)
    ]


def _unit_distribution(mass: np.ndarray, fan: int) -> np.ndarray:
    mass = mass + 0.5 / fan  # half a connection for one round
    return mass / mass.sum()


def directed_unit_divergence(
    source: UnitSignature, target: UnitSignature, perms: Sequence[np.ndarray] | None = None
) -> float:
    """``d(source -> target)`` of the module's formula (dimensionless, >= 0; 0 when the two flows keep
    their units alike).  ``perms``: the source's unit for each of the target's, per group (default
    :func:`match_units`).  Flows of other lengths or rates: at matched global densities (:func:`_masses`).
    NaN for different architectures or flows without a common density."""
    if not _same_architecture(source, target):
        return math.nan
    if perms is None:
        perms, _ = match_units(target, source)
    masses = _masses(source, target, perms)
    if not masses:
        return math.nan
    terms = []
    for g, (mt, ms) in zip(target.groups, masses, strict=True):
        if g.size < 2:
            continue
        fan = math.prod(target.shapes[g.tensor]) // g.size
        pt, ps = _unit_distribution(mt, fan), _unit_distribution(ms, fan)
        terms.append(float(np.sum(pt * np.log(pt / ps))) / math.log(g.size))
    return float(np.mean(terms)) if terms else math.nan


def coverage_deficit(
    source: UnitSignature, target: UnitSignature, perms: Sequence[np.ndarray] | None = None
) -> float:
    """``c(source -> target)``: the mean over unit groups of the share of the target's survival-weighted unit
    mass that the source's flow lacks, ``sum_u max(0, m_T(u) - m_S(u)) / sum_u m_T(u)`` (dimensionless, in
    [0, 1]; 0 when the source keeps at least as much of every unit as the target).  Unlike
    :func:`directed_unit_divergence` it is not normalised per group, so it sees how much of each layer
    IMP keeps, not only how the layer's mass is spread over its units.  ``perms`` and flows of other
    lengths or rates as there; NaN for different architectures."""
    if not _same_architecture(source, target):
        return math.nan
    if perms is None:
        perms, _ = match_units(target, source)
    terms = []
    for mt, ms in _masses(source, target, perms):
        total = float(mt.sum())
        if total > 0:
            terms.append(float(np.maximum(mt - ms, 0.0).sum()) / total)
    return float(np.mean(terms)) if terms else math.nan


#: ``(source, target, perms) -> score`` of one ordered pair of flows.
PairScore = Callable[[UnitSignature, UnitSignature, Sequence[np.ndarray] | None], float]
#: The directed scores :func:`transfer_scores` can compute: name -> (function, formula).
SCORES: dict[str, tuple[PairScore, str]] = {
    "divergence": (directed_unit_divergence, TRANSFER_FORMULA),
    "coverage": (coverage_deficit, COVERAGE_FORMULA),
}


def _signature(flow: Any, name: str | None) -> UnitSignature:
    if isinstance(flow, UnitSignature):
        return flow
    if hasattr(flow, "units"):  # a FlowSignature
        if isinstance(flow.units, UnitSignature):
            return flow.units
        raise InvalidParameterError(f"{flow.name}: no unit signature (it needs the flow's nested masks)")
    from rganalysis.store import load

    pset = load(flow) if isinstance(flow, str) or hasattr(flow, "__fspath__") else flow
    if int(pset.n_rounds) < 2:
        raise InvalidParameterError(f"{name or pset.attrs.get('name')}: a flow needs at least 2 rounds")
    return UnitSignature.from_flow(pset, name)


def transfer_scores(
    flows: Sequence[Any],
    names: Sequence[str] | None = None,
    score: str = "coverage",
    matching: str = "auto",
) -> xr.DataArray:
    """The directed transfer score of every ordered pair of flows.

    Parameters
    ----------
    flows : flow stores (paths), open :class:`~rganalysis.store.ParameterSet` flows, their
        :class:`~rganalysis.universality.units.UnitSignature`, or ``FlowSignature`` objects computed with
        units (what :class:`~rganalysis.universality.UniversalityAnalysis` keeps in ``signatures_``); at
        least two, with nested masks.
    names : labels (default: the flows' names; names that repeat are told apart by the flows' file stems,
        else suffixed ``#2``, ``#3``)
    score : which directed score (:data:`SCORES`): ``"coverage"`` (the default, :func:`coverage_deficit`:
        the share of the target's unit mass the source lacks) or ``"divergence"``
        (:func:`directed_unit_divergence`, the module's formula: how differently each layer's mass is spread
        over its units, blind to which ticket keeps more of a layer; it got the superset/subset direction
        wrong where the coverage got it right, docs/universality.md section 11)
    matching : how units are paired (:data:`MATCHINGS`).  ``"auto"``: per architecture, the pairs that start
        from the same weights (tickets of one rewind point) are aligned and scored, and its other pairs are
        NaN with a warning; an architecture none of whose pairs align is matched by mass rank throughout.  A
        score matched by mass rank is lower by construction (that pairing is the best one for the masses
        compared), so one architecture's scores are never matched both ways, and adding a flow of another
        start never changes the aligned pairs' scores.  ``"aligned"``: pairs that do not align are NaN.
        ``"mass rank"``: every pair by mass rank (also the aligned ones, which it ranks worse: it does not
        see which units).

    Returns
    -------
    DataArray (source, target), dimensionless, >= 0: ``scores.sel(source=S, target=T)`` is how much of what
    T's IMP keeps S's ticket lacks (lower = S's ticket expected to lose less on T; read a column to rank the
    sources for one target, a row to rank the targets one ticket will serve).  Not symmetric; the diagonal
    is 0.  NaN for pairs not scored: flows of different architectures, pairs of another start than the
    aligned flows of their architecture (``matching="auto"``), flows that share no pruned density.
    ``attrs``: ``formula``, ``matching`` ((source, target) -> ``aligned`` / ``mass rank`` / ``none`` (no unit
    correspondence) / :data:`NO_COMMON_DENSITY` / ``self``, as JSON-able lists), ``score``.
    """
    if score not in SCORES:
        raise InvalidParameterError(f"unknown transfer score {score!r}; known: {list(SCORES)}")
    if matching not in MATCHINGS:
        raise InvalidParameterError(f"unknown unit matching {matching!r}; known: {list(MATCHINGS)}")
    fn, formula = SCORES[score]
    if isinstance(flows, str | bytes) or hasattr(flows, "__fspath__") or isinstance(names, str):
        raise InvalidParameterError(
            "flows and names are sequences (a list of paths or flows, a list of names)"
        )
    flows = list(flows)
    if len(flows) < 2:
        raise InvalidParameterError(f"transfer_scores needs at least 2 flows, got {len(flows)}")
    if names is not None and len(names) != len(flows):
        raise InvalidParameterError(f"{len(names)} names for {len(flows)} flows")
    sigs = [_signature(f, None if names is None else names[i]) for i, f in enumerate(flows)]
    sources = [
        str(f) if isinstance(f, str) or hasattr(f, "__fspath__") else str(getattr(f, "path", "") or "")
        for f in flows
    ]
    labels = unique_labels(
        list(names) if names is not None else [s.name for s in sigs], None if names is not None else sources
    )
    n = len(sigs)
    # one matching per unordered pair (s < t): perms[u] = the source s's unit for the target t's unit u
    matched: dict[tuple[int, int], tuple[list[np.ndarray] | None, str]] = {}
    mismatched = []
    for s in range(n):
        for t in range(s + 1, n):
            if _same_architecture(sigs[s], sigs[t]):
                matched[s, t] = match_units(
                    sigs[t], sigs[s], "mass rank" if matching == "mass rank" else "aligned"
                )
            else:
                mismatched.append((labels[s], labels[t]))
    unaligned = [pair for pair, (perms, _) in matched.items() if perms is None]
    if matching == "auto" and unaligned:
        # one scale per architecture: where some of its pairs align, those are scored and the others are not
        # (NaN); where none does, every pair by mass rank.  Adding a flow never rescores the aligned pairs.
        aligned_archs = {
            _architecture(sigs[s]) for (s, _t), (perms, _) in matched.items() if perms is not None
        }
        left = [pair for pair in unaligned if _architecture(sigs[pair[0]]) in aligned_archs]
        for pair in unaligned:
            if _architecture(sigs[pair[0]]) not in aligned_archs:
                matched[pair] = match_units(sigs[pair[1]], sigs[pair[0]], "mass rank")
        if left:
            warnings.warn(
                f"transfer_scores: {len(left)} pair(s) of flows do not start from the same weights (first: "
                f"{labels[left[0][0]]}, {labels[left[0][1]]}) while other flows of their architecture do: "
                "those pairs are not scored (NaN), as a score matched by mass rank is lower by construction "
                "and would not be on the aligned pairs' scale (matching='mass rank' scores every pair on one "
                "mass-rank scale)",
                stacklevel=2,
            )
    out = np.full((n, n), math.nan)
    how = [["none"] * n for _ in range(n)]
    for s in range(n):
        out[s, s], how[s][s] = 0.0, "self"
    apart = []
    for (s, t), (perms, kind) in matched.items():
        if perms is None:
            continue
        if _common_densities(sigs[s], sigs[t]) is None:
            how[s][t] = how[t][s] = NO_COMMON_DENSITY
            apart.append((labels[s], labels[t]))
            continue
        how[s][t] = how[t][s] = kind
        out[s, t] = fn(sigs[s], sigs[t], perms)
        out[t, s] = fn(sigs[t], sigs[s], [np.argsort(p) for p in perms])
    if apart:
        warnings.warn(
            f"transfer_scores: {2 * len(apart)} ordered pairs share no pruned density (first: {apart[0][0]} -> "
            f"{apart[0][1]}; one flow ends above the other's first pruned round): NaN",
            stacklevel=2,
        )
    if mismatched:
        warnings.warn(
            f"transfer_scores: {2 * len(mismatched)} ordered pairs of different architectures are NaN "
            f"(first: {mismatched[0][0]} -> {mismatched[0][1]})",
            stacklevel=2,
        )
    return xr.DataArray(
        out,
        dims=("source", "target"),
        coords={"source": labels, "target": labels},
        name="transfer_score",
        attrs={"formula": formula, "score": score, "matching": how, "lower_is_better": 1},
    )


def transfer_scores_json(D: xr.DataArray) -> dict[str, Any]:
    """The ``"directed"`` entry of ``rganalysis compare --directed --json``: ``sources``, ``targets``,
    ``scores`` (rows = sources; ``null`` where undefined), ``score``, ``formula``, ``matching``, ``reading``."""
    return {
        "sources": [str(x) for x in D.source.values],
        "targets": [str(x) for x in D.target.values],
        "scores": [[float(x) if math.isfinite(x) else None for x in row] for row in D.values],
        "score": D.attrs.get("score", "coverage"),
        "formula": D.attrs["formula"],
        "matching": D.attrs["matching"],
        "reading": TRANSFER_READING,
    }


def _score_text(x: float, digits: int) -> str:
    """``digits`` decimals; two significant digits for a score below what they show (not printed as 0);
    ``-`` for NaN."""
    if not math.isfinite(x):
        return "-"
    return f"{x:.{digits}f}" if x == 0 or abs(x) >= 10.0**-digits else f"{x:.1e}"


def format_transfer_scores(D: xr.DataArray, digits: int = 4) -> str:
    """The matrix as text: one row per source, one column per target, then how to read it."""
    src, tgt = [str(x) for x in D.source.values], [str(x) for x in D.target.values]
    w = max(8, digits + 4, *(len(t) for t in tgt))
    corner = "source \\ target"
    head = f"{corner:<{max(15, *(len(s) for s in src))}}"
    lines = ["directed transfer scores", head + "".join(f"{t:>{w + 1}}" for t in tgt)]
    for s, row in zip(src, D.values, strict=True):
        cells = "".join(f"{_score_text(x, digits):>{w + 1}}" for x in row)
        lines.append(f"{s:<{len(head)}}" + cells)
    lines.append(f"{D.attrs.get('score', 'coverage')} score; " + TRANSFER_READING)
    how = D.attrs.get("matching")
    if how is not None and any(h == "none" for row in how for h in row):
        lines.append(
            "'-': not scored, no unit correspondence (another architecture, or another start than the flows "
            "of its architecture that align; matching='mass rank' / --matching mass-rank scores the latter)"
        )
    if how is not None and any(h == NO_COMMON_DENSITY for row in how for h in row):
        lines.append(
            "'-': not scored, the two flows share no pruned density (one ends before the other begins)"
        )
    return "\n".join(lines)
