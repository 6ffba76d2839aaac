"""Transfer of masks (tickets) between residual networks of different depths: the residual blocks of the
mask are dropped or replicated stage by stage, in the spirit of the Elastic Lottery Ticket Hypothesis
(Chen et al., NeurIPS 2021), and every tensor outside the blocks is carried over by name.

A tensor belongs to block ``B`` of stage ``S`` when its name matches one of :data:`BLOCK_PATTERNS`
(``stages.S.B.rest`` of :class:`rganalysis.train.resnets.DigitsResNet`, ``layerS.B.rest`` of torchvision
ResNets).  A rule (:data:`DEPTH_RULES`) says, for a stage of ``n`` source and ``n'`` target blocks, which
source block each target block copies:

* ``"nearest"`` (default): block 0 -- the one that changes the resolution and width -- is kept; target
  blocks ``1 .. n'-1`` copy source blocks ``1 .. n-1`` by normalised depth (target block ``j`` takes
  ``1 + floor((j - 1/2) (n - 1) / (n' - 1))``); from 4 to 2 blocks ``[0, 2]``, from 2 to 4 ``[0, 1, 1, 1]``.
* ``"elt"``: the simplest replicate/drop rule: the first ``min(n, n')`` blocks are kept in place, a deeper
  target repeats the stage's last block (``[0, 1, 1, 1]`` from 2 to 4), a shallower one drops the last
  blocks (``[0, 1]`` from 4 to 2).

Each target tensor is a copy of one source tensor's mask, so every target layer has exactly the density of
the source layer it copies (the global density changes when blocks of different density are dropped or
repeated).  Shapes must agree tensor by tensor: a target block that would copy a block of another shape
(e.g. a stage's strided first block into a later position) is an :class:`ArchitectureMismatchError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch

from rganalysis.errors import InvalidParameterError

__all__ = [
    "BLOCK_PATTERNS",
    "DEPTH_RULES",
    "ArchitectureMismatchError",
    "block_map",
    "block_of",
    "block_structure",
    "map_masks",
    "register_depth_rule",
]

#: Regular expressions that find a tensor's residual block: groups ``prefix`` (the stage's path),
#: ``stage``, ``block`` and ``rest`` (the tensor's name inside the block).
BLOCK_PATTERNS: tuple[str, ...] = (
    r"^(?P<prefix>(?:.*\.)?stages\.(?P<stage>\d+))\.(?P<block>\d+)\.(?P<rest>.+)$",
    r"^(?P<prefix>(?:.*\.)?layer(?P<stage>\d+))\.(?P<block>\d+)\.(?P<rest>.+)$",
)

#: A depth rule: ``(n_source, n_target) -> source block of each target block``.
DepthRule = Callable[[int, int], list[int]]

#: Registered depth rules, by name.
DEPTH_RULES: dict[str, DepthRule] = {}


class ArchitectureMismatchError(InvalidParameterError):
    """Source and target networks cannot be mapped onto each other by depth (different stages, tensors
    outside the blocks missing, or shapes that differ after the mapping)."""


def register_depth_rule(name: str) -> Callable[[DepthRule], DepthRule]:
    """Decorator registering ``fn(n_source, n_target) -> list of source blocks`` under ``name``."""

    def deco(fn: DepthRule) -> DepthRule:
        DEPTH_RULES[name] = fn
        return fn

    return deco


@register_depth_rule("nearest")
def _nearest(n: int, n_t: int) -> list[int]:
    """Block 0 kept; the others by normalised depth (centres of the target blocks)."""
    if n_t == 1 or n == 1:
        return [0] * n_t
    return [0] + [1 + int((j - 0.5) * (n - 1) // (n_t - 1)) for j in range(1, n_t)]


@register_depth_rule("elt")
def _elt(n: int, n_t: int) -> list[int]:
    """The first blocks kept; the last repeated (deeper target) or the last ones dropped (shallower)."""
    return [min(j, n - 1) for j in range(n_t)]


def block_map(n_source: int, n_target: int, rule: str = "nearest") -> list[int]:
    """For a stage of ``n_source`` blocks mapped onto ``n_target``: the source block of each target block."""
    if rule not in DEPTH_RULES:
        raise InvalidParameterError(f"unknown depth rule {rule!r}; known: {sorted(DEPTH_RULES)}")
    if int(n_source) < 1 or int(n_target) < 1:
        raise InvalidParameterError(f"stages need >= 1 block, got {n_source} -> {n_target}")
    out = DEPTH_RULES[rule](int(n_source), int(n_target))
    if len(out) != n_target or not all(0 <= i < n_source for i in out):
        raise InvalidParameterError(f"depth rule {rule!r} returned {out} for {n_source} -> {n_target}")
    return out


def _split(name: str, patterns: Sequence[str]) -> tuple[str, int, str] | None:
    for p in patterns:
        m = re.match(p, name)
        if m:
            return m["prefix"], int(m["block"]), m["rest"]
    return None


def block_of(name: str, patterns: Sequence[str] = BLOCK_PATTERNS) -> tuple[str, int] | None:
    """(stage prefix, block index) of the tensor ``name``, or None outside every residual block."""
    s = _split(name, patterns)
    return None if s is None else (s[0], s[1])


def block_structure(
    names: Sequence[str], patterns: Sequence[str] = BLOCK_PATTERNS
) -> tuple[dict[str, int], list[str]]:
    """(stage prefix -> number of blocks, in order of appearance; the names outside every block)."""
    stages: dict[str, int] = {}
    outside = []
    for n in names:
        s = _split(n, patterns)
        if s is None:
            outside.append(n)
        else:
            stages[s[0]] = max(stages.get(s[0], 0), s[1] + 1)
    return stages, outside


def map_masks(
    masks: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, Sequence[int]],
    *,
    rule: str = "nearest",
    patterns: Sequence[str] = BLOCK_PATTERNS,
) -> dict[str, torch.Tensor]:
    """Map the masks of a source network (name -> bool tensor) onto a target network of another depth.

    ``target_shapes``: the target's tensors to mask (name -> shape), e.g. ``{k: p.shape for k, p in
    model.named_parameters() if k in prunable}``.  Stages are matched by name (same stage prefixes in both),
    each stage's blocks by ``rule`` (:func:`block_map`), tensors outside the blocks by name.  Returns
    name -> a copy of the source mask (``torch.bool``) for every target name, in ``target_shapes``' order.

    Raises :class:`ArchitectureMismatchError` when the stages differ, a target tensor has no source (a
    tensor outside the blocks missing from the source, a block tensor absent from the source block it
    copies) or the shapes differ; ``InvalidParameterError`` for an unknown rule.
    """
    src_stages, _ = block_structure(list(masks), patterns)
    tgt_stages, _ = block_structure(list(target_shapes), patterns)
    if list(src_stages) != list(tgt_stages):
        raise ArchitectureMismatchError(
            f"the networks have different stages: source {list(src_stages)}, target {list(tgt_stages)}"
        )
    maps = {s: block_map(src_stages[s], tgt_stages[s], rule) for s in tgt_stages}
    out: dict[str, torch.Tensor] = {}
    for name, shape in target_shapes.items():
        sp = _split(name, patterns)
        src = name if sp is None else f"{sp[0]}.{maps[sp[0]][sp[1]]}.{sp[2]}"
        if src not in masks:
            raise ArchitectureMismatchError(f"target tensor {name} has no source tensor {src}")
        m = masks[src]
        if tuple(m.shape) != tuple(shape):
            raise ArchitectureMismatchError(
                f"target tensor {name} {tuple(shape)} would copy {src} of shape {tuple(m.shape)}"
            )
        out[name] = m.detach().to(torch.bool).clone()
    return out
