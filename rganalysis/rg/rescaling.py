"""Rescaling: what happens to the surviving weights after a coarse-graining step -- ``none`` (the
data-free flow) or ``rewind`` (to a rewind point), optionally followed by a user ``train`` callback.
New methods are one function (:func:`register_rescaling`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from rganalysis.errors import InvalidParameterError, MissingTensorError, NonFiniteWeightsError
from rganalysis.store.state import State

__all__ = ["register_rescaling", "rescale", "RescaleFn", "RESCALINGS", "TrainFn"]

#: A rescaling method: ``(state, rewind) -> state`` with the same masks.
RescaleFn = Callable[[State, "Mapping[str, torch.Tensor] | None"], State]

#: A training callback: ``train(weights, masks) -> weights``.  ``weights`` maps layer name to the
#: (unmasked) weight tensor, ``masks`` layer name to its ``torch.bool`` mask (True = alive); it must
#: return new weights for the same layers with the same shapes (a dict; values may be on any device
#: and of any floating dtype, they are cast back to the state's).  It should keep pruned entries at
#: zero in its forward pass (e.g. train ``w * mask``); whatever it returns there is masked anyway.
#: The weights it receives are fresh copies, so it may train them in place.
TrainFn = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]

#: Registered rescaling methods, by name.
RESCALINGS: dict[str, RescaleFn] = {}


def register_rescaling(name: str) -> Callable[[RescaleFn], RescaleFn]:
    """Decorator that registers a rescaling method ``fn(state, rewind) -> State`` under ``name``.

    The method receives the coarse-grained state and the ``rewind`` weights (or None) and must
    return a state with the same layers and masks.
    """

    def deco(fn: RescaleFn) -> RescaleFn:
        RESCALINGS[name] = fn
        return fn

    return deco


@register_rescaling("none")
def _keep(state: State, rewind: Mapping[str, torch.Tensor] | None) -> State:
    """Keep the weights (data-free flow)."""
    return state


@register_rescaling("rewind")
def _rewind(state: State, rewind: Mapping[str, torch.Tensor] | None) -> State:
    """Reset every layer's weights to ``rewind[name]`` (moved to the state's device and dtype)."""
    if rewind is None:
        raise InvalidParameterError("rescaling 'rewind' needs the rewind weights (rewind=...)")
    return state.with_weights(_conform(state, rewind, "rewind"))


def rescale(
    state: State,
    method: str = "none",
    rewind: Mapping[str, torch.Tensor] | None = None,
    train: TrainFn | None = None,
) -> State:
    """Rescale a coarse-grained state: apply ``method``, then ``train`` if given.

    Parameters
    ----------
    state : State
        The state after coarse-graining.
    method : str
        A key of :data:`RESCALINGS`: ``"none"`` (keep weights) or ``"rewind"``.
    rewind : dict[str, Tensor], optional
        Layer name -> weights to rewind to (same shapes as the state's); needed by ``"rewind"``.
        Extra names are ignored.
    train : callable, optional
        ``train(weights, masks) -> weights`` (see :data:`TrainFn`), called once, after ``method``.

    Returns
    -------
    State
        Same masks, depth and kinds; new weights (the input weights for ``"none"`` without train).

    Raises
    ------
    InvalidParameterError
        Unknown method, ``"rewind"`` without ``rewind``, or weights of the wrong shape.
    MissingTensorError
        ``rewind`` or the weights returned by ``train`` lack a layer of the state.
    """
    if method not in RESCALINGS:
        raise InvalidParameterError(f"unknown rescaling {method!r}; known: {sorted(RESCALINGS)}")
    out = RESCALINGS[method](state, rewind)
    if train is not None:
        # copies: a callback that trains in place must not write into the rewind point
        new = train({k: w.clone() for k, w in out.weights.items()}, dict(out.masks))
        if not isinstance(new, Mapping):
            raise InvalidParameterError(f"train must return a dict of weights, got {type(new).__name__}")
        out = out.with_weights(_conform(out, new, "train"))
    return out


def _conform(state: State, weights: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """``weights`` restricted to the state's layers, checked, on the state's devices and dtypes."""
    missing = [n for n in state.names if n not in weights]
    if missing:
        raise MissingTensorError(f"{what} weights lack layers of the state: {missing}")
    out = {}
    for name, ref in state.weights.items():
        w = weights[name]
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != tuple(ref.shape):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise InvalidParameterError(
                f"{what} weights for {name}: got {shape}, expected {tuple(ref.shape)}"
            )
        w = w.detach().to(device=ref.device, dtype=ref.dtype)
        if not bool(torch.isfinite(w).all()):
            m = state.masks.get(name)
            bad = ~torch.isfinite(w) if m is None else ~torch.isfinite(w) & m.to(torch.bool)
            if bool(bad.any()):  # pruned entries may be anything: they are masked
                raise NonFiniteWeightsError(
                    f"{what} weights for {name}: {int(bad.sum())} surviving value(s) are NaN or infinite "
                    "(a diverged training?); nothing was recorded"
                )
        out[name] = w
    return out
