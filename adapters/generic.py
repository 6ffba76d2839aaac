"""Any state dict of conv/linear/norm/embedding tensors that no architecture-specific adapter
claims: kinds come from shapes and names, depth from key order.

A state dict's key order is its modules' forward order, except where a file lists its keys sorted (every
``.safetensors`` file does): then ``features.10`` comes before ``features.2`` and ``classifier`` before
``features``.  Such keys are put in :func:`forward_order`, with a warning that depth is inferred.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from rganalysis.adapters import register
from rganalysis.adapters._common import checkpoint_attrs, read_checkpoint_object, read_state_dict_file
from rganalysis.errors import AdapterDeclined, UnknownArchitectureError
from rganalysis.store.checkpoint import RoundData, make_parameter_set, single_round
from rganalysis.store.layers import classify, leaf, module_path, natural_key
from rganalysis.store.parameter_set import ParameterSet

#: top-level modules that are a network's output heads: last in :func:`forward_order`
HEAD_MODULES = frozenset(
    {"classifier", "cls", "fc", "head", "heads", "lm_head", "logits", "out", "output", "pooler", "score"}
)


#: a module's tensors in the order torch registers them
_LEAF_ORDER = {
    k: i for i, k in enumerate(("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
}


def forward_order(keys: Iterable[str]) -> list[str]:
    """Keys listed alphabetically, in a guess of forward order: the natural order of the module names
    (``features.2`` before ``features.10``), within a module weight, bias, then the norm buffers, and the
    top-level modules named as heads (:data:`HEAD_MODULES`, after any prefix all keys share) last."""
    keys = list(keys)
    parts = [k.split(".") for k in keys]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    return sorted(
        keys,
        key=lambda k: (
            k.split(".")[shared] in HEAD_MODULES,
            natural_key(module_path(k)),
            _LEAF_ORDER.get(leaf(k), len(_LEAF_ORDER)),
            leaf(k),
        ),
    )


def _sorted_keys(source: Path, keys: list[str]) -> bool:
    return source.suffix == ".safetensors" or (len(keys) > 2 and keys == sorted(keys))


def infer_depth_order(rd: RoundData, source: Path, weight_file: Path, attrs: dict) -> None:
    """Put ``rd``'s tensors in :func:`forward_order` when ``weight_file`` lists its keys sorted, noting it in
    ``attrs["depth_order"]`` with a warning naming ``source``; else leave them in the file's order."""
    if not _sorted_keys(weight_file, list(rd.tensors)):
        return
    rd.tensors = {k: rd.tensors[k] for k in forward_order(rd.tensors)}
    attrs["depth_order"] = "inferred: the keys were sorted (natural order, heads last)"
    warnings.warn(
        f"{source.name}: its keys are in alphabetical order, not the modules' forward order, so layer "
        "depth is inferred (natural order of the names, heads such as classifier/fc/head last); "
        "`rganalysis info` lists it",
        UserWarning,
        stacklevel=3,
    )


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
        rd = single_round(sd, prefix)
        attrs = checkpoint_attrs(wrapper, prefix, read_checkpoint_object(source, allow_pickle))
        infer_depth_order(rd, source, source, attrs)
        return make_parameter_set(
            [rd],
            adapter=self.name,
            architecture="generic",
            sources=[source],
            name=name,
            include_embeddings=include_embeddings,
            extra_attrs=attrs,
        )
