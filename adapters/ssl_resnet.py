"""Self-supervised ResNet checkpoints: MoCo (``state_dict`` with ``module.encoder_q.*``,
``module.encoder_k.*``, ``module.queue``, ``module.queue_ptr``; an MLP head ``fc.0``/``fc.2``) and
SimCLR/BYOL-style backbones under ``module.``, ``backbone.``, ``encoder.`` or similar prefixes.

The model is the sub-network under one key prefix whose keys, outside ``fc.``, are a torchvision
ResNet's (the head may be anything: torchvision's ``fc``, an MLP, or none).  Among several such
sub-networks the query/online/student one is taken, never a key/momentum/target/teacher encoder; the
prefix taken is stored (attribute ``key_prefix``), logged, and warned about when there was a choice.
Option ``prefix`` (``--prefix``) takes another sub-network (any architecture).  Every other key (the key
encoder, the queue, a projector outside the prefix) is kept as an ``extra`` tensor, so
:meth:`~rganalysis.store.ParameterSet.to_state_dict` gives back the whole published state dict.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from rganalysis.adapters import register
from rganalysis.adapters._common import (
    build_resnet_backbone,
    checkpoint_meta,
    head_spec,
    match_resnet_backbone,
    read_checkpoint_object,
    read_state_dict_file,
)
from rganalysis.errors import AdapterDeclined, MissingTensorError
from rganalysis.store.checkpoint import make_parameter_set
from rganalysis.store.parameter_set import EXTRA, PARAM, LayoutEntry, ParameterSet, RoundData

log = logging.getLogger(__name__)

ANCHOR = "conv1.weight"
EXTRA_PREFIX = "extra."
# Sub-networks that are a copy kept for training (MoCo's key encoder, BYOL's target, DINO's teacher, EMA).
SECONDARY = re.compile(
    r"(^|[._])(encoder_k|key_encoder|momentum\w*|target\w*|teacher|ema\w*|k_encoder)([._]|$)", re.I
)

__all__ = ["SSLResNet", "backbone_candidates", "choose_prefix"]


def backbone_candidates(sd: dict[str, torch.Tensor]) -> list[tuple[str, str, str, list[str]]]:
    """(prefix, architecture, stem, canonical order) of every sub-network that is a torchvision ResNet
    backbone, in key order."""
    prefixes = [
        k[: -len(ANCHOR)] for k in sd if k.endswith(ANCHOR) and (k == ANCHOR or k[-len(ANCHOR) - 1] == ".")
    ]
    out = []
    for p in dict.fromkeys(prefixes):
        sub = {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}
        try:
            arch, stem, order = match_resnet_backbone(sub)
        except AdapterDeclined:
            continue
        out.append((p, arch, stem, order))
    return out


def choose_prefix(
    sd: dict[str, torch.Tensor], prefix: str | None = None
) -> tuple[str, str, str, list[str], list[str]]:
    """(prefix, architecture, stem, canonical order, other candidate prefixes) of the model in ``sd``.

    With ``prefix`` given, the keys under it are the model (architecture ``generic`` unless they are a
    ResNet); a prefix no key carries is :class:`MissingTensorError`.  Without it, the primary ResNet
    backbone; :class:`AdapterDeclined` when there is none.
    """
    if prefix is not None:
        sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sub:
            tops = sorted(
                {k.split(".")[0] + "." for k in sd} | {".".join(k.split(".")[:2]) + "." for k in sd}
            )
            raise MissingTensorError(
                f"no key starts with prefix {prefix!r}; prefixes present include {tops[:8]}"
            )
        try:
            arch, stem, order = match_resnet_backbone(sub)
        except AdapterDeclined:
            arch, stem, order = "generic", "", list(sub)
        others = [c[0] for c in backbone_candidates(sd) if c[0] != prefix]
        return prefix, arch, stem, order, others
    cands = backbone_candidates(sd)
    if not cands:
        raise AdapterDeclined("no torchvision ResNet backbone under any key prefix")
    primary = [c for c in cands if not SECONDARY.search(c[0])] or cands
    p, arch, stem, order = primary[0]
    return p, arch, stem, order, [c[0] for c in cands if c[0] != p]


@register
class SSLResNet:
    """A self-supervised ResNet checkpoint (MoCo, SimCLR, ...): the backbone under a key prefix."""

    name = "ssl-resnet"
    priority = 25

    def detect(
        self, source: Path, *, prefix: str | None = None, allow_pickle: bool = False, **_: Any
    ) -> None:
        """Accept a checkpoint whose tensors under ``prefix`` (or a known one) form a ResNet backbone."""
        sd, _, _ = read_state_dict_file(source, allow_pickle)
        choose_prefix(sd, prefix)

    def load(
        self,
        source: Path,
        *,
        name: str | None = None,
        include_embeddings: bool = False,
        allow_pickle: bool = False,
        prefix: str | None = None,
        **_: Any,
    ) -> ParameterSet:
        """Read the model sub-network; keep every other key as an extra tensor."""
        sd, wrapper, _ = read_state_dict_file(source, allow_pickle)
        p, arch, stem, order, others = choose_prefix(sd, prefix)
        tensors: dict[str, torch.Tensor] = {}
        extras: dict[str, torch.Tensor] = {}
        layout: list[LayoutEntry] = []
        model_names = {k[len(p) :] for k in sd if k.startswith(p)}
        for key, t in sd.items():
            if key.startswith(p):
                tensors[key[len(p) :]] = t
                layout.append(LayoutEntry(key, PARAM, key[len(p) :]))
            else:  # stored under its key, renamed only if a model tensor has that name
                xname = key if key not in model_names else EXTRA_PREFIX + key
                extras[xname] = t
                layout.append(LayoutEntry(key, EXTRA, xname))
        tensors = {n: tensors[n] for n in order}
        msg = f"{source.name}: took the sub-network under prefix {p!r} ({arch}) as the model"
        if others and prefix is None:
            warnings.warn(
                f"{msg}; the other candidates {others} are kept as extra tensors; "
                "pass --prefix (prefix=...) to take another",
                UserWarning,
                stacklevel=2,
            )
        else:
            log.info(msg)
        attrs: dict[str, Any] = {
            "state_dict_key": wrapper or "",
            "key_prefix": p,
            "prefix_candidates": json.dumps([p, *others]),
            "prefix_chosen_by": "user" if prefix is not None else "detection",
        }
        if arch != "generic":
            attrs["backbone"] = arch
            attrs["stem"] = stem
            try:
                attrs["head"] = json.dumps(head_spec({n: t.shape for n, t in tensors.items()}))
            except NotImplementedError:
                pass
        attrs.update(checkpoint_meta(read_checkpoint_object(source, allow_pickle), wrapper))
        return make_parameter_set(
            [RoundData(tensors, {}, extras, layout)],
            adapter=self.name,
            architecture=arch,
            sources=[source],
            name=name,
            include_embeddings=include_embeddings,
            extra_attrs=attrs,
        )

    def build_module(self, pset: ParameterSet) -> torch.nn.Module:
        """The torchvision ResNet backbone of the stored architecture (random init)."""
        arch = str(pset.attrs["architecture"])
        if not arch.startswith("resnet") or "head" not in pset.attrs:
            raise NotImplementedError(f"cannot build a module for architecture {arch!r} with this head")
        return build_resnet_backbone(
            arch, str(pset.attrs.get("stem", "imagenet")), json.loads(pset.attrs["head"])
        )
