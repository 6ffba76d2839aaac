"""Helpers shared by the adapters: reading a state-dict file and naming the architecture."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch

from rganalysis.checkpoint import common_prefix, find_state_dict, load_checkpoint
from rganalysis.errors import AdapterDeclined, CorruptCheckpointError, PickleRefusedError

_last: list = [None, None]  # (key, object) of the last checkpoint read
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def read_state_dict_file(
    source: Path, allow_pickle: bool = False, prefixes: tuple[str, ...] = ("module.",)
) -> tuple[dict[str, torch.Tensor], str | None, str]:
    """(state dict, wrapper key, common prefix) of a checkpoint file; declines directories."""
    if source.is_dir():
        raise AdapterDeclined("is a directory, expected a checkpoint file")
    st = source.stat()
    key = (str(source.resolve()), st.st_mtime_ns, st.st_size, allow_pickle)
    if _last[0] != key:  # detection asks several adapters about the same file: read it once
        _last[:] = [None, None]
        _last[:] = [key, load_checkpoint(source, allow_pickle=allow_pickle)]
    obj = _last[1]
    sd, wrapper = find_state_dict(obj)
    return sd, wrapper, common_prefix(sd, prefixes)


@cache
def _resnet_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    import torchvision

    with torch.device("meta"):
        m = getattr(torchvision.models, arch)(weights=None)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def match_resnet(tensors: dict[str, torch.Tensor]) -> tuple[str, int, list[str]]:
    """(architecture, num_classes, key order) of a torchvision ResNet state dict, else AdapterDeclined."""
    try:
        import torchvision  # noqa: F401
    except ImportError as e:  # pragma: no cover
        raise AdapterDeclined(f"torchvision is not installed ({e})") from None
    keys = set(tensors)
    why = []
    for arch in RESNETS:
        shapes = _resnet_shapes(arch)
        if set(shapes) != keys:
            why.append(f"{arch}: {len(keys ^ set(shapes))} keys differ")
            continue
        bad = [k for k, s in shapes.items() if not k.startswith("fc.") and tuple(tensors[k].shape) != s]
        if bad:
            why.append(f"{arch}: shapes differ at {bad[:2]}")
            continue
        return arch, int(tensors["fc.weight"].shape[0]), list(shapes)
    raise AdapterDeclined("not a torchvision ResNet state dict (" + "; ".join(why[:2]) + ", ...)")


def build_resnet(arch: str, num_classes: int) -> torch.nn.Module:
    import torchvision

    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


def checkpoint_attrs(wrapper: str | None, prefix: str) -> dict[str, Any]:
    return {"state_dict_key": wrapper or "", "key_prefix": prefix}


__all__ = ["CorruptCheckpointError", "PickleRefusedError", "build_resnet", "match_resnet", "read_state_dict_file"]
