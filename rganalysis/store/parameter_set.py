"""The ParameterSet: a model or a recorded IMP flow as a lazily readable set of named tensors with
masks per round, and its public per-round and streaming reader.  The file layout:
docs/store-format.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from rganalysis.errors import (
    MaskShapeError,
    MasksNotNestedError,
    MissingTensorError,
    NonBinaryMaskError,
    NonFiniteWeightsError,
    RoundOutOfRangeError,
    StoreFormatError,
)
from rganalysis.store.layers import dim_names
from rganalysis.store.state import State, resolve_device
from rganalysis.store.tensors import from_numpy, to_numpy, torch_dtype

__all__ = [
    "build_info",
    "EXTRA",
    "LayoutEntry",
    "MASK",
    "PARAM",
    "ParameterSet",
    "RoundData",
    "SurvivalMask",
    "TensorInfo",
]

# Roles of a key in a source state dict (see LayoutEntry).
PARAM, MASK, EXTRA = "param", "mask", "extra"


@dataclass(frozen=True)
class TensorInfo:
    """What the store knows of one model tensor.

    ``depth`` is the index of the tensor's module in depth order (0 = input side).
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str
    module: str
    depth: int
    prunable: bool
    dims: tuple[str, ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class LayoutEntry:
    """One key of a source state dict: its value is the canonical tensor ``name`` (role ``param``),
    the mask of ``name`` cast to ``dtype`` (role ``mask``), or the extra tensor ``name`` (``extra``)."""

    key: str
    role: str
    name: str
    dtype: str = ""


@dataclass
class RoundData:
    """What an adapter read for one round of a flow (round 0 of a plain model).

    ``tensors`` holds canonical names -> values (all of them at round 0, only the ones that
    changed afterwards); ``masks`` the masks present in the source (any 0/1 dtype);
    ``extras`` tensors of the source that are not part of the model (kept for losslessness).
    """

    tensors: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    layout: list[LayoutEntry] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class DiskRef:
    """A tensor still on disk: variable ``var`` of group ``group`` of the store (what
    :func:`rganalysis.store.load` puts in a ParameterSet instead of a tensor).  A mask names its round
    in ``index`` and how the store keeps it in ``encoding`` (``survival`` or ``per_round``); a tensor
    carries its index ``entry`` (:class:`rganalysis.store.index.Entry`), against which it is checked."""

    group: str
    var: str
    dtype: str
    index: int | None = None
    encoding: str = "tensor"
    entry: Any = None


@dataclass(frozen=True)
class SurvivalMask:
    """The mask at ``round`` of nested masks kept as ``survival`` (the number of rounds each weight is
    alive in): ``survival > round``.  Calling it gives the bool mask; a flow's rounds share one ``survival``."""

    survival: torch.Tensor
    round: int

    def __call__(self) -> torch.Tensor:
        return self.survival > self.round


def json_text(obj: Any) -> str:
    """Canonical JSON of an attribute value (sorted keys; anything else as ``str``)."""
    return json.dumps(obj, sort_keys=True, default=str)


class ParameterSet:
    """A model, or a recorded IMP flow, as a lazily readable set of named tensors with masks per round.

    Build one with an adapter (:func:`rganalysis.adapters.ingest`) or open one with :func:`load`.
    """

    def __init__(
        self,
        info: Mapping[str, TensorInfo],
        weights: Mapping[int, Mapping[str, torch.Tensor | DiskRef]],
        masks: Mapping[str, Sequence[torch.Tensor | DiskRef]] | None = None,
        *,
        n_rounds: int = 1,
        extras: Mapping[int, Mapping[str, torch.Tensor | DiskRef]] | None = None,
        layouts: Sequence[Sequence[LayoutEntry]] | None = None,
        metrics: Mapping[str, Sequence[float]] | None = None,
        rewind: Mapping[str, torch.Tensor | DiskRef] | None = None,
        rewind_layout: Sequence[LayoutEntry] | None = None,
        attrs: Mapping[str, Any] | None = None,
        flow_attrs: Mapping[str, Any] | None = None,
        densities: np.ndarray | None = None,
        density_layers: Sequence[str] | None = None,
        reader: Any = None,
        validate: bool = True,
    ):
        self.info = dict(info)
        self.names = list(self.info)
        self.n_rounds = int(n_rounds)
        self._weights = {int(r): dict(w) for r, w in weights.items()}
        self._masks = {k: list(v) for k, v in (masks or {}).items()}
        self._extras = {int(r): dict(e) for r, e in (extras or {}).items()}
        self.layouts = [list(x) for x in (layouts or [[]] * self.n_rounds)]
        self.metrics = {k: list(map(float, v)) for k, v in (metrics or {}).items()}
        self._rewind = dict(rewind) if rewind else None
        self.rewind_layout = list(rewind_layout or [])
        self.attrs = dict(attrs or {})
        self.flow_attrs = {"kind": "model" if self.n_rounds == 1 else "recorded", **(flow_attrs or {})}
        #: the open store (:class:`rganalysis.store.reader.StoreReader`) of a loaded set, else None
        self._reader = reader
        self._file: h5py.File | None = None if reader is None else reader.file
        self._density_cache = densities
        # round -> names changed at that round, for "latest stored value" lookups
        self._changed = {r: set(w) for r, w in self._weights.items()}
        self._extra_changed = {r: set(e) for r, e in self._extras.items()}
        self.path: Path | None = None
        #: True/False when known (validated on creation, or recorded in the file), else None
        self.masks_nested: bool | None = None
        if density_layers is not None and list(density_layers) != self.pruned_names():
            self._density_cache = None  # computed for other layers: recomputed from the masks when asked
        if self._reader is None and validate:
            self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if len(self.layouts) != self.n_rounds:
            raise StoreFormatError(f"{len(self.layouts)} layouts for {self.n_rounds} rounds")
        for r, ws in self._weights.items():
            for name, t in ws.items():
                if name not in self.info:
                    raise MissingTensorError(f"round {r} holds tensor {name!r} that the model does not have")
                if t.is_floating_point() and not _all_finite(t):
                    bad = int((~torch.isfinite(t)).sum())
                    raise NonFiniteWeightsError(f"tensor {name!r} (round {r}) holds {bad} NaN/Inf values")
        for name, ms in self._masks.items():
            if name not in self.info:
                raise MissingTensorError(f"mask names tensor {name!r} that the model does not have")
            if len(ms) != self.n_rounds:
                raise StoreFormatError(f"mask of {name!r} has {len(ms)} rounds, expected {self.n_rounds}")
            shape = self.info[name].shape
            prev = None
            for r, m in enumerate(ms):
                m = m if isinstance(m, torch.Tensor) else m()
                if tuple(m.shape) != shape:
                    raise MaskShapeError(
                        f"mask of {name!r} (round {r}) has shape {tuple(m.shape)}, its weight has {shape}"
                    )
                mb = _mask_bits(m, f"mask of {name!r} (round {r})")
                if prev is not None and np.any(mb > prev):  # alive now, pruned before
                    revived = int(np.count_nonzero(mb > prev))
                    raise MasksNotNestedError(
                        f"masks of {name!r} are not nested: round {r} revives {revived} weights pruned at round {r - 1}"
                    )
                prev = mb
        self.masks_nested = True

    # ------------------------------------------------------------------ reading
    def _get(
        self, v: torch.Tensor | DiskRef | Callable[[], torch.Tensor], rows: slice | None = None
    ) -> torch.Tensor:
        """The tensor behind a stored value; ``rows``: only that slice of its first dimension (read from disk)."""
        if isinstance(v, DiskRef):
            if v.encoding != "tensor":
                arr = self._reader.mask_round(v.var, v.index)
                return torch.from_numpy(arr if rows is None else arr[rows])
            return from_numpy(self._reader.read(v.entry, rows), v.dtype)
        t = (
            v if isinstance(v, torch.Tensor) else v()
        )  # a callable: derived lazily, e.g. a computed flow's mask
        return t if rows is None else t[rows]

    def _latest(self, changed: Mapping[int, set], store: Mapping[int, Mapping], name: str, round: int):
        self._check_round(round)
        for r in range(round, -1, -1):
            if name in changed.get(r, ()):
                return store[r][name]
        raise MissingTensorError(f"no tensor named {name!r}")

    def _check_round(self, round: int) -> None:
        if not 0 <= round < self.n_rounds:
            raise RoundOutOfRangeError(
                f"round {round} out of range: this set has rounds 0..{self.n_rounds - 1}"
            )

    def _check_name(self, name: str) -> None:
        if name not in self.info:
            raise MissingTensorError(f"no tensor named {name!r}; the set has {len(self.names)} tensors")

    def tensor(
        self, name: str, round: int = 0, device: str | torch.device | None = None, rows: slice | None = None
    ) -> torch.Tensor:
        """Weights of ``name`` at ``round``, unmasked, in the original dtype.

        ``rows``: only that slice of the first dimension, read from disk without the rest (streaming
        passes over very large tensors).
        """
        self._check_name(name)
        t = self._get(self._latest(self._changed, self._weights, name, round), rows)
        return t if device is None else t.to(device)

    def weight_runs(self, name: str) -> list[tuple[int, int]]:
        """Runs ``(start, stop)`` of rounds that share one stored value of ``name``, in round order.

        A data-free flow has one run ``(0, n_rounds)`` per tensor (its weights never change), a retrained
        flow one run per round.  A streaming pass reads ``tensor(name, start)`` once per run.
        """
        self._check_name(name)
        starts = sorted(r for r, names in self._changed.items() if name in names and 0 <= r < self.n_rounds)
        return list(zip(starts, [*starts[1:], self.n_rounds], strict=True))

    def read_masks(self, name: str, rows: slice | None = None) -> torch.Tensor | None:
        """The masks of ``name`` in every round at once: ``(n_rounds, *shape)`` ``torch.bool`` (``rows``: that
        slice of the tensor's first dimension), or None when ``name`` has no mask (all ones).

        A store's mask dataset is read in one call (nested masks: one survival round per weight).
        """
        self._check_name(name)
        refs = self._masks.get(name)
        if refs is None:
            return None
        if isinstance(refs[0], DiskRef) and self._reader is not None:
            return torch.from_numpy(np.ascontiguousarray(self._reader.mask_rounds(name, rows)))
        s = self._survival_tensor(name)
        if s is not None:
            s = s if rows is None else s[rows]
            return s.unsqueeze(0) > torch.arange(self.n_rounds, dtype=s.dtype).view(-1, *([1] * s.dim()))
        return torch.stack([self._get(m, rows).bool() for m in refs])

    def _survival_tensor(self, name: str) -> torch.Tensor | None:
        """The shared survival tensor of an in-memory flow's masks (:class:`SurvivalMask`), else None."""
        refs = self._masks[name]
        first = refs[0]
        if isinstance(first, SurvivalMask) and all(
            isinstance(m, SurvivalMask) and m.survival is first.survival and m.round == r
            for r, m in enumerate(refs)
        ):
            return first.survival
        return None

    def survival_array(self, name: str) -> np.ndarray | None:
        """The number of rounds each weight of ``name`` is alive in (its mask at round r is ``survival > r``),
        as an unsigned integer array of the tensor's shape, or None when its masks are not nested (a
        later round revives a weight) or ``name`` has no mask.

        Read in one call from a store, taken from a computed flow, else built round by round.
        """
        self._check_name(name)
        if name not in self._masks:
            return None
        from rganalysis.store.index import survival_dtype

        dt = survival_dtype(self.n_rounds)
        refs = self._masks[name]
        if isinstance(refs[0], DiskRef) and self._reader is not None:
            s = self._reader.survival(name)
            return None if s is None else s.astype(dt, copy=False)
        s = self._survival_tensor(name)
        if s is not None:
            return s.cpu().numpy().astype(dt, copy=False)
        out = np.zeros(self.info[name].shape, dtype=dt)
        prev = None
        known = self.masks_nested is True  # checked when the set was made
        for r in range(self.n_rounds):
            m = _mask_bits(self.mask(name, r), name)
            if not known and prev is not None and np.any(m > prev):
                return None
            out += m
            prev = m
        return out

    def changed_names(self, round: int) -> list[str]:
        """Tensors whose stored weights change at ``round`` (every tensor at round 0), in model order."""
        self._check_round(round)
        return [n for n in self.names if n in self._changed.get(round, ())]

    def changed_extra_keys(self, round: int) -> list[str]:
        """Extra (non-model) source tensors whose stored value changes at ``round``."""
        self._check_round(round)
        return list(self._extras.get(round, {}))

    def extra(self, key: str, round: int = 0) -> torch.Tensor:
        """A source tensor that is not part of the model (e.g. MoCo's key encoder), at ``round``."""
        return self._get(self._latest(self._extra_changed, self._extras, key, round))

    def extra_keys(self) -> list[str]:
        """Keys of the extra (non-model) source tensors, sorted."""
        return sorted({k for e in self._extras.values() for k in e})

    def has_mask(self, name: str) -> bool:
        """True when the set holds a mask for ``name`` (else it is dense in every round)."""
        return name in self._masks

    def masked_names(self) -> list[str]:
        """Tensors that carry a mask in this set, in depth order."""
        return [n for n in self.names if n in self._masks]

    def mask(self, name: str, round: int = 0, device: str | torch.device | None = None) -> torch.Tensor:
        """Boolean mask of ``name`` at ``round`` (all True where the tensor has no mask)."""
        if name not in self.info:
            raise MissingTensorError(f"no tensor named {name!r}")
        self._check_round(round)
        if name in self._masks:
            m = _as_bool(self._get(self._masks[name][round]))
        else:
            m = torch.ones(self.info[name].shape, dtype=torch.bool)
        return m if device is None else m.to(device)

    def prunable_names(self) -> list[str]:
        """Prunable tensors by the lottery-ticket convention (conv and linear weights)."""
        return [n for n in self.names if self.info[n].prunable]

    def pruned_names(self) -> list[str]:
        """The tensors IMP acts on here: the masked ones if the source had masks, else the prunable ones."""
        return self.masked_names() or self.prunable_names()

    def rewind_state(self) -> dict[str, torch.Tensor] | None:
        """The rewind point as canonical name -> tensor, or None."""
        return None if self._rewind is None else {k: self._get(v) for k, v in self._rewind.items()}

    def rewind_tensor(self, name: str) -> torch.Tensor | None:
        """The rewind point's value of ``name`` (read alone), or None when the rewind point lacks it."""
        if self._rewind is None or name not in self._rewind:
            return None
        return self._get(self._rewind[name])

    def rewind_names(self) -> list[str]:
        """Names of the tensors of the rewind point (empty without one)."""
        return list(self._rewind or ())

    def state(
        self, round: int = 0, device: str | torch.device | None = "auto", names: Sequence[str] | None = None
    ) -> State:
        """The :class:`State` at ``round``: the tensors IMP acts on (default :meth:`pruned_names`)."""
        dev = resolve_device(device)
        names = list(names) if names is not None else self.pruned_names()
        n = len(names)
        return State(
            {k: self.tensor(k, round, dev) for k in names},
            {k: self.mask(k, round, dev) for k in names},
            depth={k: (i / (n - 1) if n > 1 else 0.0) for i, k in enumerate(names)},
            kinds={k: self.info[k].kind for k in names},
        )

    # ------------------------------------------------------------------ derived tables
    def density_table(self) -> tuple[list[str], np.ndarray]:
        """(layers, densities ``(n_rounds, len(layers))`` float64) over :meth:`pruned_names`, without xarray.

        A loaded store's recorded table is checked against its masks on first use
        (:class:`~rganalysis.errors.DensityMismatchError`); an in-memory set's is computed from its masks.
        """
        names = self.pruned_names()
        if self._density_cache is None and self._reader is not None:
            rnames, table = self._reader.density_table()
            if rnames == names:
                self._density_cache = table
        if self._density_cache is None:
            d = np.ones((self.n_rounds, len(names)))
            for j, n in enumerate(names):
                if n not in self._masks:
                    continue
                s = self._survival_tensor(n)
                if s is not None:
                    counts = torch.bincount(s.reshape(-1).to(torch.int64), minlength=self.n_rounds + 1)
                    alive = s.numel() - torch.cumsum(counts, 0)[: self.n_rounds]
                    d[:, j] = alive.numpy() / s.numel()
                    continue
                for r in range(self.n_rounds):
                    m = self.mask(n, r)
                    d[r, j] = int(np.count_nonzero(m.cpu().numpy())) / m.numel()
            self._density_cache = d
        return names, self._density_cache

    def densities(self):
        """Per-layer densities, ``xarray.DataArray`` with dims (round, layer)."""
        import xarray as xr

        names, table = self.density_table()
        keep = ("name", "source", "sha256", "adapter", "architecture")
        return xr.DataArray(
            table,
            dims=("round", "layer"),
            coords={"round": np.arange(self.n_rounds), "layer": names},
            name="density",
            attrs={
                "units": "fraction of the layer's weights alive",
                **{k: self.attrs[k] for k in keep if k in self.attrs},
            },
        )

    def global_density(self):
        """Density over the pruned tensors, weighted by size: ``xarray.DataArray`` (round,)."""
        d = self.densities()
        sizes = np.array([self.info[n].numel for n in d.layer.values], dtype=np.float64)
        g = (d * sizes).sum("layer") / sizes.sum()
        return g.rename("global_density")

    def scale_factors(self) -> np.ndarray:
        """Per-round scale factors b_n = rho_n / rho_{n+1} from the measured global densities, (n_rounds - 1,);
        inf where a round empties the network, NaN after."""
        g = self.global_density().values
        with np.errstate(divide="ignore", invalid="ignore"):
            return g[:-1] / g[1:]

    # ------------------------------------------------------------------ writing back
    def to_state_dict(self, round: int = 0, *, layout: str = "source", apply_masks: bool = False) -> dict:
        """The state dict at ``round``.

        ``layout="source"`` gives the keys, dtypes and bits of the source that was ingested
        (``weight_orig``/``weight_mask`` pairs, wrapper prefixes, extra tensors included);
        ``layout="canonical"`` gives canonical names -> model tensors.  ``apply_masks`` multiplies
        each masked weight by its mask (as ``torch.nn.utils.prune`` does in the forward pass) for
        ``param`` entries.
        """
        self._check_round(round)
        if layout == "canonical" or not self.layouts[round]:
            entries = [LayoutEntry(n, PARAM, n) for n in self.names]
        elif layout == "source":
            entries = self.layouts[round]
        else:
            raise ValueError(f"layout must be 'source' or 'canonical', not {layout!r}")
        out: dict[str, torch.Tensor] = {}
        for e in entries:
            if e.role == PARAM:
                t = self.tensor(e.name, round)
                if apply_masks and e.name in self._masks:
                    t = t * self.mask(e.name, round).to(t.dtype)
            elif e.role == MASK:
                t = self.mask(e.name, round).to(torch_dtype(e.dtype))
            elif e.role == EXTRA:
                t = self.extra(e.name, round)
            else:
                raise StoreFormatError(f"unknown layout role {e.role!r}")
            out[e.key] = t
        return out

    def to_module(self, round: int = 0, apply_masks: bool = True) -> torch.nn.Module:
        """The architecture built by the adapter, with this round's weights loaded."""
        from rganalysis.adapters import build_module

        module = build_module(self)
        own = module.state_dict()
        sd = {
            k: v
            for k, v in self.to_state_dict(round, layout="canonical", apply_masks=apply_masks).items()
            if k in own
        }  # e.g. a position_ids buffer that newer library versions no longer save
        module.load_state_dict(sd, strict=True)
        return module

    def save(
        self,
        path: str | os.PathLike,
        *,
        force: bool = False,
        compress: bool = False,
        progress: bool = True,
        inputs: Iterable[str | os.PathLike] = (),
    ) -> Path:
        """Write the set to ``path`` atomically (:func:`rganalysis.store.save`): never over an existing
        file unless ``force``, never over one of ``inputs`` (nor over the store this set was loaded from)."""
        from rganalysis.store.hdf5 import save

        inputs = [*inputs, *([self.path] if self.path is not None else [])]
        return save(self, path, force=force, compress=compress, progress=progress, inputs=inputs)

    @property
    def is_open(self) -> bool:
        """True while the set holds its store file open (a loaded set, until :meth:`close`)."""
        return bool(self._file)

    def close(self) -> None:
        """Close the store file (a loaded set); tensors already read stay valid."""
        if self._reader is not None:
            self._reader.close()
            self._file = None

    def __enter__(self) -> ParameterSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        n_params = sum(i.numel for i in self.info.values())
        return (
            f"<ParameterSet {self.attrs.get('name', '')!r} architecture={self.attrs.get('architecture')!r} "
            f"tensors={len(self.names)} parameters={n_params} rounds={self.n_rounds}>"
        )


def _as_bool(m: torch.Tensor) -> torch.Tensor:
    """A mask as ``torch.bool`` (nonzero = alive), converted in numpy for CPU tensors (see :func:`_mask_bits`)."""
    if m.dtype == torch.bool or m.device.type != "cpu" or m.dtype == torch.bfloat16:
        return m.bool()
    return torch.from_numpy(m.numpy() != 0)


def _mask_bits(m: torch.Tensor, what: str) -> np.ndarray:
    """A 0/1 mask of any dtype as a numpy bool array (:class:`NonBinaryMaskError` for other values).
    In numpy: single-threaded element-wise passes, which a busy torch thread pool makes slow."""
    m = m.detach().cpu()
    if m.dtype == torch.bool:
        return m.numpy()
    a = m.float().numpy() if m.dtype == torch.bfloat16 else m.numpy()
    bad = (a != 0) & (a != 1)
    if np.any(bad):
        vals = np.unique(a[bad])[:5].tolist()
        raise NonBinaryMaskError(f"{what} is not 0/1: holds {vals}")
    return a != 0


def _all_finite(t: torch.Tensor) -> bool:
    """True when ``t`` holds no NaN/Inf (min and max propagate NaN: no element-wise pass unless one is
    not finite; in numpy, single-threaded: with a busy thread pool many small torch calls are slow)."""
    from rganalysis.store.reader import count_nonfinite

    return count_nonfinite(to_numpy(t), str(t.dtype).removeprefix("torch.")) == 0


def build_info(
    tensors: Mapping[str, torch.Tensor],
    *,
    kinds: Mapping[str, str] | None = None,
    include_embeddings: bool = False,
    prunable: Iterable[str] | None = None,
) -> dict[str, TensorInfo]:
    """TensorInfo for each tensor, in the given (depth) order; kinds from names and shapes unless given.

    A tensor tied to an earlier one (the same storage, or a head with the same bits as an embedding table,
    as a language model's output layer saved beside its input embedding) is not prunable on its own, unless
    ``prunable`` names it: it is the same weights, and counting them twice would rank them twice in a global
    prune (one warning lists the ties)."""
    from rganalysis.store.layers import classify, is_prunable, module_path

    modules: dict[str, int] = {}
    out = {}
    forced = set(prunable) if prunable is not None else None
    storages: dict[tuple, str] = {}
    tables: dict[tuple, list[tuple[str, torch.Tensor]]] = {}  # (shape, dtype) -> embedding tables
    ties: list[str] = []
    for name, t in tensors.items():
        shape = tuple(t.shape)
        kind = (kinds or {}).get(name) or classify(name, shape, floating=t.is_floating_point())
        mod = module_path(name)
        depth = modules.setdefault(mod, len(modules))
        pr = name in forced if forced is not None else is_prunable(kind, include_embeddings)
        tied = _tied_to(t, storages, tables) if t.numel() and shape else None
        if tied is not None and forced is None and pr:
            pr = False
            ties.append(f"{name} (= {tied})")
        if t.numel() and shape:
            storages.setdefault(_storage_key(t), name)
            if kind == "embedding":
                tables.setdefault((shape, t.dtype), []).append((name, t))
        out[name] = TensorInfo(name, shape, t.dtype, kind, mod, depth, pr, dim_names(kind, shape))
    if ties:
        import warnings

        warnings.warn(
            f"{len(ties)} tensor(s) tied to an earlier one, not pruned on their own: {', '.join(ties[:4])}"
            + (" ..." if len(ties) > 4 else ""),
            UserWarning,
            stacklevel=3,
        )
    return out


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())


def _tied_to(
    t: torch.Tensor, storages: Mapping[tuple, str], tables: Mapping[tuple, list[tuple[str, torch.Tensor]]]
) -> str | None:
    """The earlier tensor ``t`` is tied to: one viewing the same storage the same way, or an embedding table
    of the same shape, dtype and bits (a tie saved as two copies)."""
    same = storages.get(_storage_key(t))
    if same is not None:
        return same
    for name, e in tables.get((tuple(t.shape), t.dtype), ()):
        # a constant table (zeros, ones: an initialisation) equal to a head is no evidence of a tie
        if e.device == t.device and torch.equal(e, t) and bool((e != e.reshape(-1)[0]).any()):
            return name
    return None
