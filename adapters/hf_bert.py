"""HuggingFace BERT directories (``config.json`` with ``model_type`` bert and ``model.safetensors``
or ``pytorch_model.bin``), including sentence-transformers folders such as all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rganalysis.checkpoint import load_checkpoint, make_parameter_set, single_round
from rganalysis.errors import AdapterDeclined, CorruptCheckpointError
from rganalysis.layers import natural_key
from rganalysis.store import ParameterSet

from . import register

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_config(source: Path) -> dict:
    if not source.is_dir():
        raise AdapterDeclined("not a directory (a HuggingFace model is a folder with config.json)")
    cfg = source / "config.json"
    if not cfg.is_file():
        raise AdapterDeclined("no config.json in the folder")
    try:
        config = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise CorruptCheckpointError(f"{cfg}: invalid JSON ({e})") from None
    if config.get("model_type") != "bert":
        raise AdapterDeclined(f"config.json has model_type {config.get('model_type')!r}, not 'bert'")
    return config


def weight_file(source: Path) -> Path:
    for f in WEIGHT_FILES:
        if (source / f).is_file():
            return source / f
    raise AdapterDeclined(f"none of {', '.join(WEIGHT_FILES)} in the folder")


def _module_order(source: Path, config: dict) -> list[str]:
    """State-dict key order of the architecture named in config.json (built on the meta device)."""
    try:
        import transformers

        hf_config = transformers.BertConfig.from_dict(config)
        arch = (config.get("architectures") or ["BertModel"])[0]
        cls = getattr(transformers, arch, transformers.BertModel)
        with torch.device("meta"):
            model = cls(hf_config)
        return list(model.state_dict(keep_vars=True))
    except Exception:  # noqa: BLE001 - ordering is a nicety; fall back to natural order
        return []


def order_keys(keys: list[str], reference: list[str]) -> list[str]:
    """``keys`` in the order of ``reference`` (without a ``bert.`` prefix mismatch mattering); keys the
    reference lacks go next to their longest dotted-prefix relative, else in natural order."""
    def strip(k: str) -> str:
        return k.removeprefix("bert.")

    pos = {strip(k): i for i, k in enumerate(reference)}

    def rank(k: str) -> tuple:
        s = strip(k)
        if s in pos:
            return (pos[s], 0, natural_key(k))
        parts = s.split(".")
        for n in range(len(parts) - 1, 0, -1):
            pre = ".".join(parts[:n]) + "."
            hits = [i for r, i in pos.items() if r.startswith(pre)]
            if hits:
                return (max(hits), 1, natural_key(k))
        return (len(pos), 1, natural_key(k))

    return sorted(keys, key=rank)


@register
class HFBert:
    name = "hf-bert"
    priority = 20

    def detect(self, source: Path, **options) -> None:
        read_config(source)
        weight_file(source)

    def load(self, source: Path, *, name: str | None = None, include_embeddings: bool = False,
             allow_pickle: bool = False, **_) -> ParameterSet:
        config = read_config(source)
        wf = weight_file(source)
        sd = load_checkpoint(wf, allow_pickle=allow_pickle)
        rd = single_round(sd)
        order = order_keys(list(rd.tensors), _module_order(source, config))
        rd.tensors = {k: rd.tensors[k] for k in order}
        arch = (config.get("architectures") or ["BertModel"])[0]
        return make_parameter_set(
            [rd], adapter=self.name, architecture=arch, sources=[wf, source / "config.json"],
            name=name or source.name, include_embeddings=include_embeddings,
            extra_attrs={"config": json.dumps(config, sort_keys=True), "weights_file": wf.name},
        )

    def build_module(self, pset: ParameterSet) -> torch.nn.Module:
        import transformers

        config = json.loads(pset.attrs["config"])
        cls = getattr(transformers, pset.attrs["architecture"], transformers.BertModel)
        return cls(transformers.BertConfig.from_dict(config))
