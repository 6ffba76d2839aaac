"""Helpers shared by the adapters: reading a state-dict file, naming the architecture, and giving
back the side files of published layouts (mask files, rewind points) bit-exactly."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch

from rganalysis.errors import (
    AdapterDeclined,
    CorruptCheckpointError,
    InvalidParameterError,
    MaskMismatchError,
    PickleRefusedError,
)
from rganalysis.store.checkpoint import common_prefix, find_state_dict, is_state_dict, load_checkpoint
from rganalysis.store.parameter_set import PARAM, LayoutEntry, ParameterSet

_last: list = [None, None]  # (key, object) of the last checkpoint read
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def read_state_dict_file(
    source: Path, allow_pickle: bool = False, prefixes: tuple[str, ...] = ("module.",)
) -> tuple[dict[str, torch.Tensor], str | None, str]:
    """(state dict, wrapper key, common prefix) of a checkpoint file; declines directories."""
    obj = read_checkpoint_object(source, allow_pickle)
    try:
        sd, wrapper = find_state_dict(obj)
    except CorruptCheckpointError as e:
        raise CorruptCheckpointError(f"{source}: {e}") from None
    return sd, wrapper, common_prefix(sd, prefixes)


def read_checkpoint_object(source: Path, allow_pickle: bool = False) -> Any:
    """The whole object of a checkpoint file (cached: detection asks several adapters about one file)."""
    if source.is_dir():
        raise AdapterDeclined("is a directory, expected a checkpoint file")
    st = source.stat()
    key = (str(source.resolve()), st.st_mtime_ns, st.st_size, allow_pickle)
    if _last[0] != key:
        _last[:] = [None, None]
        _last[:] = [key, load_checkpoint(source, allow_pickle=allow_pickle)]
    return _last[1]


#: blocks per stage and block kind of the torchvision ResNets
_RESNET_LAYOUT = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
    "resnet152": ((3, 8, 36, 3), "bottleneck"),
}


@cache
def _resnet_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``torchvision.models.<arch>(weights=None).state_dict()``, in its order, computed
    from the architecture (importing torchvision costs seconds and hundreds of MB; a test checks the
    table against torchvision)."""
    blocks, kind = _RESNET_LAYOUT[arch]
    out: dict[str, tuple[int, ...]] = {}

    def bn(name: str, n: int) -> None:
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.{leaf}"] = (n,)
        out[f"{name}.num_batches_tracked"] = ()

    out["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    expansion = 1 if kind == "basic" else 4
    inplanes = 64
    for stage, (n_blocks, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), 1):
        for b in range(n_blocks):
            p = f"layer{stage}.{b}"
            if kind == "basic":
                out[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                bn(f"{p}.bn1", planes)
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            else:
                out[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.bn1", planes)
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                out[f"{p}.conv3.weight"] = (planes * expansion, planes, 1, 1)
                bn(f"{p}.bn3", planes * expansion)
            if b == 0 and (stage > 1 or inplanes != planes * expansion):
                out[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    out["fc.weight"] = (1000, 512 * expansion)
    out["fc.bias"] = (1000,)
    return out


def match_resnet(tensors: dict[str, torch.Tensor]) -> tuple[str, int, list[str]]:
    """(architecture, num_classes, key order) of a torchvision ResNet state dict, else AdapterDeclined."""
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


def match_resnet_backbone(tensors: Mapping[str, torch.Tensor]) -> tuple[str, str, list[str]]:
    """(architecture, stem, key order) of a torchvision ResNet whose ``fc`` head may be anything.

    The backbone (every key outside ``fc.``) must be a torchvision ResNet's, except that the stem
    convolution ``conv1`` may have another kernel (CIFAR variants use 3x3, stride 1, no max-pool);
    ``stem`` is ``"imagenet"`` for torchvision's 7x7 stem, else e.g. ``"3x3"``.  The order is
    torchvision's for the backbone followed by the head keys in the given order.  Otherwise
    :class:`AdapterDeclined`.
    """
    body = [k for k in tensors if not k.startswith("fc.")]
    head = [k for k in tensors if k.startswith("fc.")]
    why = []
    for arch in RESNETS:
        ref = {k: s for k, s in _resnet_shapes(arch).items() if not k.startswith("fc.")}
        if set(ref) != set(body):
            why.append(f"{arch}: {len(set(body) ^ set(ref))} backbone keys differ")
            continue
        bad = [k for k, s in ref.items() if k != "conv1.weight" and tuple(tensors[k].shape) != s]
        c1 = tuple(tensors["conv1.weight"].shape)
        if bad or len(c1) != 4 or c1[0] != ref["conv1.weight"][0]:
            why.append(f"{arch}: shapes differ at {(bad or ['conv1.weight'])[:2]}")
            continue
        stem = "imagenet" if c1 == ref["conv1.weight"] else f"{c1[2]}x{c1[3]}"
        return arch, stem, list(ref) + head
    raise AdapterDeclined("not a torchvision ResNet backbone (" + "; ".join(why[:2]) + ", ...)")


def head_spec(shapes: Mapping[str, Sequence[int]]) -> list[list]:
    """Description of an ``fc`` head from the shapes of its ``fc.*`` tensors, for :func:`build_resnet_backbone`.

    ``[]`` for no head (``fc`` = Identity); ``[["fc", in, out, bias]]`` for torchvision's head;
    for an ``nn.Sequential`` head (MoCo v2's ``fc.0``/``fc.2``, heads with BatchNorm1d) one entry
    per index: ``["linear", in, out, bias]``, ``["bn", n, affine]`` or ``["relu"]`` for the gaps.
    """
    keys = {k.removeprefix("fc."): tuple(s) for k, s in shapes.items() if k.startswith("fc.")}
    if not keys:
        return []
    if "weight" in keys:
        out, inp = keys["weight"]
        return [["fc", inp, out, "bias" in keys]]
    idx = sorted({int(k.split(".")[0]) for k in keys if k.split(".")[0].isdigit()})
    if not idx or len(idx) != len({k.split(".")[0] for k in keys}):
        raise NotImplementedError(f"cannot rebuild an fc head with tensors {sorted(keys)}")
    spec: list[list] = []
    for i in range(idx[-1] + 1):
        w = keys.get(f"{i}.weight")
        if f"{i}.running_mean" in keys:
            spec.append(["bn", keys[f"{i}.running_mean"][0], w is not None])
        elif w is not None and len(w) == 2:
            spec.append(["linear", w[1], w[0], f"{i}.bias" in keys])
        elif any(k.startswith(f"{i}.") for k in keys):
            raise NotImplementedError(f"cannot rebuild layer fc.{i} of the head")
        else:
            spec.append(["relu"])
    return spec


def build_resnet_backbone(
    arch: str, stem: str = "imagenet", head: Sequence[Sequence] = ()
) -> torch.nn.Module:
    """A torchvision ResNet with the stem and head that :func:`match_resnet_backbone` and
    :func:`head_spec` described (random init).  A non-ImageNet stem is a stride-1 convolution of
    that kernel and no max-pool, as in the CIFAR variants of the lottery-ticket code bases."""
    import torchvision
    from torch import nn

    m = getattr(torchvision.models, arch)(weights=None)
    if stem != "imagenet":
        kh, kw = (int(x) for x in stem.split("x"))
        m.conv1 = nn.Conv2d(
            3, m.conv1.out_channels, (kh, kw), stride=1, padding=(kh // 2, kw // 2), bias=False
        )
        m.maxpool = nn.Identity()
    if len(head) == 1 and head[0][0] == "fc":
        m.fc = nn.Linear(int(head[0][1]), int(head[0][2]), bias=bool(head[0][3]))
        return m
    layers: list[nn.Module] = []
    for entry in head:
        if entry[0] == "linear":
            layers.append(nn.Linear(int(entry[1]), int(entry[2]), bias=bool(entry[3])))
        elif entry[0] == "bn":
            layers.append(nn.BatchNorm1d(int(entry[1]), affine=bool(entry[2])))
        else:
            layers.append(nn.ReLU(inplace=True))
    m.fc = nn.Sequential(*layers) if layers else nn.Identity()
    return m


def build_resnet(arch: str, num_classes: int) -> torch.nn.Module:
    import torchvision

    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


def checkpoint_meta(obj: Any, wrapper: str | None) -> dict[str, Any]:
    """``{"checkpoint_meta": JSON}`` of the plain entries beside the ``wrapper`` key of a checkpoint (epoch,
    best accuracy, arch name; integers stay integers, 0-d tensors become floats), or ``{}``."""
    if not wrapper or not isinstance(obj, Mapping):
        return {}
    meta = {}
    for k, v in obj.items():
        if k != wrapper and isinstance(v, str | bool | int):
            meta[k] = v
        elif k != wrapper and (f := as_float(v)) is not None:
            meta[k] = f
    return {"checkpoint_meta": json.dumps(meta)} if meta else {}


def checkpoint_attrs(wrapper: str | None, prefix: str, obj: Any = None) -> dict[str, Any]:
    """Store attributes of where the state dict sat in its checkpoint ``obj``: its wrapper key and prefix,
    :func:`checkpoint_meta`, and a warning naming any other state dict beside it (an EMA copy, a
    teacher), which is not read."""
    attrs: dict[str, Any] = {
        "state_dict_key": wrapper or "",
        "key_prefix": prefix,
        **checkpoint_meta(obj, wrapper),
    }
    if not wrapper or not isinstance(obj, Mapping):
        return attrs
    others = [k for k, v in obj.items() if k != wrapper and is_state_dict(v)]
    if others:
        warnings.warn(
            f"the checkpoint also holds state dict(s) {', '.join(map(repr, others))}, which are not read "
            f"(the {wrapper!r} entry is); save the one you mean as a plain state dict to ingest it",
            UserWarning,
            stacklevel=3,
        )
    return attrs


# ---------------------------------------------------------------------- masks given beside the weights
def compare_masks(
    expected: Mapping[str, torch.Tensor],
    got: Mapping[str, torch.Tensor],
    shapes: Mapping[str, Sequence[int]],
    where: str,
) -> None:
    """Raise :class:`MaskMismatchError` unless ``got`` holds the same 0/1 pattern as ``expected`` for
    every name of either; a name missing from one side counts as an all-ones mask there."""
    bad = []
    for n in dict.fromkeys([*expected, *got]):
        shape = tuple(shapes[n])
        a = expected[n].bool() if n in expected else torch.ones(shape, dtype=torch.bool)
        b = got[n].bool() if n in got else torch.ones(shape, dtype=torch.bool)
        if a.shape != b.shape or not torch.equal(a, b):
            diff = int((a != b).sum()) if a.shape == b.shape else -1
            bad.append(f"{n} ({'shape differs' if diff < 0 else f'{diff} entries differ'})")
    if bad:
        raise MaskMismatchError(f"{where}: {len(bad)} masks disagree, e.g. " + "; ".join(bad[:5]))


def mask_file_entry(file: str, keys: Sequence[tuple[str, str, torch.dtype]]) -> dict[str, Any]:
    """How to rebuild one mask file: its name and, per key in file order, (key, canonical name, dtype)."""
    return {"file": file, "keys": [[k, n, str(d).removeprefix("torch.")] for k, n, d in keys]}


def _json_attr(pset: ParameterSet, key: str) -> Any:
    v = pset.attrs.get(key)
    return json.loads(v) if isinstance(v, str) else v


def mask_file_dict(pset: ParameterSet, round: int) -> dict[str, torch.Tensor]:
    """The mask file of ``round`` as it was published: same keys in the same order, same dtype, same bits.

    Works for sets read with mask files beside the weights (``hf-bert`` with ``masks``: ``mask.pt``;
    ``open-lth``: ``mask.pth``; ``ticket-series``: a checkpoint's ``mask`` entry).  Rounds without a
    mask file (round 0 of a BERT flow) raise :class:`InvalidParameterError`.
    """
    from rganalysis.store.tensors import torch_dtype

    files = _json_attr(pset, "mask_files")
    if files is None:
        raise InvalidParameterError("this set was not read with mask files (no 'mask_files' attribute)")
    if not 0 <= round < len(files):
        raise IndexError(f"round {round} out of range: this set has rounds 0..{len(files) - 1}")
    entry = files[round]
    if entry is None:
        raise InvalidParameterError(f"round {round} was not read from a mask file")
    return {k: pset.mask(n, round).to(torch_dtype(d)) for k, n, d in entry["keys"]}


# ---------------------------------------------------------------------- rewind points
def rewind_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    prefixes: Sequence[str] = ("module.",),
    rename: Mapping[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[LayoutEntry]]:
    """(canonical name -> tensor, layout) of a rewind state dict: the common prefix is stripped, ``rename``
    maps other source keys to names; :func:`rewind_state_dict` gives the source keys back."""
    prefix = common_prefix(sd, prefixes)
    tensors: dict[str, torch.Tensor] = {}
    layout: list[LayoutEntry] = []
    for key, t in sd.items():
        name = (rename or {}).get(key) or key[len(prefix) :]
        if name in tensors:
            raise CorruptCheckpointError(f"rewind point: two keys map to tensor {name!r}")
        tensors[name] = t
        layout.append(LayoutEntry(key, PARAM, name))
    return tensors, layout


def rewind_state_dict(pset: ParameterSet) -> dict[str, torch.Tensor] | None:
    """The rewind point as published (its source keys, in order, same bits), or None."""
    rewind = pset.rewind_state()
    if rewind is None:
        return None
    if not pset.rewind_layout:
        return rewind
    return {e.key: rewind[e.name] for e in pset.rewind_layout}


def as_float(v: Any) -> float | None:
    """A recorded metric (python/numpy number, 0-d tensor) as float, else None."""
    try:
        if isinstance(v, torch.Tensor):
            return float(v.item()) if v.numel() == 1 else None
        if isinstance(v, bool | str | bytes) or v is None:
            return None
        return float(v)
    except (TypeError, ValueError):
        return None


def plain_json(obj: Any) -> Any:
    """``obj`` with tensors and numpy values turned into python numbers/lists (for JSON attributes)."""
    if isinstance(obj, Mapping):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain_json(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


__all__ = [
    "CorruptCheckpointError",
    "MaskMismatchError",
    "PickleRefusedError",
    "build_resnet",
    "build_resnet_backbone",
    "head_spec",
    "mask_file_dict",
    "match_resnet",
    "match_resnet_backbone",
    "read_checkpoint_object",
    "read_state_dict_file",
    "rewind_state_dict",
]
