"""Reading checkpoint files safely, and turning state dicts into :class:`ParameterSet` objects.

Checkpoints come from strangers: ``torch.load`` always runs with ``weights_only=True`` and
safetensors files are read with safetensors.  Whole-model pickles are refused unless the caller
passes ``allow_pickle=True`` (``--allow-pickle``), which warns that the file can run code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rganalysis.errors import (
    CorruptCheckpointError,
    ExpandedTensorError,
    MaskShapeError,
    MissingTensorError,
    PickleRefusedError,
    UnsafeLoadWarning,
)
from rganalysis.store.parameter_set import (
    MASK,
    PARAM,
    LayoutEntry,
    ParameterSet,
    RoundData,
    build_info,
)
from rganalysis.store.tensors import to_numpy

__all__ = [
    "check_masks",
    "CHECKPOINT_SUFFIXES",
    "check_expansion",
    "common_prefix",
    "describe_file",
    "find_state_dict",
    "forget_background_hashes",
    "is_state_dict",
    "load_checkpoint",
    "make_parameter_set",
    "MAX_EXPANSION",
    "sha256",
    "same_bits",
    "single_round",
    "start_sha256",
    "split_pruned",
    "WRAPPER_KEYS",
]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar", ".safetensors")

#: a tensor that is a broadcast view (stride 0) may address at most this many times the elements it
#: stores, unless it is small (:data:`MAX_EXPANDED_BYTES`); otherwise it is refused
#: (:class:`~rganalysis.errors.ExpandedTensorError`): storing it would write its full size
MAX_EXPANSION = 16
MAX_EXPANDED_BYTES = 1 << 20
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")

# numpy scalars and dtypes are plain data; ticket code bases save metrics such as best_sa as numpy floats.
_NUMPY_SAFE = [np.dtype, type(np.dtype("float64")), type(np.dtype("float32")), type(np.dtype("int64"))]
try:  # numpy >= 2
    _NUMPY_SAFE.append(np._core.multiarray.scalar)  # noqa: SLF001 - where numpy 2 keeps the scalar reconstructor
except AttributeError:  # pragma: no cover - numpy 1.x
    _NUMPY_SAFE.append(np.core.multiarray.scalar)


def sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks of ``chunk`` bytes (the result of :func:`start_sha256`
    when one was started for this version of the file)."""
    fut = _DIGESTS.pop(_file_key(path), None)
    if fut is not None:
        return fut.result()
    return _sha256_now(path, chunk)


def _sha256_now(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _file_key(path: str | os.PathLike) -> tuple:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return (str(p),)
    return (str(p.resolve()), st.st_mtime_ns, st.st_size)


_DIGESTS: dict[tuple, Any] = {}
_HASHER: list = []


def forget_background_hashes() -> None:
    """Drop the hashing threads and their pending results (in a forked child, where the threads do not exist)."""
    _HASHER.clear()
    _DIGESTS.clear()


os.register_at_fork(after_in_child=forget_background_hashes)


def start_sha256(path: str | os.PathLike) -> None:
    """Start hashing ``path`` in a background thread (hashlib releases the GIL), so that the hash of a
    checkpoint is computed while it is being read; :func:`sha256` collects it."""
    key = _file_key(path)
    if key in _DIGESTS or len(key) == 1:
        return
    if not _HASHER:
        from concurrent.futures import ThreadPoolExecutor

        _HASHER.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="rganalysis-sha256"))
    _DIGESTS[key] = _HASHER[0].submit(_sha256_now, path)


def describe_file(path: str | os.PathLike) -> str:
    """What a file looks like from its first bytes: "a zip archive", "a pickle", "an HDF5 file", ...

    (For messages about files that are not what they were given as.)"""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a zip archive"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (an rganalysis store is used as it is, not ingested)"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file (give it the suffix .safetensors)"
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]})"
    try:
        text = head.decode("utf-8")
        if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
            return "a text file"
    except UnicodeDecodeError:
        pass
    return "unrecognised binary data (neither a zip archive nor a pickle)"


