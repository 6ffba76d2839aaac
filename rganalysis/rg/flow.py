"""Computing an IMP flow on a stored model and recording it as a store of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch

from rganalysis.errors import InvalidParameterError
from rganalysis.rg.coarse_graining import SCOPES, check_rate, global_scope
from rganalysis.rg.imp import check_rounds, imp_flow
from rganalysis.rg.survival import survival_rounds
from rganalysis.store.parameter_set import ParameterSet, SurvivalMask
from rganalysis.store.state import State, resolve_device

__all__ = ["compute_flow", "survival_torch_dtype"]


def survival_torch_dtype(n_rounds: int) -> torch.dtype:
    """The torch dtype that counts ``0 .. n_rounds`` survival rounds without overflow: uint8 up to 255
    rounds, int16 up to 32,767, int32 up to 2**31 - 1, else int64."""
    for dt, top in ((torch.uint8, 255), (torch.int16, 32_767), (torch.int32, 2**31 - 1)):
        if n_rounds <= top:
            return dt
    return torch.int64


def compute_flow(
    pset: ParameterSet,
    rounds: int,
    rate: float,
    *,
    scope: str = "global",
    rescaling: str = "none",
    train: Callable | None = None,
    start_round: int | None = None,
    device: str | torch.device | None = "auto",
    progress: bool = True,
) -> ParameterSet:
    """Run ``rounds`` IMP rounds on ``pset`` (from its last round unless ``start_round``) and return
    the flow as a ParameterSet of ``rounds + 1`` rounds (round 0 = the starting state).

    Rounds that prune nothing (``round(rate * survivors) = 0``) are flagged: the flow attribute
    ``empty_from`` is the first of them (every later round is one too).  A data-free flow does not
    compute them: they repeat that round's state.

    IMP acts on ``pset.pruned_names()``: the tensors masked in the source, else the prunable ones.
    Masks are kept as the number of rounds each weight survives (:class:`SurvivalMask`; one integer per
    weight, of :func:`survival_torch_dtype`, which cannot overflow for any number of rounds), so a long
    flow costs no more memory than two copies of the masks.  With ``rescaling="rewind"`` (and an
    optional ``train(weights, masks) -> weights`` callback) the weights of every round are recorded.
    A data-free global flow of float32 weights on CPU is computed from one ranking of the weights, in
    two passes whatever ``rounds`` (:mod:`rganalysis.rg.survival`; its progress bar counts the chunks of
    the two passes); anything else runs round by round.
    """
    rounds = check_rounds(rounds)
    rate = check_rate(rate)
    if not hasattr(pset, "state") or not hasattr(pset, "n_rounds"):
        raise InvalidParameterError(
            f"compute_flow takes a ParameterSet (rganalysis.load(store) or rganalysis.ingest(checkpoint)), "
            f"got {type(pset).__name__}"
        )
    if train is not None and rescaling != "rewind":
        raise InvalidParameterError(
            "train= is the rescaling step of a rewinding flow: pass rescaling='rewind' with it (without, the "
            "flow is data-free and train would not be called)"
        )
    start = pset.n_rounds - 1 if start_round is None else int(start_round)
    if not 0 <= start < pset.n_rounds:
        raise InvalidParameterError(f"start_round {start} outside 0..{pset.n_rounds - 1}")
    dev = resolve_device(device)
    state = pset.state(start, dev)
    rewind = None
    if rescaling == "rewind":
        stored = pset.rewind_state()
        rewind = (
            {k: stored[k].to(dev) for k in state.names}
            if stored and set(state.names) <= set(stored)
            else None
        )
    weights: dict[int, dict] = {0: {n: partial(pset.tensor, n, start) for n in pset.names}}
    sizes = np.array([state.weights[k].numel() for k in state.names], dtype=np.float64)
    fast = None
    if rescaling == "none" and train is None and scope == "global" and SCOPES[scope] is global_scope:
        # data-free and global: every round's masks follow from one ranking of the same weights
        fast = survival_rounds(
            list(state.weights.values()), list(state.masks.values()), rounds, rate, progress
        )
    if fast is not None:
        counts, survivors = fast
        alive = dict(zip(state.names, counts, strict=True))
        same = np.flatnonzero((survivors[1:] == survivors[:-1]).all(axis=1))
        empty_from = int(same[0]) + 1 if same.size else None
        dens = survivors / sizes
    else:
        flow_iter = imp_flow(state, rounds, rate, scope, rescaling, rewind, train, progress)
        alive, dens, empty_from = _iterate(flow_iter, state, rounds, rescaling, weights, pset.info)
    alive_rounds = {k: torch.from_numpy(a) for k, a in alive.items()}
    masks: Mapping[str, list] = {
        k: [SurvivalMask(alive_rounds[k], r) for r in range(rounds + 1)] for k in state.names
    }
    for k in pset.masked_names():  # masked in the source but outside the flow: keep the start mask
        if k not in masks:
            m = pset.mask(k, start)
            masks[k] = [m] * (rounds + 1)
    attrs = dict(pset.attrs)
    attrs["flow_source"] = str(getattr(pset, "path", "") or "")
    flow = {
        "kind": "computed",
        "rate": float(rate),
        "scope": scope,
        "rescaling": rescaling,
        "rounds": int(rounds),
        "start_round": start,
        "device": str(dev),
    }
    if empty_from is not None:
        flow["empty_from"] = empty_from  # rounds empty_from .. rounds pruned nothing
    out = ParameterSet(
        pset.info,
        weights,
        masks,
        n_rounds=rounds + 1,
        layouts=[[]] * (rounds + 1),
        rewind={k: partial(pset.rewind_tensor, k) for k in pset.rewind_names()} or None,
        rewind_layout=pset.rewind_layout,
        attrs=attrs,
        flow_attrs=flow,
        densities=dens,
        density_layers=state.names,
        validate=False,
    )
    out.masks_nested = True  # by construction: coarse-graining only removes weights
    return out


def _iterate(
    flow_iter: Iterator[State],
    state: State,
    rounds: int,
    rescaling: str,
    weights: dict[int, dict],
    info: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], np.ndarray, int | None]:
    """Run the flow round by round: survival counts per layer, densities (rounds + 1, layers) and the
    first round that prunes nothing (None if every round prunes); with rescaling, each round's weights
    go into ``weights``."""
    # masks are nested, so the number of rounds a weight is alive in is the first round it is dead in.
    # Counted in numpy: torch's per-layer ops are OpenMP regions, and on a busy machine each waits for
    # a descheduled thread (2 x 54 of them per ResNet-50 round took most of a 20-round flow's time)
    ndt = torch.empty(0, dtype=survival_torch_dtype(rounds + 1)).numpy().dtype
    alive = {k: np.zeros(tuple(m.shape), dtype=ndt) for k, m in state.masks.items()}
    sizes = np.array([state.weights[k].numel() for k in state.names], dtype=np.float64)
    dens = np.empty((rounds + 1, len(state.names)))
    empty_from = None  # the first round that prunes nothing: no later round does either (rg.budget)
    last: list[int] | None = None
    for r, st in enumerate(flow_iter):
        counts = []
        for j, (k, m) in enumerate(st.masks.items()):
            mc = m.detach().cpu().numpy()
            np.add(alive[k], mc, out=alive[k], casting="unsafe")
            counts.append(int(np.count_nonzero(mc)))
            dens[r, j] = float(counts[-1]) / sizes[j]
        if r > 0 and rescaling != "none":
            weights[r] = {k: w.detach().cpu().to(info[k].dtype) for k, w in st.weights.items()}
        if r > 0 and empty_from is None and counts == last:
            empty_from = r
            if rescaling == "none" and r < rounds:  # every later round is this state again: counted
                rest = rounds - r
                for k, m in st.masks.items():
                    alive[k] += m.detach().cpu().numpy().astype(ndt) * ndt.type(rest)
                dens[r + 1 :] = dens[r]
                flow_iter.close()
                break
        last = counts
    return alive, dens, empty_from
