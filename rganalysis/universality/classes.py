"""Universality classes from a distance matrix: the threshold graph's components (networkx) and
hierarchical clustering (scipy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rganalysis.errors import InvalidParameterError
from rganalysis.universality.defaults import DEFAULT_THRESHOLD, DEFAULT_THRESHOLDS

__all__ = [
    "class_graph",
    "classes_from_distance",
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "hierarchical_clustering",
    "largest_gap_threshold",
]


def _check_matrix(D: np.ndarray, names: Sequence[str]) -> np.ndarray:
    D = np.asarray(D, dtype=np.float64)
    n = len(names)
    if D.shape != (n, n):
        raise InvalidParameterError(f"distance matrix must be ({n}, {n}) for {n} models, got {D.shape}")
    if not np.isfinite(D).all():
        raise InvalidParameterError("the distance matrix has non-finite entries")
    if not np.allclose(D, D.T, rtol=0, atol=1e-12) or np.any(np.abs(np.diag(D)) > 1e-12) or (D < 0).any():
        raise InvalidParameterError("the distance matrix must be symmetric, >= 0, with a zero diagonal")
    return D


def class_graph(D: np.ndarray, names: Sequence[str], threshold: float):
    """networkx Graph: one node per model, an edge (attribute ``weight`` = distance) where
    ``D[i, j] <= threshold``."""
    import networkx as nx

    D = _check_matrix(D, names)
    g = nx.Graph()
    g.add_nodes_from(names)
    n = len(names)
    for i in range(n):
        for j in range(i + 1, n):
            if D[i, j] <= threshold:
                g.add_edge(names[i], names[j], weight=float(D[i, j]))
    return g


def classes_from_distance(D: np.ndarray, names: Sequence[str], threshold: float) -> list[list[str]]:
    """Connected components of :func:`class_graph`; each class in input order, classes ordered by
    their first member."""
    import networkx as nx

    g = class_graph(D, names, threshold)
    order = {n: i for i, n in enumerate(names)}
    classes = [sorted(c, key=order.__getitem__) for c in nx.connected_components(g)]
    return sorted(classes, key=lambda c: order[c[0]])


def hierarchical_clustering(
    D: np.ndarray, names: Sequence[str], method: str = "average", threshold: float | None = None
) -> dict[str, Any]:
    """scipy hierarchical clustering of a distance matrix, as JSON-able data.

    Returns
    -------
    dict with ``method``; ``linkage`` ((n-1) rows ``[i, j, height, size]``, scipy's convention:
    indices >= n are earlier merges); ``dendrogram`` (scipy's ``dendrogram(no_plot=True)``:
    ``ivl`` leaf labels left to right, ``leaves``, ``icoord``, ``dcoord``); ``merges`` (readable
    ``{"height", "left", "right"}`` with member names) and, with ``threshold``, ``clusters`` (flat
    clusters cut at that height, lists of names).
    """
    from scipy.cluster.hierarchy import dendrogram, fcluster, linkage
    from scipy.spatial.distance import squareform

    D = _check_matrix(D, names)
    n = len(names)
    out: dict[str, Any] = {"method": method}
    if n < 2:
        out.update(
            linkage=[],
            dendrogram={"ivl": list(names), "leaves": list(range(n)), "icoord": [], "dcoord": []},
            merges=[],
        )
        if threshold is not None:
            out["clusters"] = [list(names)] if n else []
        return out
    Z = linkage(squareform(D, checks=False), method=method)
    dn = dendrogram(Z, no_plot=True, labels=list(names))
    members: list[list[str]] = [[x] for x in names]
    merges = []
    for i, j, h, _ in Z:
        left, right = members[int(i)], members[int(j)]
        members.append(left + right)
        merges.append({"height": float(h), "left": left, "right": right})
    out.update(
        linkage=[[int(r[0]), int(r[1]), float(r[2]), int(r[3])] for r in Z],
        dendrogram={
            "ivl": [str(x) for x in dn["ivl"]],
            "leaves": [int(x) for x in dn["leaves"]],
            "icoord": [[float(x) for x in row] for row in dn["icoord"]],
            "dcoord": [[float(x) for x in row] for row in dn["dcoord"]],
        },
        merges=merges,
    )
    if threshold is not None:
        lab = fcluster(Z, t=float(threshold), criterion="distance")
        groups: dict[int, list[str]] = {}
        for name, c in zip(names, lab, strict=True):
            groups.setdefault(int(c), []).append(name)
        order = {x: i for i, x in enumerate(names)}
        out["clusters"] = sorted(groups.values(), key=lambda c: order[c[0]])
    return out


def largest_gap_threshold(D: np.ndarray, names: Sequence[str], method: str = "average") -> float:
    """A threshold from the distance distribution: the middle of the largest gap between consecutive
    merge heights of the hierarchical clustering (0 prepended), i.e. the cut of the dendrogram that
    is most stable.  With fewer than 2 models: :data:`DEFAULT_THRESHOLD`."""
    if len(names) < 2:
        return DEFAULT_THRESHOLD
    h = np.array([m["height"] for m in hierarchical_clustering(D, names, method)["merges"]])
    h = np.concatenate([[0.0], np.sort(h)])
    k = int(np.argmax(np.diff(h)))
    return float(0.5 * (h[k] + h[k + 1]))
