"""open_lth lottery runs (facebookresearch/open_lth): a run directory ``level_0 ... level_N``, each with
``main/mask.pth``, ``main/model_ep{E}_it{I}.pth`` and ``main/sparsity_report.json``, read as a recorded
IMP flow of N+1 rounds.

* round L = the last training step of level L (the largest (E, I), compared numerically), with
  ``mask.pth`` (name -> int 0/1 tensor) as its masks;
* ``level_0/main/model_ep0_it0.pth`` (the initialisation) is the rewind point;
* ``sparsity_report.json`` (``{"total": ..., "unpruned": ...}``) must agree with ``mask.pth``
  (:class:`~rganalysis.errors.SparsityReportMismatchError` otherwise);
* from level 1 on open_lth saves its ``PrunedModel`` wrapper: keys ``model.<name>`` plus float32 buffers
  ``mask_<name with '.' replaced by '___'>``.  They are unwrapped (the buffers must equal ``mask.pth``)
  and :meth:`~rganalysis.store.ParameterSet.to_state_dict` gives the wrapped keys back;
* ``main/logger`` (``name,step,value`` lines), when present, gives per-round metrics (the value at the
  last step), and ``main/hparams.log`` the open_lth model name.

open_lth's architectures (``cifar_resnet_*``, ``cifar_vgg_*``, ``mnist_lenet_*``) are not torchvision's:
they are read as generic models (kinds from shapes and names).  A directory holding one
``replicate_*`` run (or a ``lottery_*`` folder with one replicate) is read as that run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rganalysis.adapters import register
from rganalysis.adapters._common import (
    compare_masks,
    mask_file_dict,
    mask_file_entry,
    rewind_from_state_dict,
    rewind_state_dict,
)
from rganalysis.errors import AdapterDeclined, CorruptCheckpointError, SparsityReportMismatchError
from rganalysis.store.checkpoint import (
    check_masks,
    is_state_dict,
    load_checkpoint,
    make_parameter_set,
    split_pruned,
)
from rganalysis.store.parameter_set import MASK, PARAM, LayoutEntry, ParameterSet, RoundData

LEVEL_RE = re.compile(r"^level_(\d+)$")
MODEL_RE = re.compile(r"^model_ep(\d+)_it(\d+)\.pth$")
MODEL_PREFIX, MASK_PREFIX = "model.", "mask_"

__all__ = ["OpenLTH", "mask_file_dict", "mask_name", "rewind_state_dict", "unwrap_pruned_model"]


def mask_name(name: str) -> str:
    """open_lth's ``PrunedModel.to_mask_name``: ``blocks.0.conv1.weight`` -> ``mask_blocks___0___conv1___weight``."""
    return MASK_PREFIX + name.replace(".", "___")


def _levels(d: Path) -> dict[int, Path]:
    out = {}
    for p in d.iterdir() if d.is_dir() else ():
        m = LEVEL_RE.match(p.name)
        if m and (p / "main").is_dir():
            out[int(m.group(1))] = p / "main"
    return out


def run_directory(source: Path) -> Path:
    """The directory holding ``level_*``: ``source`` itself, or its single ``replicate_*`` run."""
    if not source.is_dir():
        raise AdapterDeclined("not a directory (an open_lth run is a folder of level_*/main)")
    if _levels(source):
        return source
    reps = sorted(p for p in source.glob("replicate_*") if _levels(p))
    if len(reps) == 1:
        return reps[0]
    if reps:
        raise AdapterDeclined(
            f"holds {len(reps)} open_lth replicates ({', '.join(p.name for p in reps)}); point at one of them"
        )
    raise AdapterDeclined("no level_*/main folders (not an open_lth run)")


def unwrap_pruned_model(sd: Mapping[str, torch.Tensor]) -> tuple[RoundData, dict[str, torch.Tensor]]:
    """Split an open_lth model file into RoundData (canonical tensors, layout) and the ``PrunedModel``
    mask buffers (canonical name -> float tensor; empty for an unwrapped model).  The layout maps
    ``model.X`` to tensor ``X`` and each ``mask_...`` buffer to the mask of its tensor (role ``mask``,
    with the buffer's dtype), so ``to_state_dict()`` gives the file's keys back."""
    wrapped = any(k.startswith(MODEL_PREFIX) for k in sd) and all(
        k.startswith((MODEL_PREFIX, MASK_PREFIX)) for k in sd
    )
    if not wrapped:
        tensors, masks, layout = split_pruned(sd)
        return RoundData(tensors, masks, {}, layout), {}
    tensors, buffers, layout = {}, {}, []
    for key, t in sd.items():
        if key.startswith(MASK_PREFIX):
            name = key[len(MASK_PREFIX) :].replace("___", ".")
            buffers[name] = t
            layout.append(LayoutEntry(key, MASK, name, str(t.dtype).removeprefix("torch.")))
        else:
            name = key[len(MODEL_PREFIX) :]
            tensors[name] = t
            layout.append(LayoutEntry(key, PARAM, name))
    return RoundData(tensors, {}, {}, layout), buffers


