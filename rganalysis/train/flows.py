"""The retrained IMP flow of a model on a task: train it dense from its rewind point, then
:func:`rganalysis.compute_flow` with ``rescaling="rewind"`` and the task's training callback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rganalysis.errors import InvalidParameterError
from rganalysis.store.parameter_set import ParameterSet
from rganalysis.train.masked import MaskedTrainer

__all__ = ["retrained_flow"]


def retrained_flow(
    trainer: MaskedTrainer,
    prunable: Sequence[str],
    rounds: int,
    rate: float,
    *,
    name: str,
    architecture: str,
    out: str | Path | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> ParameterSet | Path:
    """IMP with rewinding to ``trainer.init`` (the rewind point) and retraining by ``trainer`` (seed 0):
    round 0 is the dense network trained from the rewind point, round ``n`` the ticket of density
    ``(1 - rate)**n`` over the ``prunable`` tensors (global magnitude pruning).  The floating-point tensors
    of the state dict are stored (the rest -- integer buffers -- stay in ``trainer.init``).  Returns the
    flow, or the path it was saved to when ``out`` is given (written atomically, replacing a file)."""
    import rganalysis
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    if not prunable:
        raise InvalidParameterError("retrained_flow needs at least one prunable tensor")
    missing = [k for k in prunable if k not in trainer.init]
    if missing:
        raise InvalidParameterError(f"prunable tensors not in the model: {missing[:3]}")
    dense = trainer.fit_state({}, {}, 0)
    keep = [k for k, v in trainer.init.items() if v.is_floating_point()]
    base = make_parameter_set(
        [single_round({k: dense[k].cpu() for k in keep})],
        adapter="generic",
        architecture=architecture,
        sources=[],
        name=name,
        rewind={k: trainer.init[k].cpu() for k in keep},
        prunable=list(prunable),
        extra_attrs=dict(extra_attrs or {}),
    )
    flow = rganalysis.compute_flow(
        base, rounds, rate, rescaling="rewind", train=trainer, device=device, progress=False
    )
    if out is None:
        return flow
    return flow.save(Path(out), force=True, progress=False)