def check_expansion(name: str, t: torch.Tensor) -> None:
    """Refuse a broadcast (stride-0) tensor that addresses more than :data:`MAX_EXPANSION` times the
    elements it stores and is larger than :data:`MAX_EXPANDED_BYTES` materialised
    (:class:`~rganalysis.errors.ExpandedTensorError`); smaller expansions are stored materialised."""
    if t.numel() <= 1 or 0 not in t.stride():
        return
    stored = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            stored *= size
    full = t.numel() * t.element_size()
    if t.numel() > MAX_EXPANSION * stored and full > MAX_EXPANDED_BYTES:
        raise ExpandedTensorError(
            f"tensor {name!r} is a broadcast view of {stored:,} element(s) expanded to shape {tuple(t.shape)} "
            f"({full:,} bytes, {t.numel() // stored:,}x its data; at most {MAX_EXPANSION}x is stored "
            "materialised): refused"
        )


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` have the same dtype, shape and bits (-0.0 differs from 0.0; a NaN
    equals itself): what a store must keep to give every round back bit-exactly."""
    if a is b:
        return True
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    x, y = to_numpy(a).reshape(-1), to_numpy(b).reshape(-1)
    if x.itemsize in (2, 4, 8):
        view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.itemsize]
        return bool(np.array_equal(x.view(view), y.view(view)))
    return bool(np.array_equal(x.view(np.uint8), y.view(np.uint8)))


def load_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> Any:
    """Load a checkpoint file without running code from it.

    ``.safetensors`` -> dict of tensors; anything else through ``torch.load(weights_only=True)``.
    A whole-model pickle raises :class:`PickleRefusedError` unless ``allow_pickle``; with it, a
    warning is issued and the module's ``state_dict()`` is returned.
    Truncated or corrupt files raise :class:`CorruptCheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    start_sha256(path)  # provenance hash, while the file is read
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" not in msg and "safe_globals" not in msg:  # not a pickle of objects
            what = describe_file(path)
            detail = next((ln.strip() for ln in msg.splitlines() if "Unsupported" in ln), msg.splitlines()[0])
            raise CorruptCheckpointError(
                f"{path}: not a readable PyTorch checkpoint: {what} ({detail})"
            ) from None
        if not allow_pickle:
            raise PickleRefusedError(
                f"{path} is a pickle of Python objects (e.g. a whole model saved with torch.save(model)); "
                "loading it can run arbitrary code. If you trust its origin, pass --allow-pickle "
                "(allow_pickle=True) to ingest its state dict."
            ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError) as e:
        raise CorruptCheckpointError(
            f"{path}: truncated or corrupt checkpoint, {describe_file(path)} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    warnings.warn(
        f"{path}: unpickling with weights_only=False because allow_pickle was given; this file can run code",
        UnsafeLoadWarning,
        stacklevel=2,
    )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - anything a pickle raises means the file is bad
        raise CorruptCheckpointError(f"{path}: could not unpickle ({type(e).__name__}: {e})") from None
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    return obj