def _read_state_dict(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    obj = load_checkpoint(path, allow_pickle=allow_pickle)
    if not is_state_dict(obj):
        raise CorruptCheckpointError(f"{path}: expected a dict of tensors")
    return dict(obj)


def _check_report(path: Path, mask: Mapping[str, torch.Tensor]) -> None:
    try:
        report = json.loads(path.read_text())
        total, unpruned = float(report["total"]), float(report["unpruned"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CorruptCheckpointError(
            f"{path}: not an open_lth sparsity report ({type(e).__name__}: {e})"
        ) from None
    n = sum(m.numel() for m in mask.values())
    kept = sum(int(m.bool().sum()) for m in mask.values())
    if abs(total - n) > 0.5 or abs(unpruned - kept) > 0.5:
        raise SparsityReportMismatchError(
            f"{path} says {unpruned:g} of {total:g} weights are unpruned; its mask.pth keeps {kept} of {n}"
        )


def _logger_metrics(path: Path) -> dict[str, float]:
    """open_lth's ``logger`` file (``name,step,value`` per line): each metric's value at its last step."""
    last: dict[str, tuple[int, float]] = {}
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(",")
        if len(parts) != 3:
            continue
        try:
            step, value = int(parts[1]), float(parts[2])
        except ValueError:
            continue
        if parts[0] not in last or step >= last[parts[0]][0]:
            last[parts[0]] = (step, value)
    return {k: v for k, (_, v) in last.items()}


def _model_name(main: Path) -> str:
    p = main / "hparams.log"
    m = re.search(r"model_name\s*=>\s*(\S+)", p.read_text()) if p.is_file() else None
    return m.group(1) if m else ""


@register
class OpenLTH:
    """An open_lth run directory: its levels as the rounds of a recorded flow, masks and rewind point."""

    name = "open-lth"
    priority = 15

    def detect(self, source: Path, **options: Any) -> None:
        """Accept an open_lth run directory (level_N folders)."""
        run_directory(source)

    def load(
        self,
        source: Path,
        *,
        name: str | None = None,
        include_embeddings: bool = False,
        allow_pickle: bool = False,
        **_: Any,
    ) -> ParameterSet:
        """Read the run as a recorded flow (see the module docstring)."""
        run = run_directory(source)
        levels = _levels(run)
        missing = sorted(set(range(max(levels) + 1)) - set(levels))
        if missing:
            raise CorruptCheckpointError(f"{run}: levels {missing} are missing (found {sorted(levels)})")
        rounds: list[RoundData] = []
        mask_files: list[dict] = []
        steps: list[str] = []
        sources: list[Path] = []
        for level in sorted(levels):
            main = levels[level]
            mpath = main / "mask.pth"
            if not mpath.is_file():
                raise CorruptCheckpointError(f"{main}: no mask.pth")
            mask = _read_state_dict(mpath, allow_pickle)
            if (main / "sparsity_report.json").is_file():
                _check_report(main / "sparsity_report.json", mask)
            models = [(int(m[1]), int(m[2]), p) for p in main.iterdir() if (m := MODEL_RE.match(p.name))]
            if not models:
                raise CorruptCheckpointError(f"{main}: no model_ep*_it*.pth")
            ep, it, mfile = max(models)
            rd, buffers = unwrap_pruned_model(_read_state_dict(mfile, allow_pickle))
            check_masks(rd.tensors, mask, f"{mpath} (for {mfile.name}): ")
            if rd.masks:  # a weight_orig/weight_mask file is not open_lth's; its masks must agree anyway
                buffers = {**rd.masks, **buffers}
            if buffers:
                check_masks(rd.tensors, buffers, f"{mfile} (its mask buffers): ")
                compare_masks(
                    mask, buffers, {n: t.shape for n, t in rd.tensors.items()}, f"{mfile} and {mpath}"
                )
            rd.masks = dict(mask)
            rd.metrics = {
                "level": float(level),
                "epoch": float(ep),
                "iteration": float(it),
                **_logger_metrics(main / "logger"),
            }
            rounds.append(rd)
            mask_files.append(mask_file_entry("mask.pth", [(k, k, t.dtype) for k, t in mask.items()]))
            steps.append(mfile.name)
            sources += [mpath, mfile]

        rewind = rewind_layout = None
        init = levels[0] / "model_ep0_it0.pth"
        if init.is_file():
            rd0, buffers0 = unwrap_pruned_model(_read_state_dict(init, allow_pickle))
            rename = {e.key: e.name for e in rd0.layout if e.role == PARAM}
            rewind, rewind_layout = rewind_from_state_dict(
                {
                    e.key: (
                        rd0.tensors[e.name]
                        if e.role == PARAM
                        else buffers0.get(e.name, rd0.masks.get(e.name))
                    )
                    for e in rd0.layout
                },
                prefixes=(),
                rename=rename,
            )
            sources.append(init)
        return make_parameter_set(
            rounds,
            adapter=self.name,
            architecture="generic",
            sources=sources,
            name=name or run.name,
            include_embeddings=include_embeddings,
            rewind=rewind,
            rewind_layout=rewind_layout,
            flow_attrs={"layout": "open_lth", "levels": len(rounds)},
            extra_attrs={
                "source": str(run.resolve()),
                "open_lth_model": _model_name(levels[0]),
                "model_files": json.dumps(steps),
                "mask_files": json.dumps(mask_files),
                "rewind_file": str(init.relative_to(run)) if init.is_file() else "",
            },
        )
