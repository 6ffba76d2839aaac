"""HuggingFace BERT directories (``config.json`` with ``model_type`` bert, or one of the models with BERT's
layout: :data:`BERT_LAYOUT_TYPES`; weights in ``model.safetensors`` or ``pytorch_model.bin``, or sharded as
``save_pretrained`` writes larger models, with a ``*.index.json``), including sentence-transformers folders
such as all-MiniLM-L6-v2.

With option ``masks`` (``--mask m1.pt --mask m2.pt ...``) the folder and the mask files of the
BERT-tickets layout are read as a recorded flow: round 0 dense, then one round per mask file in the
order given.  A mask file is a dict from names such as
``bert.encoder.layer.0.attention.self.query.weight_mask`` to 0/1 float tensors; names match with or
without the ``bert.`` prefix and with or without ``_mask``.  The weights are the folder's in every
round, so ``to_state_dict(r)`` gives the folder's state dict for every round (``apply_masks=True``
multiplies in round r's masks) and :func:`mask_file_dict` gives mask file r back bit-exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rganalysis.adapters import register
from rganalysis.adapters._common import mask_file_dict, mask_file_entry
from rganalysis.errors import AdapterDeclined, CorruptCheckpointError, MasksNotNestedError, NonBinaryMaskError
from rganalysis.store.checkpoint import (
    check_masks,
    find_state_dict,
    load_checkpoint,
    make_parameter_set,
    single_round,
)
from rganalysis.store.layers import natural_key
from rganalysis.store.parameter_set import ParameterSet, RoundData

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: model types whose state dicts have BERT's layout (``{prefix}.embeddings``, ``{prefix}.encoder.layer.N``, ...)
BERT_LAYOUT_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
__all__ = [
    "HFBert",
    "build_from_config",
    "mask_file_dict",
    "model_from_config",
    "read_folder_config",
    "read_mask_files",
]


def read_folder_config(source: Path) -> dict:
    """The ``config.json`` of a HuggingFace folder (declined: not a folder, no config; corrupt: bad JSON)."""
    if not source.is_dir():
        raise AdapterDeclined("not a directory (a HuggingFace model is a folder with config.json)")
    cfg = source / "config.json"
    if not cfg.is_file():
        raise AdapterDeclined("no config.json in the folder")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise CorruptCheckpointError(f"{cfg}: invalid JSON ({e})") from None


def read_config(source: Path) -> dict:
    config = read_folder_config(source)
    if config.get("model_type") not in BERT_LAYOUT_TYPES:
        raise AdapterDeclined(
            f"config.json has model_type {config.get('model_type')!r}, not one with BERT's layout "
            f"({', '.join(BERT_LAYOUT_TYPES)}): the hf-transformers adapter reads it"
        )
    return config


def weight_files(source: Path) -> list[Path]:
    """The folder's weight file, or its shards in the order of their ``*.index.json``."""
    for f in WEIGHT_FILES:
        if (source / f).is_file():
            return [source / f]
        index = source / f"{f}.index.json"
        if index.is_file():
            try:
                shards = json.loads(index.read_text())["weight_map"].values()
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
                raise CorruptCheckpointError(
                    f"{index}: not a shard index ({type(e).__name__}: {e})"
                ) from None
            files = [source / n for n in dict.fromkeys(shards)]
            missing = [p.name for p in files if not p.is_file()]
            if missing:
                raise CorruptCheckpointError(
                    f"{index}: shard(s) missing from the folder: {', '.join(missing[:4])}"
                )
            return files
    raise AdapterDeclined(f"none of {', '.join(WEIGHT_FILES)} (or their .index.json shards) in the folder")


def _read_weights(files: Sequence[Path], allow_pickle: bool) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_checkpoint(f, allow_pickle=allow_pickle)
        both = set(sd) & set(part)
        if both:
            raise CorruptCheckpointError(f"{f}: shards hold the same tensor twice, e.g. {sorted(both)[0]!r}")
        sd.update(part)
    return sd


_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
_IN_LAYER = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)
_LEAVES = ("weight", "bias")


def _index(s: str, prefixes: Sequence[str]) -> int:
    return next((i for i, p in enumerate(prefixes) if s == p or s.startswith(p + ".")), len(prefixes))


def bert_key_rank(key: str) -> tuple:
    """Forward (depth) order of a BERT-layout state-dict key (any base-model prefix: ``bert.``, ``roberta.``):
    embeddings, encoder layers 0..L-1 (query, key,
    value, attention output, intermediate, output), pooler, then heads; weight before bias.

    A static rule, so ordering a checkpoint does not need to import transformers (seconds) or build the
    model; safetensors files list their keys alphabetically (``layer.10`` before ``layer.2``).
    """
    _, _, rest = key.partition(".")
    s = rest if rest.startswith(("embeddings.", "encoder.", "pooler.")) else key  # bert., roberta., ...
    leaf = _index(s.rsplit(".", 1)[-1], _LEAVES)
    if s.startswith("embeddings."):
        return (0, 0, _index(s[len("embeddings.") :], _EMBEDDINGS), leaf, natural_key(s))
    if s.startswith("encoder.layer."):
        num, _, rest = s[len("encoder.layer.") :].partition(".")
        if num.isdigit():
            return (1, int(num), _index(rest, _IN_LAYER), leaf, natural_key(s))
    if s.startswith("pooler."):
        return (2, 0, 0, leaf, natural_key(s))
    return (3, 0, 0, 0, natural_key(s))


