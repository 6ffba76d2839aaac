"""Any state dict of conv/linear/norm/embedding tensors that no architecture-specific adapter
claims: kinds come from shapes and names, depth from key order."""

from __future__ import annotations

from pathlib import Path

from rganalysis.adapters import register
from rganalysis.adapters._common import checkpoint_attrs, read_state_dict_file
from rganalysis.errors import AdapterDeclined, UnknownArchitectureError
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.layers import classify
from rganalysis.store.parameter_set import ParameterSet


@register
class Generic:
    name = "generic"
    priority = 90

    def detect(self, source: Path, **options) -> None:
        sd, _, prefix = read_state_dict_file(source, options.get("allow_pickle", False))
        kinds = {
            classify(k, tuple(v.shape), floating=v.is_floating_point())
            for k, v in single_round(sd, prefix).tensors.items()
        }
        if not kinds & {"conv", "linear", "embedding"}:
            raise AdapterDeclined("no conv, linear or embedding weights among its tensors")

    def load(
        self,
        source: Path,
        *,
        name: str | None = None,
        include_embeddings: bool = False,
        allow_pickle: bool = False,
        architecture: str | None = None,
        **_,
    ) -> ParameterSet:
        if architecture not in (None, "generic"):
            raise UnknownArchitectureError(
                f"unknown architecture {architecture!r}: the generic adapter reads any state dict but does not know it"
            )
        sd, wrapper, prefix = read_state_dict_file(source, allow_pickle)
        return make_parameter_set(
            [single_round(sd, prefix)],
            adapter=self.name,
            architecture="generic",
            sources=[source],
            name=name,
            include_embeddings=include_embeddings,
            extra_attrs=checkpoint_attrs(wrapper, prefix),
        )
