"""Any other HuggingFace ``save_pretrained`` folder (``config.json`` with ``model.safetensors`` or
``pytorch_model.bin``, or their ``*.index.json`` shards): GPT-2, DistilBERT, ALBERT, T5, ...  The weights
are read as the generic adapter reads a state dict (kinds from names and shapes, depth from the forward
order of the keys); the folder's config is kept (``attrs["config"]``), and ``build_module`` makes the
model it names.  Folders with BERT's layout are :mod:`rganalysis.adapters.hf_bert`'s (tried first).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from rganalysis.adapters import register
from rganalysis.adapters.generic import forward_order
from rganalysis.adapters.hf_bert import BERT_LAYOUT_TYPES, _read_weights, weight_files
from rganalysis.errors import AdapterDeclined, CorruptCheckpointError
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.parameter_set import ParameterSet

__all__ = ["HFTransformers"]


def _config(source: Path) -> dict:
    if not source.is_dir():
        raise AdapterDeclined("not a directory (a HuggingFace model is a folder with config.json)")
    cfg = source / "config.json"
    if not cfg.is_file():
        raise AdapterDeclined("no config.json in the folder")
    try:
        config = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise CorruptCheckpointError(f"{cfg}: invalid JSON ({e})") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise AdapterDeclined("config.json names no model_type")
    if config["model_type"] in BERT_LAYOUT_TYPES:
        raise AdapterDeclined(f"model_type {config['model_type']!r} has BERT's layout: the hf-bert adapter's")
    return config


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
        keys = list(rd.tensors)
        if files[0].suffix == ".safetensors" or (len(keys) > 2 and keys == sorted(keys)):
            rd.tensors = {k: rd.tensors[k] for k in forward_order(keys)}
            attrs["depth_order"] = "inferred: the keys were sorted (natural order, heads last)"
            warnings.warn(
                f"{source.name}: its weight file lists the keys in alphabetical order, not the modules' forward "
                "order, so layer depth is inferred (natural order of the names, heads last); `rganalysis info` "
                "lists it",
                UserWarning,
                stacklevel=2,
            )
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
        import transformers

        config = json.loads(pset.attrs["config"])
        cfg = transformers.AutoConfig.for_model(
            config["model_type"], **{k: v for k, v in config.items() if k != "model_type"}
        )
        cls = getattr(transformers, str(pset.attrs["architecture"]), None)
        return cls(cfg) if cls is not None else transformers.AutoModel.from_config(cfg)
