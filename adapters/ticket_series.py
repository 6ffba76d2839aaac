"""IMP ticket series: a folder of ``{k}model_SA_best.pth.tar`` (or ``{k}checkpoint.pth.tar``) for IMP
states k = 0..N, as the lottery-tickets-in-pre-training code base (CVPR 2021) releases its ResNet-50
CIFAR-10/100 and ImageNet tickets.

Each file is a dict with ``state`` (k), ``state_dict``, ``init_weight`` (the rewind point, a plain
state dict), ``epoch``, ``best_sa``, ``result``, ``optimizer``, ``scheduler`` and, in some variants,
``mask``.  State 0 is dense; later states hold ``*.weight_orig`` + ``*.weight_mask`` for every pruned
conv (the stem ``conv1`` and the ``fc`` head stay dense).  The folder is read as one recorded flow:
round n = the n-th state in numerical order, the rewind point stored once, ``best_sa`` and ``epoch``
kept per round.  When both files exist for one state, ``model_SA_best`` is read.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rganalysis.adapters import register
from rganalysis.adapters._common import (
    as_float,
    build_resnet_backbone,
    compare_masks,
    head_spec,
    mask_file_dict,
    mask_file_entry,
    match_resnet_backbone,
    plain_json,
    rewind_from_state_dict,
    rewind_state_dict,
)
from rganalysis.errors import AdapterDeclined, CorruptCheckpointError, MaskShapeError, MissingTensorError
from rganalysis.store.checkpoint import (
    common_prefix,
    is_state_dict,
    load_checkpoint,
    make_parameter_set,
    sha256,
    split_pruned,
)
from rganalysis.store.parameter_set import ParameterSet, RoundData

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^(\d+)(model_SA_best|checkpoint)\.pth(\.tar)?$")
PREFERRED = "model_SA_best"
METRICS = ("best_sa", "epoch")

__all__ = ["TicketSeries", "mask_file_dict", "rewind_state_dict", "series_files"]


def series_files(source: Path) -> tuple[dict[int, Path], list[Path]]:
    """(state k -> file read, files skipped) of a ticket folder; ``model_SA_best`` wins over ``checkpoint``."""
    found: dict[int, dict[str, Path]] = {}
    for p in source.iterdir():
        m = FILE_RE.match(p.name)
        if m and p.is_file():
            found.setdefault(int(m.group(1)), {})[m.group(2)] = p
    chosen, skipped = {}, []
    for k in sorted(found):
        kinds = found[k]
        chosen[k] = kinds.get(PREFERRED) or kinds["checkpoint"]
        skipped += [p for p in kinds.values() if p != chosen[k]]
    return chosen, skipped


#: the entries of a ticket file that the store keeps (an optimizer's state can be as large as the model)
KEPT = ("state", "state_dict", "init_weight", "epoch", "best_sa", "result", "mask")


def read_ticket_file(job: tuple[str, bool]) -> tuple[Any, str]:
    """(the kept entries of one ticket file, its SHA-256): what a worker of a parallel read returns."""
    path, allow_pickle = job
    obj = load_checkpoint(path, allow_pickle=allow_pickle)
    if isinstance(obj, Mapping) and not is_state_dict(obj):
        obj = {k: obj[k] for k in KEPT if k in obj}
    return obj, sha256(path)


def _read_files(paths: list[Path], allow_pickle: bool, workers: int):
    """(object, sha256) of each file in order: read here one by one, or by ``workers`` processes at once
    (tensors come back through shared memory)."""
    jobs = [(str(p), allow_pickle) for p in paths]
    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            yield read_ticket_file(j)
        return
    from rganalysis.adapters import process_pool

    with process_pool(min(workers, len(jobs))) as ex:
        yield from ex.map(read_ticket_file, jobs)


def _mask_entry(obj: Mapping, rd: RoundData, prefix: str, where: str) -> dict[str, Any] | None:
    """Cross-check a file's ``mask`` dict against its ``weight_mask`` tensors; its layout for mask_file_dict."""
    masks = obj.get("mask")
    if not isinstance(masks, Mapping) or not masks:
        return None
    if not all(isinstance(v, torch.Tensor) for v in masks.values()):
        raise CorruptCheckpointError(f"{where}: its 'mask' entry holds values that are not tensors")
    mprefix = common_prefix(masks, (prefix,) if prefix else ("module.",))
    keys, named, missing = [], {}, []
    for key, m in masks.items():
        name = key[len(mprefix) :].removesuffix("_mask")
        if name not in rd.tensors and f"{name}.weight" in rd.tensors:
            name = f"{name}.weight"
        if name not in rd.tensors:
            missing.append(key)
            continue
        keys.append((key, name, m.dtype))
        named[name] = m
    if missing:
        raise MissingTensorError(
            f"{where}: its 'mask' entry names {len(missing)} tensors the model does not have, "
            f"e.g. {missing[:5]}"
        )
    wrong = [
        f"{n}: mask {tuple(m.shape)} vs weight {tuple(rd.tensors[n].shape)}"
        for n, m in named.items()
        if m.shape != rd.tensors[n].shape
    ]
    if wrong:
        raise MaskShapeError(
            f"{where}: {len(wrong)} masks of its 'mask' entry differ in shape, e.g. " + "; ".join(wrong[:5])
        )
    compare_masks(
        rd.masks,
        named,
        {n: rd.tensors[n].shape for n in sorted({*rd.masks, *named})},
        f"{where}: its 'mask' entry and its weight_mask tensors",
    )
    return mask_file_entry("mask", keys)


