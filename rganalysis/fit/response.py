"""The RG map of real IMP, linearised the way Monte Carlo RG measures it: perturb the state at one round of
a flow along directions of coupling space, apply one full IMP step to every perturbed state (rewind,
retrain with each seed, global prune at the flow's rate), and regress the couplings after the step on the
couplings before it (:class:`ResponseJacobian`, :func:`response_jacobian`).  Theory and measured numbers:
docs/theory.md, section 8.

The state of IMP at round ``n`` is its mask ``M_n``: its weights are what rewinding and retraining give
that mask.  One RG step on masks is therefore ``M_{n+1} = prune(train(rewind * M_n, M_n), M_n, p)``
(for couplings that read the weights, the pruned mask is retrained once more and measured then).  A
perturbed state is a perturbed mask, so each step costs one retrain (two for weight couplings) per
perturbation and seed; the retrains are independent and run on local processes or a dask.distributed
cluster (:func:`rganalysis.parallel.map_flows`).  The step is :mod:`rganalysis.fit.imp_step`, the
elementary mask moves :mod:`rganalysis.fit.mask_moves`.
"""

from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import norm
from scipy.stats import t as student_t

from rganalysis.base import Estimator
from rganalysis.errors import DegenerateRegressionError, InvalidParameterError, StoreInUseError
from rganalysis.fit.couplings import normalise_sets
from rganalysis.fit.fixed_points import MARGINAL_Y, exponent_interval, interval_class
from rganalysis.fit.imp_step import StepContext, step_task
from rganalysis.fit.intervals import DegenerateResample, draw_resamples, eigenvalue_intervals
from rganalysis.fit.jacobian import IllConditionedWarning, affine_fit, frozen_couplings, normalise_columns
from rganalysis.fit.mask_moves import LayerCouplings, apply_moves, layer_round, mask_moves
from rganalysis.store.state import State

__all__ = [
    "MASK_COUPLING_SETS",
    "ResponseJacobian",
    "response_jacobian",
]

#: Coupling sets computed from the masks alone: their value after a step needs no second retrain.
MASK_COUPLING_SETS = frozenset({"density", "unit"})

_PERTURBATIONS = ("auto", "layer", "unit")


# ====================================================================================================
# directions of coupling space
# ====================================================================================================
def _group_scale(
    names: Sequence[str], groups: Sequence[str], flow: np.ndarray, atoms: np.ndarray
) -> np.ndarray:
    """Per coupling, one unit per (set, statistic) group: the RMS over the group's couplings of their
    spread over the flow's rounds; where the flow does not move a group, the RMS of the atoms' moves."""
    out = np.ones(len(names))
    g = np.asarray(groups)
    sd_flow = flow.std(axis=0) if flow.shape[0] > 1 else np.zeros(flow.shape[1])
    rms_atoms = np.sqrt(np.mean(atoms**2, axis=0)) if atoms.size else np.zeros(len(names))
    for key in dict.fromkeys(groups):
        sel = g == key
        s = float(np.sqrt(np.mean(sd_flow[sel] ** 2)))
        if not s > 0:
            s = float(np.sqrt(np.mean(rms_atoms[sel] ** 2)))
        out[sel] = s if s > 0 else 1.0
    return out


