"""Any other HuggingFace ``save_pretrained`` folder (``config.json`` with ``model.safetensors`` or
``pytorch_model.bin``, or their ``*.index.json`` shards): GPT-2, DistilBERT, ALBERT, T5, ...  The weights
are read as the generic adapter reads a state dict (kinds from names and shapes); their depth order is the
module order of the model the config names (built on the meta device: no memory, no weights), since
safetensors files list their keys sorted (T5's decoder before its encoder, attention's ``k, o, q, v``);
where that model cannot be built or does not hold every key, the generic adapter's inferred order.  The
folder's config is kept (``attrs["config"]``), and ``build_module`` makes the model it names.  Folders
with BERT's layout are :mod:`rganalysis.adapters.hf_bert`'s (tried first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rganalysis.adapters import register
from rganalysis.adapters.generic import infer_depth_order
from rganalysis.adapters.hf_bert import (
    BERT_LAYOUT_TYPES,
    _read_weights,
    build_from_config,
    model_from_config,
    read_folder_config,
    weight_files,
)
from rganalysis.errors import AdapterDeclined
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.parameter_set import ParameterSet

__all__ = ["HFTransformers"]


def _config(source: Path) -> dict:
    config = read_folder_config(source)
    if not isinstance(config, dict) or not config.get("model_type"):
        raise AdapterDeclined("config.json names no model_type")
    if config["model_type"] in BERT_LAYOUT_TYPES:
        raise AdapterDeclined(f"model_type {config['model_type']!r} has BERT's layout: the hf-bert adapter's")
    return config


def _module_order(config: dict) -> tuple[list[str] | None, str]:
    """The state-dict keys of the model ``config`` names, in module order (built on the meta device), and
    the class's name; ``(None, "")`` when transformers cannot build it."""
    try:
        with torch.device("meta"):
            model = model_from_config(config, (config.get("architectures") or [None])[0])
        return list(model.state_dict(keep_vars=True)), type(model).__name__
    except Exception:  # any failure of a third-party constructor: fall back to the inferred order
        return None, ""


@register
class HFTransformers:
    """A HuggingFace folder of any model type but BERT's layout: its weights, in forward order, and config."""

    name = "hf-transformers"
    priority = 25

    def detect(self, source: Path, **options) -> None:
        _config(source)
        weight_files(source)

    def load(
        self,
        source: Path,
        *,
        name: str | None = None,
        include_embeddings: bool = False,
        allow_pickle: bool = False,
        **_: Any,
    ) -> ParameterSet:
        config = _config(source)
        files = weight_files(source)
        rd = single_round(_read_weights(files, allow_pickle))
        attrs: dict[str, Any] = {
            "config": json.dumps(config, sort_keys=True),
            "weights_file": files[0].name if len(files) == 1 else json.dumps([f.name for f in files]),
        }
        order, built = _module_order(config)
        if order is not None and set(rd.tensors) <= set(order):
            rank = {k: i for i, k in enumerate(order)}
            rd.tensors = dict(sorted(rd.tensors.items(), key=lambda kv: rank[kv[0]]))
            attrs["depth_order"] = f"the module order of transformers' {built}"
        else:
            infer_depth_order(rd, source, files[0], attrs)
        return make_parameter_set(
            [rd],
            adapter=self.name,
            architecture=(config.get("architectures") or [config["model_type"]])[0],
            sources=[*files, source / "config.json"],
            name=name or source.name,
            include_embeddings=include_embeddings,
            extra_attrs=attrs,
        )

    def build_module(self, pset: ParameterSet) -> torch.nn.Module:
        """The transformers model class named by the stored config (random init)."""
        return build_from_config(pset)