@register
class TicketSeries:
    """A folder of ticket checkpoints ``{k}model_SA_best.pth.tar`` (one per IMP round), init as rewind point."""

    name = "ticket-series"
    priority = 15

    def detect(self, source: Path, **options: Any) -> None:
        """Accept a folder of numbered ticket checkpoints."""
        if not source.is_dir():
            raise AdapterDeclined(
                "not a directory (an IMP ticket series is a folder of {k}model_SA_best.pth.tar)"
            )
        if not series_files(source)[0]:
            raise AdapterDeclined("no {k}model_SA_best.pth.tar or {k}checkpoint.pth.tar files in the folder")

    def load(
        self,
        source: Path,
        *,
        name: str | None = None,
        include_embeddings: bool = False,
        allow_pickle: bool = False,
        workers: int = 1,
        **_: Any,
    ) -> ParameterSet:
        """Read the folder as a recorded flow (see the module docstring); ``workers`` > 1 reads its files
        in that many processes at once (the same store results)."""
        files, skipped = series_files(source)
        if not files:
            raise AdapterDeclined("no {k}model_SA_best.pth.tar or {k}checkpoint.pth.tar files in the folder")
        states = sorted(files)
        gaps = sorted(set(range(states[0], states[-1] + 1)) - set(states))
        if gaps or states[0] != 0:
            warnings.warn(
                f"{source}: IMP states {gaps or [0]} are missing; rounds are the states present, "
                f"{states} (recorded in metric 'state')",
                UserWarning,
                stacklevel=2,
            )
        for p in skipped:
            log.info(
                "%s: state also saved as %s; reading %s",
                source,
                p.name,
                files[int(FILE_RE.match(p.name)[1])].name,
            )

        rounds: list[RoundData] = []
        rewind = rewind_layout = None
        rewind_from, rewind_differs = None, []
        mask_files: list[dict | None] = []
        results: dict[str, Any] = {}
        prefixes: set[str] = set()
        hashes: dict[str, str] = {}
        for k, (obj, digest) in zip(
            states, _read_files([files[k] for k in states], allow_pickle, workers), strict=True
        ):
            path = files[k]
            hashes[str(path.resolve())] = digest
            if is_state_dict(obj):  # a bare state dict (e.g. from a whole-model pickle): no metadata
                obj = {"state_dict": obj}
            if not isinstance(obj, Mapping) or not is_state_dict(obj.get("state_dict")):
                raise CorruptCheckpointError(
                    f"{path}: not an IMP ticket checkpoint (no 'state_dict' of tensors)"
                )
            if (state := as_float(obj.get("state"))) is not None and state != k:
                raise CorruptCheckpointError(
                    f"{path}: the file name says state {k}, its 'state' entry {obj['state']!r}"
                )
            sd = obj["state_dict"]
            prefix = common_prefix(sd)
            prefixes.add(prefix)
            tensors, masks, layout = split_pruned(sd, prefix)
            metrics = {m: v for m in METRICS if (v := as_float(obj.get(m))) is not None}
            rd = RoundData(tensors, masks, {}, layout, {"state": float(k), **metrics})
            mask_files.append(_mask_entry(obj, rd, prefix, str(path)))
            rounds.append(rd)
            if "result" in obj:
                results[str(k)] = plain_json(obj["result"])
            init = obj.get("init_weight")
            if is_state_dict(init):
                if rewind is None:
                    rewind, rewind_layout = rewind_from_state_dict(init)
                    rewind_from, first_init = k, init
                elif list(init) != list(first_init) or any(
                    not (a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
                    for a, b in zip(init.values(), first_init.values(), strict=True)
                ):
                    rewind_differs.append(k)
        if rewind_differs:
            warnings.warn(
                f"{source}: the init_weight of states {rewind_differs} differs from that of state "
                f"{rewind_from}; the store keeps state {rewind_from}'s",
                UserWarning,
                stacklevel=2,
            )

        arch, extra = "generic", {}
        try:
            arch, stem, order = match_resnet_backbone(rounds[0].tensors)
            rounds[0].tensors = {n: rounds[0].tensors[n] for n in order}
            extra = {
                "stem": stem,
                "head": json.dumps(head_spec({n: t.shape for n, t in rounds[0].tensors.items()})),
            }
        except (AdapterDeclined, NotImplementedError):
            pass
        if any(m is not None for m in mask_files):
            extra["mask_files"] = json.dumps(mask_files)
        return make_parameter_set(
            rounds,
            adapter=self.name,
            architecture=arch,
            sources=[files[k] for k in states],
            sha256s=hashes,
            name=name or source.name,
            include_embeddings=include_embeddings,
            rewind=rewind,
            rewind_layout=rewind_layout,
            flow_attrs={"layout": "imp-ticket-series", "states": states},
            extra_attrs={
                **extra,
                "source": str(source.resolve()),
                "files": json.dumps([files[k].name for k in states]),
                "skipped_files": json.dumps([p.name for p in skipped]),
                "key_prefix": "" if len(prefixes) != 1 else prefixes.pop(),
                "rewind_from_state": -1 if rewind_from is None else rewind_from,
                "results": json.dumps(results),
            },
        )

    def build_module(self, pset: ParameterSet) -> torch.nn.Module:
        """The torchvision ResNet of the stored architecture (random init)."""
        arch = str(pset.attrs["architecture"])
        if not arch.startswith("resnet"):
            raise NotImplementedError(f"cannot build a module for architecture {arch!r}")
        return build_resnet_backbone(
            arch, str(pset.attrs.get("stem", "imagenet")), json.loads(pset.attrs["head"])
        )