def _orthonormal_basis(M: np.ndarray, rtol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """(C, r) orthonormal basis of the column span of ``M`` (C, m) and its singular values."""
    if M.size == 0:
        return np.zeros((M.shape[0], 0)), np.zeros(0)
    U, s, _ = np.linalg.svd(M, full_matrices=False)
    r = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    return U[:, :r], s[:r]


def _sign_fix(V: np.ndarray) -> np.ndarray:
    """Columns with their largest-magnitude component positive (a deterministic sign)."""
    V = V.copy()
    for j in range(V.shape[1]):
        k = int(np.argmax(np.abs(V[:, j])))
        if V[k, j] < 0:
            V[:, j] = -V[:, j]
    return V


def _principal_directions(
    trajectory: np.ndarray, reachable: np.ndarray, atoms: np.ndarray, k: int
) -> tuple[np.ndarray, list[str]]:
    """``k`` orthonormal directions (C, k) inside the ``reachable`` span (C, r): first the principal
    directions of the flow's (standardised) trajectory projected onto it, then the principal directions
    of the atoms' moves orthogonal to those.  Returns the directions and where each came from."""
    P = reachable @ reachable.T
    T = trajectory - trajectory.mean(axis=0)
    Vt, _ = _orthonormal_basis((T @ P).T, rtol=1e-6)
    V = Vt[:, :k]
    src = ["flow"] * V.shape[1]
    if V.shape[1] < k:
        Q = P - V @ V.T  # projector on the reachable complement of the chosen directions
        Va, _ = _orthonormal_basis(Q @ atoms.T, rtol=1e-6)
        extra = Va[:, : k - V.shape[1]]
        V = np.concatenate([V, extra], axis=1)
        src += ["perturbations"] * extra.shape[1]
    return _sign_fix(V), src


# ====================================================================================================
# the estimator
# ====================================================================================================
class ResponseJacobian(Estimator):
    """The Jacobian of one real IMP step (rewind, retrain, global prune) at a round of a flow, measured
    from perturbed states (Monte Carlo RG), with seed noise, bootstrap intervals and a noise floor.

    Parameters
    ----------
    train : callable ``train(weights, masks, seed=...) -> weights``
        The retraining of one IMP round, as the flow's (:data:`rganalysis.rg.rescaling.TrainFn`) with a
        ``seed`` keyword: ``weights`` are fresh copies of the rewind point's pruned tensors, ``masks`` their
        ``torch.bool`` masks (layer name -> tensor, on ``device``).  A ``train`` without ``seed`` is allowed
        with ``seeds=1``.  On local processes it may be anything, a lambda or a closure
        included: workers are forked where safe (:func:`rganalysis.parallel.process_pool`; otherwise it
        goes through cloudpickle); on a dask.distributed cluster it must pickle there.
    round : the round ``n`` linearised (default: the last of the flow)
    couplings : coupling sets (default ``"unit"``: per-layer quantiles of unit degrees); ``density`` and
        ``magnitude`` work too (sets outside :data:`MASK_COUPLING_SETS` read the weights, so each step
        retrains twice)
    directions : int (default 10; fewer when the perturbations reach fewer) or an array (D, C) of
        coupling-space directions in coupling units.  The default directions are the leading principal
        directions of the flow's couplings (standardised per set and statistic), completed by those of
        the reachable perturbations when the flow spans fewer
    epsilon : size of a perturbation: the strongest elementary move of a perturbed state removes or
        restores this fraction of a layer's or a unit band's survivors (at least one weight).  0: the null
        experiment -- every "perturbed" state is the unperturbed one, the regressors are the design's
        nominal coordinates (+-1 along each direction), so the Jacobian is that of seed noise alone
    seeds : number of training seeds per state (default 3: seeds 0, 1, 2), or the seeds themselves
    perturbation : ``"auto"`` (``"unit"`` when the ``unit`` set is measured, else ``"layer"``), ``"layer"``
        (each layer's smallest survivors removed or its latest-pruned weights restored: the masks stay
        threshold-shaped) or ``"unit"`` (also per band of output/input units sorted by degree)
    common_seeds : every state is retrained with the same seeds (common random numbers: a seed's effect
        shared by all states drops out of the Jacobian); False: state ``i`` gets its own seeds
    scheduler : where the retrains run: None / ``"processes"`` (local dask processes, ``n_workers`` of
        them), ``"sync"`` (this process), or a dask.distributed address / Client (same results as serial)
    n_workers : processes of the local scheduler (default: the number of CPUs)
    device : where each retrain runs (``"auto"``: CUDA when present)
    threads : torch threads per retrain on CPU (default 1: numbers are defined at one thread and parallel
        retrains use the cores); None leaves torch's setting
    n_bootstrap : bootstrap resamples for ``eigenvalue_ci_``: with two or more seeds, of the seed noise on the
        fixed design (states kept; common seeds: the seeds' deviations from the state means, Gaussian
        weights per seed, spread widened by ``t_{S-1} / z``; own seeds: each (state, seed) residual given a
        random sign, widened by ``t_dof / z``); with one seed, no seed noise or weight couplings (inputs
        with seed noise), of the states (with replacement; conservative)
    ci_level : central probability of ``eigenvalue_ci_``
    noise_draws, noise_level : draws of the pure-seed-noise Jacobian and the quantile of its largest
        ``|lambda|`` that is reported as ``noise_floor_``
    tol : marginal band half-width in the exponent ``y = ln|lambda| / ln b_`` (default
        :data:`~rganalysis.fit.fixed_points.MARGINAL_Y`)
    min_excitation : the regression runs in the principal directions of the moves the perturbed states
        actually realised; a direction realised less than this fraction as strongly as the first (singular
        values of the realised moves) is dropped, with a warning: its Jacobian column would be noise
        amplified by the inverse
    random_state : seed of the bootstrap and the noise draws
    progress : a tqdm bar counting retrains

    Fitted attributes
    -----------------
    round_, rate_, scope_ : the round linearised and the step applied
    b_ : scale factor of the step (``rho_n / rho_{n+1}`` of the flow; for the last round, of the measured
        unperturbed step), ``b_source_`` says which
    couplings_ : the C couplings regressed;  all_couplings_ : every coupling of the state
    frozen_couplings_ : coupling -> reason, for couplings no perturbation moves (a dead or near-empty layer,
        a statistic pinned at a boundary): left out of the regression
    base_couplings_ : (C_all,) the couplings at round n;  coupling_scale_ : (C,) the unit of each coupling
    target_directions_ : (D_t, C) orthonormal directions the perturbations aim at, in standardised couplings
        (``dK / coupling_scale_``); direction_source_ : ``"flow"``, ``"perturbations"`` or ``"given"`` per
        direction (``"realised"`` once fitted)
    directions_ : (D, C) the regression's coordinates: the principal directions of the realised moves
        (D <= D_t, see ``min_excitation``); direction_overlap_ : (D,) cosines of the principal angles between
        the realised and the targeted spans
    atoms_ : labels of the elementary mask moves;  design_ : (N, n_atoms) their strengths per state
    alignment_ : (N,) cosine between each perturbed state's realised move and its target direction
    inputs_ : (N, S, C) dK_n per state and seed (standardised);  outputs_ : (N, S, C) dK_{n+1}
    X_, Y_ : (N, S, D) the same in direction coordinates (the regression's rows)
    jacobian_ : (D, D) in direction coordinates;  offset_, eigenvalues_ (D,), eigenvectors_ (D, D)
    coupling_eigenvectors_ : (C, D) the eigenvectors in standardised couplings
    eigenvalue_ci_ : (D, 2) bootstrap interval of ``|lambda|`` (NaN where :mod:`rganalysis.fit.intervals`
        reports none);  exponent_ci_ : (D, 2) the same in y;  eigenvalue_bootstrap_ : (n_ok, D)
    bootstrap_method_ : which bootstrap gave the intervals (seed clusters, fixed-design seed noise, or states)
    exponents_ : (D,) ``y = ln|lambda| / ln b_``;  classes_ : relevant / irrelevant / marginal / undetermined
    noise_floor_ : float, the ``noise_level`` quantile of the largest ``|lambda|`` of the Jacobian of pure
        seed noise (sign-flipped residuals on the same design);  noise_eigenvalues_ : (draws, D) sorted
    in_noise_ : (D,) bool, ``|lambda| <= noise_floor_``
    closure_ : fraction of the responses' variance inside the span of the directions
    step_ : (C,) the unperturbed state's step ``K_{n+1} - K_n`` (mean over seeds, standardised): near a fixed
        point it is small against ``flow_step_``, the flow's own last recorded step ``K_n - K_{n-1}``
    r2_, residual_, condition_number_ : of the regression
    n_states_, seeds_, n_retrains_, retrain_seconds_ (summed over retrains), wall_seconds_, scheduler_
    """

    def __init__(
        self,
        train: Callable[..., Mapping[str, torch.Tensor]],
        *,
        round: int | None = None,
        couplings: str | Sequence[str] = "unit",
        directions: int | np.ndarray = 10,
        epsilon: float = 0.05,
        seeds: int | Sequence[int] = 3,
        perturbation: str = "auto",
        common_seeds: bool = True,
        scheduler: Any = None,
        n_workers: int | None = None,
        device: str = "auto",
        threads: int | None = 1,
        n_bootstrap: int = 200,
        ci_level: float = 0.95,
        noise_draws: int = 200,
        noise_level: float = 0.95,
        tol: float = MARGINAL_Y,
        min_excitation: float = 0.1,
        random_state: int | None = 0,
        progress: bool = True,
    ) -> None:
        self.train = train
        self.round = round
        self.couplings = couplings
        self.directions = directions
        self.epsilon = epsilon
        self.seeds = seeds
        self.perturbation = perturbation
        self.common_seeds = common_seeds
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.device = device
        self.threads = threads
        self.n_bootstrap = n_bootstrap
        self.ci_level = ci_level
        self.noise_draws = noise_draws
        self.noise_level = noise_level
        self.tol = tol
        self.min_excitation = min_excitation
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------ checks
    def _seed_list(self) -> list[int]:
        if isinstance(self.seeds, (int, np.integer)) and not isinstance(self.seeds, bool):
            if int(self.seeds) < 1:
                raise InvalidParameterError(f"seeds must be >= 1, got {self.seeds}")
            return list(range(int(self.seeds)))
        out = [int(s) for s in self.seeds]
        if not out or len(set(out)) != len(out):
            raise InvalidParameterError(
                f"seeds must be a positive count or distinct integers, got {self.seeds!r}"
            )
        return out

    def _check(self) -> tuple[list[int], bool, tuple[str, ...]]:
        if not callable(self.train):
            raise InvalidParameterError("train must be a callable train(weights, masks, seed=...) -> weights")
        seeds = self._seed_list()
        takes_seed = _takes_seed(self.train)
        if not takes_seed and len(seeds) > 1:
            raise InvalidParameterError(
                "train takes no seed keyword, so every seed would retrain alike: give it a `seed` parameter "
                "(train(weights, masks, seed=...)) or use seeds=1"
            )
        eps = float(self.epsilon)
        if not (math.isfinite(eps) and 0.0 <= eps < 1.0):
            raise InvalidParameterError(f"epsilon must be in [0, 1), got {self.epsilon}")
        if self.perturbation not in _PERTURBATIONS:
            raise InvalidParameterError(
                f"perturbation must be one of {_PERTURBATIONS}, got {self.perturbation!r}"
            )
        if self.n_bootstrap < 0 or not 0 < self.ci_level < 1:
            raise InvalidParameterError("n_bootstrap must be >= 0 and ci_level in (0, 1)")
        if self.noise_draws < 0 or not 0 < self.noise_level < 1:
            raise InvalidParameterError("noise_draws must be >= 0 and noise_level in (0, 1)")
        if not 0.0 <= float(self.min_excitation) < 1.0:
            raise InvalidParameterError(f"min_excitation must be in [0, 1), got {self.min_excitation}")
        if self.threads is not None and int(self.threads) < 1:
            raise InvalidParameterError(f"threads must be >= 1 or None, got {self.threads}")
        sets = tuple(normalise_sets(self.couplings))
        from rganalysis.parallel import check_start, resolve_scheduler

        if resolve_scheduler(self.scheduler) == "processes":  # refused now, not after the preparation
            check_start("response_jacobian", 'scheduler="sync"')
        return seeds, takes_seed, sets

    # ------------------------------------------------------------------ fit
    def fit(self, flow: Any) -> ResponseJacobian:
        """Measure the Jacobian at ``self.round`` of ``flow`` (a flow store path or an open flow
        :class:`~rganalysis.store.ParameterSet` with nested masks).  Returns self."""
        from rganalysis.store.hdf5 import load
        from rganalysis.store.parameter_set import ParameterSet

        seeds, takes_seed, sets = self._check()
        own = not isinstance(flow, ParameterSet)
        pset = load(flow) if own else flow
        t_start = time.perf_counter()
        try:
            self._prepare(pset, sets)
            states, design = self._design(seeds)
            ctx = StepContext(
                names=list(self._names),
                rewind=self._rewind,
                depth=dict(self._state.depth),
                kinds=dict(self._state.kinds),
                rate=self.rate_,
                scope=self.scope_,
                sets=sets,
                train=self.train,
                takes_seed=takes_seed,
                weights_needed=self.weights_needed_,
                device=str(self.device),
                threads=self._threads(),
            )
        finally:
            if own:
                pset.close()
        results = self._run(ctx, states, seeds)
        self._regress(results, design, seeds)
        self.wall_seconds_ = time.perf_counter() - t_start
        return self

    def _threads(self) -> int | None:
        """Torch threads per retrain: ``threads``, at most 1 on forked local workers
        (:func:`rganalysis.parallel.worker_threads`)."""
        from rganalysis.parallel import resolve_scheduler, worker_threads

        n = None if self.threads is None else int(self.threads)
        return (
            worker_threads(n, "response_jacobian") if resolve_scheduler(self.scheduler) == "processes" else n
        )

    # ------------------------------------------------------------------ preparation
    def _prepare(self, pset: Any, sets: tuple[str, ...]) -> None:
        from rganalysis.fit.fixed_points import flow_scale
        from rganalysis.fit.streaming import stream_flow_couplings
        from rganalysis.store.checks import check_nested

        check_nested(pset)
        R = int(pset.n_rounds)
        n = R - 1 if self.round is None else int(self.round)
        if not 0 <= n < R:
            raise InvalidParameterError(f"round {n} outside 0..{R - 1}")
        self.round_ = n
        rate = pset.flow_attrs.get("rate")
        if rate is None:
            rate, _, _ = flow_scale(pset)
        self.rate_ = float(rate)
        if not 0.0 < self.rate_ < 1.0:
            raise InvalidParameterError(f"the flow's rate must be in (0, 1), got {self.rate_}")
        self.scope_ = str(pset.flow_attrs.get("scope", "global"))
        b_n = [float(x) for x in pset.scale_factors()] if R > 1 else []
        self._b_flow = b_n[n] if n < len(b_n) and math.isfinite(b_n[n]) and b_n[n] > 1 else None
        self.weights_needed_ = not set(sets) <= MASK_COUPLING_SETS
        names = pset.pruned_names()
        self._names = names
        self._state = pset.state(n, "cpu")
        rew = pset.rewind_state()
        if rew is not None and all(k in rew for k in names):
            self._rewind = {k: rew[k].detach().clone() for k in names}
            self.rewind_source_ = "the flow's rewind point"
        else:
            self._rewind = {k: pset.tensor(k, 0).detach().clone() for k in names}
            self.rewind_source_ = "round 0 of the flow (it has no rewind point)"
        self._layers = {k: layer_round(pset, k, n) for k in names}
        # the proxy state: W_n where alive, the last value alive elsewhere (what the atoms are measured on)
        proxy = State(
            {k: self._layers[k].weight.reshape(self._layers[k].shape) for k in names},
            {k: self._layers[k].mask.reshape(self._layers[k].shape) for k in names},
            self._state.depth,
            self._state.kinds,
        )
        self._proxy = proxy
        self._sets = sets
        flow_k = stream_flow_couplings(pset, sets, device="cpu")
        self._flow_couplings = np.asarray(flow_k.transpose("round", "coupling").values, dtype=np.float64)
        self._flow_coupling_names = [str(c) for c in flow_k["coupling"].values]

    def _design(self, seeds: list[int]) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        """The atoms, the active couplings, the directions and the perturbed masks (state 0: unperturbed)."""
        from scipy.optimize import nnls

        sets = self._sets
        units = self.perturbation == "unit" or (self.perturbation == "auto" and "unit" in sets)
        self.perturbation_ = "unit" if units else "layer"
        lc = LayerCouplings(self._layers, self._proxy, sets)
        if lc.names != self._flow_coupling_names:
            raise InvalidParameterError("the couplings of the round differ from the flow's (layers changed?)")
        all_names = lc.names
        k0 = lc.base
        self.all_couplings_ = list(all_names)
        self.base_couplings_ = k0.copy()
        eps = float(self.epsilon)
        eps_atoms = eps if eps > 0 else 0.05  # the null experiment still needs directions
        # a dead layer is absorbing (IMP never revives a weight): its couplings are frozen, no atom moves it
        atoms = [a for lay in self._layers.values() if bool(lay.mask.any()) for a in mask_moves(lay, units)]
        base_flat = {k: lay.mask for k, lay in self._layers.items()}
        dA = np.zeros((len(atoms), len(all_names)))
        for j, a in enumerate(atoms):
            m, _ = apply_moves({a.layer: base_flat[a.layer]}, [a], [1.0], eps_atoms)
            dA[j] = lc.values(a.layer, m[a.layer]) - k0
        finite = np.isfinite(dA).all(axis=0) & np.isfinite(k0)
        moved = finite & (np.abs(dA) > 1e-12 * np.maximum(1.0, np.abs(k0))).any(axis=0)
        still = np.flatnonzero(~moved)
        if not moved.any():
            raise DegenerateRegressionError(
                f"ResponseJacobian: no mask perturbation moves any of the {len(all_names)} couplings at round "
                f"{self.round_} (every layer empty?)"
            )
        self.frozen_couplings_ = frozen_couplings(
            all_names,
            lc.layer_of,
            self._state.densities(),
            still,
            np.zeros((0, len(all_names))),
            f"the {len(atoms)} elementary mask moves (epsilon {eps_atoms:g})",
        )
        active = np.flatnonzero(moved)
        self._active = active
        self.couplings_ = [all_names[i] for i in active]
        groups = [lc.groups[i] for i in active]
        flow = self._flow_couplings[:, active]
        scale = _group_scale(self.couplings_, groups, flow, dA[:, active])
        self.coupling_scale_ = scale
        Z = dA[:, active] / scale  # (n_atoms, C) standardised moves
        reach, _ = _orthonormal_basis(Z.T, rtol=1e-8)
        if isinstance(self.directions, (int, np.integer)) and not isinstance(self.directions, bool):
            k = int(self.directions)
            if k < 1:
                raise InvalidParameterError(f"directions must be >= 1, got {self.directions}")
            if k > reach.shape[1]:
                warnings.warn(
                    f"ResponseJacobian: {k} directions asked for, but the mask perturbations reach only "
                    f"{reach.shape[1]} of the {len(active)} active couplings; using {reach.shape[1]}",
                    IllConditionedWarning,
                    stacklevel=3,
                )
                k = reach.shape[1]
            V, src = _principal_directions(flow / scale, reach, Z, k)
        else:
            D = np.asarray(self.directions, dtype=np.float64)
            if D.ndim != 2 or D.shape[1] not in (len(all_names), len(active)):
                raise InvalidParameterError(
                    f"directions must be an int or an array (D, C) with C = {len(all_names)} couplings "
                    f"(or the {len(active)} active ones), got shape {D.shape}"
                )
            if D.shape[1] == len(all_names):
                D = D[:, active]
            V, _ = _orthonormal_basis((D / scale).T, rtol=1e-8)
            if V.shape[1] < D.shape[0]:
                raise InvalidParameterError("the given directions are linearly dependent (or frozen)")
            V = _sign_fix(V)
            src = ["given"] * V.shape[1]
        self.directions_ = V.T.copy()  # (D, C)
        self.direction_source_ = src
        # realise +-v for every direction: non-negative combinations of atoms (NNLS), strongest at strength 1
        states = [dict(base_flat)]
        strengths = [np.zeros(len(atoms))]
        targets = [np.zeros(V.shape[0])]
        nominal = [np.zeros(V.shape[1])]
        short = 0
        for d in range(V.shape[1]):
            for sign in (+1, -1):
                t = sign * V[:, d]
                c, _ = nnls(Z.T, t, maxiter=50 * Z.shape[0])
                if not c.max() > 0:  # nothing points that way: the single best atom
                    c = np.zeros(len(atoms))
                    c[int(np.argmax(Z @ t))] = 1.0
                c = c / c.max()
                c[c < 0.02] = 0.0
                if eps > 0:
                    m, s = apply_moves(base_flat, atoms, c, eps)
                    short += s
                else:
                    m = dict(base_flat)
                states.append(m)
                strengths.append(c)
                targets.append(t)
                e = np.zeros(V.shape[1])
                e[d] = sign
                nominal.append(e)
        self.atoms_ = [a.label for a in atoms]
        self.design_ = np.vstack(strengths)
        self.n_states_ = len(states)
        self._short = short
        self._targets = np.vstack(targets)
        self._nominal = np.vstack(nominal)
        # the realised moves of mask couplings are known before any retrain
        self._mask_inputs = None
        if not self.weights_needed_:
            Kin = np.vstack([lc.of_masks(m) for m in states])
            self._mask_inputs = (Kin[:, active] - k0[active]) / scale
        flat_states = [{k: m[k].reshape(self._layers[k].shape) for k in self._names} for m in states]
        return flat_states, {"lc": lc}

    # ------------------------------------------------------------------ retrains
    def _run(
        self, ctx: StepContext, states: list[dict[str, torch.Tensor]], seeds: list[int]
    ) -> list[list[dict[str, Any]]]:
        from rganalysis.parallel import map_flows, resolve_scheduler

        S = len(seeds)
        seed_of = (
            (lambda i, s: seeds[s])
            if self.common_seeds
            else (lambda i, s: int(np.random.SeedSequence([seeds[s], i]).generate_state(1)[0]))
        )
        items = [(ctx, states[i], seed_of(i, s)) for i in range(len(states)) for s in range(S)]
        self.seeds_ = [[seed_of(i, s) for s in range(S)] for i in range(len(states))]
        per = 1 + int(self.weights_needed_)
        label = f"IMP steps ({len(items)} x {per} retrain{'s' if per > 1 else ''})"
        out = map_flows(
            step_task,
            items,
            scheduler=self.scheduler,
            n_workers=self.n_workers,
            progress=label if self.progress else None,
        )
        self.scheduler_ = resolve_scheduler(self.scheduler)
        self.n_retrains_ = int(sum(r["retrains"] for r in out))
        self.retrain_seconds_ = float(sum(r["seconds"] for r in out))
        return [out[i * S : (i + 1) * S] for i in range(len(states))]

    # ------------------------------------------------------------------ regression
    def _regress(self, results: list[list[dict[str, Any]]], design: dict[str, Any], seeds: list[int]) -> None:
        active, scale, V = self._active, self.coupling_scale_, self.directions_.T
        N, S, C = len(results), len(seeds), len(active)
        Kout = np.array([[r["k_out"][active] for r in row] for row in results])  # (N, S, C)
        if self.weights_needed_:
            Kin = np.array([[r["k_in"][active] for r in row] for row in results])
            base_in = Kin[0].mean(axis=0)
            inputs = (Kin - base_in) / scale
        else:
            inputs = np.broadcast_to(self._mask_inputs[:, None, :], (N, S, C)).copy()
        base_out = Kout[0].mean(axis=0)
        # how far one step moves the unperturbed state, against the flow's own last recorded step
        k_n = self.base_couplings_[active]
        self.step_ = (base_out - (Kin[0].mean(axis=0) if self.weights_needed_ else k_n)) / scale
        n = self.round_
        self.flow_step_ = (
            (self._flow_couplings[n, active] - self._flow_couplings[n - 1, active]) / scale
            if n > 0
            else np.full(len(active), np.nan)
        )
        outputs = (Kout - base_out) / scale
        undefined = ~(np.isfinite(outputs).all(axis=(0, 1)) & np.isfinite(inputs).all(axis=(0, 1)))
        if undefined.any():
            bad = [self.couplings_[i] for i in np.flatnonzero(undefined)]
            raise DegenerateRegressionError(
                f"ResponseJacobian: coupling(s) {', '.join(bad[:6])} are undefined (NaN) after a step "
                "(a layer emptied by the prune); use couplings defined on empty layers (density, unit)"
            )
        self.inputs_, self.outputs_ = inputs, outputs
        null = float(self.epsilon) == 0.0
        self.target_directions_ = self.directions_.copy()
        if not null:
            V = self._realised_directions(inputs, V)
        X = np.broadcast_to(self._nominal[:, None, :], (N, S, V.shape[1])).copy() if null else inputs @ V
        Y = outputs @ V
        self.X_, self.Y_ = X, Y
        tot = float(np.sum((outputs - outputs.mean(axis=(0, 1))) ** 2))
        inside = float(np.sum((Y - Y.mean(axis=(0, 1))) ** 2))
        self.closure_ = inside / tot if tot > 0 else math.nan
        if not null:
            real = inputs.mean(axis=1)[1:]
            tgt = self._targets[1:]
            nr = np.linalg.norm(real, axis=1) * np.linalg.norm(tgt, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                self.alignment_ = np.where(nr > 0, np.sum(real * tgt, axis=1) / nr, 0.0)
        else:
            self.alignment_ = np.ones(N - 1)
        D = V.shape[1]
        dnames = [f"direction {d}" for d in range(D)]
        what = f"ResponseJacobian(round {self.round_})"
        fit_kw = dict(rank=None, ridge=0.0, max_condition=1e10, warn_condition=1e4)
        f = affine_fit(X.reshape(N * S, D), Y.reshape(N * S, D), dnames, what=what, **fit_kw)
        self.jacobian_, self.offset_ = f.jacobian, f.offset
        self.eigenvalues_, self.eigenvectors_ = f.eigenvalues, f.eigenvectors
        self.coupling_eigenvectors_ = normalise_columns(V @ f.eigenvectors)
        self.r2_, self.residual_, self.condition_number_ = f.r2, f.residual, f.condition_number
        rng = np.random.default_rng(self.random_state)
        self.eigenvalue_ci_, self.eigenvalue_bootstrap_, self.n_bootstrap_ = self._bootstrap(
            X, Y, rng, fit_kw
        )
        self.noise_floor_, self.noise_eigenvalues_ = self._noise_floor(X, Y, rng, fit_kw)
        # the scale factor of the step
        rho_in = np.array([[r["rho_in"] for r in row] for row in results])
        rho_out = np.array([[r["rho_out"] for r in row] for row in results])
        if self._b_flow is not None:
            self.b_, self.b_source_ = float(self._b_flow), "flow (rho_n / rho_{n+1})"
        else:
            self.b_ = float(rho_in[0].mean() / rho_out[0].mean())
            self.b_source_ = "measured unperturbed step (rho_n / rho_{n+1})"
        self.step_densities_ = {"rho_in": rho_in, "rho_out": rho_out}
        mods = np.abs(self.eigenvalues_)
        with np.errstate(divide="ignore"):
            self.exponents_ = np.log(mods) / math.log(self.b_) if self.b_ > 1 else np.full(D, math.nan)
        self.in_noise_ = mods <= self.noise_floor_
        if self.b_ > 1:
            y_ci = exponent_interval(self.eigenvalue_ci_, self.b_)
            with np.errstate(divide="ignore"):
                floor_y = (
                    math.log(self.noise_floor_) / math.log(self.b_) if self.noise_floor_ > 0 else -math.inf
                )
        else:
            y_ci, floor_y = np.full((D, 2), np.nan), math.nan
        self.exponent_ci_ = y_ci
        self.classes_ = [
            _response_class(y, ci, bool(noise), floor_y, float(self.tol))
            for y, ci, noise in zip(self.exponents_, y_ci, self.in_noise_, strict=True)
        ]
        if self._short:
            warnings.warn(
                f"{what}: {self._short} elementary moves had fewer weights to remove or restore than asked "
                "(nearly dense or nearly empty layers): those perturbations are one-sided",
                IllConditionedWarning,
                stacklevel=3,
            )

    def _realised_directions(self, inputs: np.ndarray, V: np.ndarray) -> np.ndarray:
        """The regression's coordinates: the principal directions of the moves the perturbed states realised
        (mean over seeds), at most as many as targeted, each realised at least ``min_excitation`` times as
        strongly as the first.  Sets ``directions_`` and ``direction_overlap_`` (cosines of the principal
        angles between the realised and the targeted spans).  Returns (C, D) orthonormal columns."""
        Xm = inputs.mean(axis=1)
        Xm = Xm - Xm.mean(axis=0)
        _, s, Wt = np.linalg.svd(Xm, full_matrices=False)
        if not (s.size and s[0] > 0):
            raise DegenerateRegressionError(
                "ResponseJacobian: the perturbed states do not move the couplings"
            )
        k = int(min(V.shape[1], np.sum(s >= float(self.min_excitation) * s[0])))
        if k < V.shape[1]:
            warnings.warn(
                f"ResponseJacobian(round {self.round_}): the perturbed states realise {k} of the {V.shape[1]} "
                f"targeted directions at least {self.min_excitation:g} times as strongly as the first (singular "
                f"values {', '.join(f'{x:.3g}' for x in s[: V.shape[1]])}); the Jacobian is measured in those {k}",
                IllConditionedWarning,
                stacklevel=4,
            )
        Vr = _sign_fix(Wt[:k].T)
        self.directions_ = Vr.T.copy()
        self.direction_overlap_ = np.linalg.svd(V.T @ Vr, compute_uv=False)
        self.direction_source_ = ["realised"] * k
        return Vr

    def _seed_residuals(self, Y: np.ndarray) -> tuple[np.ndarray, int]:
        """The seed noise of the responses Y (N, S, D): residuals after the state means (and, with common
        seeds, the seed means: a seed's effect shared by every state does not move the slope), rescaled to
        one seed's noise.  Returns (residuals (N, S, D), their degrees of freedom)."""
        N, S, _ = Y.shape
        r = Y - Y.mean(axis=1, keepdims=True)
        f, dof = math.sqrt(S / (S - 1)), N * (S - 1)
        if self.common_seeds:
            r = r - r.mean(axis=0, keepdims=True)
            f *= math.sqrt(N / (N - 1)) if N > 1 else 1.0
            dof = (N - 1) * (S - 1)
        return r * f, dof

    def _bootstrap(
        self, X: np.ndarray, Y: np.ndarray, rng: np.random.Generator, fit_kw: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Intervals under the policy of :mod:`rganalysis.fit.intervals`.

        With two or more seeds the states are the design, not a sample, so they are kept.  With common seeds
        (one set of seeds for every state) a seed's error moves its whole response, so the seeds are the
        replicates: each resample is the state means plus the seeds' deviations from them weighted by
        ``w_s ~ N(0, 1)`` (scaled to the sample covariance of the mean over S seeds), and the spread around
        the estimate is widened by ``t_{S-1} / z``.  With each state's own seeds, a fixed-design (wild)
        bootstrap: the state means plus the seed noise (:meth:`_seed_residuals`) with random signs per
        (state, seed), widened by ``t_dof / z`` (``dof`` residual degrees of freedom).  With one seed, or a
        training without seed noise, there is no noise to resample, and with weight couplings the inputs
        carry seed noise too (the design is not fixed): states and seeds are resampled instead (with
        replacement; one seed draw shared by all states with common seeds), which is conservative
        (docs/theory.md, section 3)."""
        N, S, D = X.shape
        ref = self.eigenvalues_
        names = [f"d{d}" for d in range(D)]
        level = float(self.ci_level)
        common = bool(self.common_seeds)

        def fit(xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
            try:
                return affine_fit(xb, yb, names, quiet=True, what="bootstrap", **fit_kw).eigenvalues
            except DegenerateRegressionError as e:
                raise DegenerateResample("degenerate design") from e

        # weight couplings: the inputs are measured on retrained states and carry seed noise themselves, so
        # the design is not fixed and (input, output) rows are resampled together
        fixed = S >= 2 and not self.weights_needed_
        noise, dof = self._seed_residuals(Y) if fixed else (None, 0)
        # seed noise at round-off level (a deterministic training) is no noise: every resample would be the fit
        spread = float(np.abs(Y - Y.mean(axis=(0, 1))).max()) if Y.size else 0.0
        seed_noise = noise is not None and float(np.abs(noise).max()) > 1e-9 * spread
        q = 0.5 + level / 2
        if seed_noise and common:
            # common seeds: a seed's error moves its whole response (a per-seed slope, not only an offset),
            # so the S seeds are the independent replicates: the pooled fit is the mean of the S per-seed
            # fits (one design), and J + sqrt(S / (S-1)) mean_s w_s (J_s - J), w_s ~ N(0, 1), has the
            # sample covariance of that mean; S - 1 degrees of freedom
            means = Y.mean(axis=1)
            dev = (Y - means[:, None, :]) * math.sqrt(S / (S - 1)) / S
            X0 = X[:, 0]

            def draw() -> np.ndarray:
                return fit(X0, means + np.einsum("s,nsd->nd", rng.standard_normal(S), dev))

            factor = float(student_t.ppf(q, S - 1) / norm.ppf(q))
            how = f"seed-cluster bootstrap over {S} common seeds ({N} states each)"
        elif seed_noise:
            means = Y.mean(axis=1, keepdims=True)
            Xr = X.reshape(N * S, D)

            def draw() -> np.ndarray:
                signs = rng.choice([-1.0, 1.0], size=(N, S, 1))
                return fit(Xr, (means + signs * noise).reshape(N * S, D))

            factor = float(student_t.ppf(q, dof) / norm.ppf(q)) if dof > 0 else 1.0
            how = f"fixed-design bootstrap of the seed noise over {N} states x {S} seeds"
        else:

            def draw() -> np.ndarray:
                rows = rng.integers(0, N, N)
                if np.unique(rows).size < D + 1:
                    raise DegenerateResample(f"fewer than {D + 1} distinct states")
                if common:
                    cols = np.broadcast_to(rng.integers(0, S, S), (N, S))
                else:
                    cols = rng.integers(0, S, (N, S))
                return fit(X[rows[:, None], cols].reshape(N * S, D), Y[rows[:, None], cols].reshape(N * S, D))

            why = (
                "one seed"
                if S == 1
                else ("inputs with seed noise" if self.weights_needed_ else "no seed noise")
            )
            factor, how = 1.0, f"bootstrap over {N} states ({why})"
        res = draw_resamples(ref, int(self.n_bootstrap), draw)
        self.bootstrap_method_ = how
        ci, _ = eigenvalue_intervals(
            ref,
            res,
            level=level,
            what=f"ResponseJacobian(round {self.round_}) {how}",
            factor=factor,
            lower_bound=0.0,
        )
        return ci, np.abs(res.values), res.n_usable

    def _noise_floor(
        self, X: np.ndarray, Y: np.ndarray, rng: np.random.Generator, fit_kw: dict[str, Any]
    ) -> tuple[float, np.ndarray]:
        """The Jacobian of pure seed noise on the same design: the seed noise (:meth:`_seed_residuals`)
        sign-flipped at random, regressed on the same inputs.  Returns (``noise_level`` quantile of the
        largest ``|lambda|``, (draws, D) sorted moduli)."""
        N, S, D = Y.shape
        if S < 2 or self.noise_draws == 0:
            return (0.0 if S >= 2 else math.nan), np.empty((0, D))
        r, _ = self._seed_residuals(Y)
        if not np.any(r):
            return 0.0, np.zeros((int(self.noise_draws), D))
        Xr = X.reshape(N * S, D)
        out = []
        for _ in range(int(self.noise_draws)):
            eta = (rng.choice([-1.0, 1.0], size=(N, S, 1)) * r).reshape(N * S, D)
            try:
                fn = affine_fit(Xr, eta, [f"d{d}" for d in range(D)], quiet=True, what="noise", **fit_kw)
            except (DegenerateRegressionError, np.linalg.LinAlgError):
                continue
            out.append(np.sort(np.abs(fn.eigenvalues))[::-1])
        if not out:
            return math.nan, np.empty((0, D))
        E = np.vstack(out)
        return float(np.quantile(E[:, 0], float(self.noise_level))), E

    # ------------------------------------------------------------------ results
    def coupling_jacobian(self) -> np.ndarray:
        """The Jacobian in the regressed couplings' own units, ``S V J V^T S^-1`` (C, C): exact when the
        directions span all active couplings, else the map projected on their span."""
        V = self.directions_.T
        s = self.coupling_scale_
        return (s[:, None] * (V @ self.jacobian_ @ V.T)) / s[None, :]

    def to_json(self) -> dict[str, Any]:
        """Everything fitted, as JSON types (non-finite numbers -> null): what the store's ``/response``
        group keeps (:func:`rganalysis.fit.response_store.write_response`)."""

        def num(x: Any) -> float | None:
            x = float(x)
            return x if math.isfinite(x) else None

        eig = []
        for i, z in enumerate(self.eigenvalues_):
            lo, hi = self.eigenvalue_ci_[i]
            eig.append(
                {
                    "re": num(z.real),
                    "im": num(z.imag),
                    "abs": num(abs(z)),
                    "exponent": num(self.exponents_[i]),
                    "class": self.classes_[i],
                    "ci_low": num(lo),
                    "ci_high": num(hi),
                    "in_noise": bool(self.in_noise_[i]),
                }
            )
        return {
            "estimator": "response_jacobian",
            "linearises": "one real IMP step (rewind, retrain with each seed, global prune) at round "
            f"{self.round_}, from perturbed masks",
            "round": int(self.round_),
            "rate": float(self.rate_),
            "scope": self.scope_,
            "b": num(self.b_),
            "b_source": self.b_source_,
            "tol": float(self.tol),
            "couplings": list(self.couplings_),
            "coupling_sets": list(self._sets),
            "frozen_couplings": dict(self.frozen_couplings_),
            "coupling_scale": [num(x) for x in self.coupling_scale_],
            "directions": [[num(x) for x in row] for row in self.directions_],
            "direction_source": list(self.direction_source_),
            "target_directions": [[num(x) for x in row] for row in self.target_directions_],
            "direction_overlap": [num(x) for x in getattr(self, "direction_overlap_", [])],
            "jacobian": [[num(x) for x in row] for row in self.jacobian_],
            "eigenvalues": eig,
            "eigenvectors": [
                {
                    "re": [num(x) for x in self.eigenvectors_[:, j].real],
                    "im": [num(x) for x in self.eigenvectors_[:, j].imag],
                }
                for j in range(self.eigenvectors_.shape[1])
            ],
            "noise_floor": num(self.noise_floor_),
            "step_norm": num(np.linalg.norm(self.step_)),
            "flow_step_norm": num(np.linalg.norm(self.flow_step_)),
            "noise_level": float(self.noise_level),
            "closure": num(self.closure_),
            "r2": num(self.r2_),
            "residual": num(self.residual_),
            "condition_number": num(self.condition_number_),
            "alignment": [num(x) for x in self.alignment_],
            "epsilon": float(self.epsilon),
            "perturbation": self.perturbation_,
            "common_seeds": bool(self.common_seeds),
            "seeds": [list(map(int, s)) for s in self.seeds_],
            "n_states": int(self.n_states_),
            "n_directions": int(self.directions_.shape[0]),
            "n_bootstrap": int(self.n_bootstrap_),
            "bootstrap_method": getattr(self, "bootstrap_method_", None),
            "n_retrains": int(self.n_retrains_),
            "retrain_seconds": float(self.retrain_seconds_),
            "wall_seconds": float(getattr(self, "wall_seconds_", math.nan)),
            "scheduler": self.scheduler_,
            "rewind": self.rewind_source_,
            "type": _spectrum_type(self.classes_),
        }


def _takes_seed(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return "seed" in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _response_class(y: float, y_ci: np.ndarray, in_noise: bool, floor_y: float, band: float) -> str:
    """The class the interval of the exponent ``y`` supports (:func:`~rganalysis.fit.fixed_points.interval_class`:
    ``> band`` relevant, ``< -band`` irrelevant, inside the band marginal, else ``undetermined``), and
    ``undetermined`` when there is no interval, or when ``|lambda|`` is inside a noise floor that itself
    reaches the marginal band (``floor_y``: the floor's exponent)."""
    if in_noise and math.isfinite(floor_y) and floor_y >= -band:
        return "undetermined"
    return interval_class(float(y_ci[0]), float(y_ci[1]), band)


def _spectrum_type(classes: Sequence[str]) -> str:
    """stable / unstable / saddle / marginal as :func:`rganalysis.fit.fixed_points.fixed_point_type`, or
    ``undetermined`` when a direction's class is not resolved."""
    c = set(classes)
    if "undetermined" in c:
        return "undetermined"
    if "relevant" in c and "irrelevant" in c:
        return "saddle"
    if c == {"irrelevant"}:
        return "stable"
    if c == {"relevant"}:
        return "unstable"
    return "marginal"


# ====================================================================================================
# the verb
# ====================================================================================================
def response_jacobian(
    flow: Any,
    train: Callable[..., Mapping[str, torch.Tensor]],
    *,
    round: int | None = None,
    couplings: str | Sequence[str] = "unit",
    directions: int | np.ndarray = 10,
    epsilon: float = 0.05,
    seeds: int | Sequence[int] = 3,
    scheduler: Any = None,
    write: bool | None = None,
    **kwargs: Any,
) -> ResponseJacobian:
    """Measure the response Jacobian of one real IMP step at a round of a flow (see
    :class:`ResponseJacobian` for every parameter), and write it into the flow store's ``/response`` group.

    ``write``: None (default) writes when ``flow`` is a path (the store is closed by then); True also writes
    a ParameterSet's file, which must not be open (checked before any training:
    :class:`~rganalysis.errors.StoreInUseError` for a loaded set still open, so give its path instead;
    :class:`~rganalysis.errors.InvalidParameterError` for a set without a file); False never writes.
    Returns the fitted estimator.
    """
    is_path = isinstance(flow, (str, os.PathLike))
    if write and not is_path:
        path = getattr(flow, "path", None)
        if path is None:
            raise InvalidParameterError("write=True needs a flow stored in a file (give its path)")
        if getattr(flow, "is_open", False):
            raise StoreInUseError(
                f"write=True: {path} is open through the ParameterSet given, and HDF5 cannot write it while it is "
                "open; give the path instead (it is opened for the fit and closed before the write); nothing was "
                "trained"
            )
    est = ResponseJacobian(
        train,
        round=round,
        couplings=couplings,
        directions=directions,
        epsilon=epsilon,
        seeds=seeds,
        scheduler=scheduler,
        **kwargs,
    ).fit(flow)
    if write or (write is None and is_path):
        from rganalysis.fit.response_store import write_response

        write_response(flow if is_path else flow.path, est)
    return est