def is_state_dict(obj: Any) -> bool:
    """True for a non-empty mapping whose values are all tensors."""
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def find_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside a checkpoint: the object itself, or its ``state_dict``/``model`` entry.

    Returns (state dict, the wrapper key or None).  Non-tensor entries of a plain state dict
    (e.g. an ``_metadata`` attribute) are dropped.
    """
    if is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for k in WRAPPER_KEYS:
            if k in obj and is_state_dict(obj[k]):
                return dict(obj[k]), k
        if obj and all(isinstance(v, torch.Tensor) or isinstance(v, (int, float, str)) for v in obj.values()):
            sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if sd:
                return sd, None
    raise CorruptCheckpointError(
        "no state dict found: expected a dict of tensors, or one under "
        + ", ".join(repr(k) for k in WRAPPER_KEYS)
    )


def common_prefix(keys: Iterable[str], candidates: Sequence[str] = ("module.",)) -> str:
    """The wrapper prefix (e.g. ``module.`` left by DataParallel) that every key carries, or ''."""
    keys = list(keys)
    for p in candidates:
        if keys and all(k.startswith(p) for k in keys):
            return p
    return ""


def split_pruned(
    sd: Mapping[str, torch.Tensor], prefix: str = ""
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[LayoutEntry]]:
    """Split a state dict into canonical tensors, masks and the layout that rebuilds it.

    Handles the ``torch.nn.utils.prune`` re-parametrisation (``X_orig`` + ``X_mask`` -> tensor ``X``
    with a mask) and strips ``prefix`` from every key.  Keys keep their order.
    """
    tensors: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    layout: list[LayoutEntry] = []
    for key, t in sd.items():
        name = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        if name.endswith("_orig") and f"{key[:-5]}_mask" in sd:
            tensors[name[:-5]] = t
            layout.append(LayoutEntry(key, PARAM, name[:-5]))
        elif name.endswith("_mask") and f"{key[:-5]}_orig" in sd:
            masks[name[:-5]] = t
            layout.append(LayoutEntry(key, MASK, name[:-5], str(t.dtype).removeprefix("torch.")))
        else:
            tensors[name] = t
            layout.append(LayoutEntry(key, PARAM, name))
    return tensors, masks, layout


def check_masks(
    tensors: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], where: str = ""
) -> None:
    """Every mask names an existing tensor of the same shape (lists the first offenders)."""
    missing = [k for k in masks if k not in tensors]
    if missing:
        raise MissingTensorError(
            f"{where}masks name {len(missing)} tensors the model does not have, e.g. {missing[:5]}"
        )
    wrong = [
        f"{k}: mask {tuple(m.shape)} vs weight {tuple(tensors[k].shape)}"
        for k, m in masks.items()
        if m.shape != tensors[k].shape
    ]
    if wrong:
        raise MaskShapeError(
            f"{where}{len(wrong)} masks differ in shape from their weights: " + "; ".join(wrong[:5])
        )


def make_parameter_set(
    rounds: Sequence[RoundData],
    *,
    adapter: str,
    architecture: str,
    sources: Sequence[str | os.PathLike],
    name: str | None = None,
    include_embeddings: bool = False,
    kinds: Mapping[str, str] | None = None,
    prunable: Iterable[str] | None = None,
    rewind: Mapping[str, torch.Tensor] | None = None,
    rewind_layout: Sequence[LayoutEntry] | None = None,
    flow_attrs: Mapping[str, Any] | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    sha256s: Mapping[str, str] | None = None,
) -> ParameterSet:
    """Assemble a ParameterSet from what an adapter read.

    ``sha256s``: resolved path -> SHA-256 of source files already hashed (e.g. by the processes that
    read them); the other checkpoint files of ``sources`` are hashed here.

    Round 0 must hold every model tensor (in depth order); later rounds hold all their tensors
    too, and only the ones whose bits changed are kept.  Masks are given per round for any subset
    of tensors; a tensor masked in some round gets all-ones masks in rounds that lack one.
    """
    for r, rd in enumerate(rounds):
        for kind, group in (("tensor", rd.tensors), ("mask", rd.masks), ("extra tensor", rd.extras)):
            for k, t in group.items():
                check_expansion(f"{k} ({kind}, round {r})" if len(rounds) > 1 else k, t)
    for k, t in (rewind or {}).items():
        check_expansion(f"{k} (rewind point)", t)
    first = rounds[0].tensors
    info = build_info(first, kinds=kinds, include_embeddings=include_embeddings, prunable=prunable)
    weights: dict[int, dict[str, torch.Tensor]] = {0: dict(first)}
    extras: dict[int, dict[str, torch.Tensor]] = {0: dict(rounds[0].extras)}
    last = dict(first)
    last_extra = dict(rounds[0].extras)
    for r, rd in enumerate(rounds):
        check_masks(rd.tensors if r == 0 else {**last, **rd.tensors}, rd.masks, f"round {r}: ")
        if r == 0:
            continue
        for k, t in rd.tensors.items():
            if k not in info:
                raise MissingTensorError(f"round {r} holds tensor {k!r} that round 0 does not have")
            if not same_bits(t, last[k]):
                weights.setdefault(r, {})[k] = t
                last[k] = t
        for k, t in rd.extras.items():
            if k not in last_extra or not same_bits(t, last_extra[k]):
                extras.setdefault(r, {})[k] = t
                last_extra[k] = t
    masked = [n for n in info if any(n in rd.masks for rd in rounds)]
    masks = {
        n: [rd.masks[n] if n in rd.masks else torch.ones(info[n].shape, dtype=torch.bool) for rd in rounds]
        for n in masked
    }
    metric_names = list(dict.fromkeys(k for rd in rounds for k in rd.metrics))
    metrics = {m: [rd.metrics.get(m, float("nan")) for rd in rounds] for m in metric_names}
    src = [Path(s) for s in sources]
    files = [p for s in src for p in ([s] if s.is_file() else sorted(x for x in s.rglob("*") if x.is_file()))]
    attrs = {
        "name": name or (src[0].stem if src else "model"),
        "source": ", ".join(str(s.resolve()) for s in src),
        "sha256": {
            str(p.resolve()): (sha256s or {}).get(str(p.resolve())) or sha256(p)
            for p in files
            if p.suffix in CHECKPOINT_SUFFIXES or p.name.startswith("mask")
        },
        "adapter": adapter,
        "architecture": architecture,
        "include_embeddings": int(include_embeddings),
        **(extra_attrs or {}),
    }
    return ParameterSet(
        info,
        weights,
        masks,
        n_rounds=len(rounds),
        extras=extras,
        layouts=[rd.layout for rd in rounds],
        metrics=metrics,
        rewind=rewind,
        rewind_layout=rewind_layout,
        attrs=attrs,
        flow_attrs={"kind": "model" if len(rounds) == 1 else "recorded", **(flow_attrs or {})},
    )


def single_round(sd: Mapping[str, torch.Tensor], prefix: str = "") -> RoundData:
    """RoundData of one state dict: prefix stripped, prune re-parametrisation split."""
    tensors, masks, layout = split_pruned(sd, prefix)
    return RoundData(tensors, masks, {}, layout, {})
