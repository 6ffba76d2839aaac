"""Layer kinds, prunability and named dimensions of tensors, from their names and shapes."""

from __future__ import annotations

import re

__all__ = ["classify", "dim_names", "dim_roles", "is_prunable", "KINDS", "leaf", "module_path", "natural_key"]

KINDS = ("conv", "linear", "embedding", "norm", "bias", "other")

_NORM_RE = re.compile(
    r"(^|[._])(bn\d*|batchnorm|layernorm|layer_norm|ln(_?\d+|f)?|norm\d*|downsample\.1|shortcut\.1|gn\d*)([._]|$)",
    re.I,
)
_EMBED_RE = re.compile(r"embed", re.I)
_EMBED_MAP_RE = re.compile(r"mapping|proj", re.I)
#: the last module name of an embedding table that does not say "embed" (GPT-2's wte/wpe, T5's shared, ...)
_EMBED_MODULES = frozenset(
    {
        "wte",
        "wpe",
        "emb",
        "tok",
        "token",
        "tokens",
        "shared",
        "relative_attention_bias",
    }  # the last: T5's bucket table
)
#: 2-D weights of a linear map under another leaf name: nn.MultiheadAttention's packed q/k/v projection, and
#: the input / hidden matrices of nn.RNN, nn.LSTM and nn.GRU
_LINEAR_LEAF_RE = re.compile(r"in_proj_weight|weight_(ih|hh)_l\d+(_reverse)?")
_LINEAR_BIAS_RE = re.compile(r"in_proj_bias|bias_(ih|hh)_l\d+(_reverse)?")
_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _is_embedding(mod: str) -> bool:
    """An embedding table's module: named so (``word_embeddings``, ``embed_tokens``, GPT-2's ``wte``), but not
    a linear map out of one (ALBERT's ``embedding_hidden_mapping_in``)."""
    last = leaf(mod)
    if last in _EMBED_MODULES:
        return True
    return bool(_EMBED_RE.search(mod)) and not _EMBED_MAP_RE.search(last)


def module_path(name: str) -> str:
    """``layer1.0.conv1.weight`` -> ``layer1.0.conv1``."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def leaf(name: str) -> str:
    """``layer1.0.conv1.weight`` -> ``weight``."""
    return name.rsplit(".", 1)[-1]


def classify(
    name: str, shape: tuple[int, ...], norm_modules: frozenset[str] = frozenset(), floating: bool = True
) -> str:
    """Kind of a tensor (one of :data:`KINDS`) from its name and shape.

    ``norm_modules`` lists module paths known to be normalisation layers (e.g. a torchvision
    ``downsample.1``); without it, names such as ``bn1``, ``LayerNorm``, ``norm`` mark norms.
    """
    mod, last = module_path(name), leaf(name)
    is_norm_module = mod in norm_modules or bool(_NORM_RE.search(mod))
    if last in _NORM_BUFFERS:
        return "norm"
    if not floating:
        return "other"  # index buffers such as BERT's position_ids
    if last in ("weight", "weight_orig"):
        if len(shape) >= 3:
            return "conv"
        if len(shape) == 2:
            return "embedding" if _is_embedding(mod) else "linear"
        if len(shape) == 1:
            return "norm"  # a 1-D weight is the scale of a normalisation layer
        return "other"
    if last == "bias":
        return "norm" if is_norm_module else "bias"
    if len(shape) == 1 and _LINEAR_BIAS_RE.fullmatch(last):
        return "bias"
    if len(shape) == 2 and _is_embedding(name):
        return "embedding"
    if len(shape) == 2 and _LINEAR_LEAF_RE.fullmatch(last.removesuffix("_orig")):
        return "linear"
    return "other"


def is_prunable(kind: str, include_embeddings: bool = False) -> bool:
    """The lottery-ticket convention: conv and linear weights (embeddings by flag)."""
    return kind in ("conv", "linear") or (include_embeddings and kind == "embedding")


def dim_roles(kind: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """Names of the dimensions of a tensor of this kind, e.g. (out_channels, in_channels, kh, kw)."""
    n = len(shape)
    if kind == "conv":
        spatial = {1: ("k",), 2: ("kh", "kw"), 3: ("kd", "kh", "kw")}.get(n - 2)
        if spatial is not None:
            return ("out_channels", "in_channels", *spatial)
    if kind == "linear" and n == 2:
        return ("out_features", "in_features")
    if kind == "embedding" and n == 2:
        return ("num_embeddings", "embedding_dim")
    if n == 1 and kind in ("norm", "bias"):
        return ("features",)
    return tuple(f"dim{i}" for i in range(n))


def dim_names(kind: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """HDF5/netCDF dimension names: role and size, e.g. ``out_channels_64``.

    netCDF dimensions are shared within a group, so the size is part of the name: every tensor with
    64 output channels shares ``out_channels_64``.
    """
    return tuple(f"{r}_{s}" for r, s in zip(dim_roles(kind, shape), shape, strict=True))


_NUM_RE = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that orders ``layer.10`` after ``layer.9``."""
    return [int(t) if t.isdigit() else t for t in _NUM_RE.split(name)]