def _resolve(key: str, tensors: dict[str, torch.Tensor]) -> str:
    """The tensor a mask-file key names: ``_mask`` dropped, ``bert.`` added or removed as needed."""
    name = key.removesuffix("_mask")
    for cand in (name, f"bert.{name}", name.removeprefix("bert.")):
        if cand in tensors:
            return cand
    return name


def read_mask_files(
    paths: Sequence[str | os.PathLike], tensors: dict[str, torch.Tensor], allow_pickle: bool = False
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """(masks per file by canonical name, layout of each file for :func:`mask_file_dict`).

    Each file must name existing tensors with their shapes (:class:`MissingTensorError`,
    :class:`MaskShapeError`, listing the first offenders), and each file's masks must lie inside the
    previous file's (:class:`MasksNotNestedError`).
    """
    masks_per_file, entries = [], []
    for i, path in enumerate(map(Path, paths)):
        sd, _ = find_state_dict(load_checkpoint(path, allow_pickle=allow_pickle))
        named: dict[str, torch.Tensor] = {}
        keys = []
        for key, m in sd.items():
            name = _resolve(key, tensors)
            if name in named:
                raise CorruptCheckpointError(f"{path}: two keys name the mask of {name!r}")
            named[name] = m
            keys.append((key, name, m.dtype))
        check_masks(tensors, named, f"mask file {path} (round {i + 1}): ")
        nonbinary = [
            n for n, m in named.items() if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all())
        ]
        if nonbinary:
            raise NonBinaryMaskError(
                f"mask file {path}: {len(nonbinary)} masks hold values other than 0 and 1, "
                f"e.g. {nonbinary[:5]}"
            )
        if masks_per_file:
            prev, prev_path = masks_per_file[-1], paths[i - 1]
            revived = []
            for n in dict.fromkeys([*prev, *named]):
                ones = torch.ones(tensors[n].shape, dtype=torch.bool)
                before = prev[n].bool() if n in prev else ones
                count = int(((named[n].bool() if n in named else ones) & ~before).sum())
                if count:
                    revived.append(f"{n} ({count})")
            if revived:
                raise MasksNotNestedError(
                    f"masks are not nested: {path} (round {i + 1}) keeps weights that {prev_path} (round {i}) "
                    f"pruned, in {len(revived)} tensors, e.g. " + "; ".join(revived[:5])
                )
        masks_per_file.append(named)
        entries.append(mask_file_entry(path.name, keys))
    return masks_per_file, entries


@register
class HFBert:
    """A HuggingFace BERT folder (config.json + weights), with BERT-tickets mask files as recorded rounds."""

    name = "hf-bert"
    priority = 20
    reads_masks = True  # --mask files become recorded rounds (read_mask_files checks them)

    def detect(self, source: Path, **options) -> None:
        """Accept a folder with a BERT config.json and a weight file."""
        read_config(source)
        weight_files(source)

    def load(
        self,
        source: Path,
        *,
        name: str | None = None,
        include_embeddings: bool = False,
        allow_pickle: bool = False,
        masks: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
        **_: Any,
    ) -> ParameterSet:
        """Read the folder; with ``masks``, a recorded flow of 1 + len(masks) rounds (module docstring)."""
        config = read_config(source)
        files = weight_files(source)
        sd = _read_weights(files, allow_pickle)
        rd = single_round(sd)
        order = sorted(rd.tensors, key=bert_key_rank)
        rd.tensors = {k: rd.tensors[k] for k in order}
        arch = (config.get("architectures") or ["BertModel"])[0]
        mask_paths = [masks] if isinstance(masks, str | os.PathLike) else list(masks or [])
        rounds = [rd]
        extra: dict[str, Any] = {}
        if mask_paths:
            per_file, entries = read_mask_files(mask_paths, rd.tensors, allow_pickle)
            rounds += [RoundData(rd.tensors, {**rd.masks, **m}, {}, rd.layout) for m in per_file]
            extra = {"mask_files": json.dumps([None, *entries])}
        return make_parameter_set(
            rounds,
            adapter=self.name,
            architecture=arch,
            sources=[*files, source / "config.json", *mask_paths],
            name=name or source.name,
            include_embeddings=include_embeddings,
            flow_attrs={"layout": "bert-tickets", "mask_files": [str(p) for p in mask_paths]}
            if mask_paths
            else None,
            extra_attrs={
                "config": json.dumps(config, sort_keys=True),
                "weights_file": files[0].name if len(files) == 1 else json.dumps([f.name for f in files]),
                **extra,
            },
        )

    def build_module(self, pset: ParameterSet) -> torch.nn.Module:
        """The transformers model class named by the stored config (random init)."""
        return build_from_config(pset)


def build_from_config(pset: ParameterSet) -> torch.nn.Module:
    """The transformers model class named by a store's ``architecture``, from its stored ``config``
    (random init); ``AutoModel`` for a class transformers does not export."""
    return model_from_config(json.loads(pset.attrs["config"]), pset.attrs["architecture"])


def model_from_config(config: dict, architecture: str | None) -> torch.nn.Module:
    """The transformers class ``architecture`` built from a ``config.json`` dict (random init, on torch's
    current default device); ``AutoModel`` for a class transformers does not export (or None)."""
    import transformers

    kind = config.get("model_type", "bert")
    cfg = transformers.AutoConfig.for_model(kind, **{k: v for k, v in config.items() if k != "model_type"})
    cls = getattr(transformers, architecture, None) if architecture else None
    return cls(cfg) if cls is not None else transformers.AutoModel.from_config(cfg)
