"""The universality analysis estimator: signatures of many flows (optionally on dask), their distance
matrix and classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rganalysis.base import Estimator
from rganalysis.errors import InvalidParameterError
from rganalysis.universality.classes import (
    DEFAULT_THRESHOLDS,
    class_graph,
    classes_from_distance,
    hierarchical_clustering,
    largest_gap_threshold,
)
from rganalysis.universality.distances import ALIGNMENTS, component_weights, distance_matrix
from rganalysis.universality.signature import (
    DEFAULT_FIXED_POINT_RIDGE,
    DEFAULT_MAX_RANK,
    DEFAULT_RANK_GAIN,
    DEFAULT_RANK_RTOL,
    FlowSignature,
    flow_signature,
    signature_task,
)

__all__ = ["UniversalityAnalysis"]


# ====================================================================================================
# the analysis
# ====================================================================================================
class UniversalityAnalysis(Estimator):
    """Distances between flows, their components, and universality classes (scikit-learn style).

    Parameters
    ----------
    couplings : coupling sets of the shared space (default ``("density_rel",)``, as ``fit``)
    depth_points : normalised depths the per-layer couplings are resampled onto (the cross-architecture
        coordinates); ``"auto"`` (default): one value for all flows,
        :func:`~rganalysis.fit.auto.resolve_depth_points`; None: per-layer couplings (same architecture)
    rank : trajectory rank: ``"auto"`` (:func:`auto_rank`: each extra direction needs a singular value
        >= ``rank_rtol`` x the largest and must divide the residual by ``rank_gain``; at most
        ``max_rank``), an int, or None (full least squares)
    tol : the fits' near-fixed-point tolerance; directions with exponent ``y >= -MARGINAL_Y`` are retained
        (:data:`~rganalysis.fit.fixed_points.MARGINAL_Y`, the marginal band in y)
    weights : component weights of the total (default: the aligned or the invariant defaults,
        :data:`~rganalysis.universality.distances.DEFAULT_WEIGHTS_ALIGNED` /
        ``DEFAULT_WEIGHTS_INVARIANT``, with components that carry no information over the flows dropped)
    alignment : ``"auto"`` (aligned components and weights when every pair of flows starts from the same
        weights up to a permutation of units), ``"aligned"`` or ``"invariant"``
    units : compute the unit signatures (the ``survival``, ``units`` and ``unit_profile`` components;
        needs nested masks)
    spectrum : ``"coupling"`` (exponents of the coupling-space fit) or ``"koopman"`` (DMD of the
        parameter snapshots enters the total in place of it; both are reported)
    threshold : total distance at or below which two models are joined (default
        None: the mode's calibrated :data:`~rganalysis.universality.classes.DEFAULT_THRESHOLDS`), or
        ``"auto"`` (:func:`largest_gap_threshold`)
    linkage : scipy linkage method of the hierarchical clustering (default ``"average"``)
    rounds, rate : data-free flow computed for single-round model stores (see :func:`flow_signature`)
    koopman_rank : DMD rank (default ``T - 1``)
    fixed_point_ridge : ridge of :func:`ridge_fixed_point` (default 0.05; 0: FlowFit's exact fixed point)
    scheduler, n_workers : where signatures are computed: ``"sync"`` (default: this process), None /
        ``"processes"`` (local dask processes) or a dask.distributed address / Client
        (:func:`rganalysis.parallel.map_flows`)
    device : where couplings and DMD Grams are computed ("auto" default: CUDA when present)

    Fitted attributes: ``signatures_`` (list of :class:`FlowSignature`), ``names_``, ``distance_``
    (DataArray (model, model_other)), ``components_`` (DataArray (component, model, model_other)),
    ``depth_points_`` (the value used), ``weights_`` (the weights used), ``mode_`` (``aligned`` / ``invariant``), ``aligned_`` ((n, n) bool:
    which pairs' units correspond), ``informative_`` (component -> bool), ``dropped_`` (default-weighted
    components set to 0 because they carry no information), ``weights_rule_`` (``aligned default``,
    ``invariant default``, ``fit default`` or ``given``), ``threshold_``, ``threshold_rule_``
    (``"fixed"`` or ``"largest_gap"``),
    ``graph_`` (networkx Graph), ``classes_`` (lists of names), ``hierarchy_`` (dict, see
    :func:`hierarchical_clustering`), ``scheduler_`` (where it ran).
    """

    def __init__(
        self,
        couplings: Sequence[str] = ("density_rel",),
        depth_points: int | str | None = "auto",
        *,
        rank: int | str | None = "auto",
        rank_rtol: float = DEFAULT_RANK_RTOL,
        max_rank: int = DEFAULT_MAX_RANK,
        rank_gain: float = DEFAULT_RANK_GAIN,
        tol: float = 0.05,
        weights: Mapping[str, float] | None = None,
        alignment: str = "auto",
        units: bool = True,
        spectrum: str = "coupling",
        threshold: float | str | None = None,
        linkage: str = "average",
        rounds: int | None = None,
        rate: float = 0.2,
        koopman_rank: int | None = None,
        fixed_point_ridge: float = DEFAULT_FIXED_POINT_RIDGE,
        scheduler: Any = "sync",
        n_workers: int | None = None,
        device: str = "auto",
    ):
        self.couplings = couplings
        self.depth_points = depth_points
        self.rank = rank
        self.rank_rtol = rank_rtol
        self.max_rank = max_rank
        self.rank_gain = rank_gain
        self.tol = tol
        self.weights = weights
        self.alignment = alignment
        self.units = units
        self.spectrum = spectrum
        self.threshold = threshold
        self.linkage = linkage
        self.rounds = rounds
        self.rate = rate
        self.koopman_rank = koopman_rank
        self.fixed_point_ridge = fixed_point_ridge
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.device = device

    def _signature_options(self) -> dict[str, Any]:
        return dict(
            couplings=tuple([self.couplings] if isinstance(self.couplings, str) else self.couplings),
            depth_points=self.depth_points,
            rank=self.rank,
            rank_rtol=self.rank_rtol,
            max_rank=self.max_rank,
            rank_gain=self.rank_gain,
            tol=self.tol,
            rounds=self.rounds,
            rate=self.rate,
            koopman=self.spectrum == "koopman",
            koopman_rank=self.koopman_rank,
            fixed_point_ridge=self.fixed_point_ridge,
            units=self.units,
            device=self.device,
        )

    def _resolve_depth_points(self, flows: Sequence[Any]) -> int | None:
        """``depth_points`` for all the flows at once (``"auto"`` reads each store's layers and rounds)."""
        from rganalysis.fit.auto import resolve_depth_points
        from rganalysis.store.hdf5 import load

        if self.depth_points != "auto":
            return self.depth_points
        ready = [isinstance(f, FlowSignature) for f in flows]
        if all(ready):
            return None  # the signatures carry their couplings already
        if any(ready):
            raise InvalidParameterError(
                "depth_points='auto' needs the flows, not ready signatures: give a number"
            )
        sets = [self.couplings] if isinstance(self.couplings, str) else list(self.couplings)
        opened = [load(f) if isinstance(f, (str, os.PathLike)) else f for f in flows]
        try:
            shapes = [
                _FlowShape(
                    list(p.pruned_names()),
                    p.n_rounds if p.n_rounds > 1 or self.rounds is None else int(self.rounds) + 1,
                    p,
                )
                for p in opened
            ]
            return resolve_depth_points("auto", shapes, sets, rank=self.rank)
        finally:
            for p, f in zip(opened, flows, strict=True):
                if p is not f:
                    p.close()

    def fit(self, flows: Sequence[Any], names: Sequence[str] | None = None) -> UniversalityAnalysis:
        """Fit every flow (store paths, ParameterSets or ready :class:`FlowSignature` objects),
        then compute distances and classes.  Returns self."""
        from rganalysis.parallel import map_flows, resolve_scheduler

        if isinstance(flows, str | bytes) or hasattr(flows, "__fspath__") or isinstance(names, str):
            raise InvalidParameterError(
                "flows and names are sequences (a list of paths or flows, a list of names)"
            )
        flows = list(flows)
        if not flows:
            raise InvalidParameterError("no flows to compare")
        if names is not None and len(names) != len(flows):
            raise InvalidParameterError(f"{len(names)} names for {len(flows)} flows")
        component_weights(self.weights, self.spectrum)  # validate early
        if self.alignment not in ALIGNMENTS:
            raise InvalidParameterError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        opts = self._signature_options()
        opts["depth_points"] = self.depth_points_ = self._resolve_depth_points(flows)
        todo = [(i, f) for i, f in enumerate(flows) if not isinstance(f, FlowSignature)]
        sigs: list[FlowSignature | None] = [f if isinstance(f, FlowSignature) else None for f in flows]
        paths = [(i, f) for i, f in todo if isinstance(f, (str, os.PathLike))]
        opened = [(i, f) for i, f in todo if not isinstance(f, (str, os.PathLike))]
        kw = [{**opts, "name": None if names is None else names[i]} for i, _ in paths]
        for (i, _), s in zip(
            paths,
            map_flows(
                signature_task,
                [(str(f), k) for (_, f), k in zip(paths, kw, strict=True)],
                scheduler=self.scheduler,
                n_workers=self.n_workers,
            ),
            strict=True,
        ):
            sigs[i] = s
        for i, f in opened:  # open stores cannot travel to workers
            sigs[i] = flow_signature(f, **{**opts, "name": None if names is None else names[i]})
        self.scheduler_ = resolve_scheduler(self.scheduler) if paths else "sync"
        sig_list = [s for s in sigs if s is not None]
        if names is not None:
            for s, n in zip(sig_list, names, strict=True):
                s.name = str(n)
        _dedupe_names(sig_list, keep=names is not None)
        self.signatures_ = sig_list
        return self._classify()

    def _classify(self) -> UniversalityAnalysis:
        sigs = self.signatures_
        self.names_ = [s.name for s in sigs]
        dm = distance_matrix(sigs, self.weights, self.spectrum, alignment=self.alignment)
        self.distance_, self.components_ = dm.total, dm.components
        self.weights_, self.mode_, self.aligned_ = dm.weights, dm.mode, dm.aligned
        self.informative_, self.dropped_, self.weights_rule_ = dm.informative, dm.dropped, dm.rule
        D = self.distance_.values
        if self.threshold == "auto":
            self.threshold_ = largest_gap_threshold(D, self.names_, self.linkage)
            self.threshold_rule_ = "largest_gap"
        elif self.threshold is None:
            key = "fit" if self.weights_rule_ == "fit default" else self.mode_
            self.threshold_, self.threshold_rule_ = DEFAULT_THRESHOLDS[key], f"default ({key})"
        else:
            t = float(self.threshold)
            if not (math.isfinite(t) and t >= 0):
                raise InvalidParameterError(
                    f"threshold must be a number >= 0 or 'auto', got {self.threshold!r}"
                )
            self.threshold_, self.threshold_rule_ = t, "fixed"
        self.graph_ = class_graph(D, self.names_, self.threshold_)
        self.classes_ = classes_from_distance(D, self.names_, self.threshold_)
        self.hierarchy_ = hierarchical_clustering(D, self.names_, self.linkage, self.threshold_)
        return self

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``rganalysis compare --json``: ``models``, ``distance`` (matrix), ``components``
        (name -> matrix, ``null`` where undefined), ``weights``, ``classes``, ``threshold``,
        ``threshold_rule``, ``graph`` (nodes, weighted edges), ``hierarchical`` (linkage, dendrogram,
        merges, clusters), ``fits`` (per model: rank, b, eigenvalues with exponents, fixed point,
        warnings) and ``settings``."""

        def mat(a: np.ndarray) -> list[list[float | None]]:
            return [[float(x) if math.isfinite(x) else None for x in row] for row in np.asarray(a)]

        return {
            "models": list(self.names_),
            "distance": mat(self.distance_.values),
            "components": {
                str(k): mat(self.components_.sel(component=k).values)
                for k in self.components_["component"].values
            },
            "weights": dict(self.weights_),
            "total": "sum over components of weights[component] * components[component] (weight 0: reported only)",
            "mode": self.mode_,
            "aligned": [[bool(x) for x in row] for row in self.aligned_],
            "informative": dict(self.informative_),
            "dropped": list(self.dropped_),
            "weights_rule": self.weights_rule_,
            "classes": [list(c) for c in self.classes_],
            "threshold": float(self.threshold_),
            "threshold_rule": self.threshold_rule_,
            "graph": {
                "nodes": list(self.graph_.nodes),
                "edges": [[u, v, float(d["weight"])] for u, v, d in self.graph_.edges(data=True)],
            },
            "hierarchical": self.hierarchy_,
            "fits": {s.name: s.to_json() for s in self.signatures_},
            "settings": {
                "couplings": list([self.couplings] if isinstance(self.couplings, str) else self.couplings),
                "depth_points": self.depth_points_,
                "rank": self.rank,
                "rank_rtol": self.rank_rtol,
                "max_rank": self.max_rank,
                "rank_gain": self.rank_gain,
                "tol": self.tol,
                "spectrum": self.spectrum,
                "alignment": self.alignment,
                "units": self.units,
                "p": 1,
                "linkage": self.linkage,
                "rounds": self.rounds,
                "fixed_point_ridge": self.fixed_point_ridge,
                "rate": self.rate if self.rounds else None,
                "scheduler": self.scheduler_,
            },
        }


class _FlowShape:
    """What :func:`~rganalysis.fit.auto.resolve_depth_points` reads of a flow (its pruned layers and rounds)."""

    def __init__(self, names: list[str], n_rounds: int, pset: Any) -> None:
        self._names, self.n_rounds, self._pset = names, n_rounds, pset

    def pruned_names(self) -> list[str]:
        return self._names

    def state(self, round: int = 0, device: str = "cpu") -> Any:
        return self._pset.state(round, device)


def _dedupe_names(sigs: Sequence[FlowSignature], keep: bool = False) -> None:
    """Make names unique, in place (:func:`~rganalysis.universality.labels.unique_labels`: file stems where
    stored names repeat; with ``keep`` (names the caller gave) only ``name#2``, ...)."""
    from rganalysis.universality.labels import unique_labels

    sources = None if keep else [str(s.meta.get("source") or "") for s in sigs]
    for s, lab in zip(sigs, unique_labels([s.name for s in sigs], sources), strict=True):
        s.name = lab
