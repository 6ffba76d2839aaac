"""State dicts holding the ``torch.nn.utils.prune`` re-parametrisation (``*.weight_orig`` +
``*.weight_mask``), the form in which published lottery tickets are released.  The masks become
the store's masks; ``to_state_dict()`` gives the pairs back."""

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
from rganalysis.errors import AdapterDeclined
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.parameter_set import ParameterSet


@register
class Pruned:
    name = "pruned"
    priority = 10

    def detect(self, source: Path, **options) -> None:
        sd, _, _ = read_state_dict_file(source, options.get("allow_pickle", False))
        if not any(k.endswith("_orig") for k in sd) or not any(k.endswith("_mask") for k in sd):
            raise AdapterDeclined("no '*_orig' + '*_mask' pairs of torch.nn.utils.prune")

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
        try:
            arch, num_classes, order = match_resnet(rd.tensors)
            rd.tensors = {k: rd.tensors[k] for k in order}
            extra = {"num_classes": num_classes}
        except AdapterDeclined:
            arch, extra = "generic", {}
        return make_parameter_set(
            [rd],
            adapter=self.name,
            architecture=arch,
            sources=[source],
            name=name,
            include_embeddings=include_embeddings,
            extra_attrs={
                **extra,
                **checkpoint_attrs(wrapper, prefix, read_checkpoint_object(source, allow_pickle)),
            },
        )

    def build_module(self, pset: ParameterSet) -> torch.nn.Module:
        if not str(pset.attrs["architecture"]).startswith("resnet"):
            raise NotImplementedError(
                f"cannot build a module for architecture {pset.attrs['architecture']!r}"
            )
        return build_resnet(pset.attrs["architecture"], int(pset.attrs["num_classes"]))
