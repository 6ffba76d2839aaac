"""torchvision ResNet-18/34/50/101/152 state dicts (``.pth``, ``.pt``, ``.safetensors``), with or
without the ``module.`` prefix of DataParallel, bare or wrapped under ``state_dict``/``model``."""

from __future__ import annotations

from pathlib import Path

import torch

from rganalysis.adapters import register
from rganalysis.adapters._common import (
    build_resnet,
    checkpoint_attrs,
    match_resnet,
    read_checkpoint_object,
    read_state_dict_file,
)
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.parameter_set import ParameterSet


@register
class TorchvisionResNet:
    name = "torchvision-resnet"
    priority = 20

    def detect(self, source: Path, **options) -> None:
        sd, _, prefix = read_state_dict_file(source, options.get("allow_pickle", False))
        rd = single_round(sd, prefix)
        if rd.masks:
            from rganalysis.errors import AdapterDeclined

            raise AdapterDeclined("holds weight_orig/weight_mask pairs (the 'pruned' adapter reads those)")
        match_resnet(rd.tensors)

    def load(
        self,
        source: Path,
        *,
        name: str | None = None,
        include_embeddings: bool = False,
        allow_pickle: bool = False,
        **_,
    ) -> ParameterSet:
        sd, wrapper, prefix = read_state_dict_file(source, allow_pickle)
        rd = single_round(sd, prefix)
        arch, num_classes, order = match_resnet(rd.tensors)
        rd.tensors = {k: rd.tensors[k] for k in order}
        return make_parameter_set(
            [rd],
            adapter=self.name,
            architecture=arch,
            sources=[source],
            name=name,
            extra_attrs={
                "num_classes": num_classes,
                **checkpoint_attrs(wrapper, prefix, read_checkpoint_object(source, allow_pickle)),
            },
        )

    def build_module(self, pset: ParameterSet) -> torch.nn.Module:
        return build_resnet(pset.attrs["architecture"], int(pset.attrs["num_classes"]))
