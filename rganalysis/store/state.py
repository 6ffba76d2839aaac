"""The in-memory state of a network at one IMP round, as the RG engine sees it.

A :class:`State` holds the prunable tensors only (weights and boolean masks, on one device),
with the per-layer facts the couplings need.  It is what :meth:`ParameterSet.state` returns and
what coarse-graining, couplings and the estimators take and give back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from rganalysis.errors import DeviceUnavailableError, InvalidParameterError

__all__ = ["resolve_device", "State"]


@dataclass
class State:
    """Prunable weights and their masks at one round.

    Attributes
    ----------
    weights : dict[str, Tensor]
        Layer name -> weight tensor (floating point, any shape), unmasked values.  Ordered by depth.
    masks : dict[str, Tensor]
        Layer name -> ``torch.bool`` tensor of the same shape; True = surviving weight.
    depth : dict[str, float]
        Layer name -> normalised depth in [0, 1] (0 = first prunable layer, 1 = last).
    kinds : dict[str, str]
        Layer name -> layer kind (``conv``, ``linear``, ``embedding``).
    """

    weights: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    depth: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if list(self.weights) != list(self.masks):
            raise ValueError("weights and masks must name the same layers in the same order")
        if not self.depth:
            n = len(self.weights)
            self.depth = {k: (i / (n - 1) if n > 1 else 0.0) for i, k in enumerate(self.weights)}
        if not self.kinds:
            self.kinds = {k: ("conv" if w.dim() > 2 else "linear") for k, w in self.weights.items()}

    @classmethod
    def dense(cls, weights: Mapping[str, torch.Tensor], **kwargs) -> State:
        """A state with all-ones masks."""
        w = dict(weights)
        return cls(w, {k: _ones_like(v) for k, v in w.items()}, **kwargs)

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    def sizes(self) -> dict[str, int]:
        """Number of weights per layer (N_l)."""
        return {k: v.numel() for k, v in self.weights.items()}

    def survivors(self) -> dict[str, int]:
        """Number of surviving (unmasked) weights per layer."""
        return {k: int(torch.count_nonzero(m)) for k, m in self.masks.items()}

    def densities(self) -> dict[str, float]:
        """Per-layer density rho_l = survivors / size."""
        return {k: int(torch.count_nonzero(m)) / m.numel() for k, m in self.masks.items()}

    def global_density(self) -> float:
        """Surviving fraction of all weights of the state (layers weighted by size)."""
        tot = sum(m.numel() for m in self.masks.values())
        return sum(int(torch.count_nonzero(m)) for m in self.masks.values()) / tot

    def with_masks(self, masks: Mapping[str, torch.Tensor]) -> State:
        """Same weights, new masks (a coarse-grained state)."""
        return State(self.weights, dict(masks), self.depth, self.kinds)

    def with_weights(self, weights: Mapping[str, torch.Tensor]) -> State:
        """Same masks, new weights (a rescaled state)."""
        return State(dict(weights), self.masks, self.depth, self.kinds)

    def to(self, device: torch.device | str) -> State:
        """The state with weights and masks on ``device``."""
        return State(
            {k: v.to(device) for k, v in self.weights.items()},
            {k: v.to(device) for k, v in self.masks.items()},
            self.depth,
            self.kinds,
        )

    def masked(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, weights * mask) per layer, pruned entries zero."""
        for k, w in self.weights.items():
            yield k, w * self.masks[k]


def _ones_like(v: torch.Tensor) -> torch.Tensor:
    """An all-True bool tensor like ``v``.  On CPU filled by numpy: a torch fill of a large tensor is
    an OpenMP region, and on a busy machine each one waits for a descheduled thread (0.2-1 s for the
    54-73 layers of ResNet-50 or BERT-base at a load average of 8, against ~10 ms)."""
    if v.device.type == "cpu" and v.is_contiguous():
        return torch.from_numpy(np.ones(tuple(v.shape), dtype=np.bool_))
    return torch.ones_like(v, dtype=torch.bool)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, which must exist here
    (:class:`~rganalysis.errors.DeviceUnavailableError` otherwise: a CUDA device without a driver or of an
    index the machine does not have, MPS off Apple silicon; :class:`InvalidParameterError` for a name torch
    does not know)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidParameterError(
            f"unknown device {device!r} (auto, cpu, cuda, cuda:N, ...): {e}"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            have = f"{n} CUDA device(s)" if n else "no CUDA device (torch.cuda.is_available() is False)"
            raise DeviceUnavailableError(
                f"device {str(dev)!r} requested, but this machine has {have}; use --device auto or cpu"
            )
    elif dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DeviceUnavailableError(
            "device 'mps' requested, but MPS is not available here; use --device auto or cpu"
        )
    return dev
