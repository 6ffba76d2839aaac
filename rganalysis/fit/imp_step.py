"""One real IMP step from a mask, as a small picklable task for local processes or dask workers: rewind,
retrain with a seed, prune globally at the flow's rate, measure the couplings before and after
(:func:`retrain_step`; used by :class:`~rganalysis.fit.response.ResponseJacobian`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from rganalysis.fit.couplings import coupling_values
from rganalysis.store.state import State, resolve_device

__all__ = ["StepContext", "retrain_step", "step_task"]


@dataclass
class StepContext:
    """What every retrain of one experiment shares (small and picklable: it travels to the workers)."""

    names: list[str]
    rewind: dict[str, torch.Tensor]  # pruned layers -> rewind weights (CPU)
    depth: dict[str, float]
    kinds: dict[str, str]
    rate: float
    scope: str
    sets: tuple[str, ...]
    train: Callable[..., Mapping[str, torch.Tensor]]
    takes_seed: bool
    weights_needed: bool
    device: str
    threads: int | None


@contextmanager
def _torch_threads(n: int | None, device: torch.device):
    """``n`` intra-op threads on CPU for the duration (restored after); nothing on other devices."""
    if n is None or device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _trained(ctx: StepContext, state: State, seed: int) -> State:
    """Rewind ``state``'s weights, train them with its masks (``seed``), return the trained state."""
    from rganalysis.rg.rescaling import rescale

    train = partial(ctx.train, seed=int(seed)) if ctx.takes_seed else ctx.train
    return rescale(state, "rewind", rewind=state.weights, train=train)


def retrain_step(ctx: StepContext, masks: Mapping[str, torch.Tensor], seed: int) -> dict[str, Any]:
    """One IMP step from the mask ``masks`` with training seed ``seed``: rewind and retrain the mask,
    measure its couplings (weight couplings only), prune globally at the flow's rate, and measure the
    couplings after the step (retraining the pruned mask first for weight couplings).

    Returns ``{"k_in": (C,) or None, "k_out": (C,), "rho_in", "rho_out" (global densities),
    "retrains": 1 or 2, "seconds": wall time}``.  Module-level and pure, so it runs on dask workers.
    """
    from rganalysis.rg.coarse_graining import coarse_grain

    t0 = time.perf_counter()
    dev = resolve_device(ctx.device)
    with _torch_threads(ctx.threads, dev):
        state = State(
            {k: ctx.rewind[k].to(dev) for k in ctx.names},
            {k: masks[k].to(dev) for k in ctx.names},
            dict(ctx.depth),
            dict(ctx.kinds),
        )
        rho_in = state.global_density()
        trained = _trained(ctx, state, seed)
        k_in = coupling_values(trained, ctx.sets) if ctx.weights_needed else None
        pruned = coarse_grain(trained, ctx.rate, scope=ctx.scope)
        retrains = 1
        if ctx.weights_needed:
            after = _trained(ctx, State(state.weights, pruned.masks, state.depth, state.kinds), seed)
            retrains = 2
        else:
            after = pruned
        k_out = coupling_values(after, ctx.sets)
        rho_out = after.global_density()
    return {
        "k_in": k_in,
        "k_out": k_out,
        "rho_in": float(rho_in),
        "rho_out": float(rho_out),
        "retrains": retrains,
        "seconds": time.perf_counter() - t0,
    }


def step_task(args: tuple[StepContext, dict[str, torch.Tensor], int]) -> dict[str, Any]:
    """dask task: ``(context, masks, seed) -> retrain_step(...)``."""
    ctx, masks, seed = args
    return retrain_step(ctx, masks, seed)
