"""How the format-version-1 stores in this folder were made (run once, at commit cf1bfec, before the
store writer changed; do not regenerate: running it today writes the *current* format).

    PYTHONPATH=. python tests/data/make_v1_stores.py tests/data

Writes ``v1-model.h5`` (a generic model: every stored dtype, a torch.nn.utils.prune layout, an extra
tensor), ``v1-flow.h5`` (a computed data-free IMP flow, 6 rounds), ``v1-recorded.h5`` (a recorded
flow with retrained weights, masks that are not nested, metrics and a rewind point) and
``v1-expected.npz``: every tensor and mask those stores must give back, as numpy arrays (bfloat16 as
its int16 bits), keyed ``FILE/round/NAME`` and ``FILE/mask/round/NAME``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set
from rganalysis.store.parameter_set import EXTRA, MASK, PARAM, LayoutEntry, ParameterSet, RoundData
from rganalysis.store.tensors import to_numpy


def model_set() -> ParameterSet:
    g = torch.Generator().manual_seed(17)
    w = torch.randn(6, 4, generator=g)
    w[0, 0] = -0.0
    mask = (torch.rand(6, 4, generator=g) > 0.4).float()
    tensors = {
        "conv.weight": torch.randn(4, 2, 3, 3, generator=g),
        "bn.weight": torch.rand(4, generator=g).half(),
        "bn.num_batches_tracked": torch.tensor(7),
        "lin.weight": w,
        "lin.bias": torch.randn(6, generator=g).to(torch.bfloat16),
        "head.weight": torch.randn(3, 6, generator=g, dtype=torch.float64),
        "flags": torch.tensor([True, False, True]),
        "ids": torch.arange(5, dtype=torch.int32),
    }
    layout = [LayoutEntry(k, PARAM, k) for k in tensors if k != "lin.weight"]
    layout.insert(3, LayoutEntry("lin.weight_orig", PARAM, "lin.weight"))
    layout.insert(4, LayoutEntry("lin.weight_mask", MASK, "lin.weight", "float32"))
    extras = {"key_encoder.fc.weight": torch.randn(2, 6, generator=g)}
    layout.append(LayoutEntry("key_encoder.fc.weight", EXTRA, "key_encoder.fc.weight"))
    rd = RoundData(tensors, {"lin.weight": mask}, extras, layout)
    return make_parameter_set([rd], adapter="generic", architecture="generic", sources=[], name="v1-model")


def flow_set() -> ParameterSet:
    g = torch.Generator().manual_seed(5)
    sd = {
        "a.weight": torch.randn(20, 12, generator=g),
        "a.bias": torch.zeros(20),
        "b.weight": torch.randn(8, 20, generator=g) * 0.5,
    }
    base = make_parameter_set(
        [RoundData(sd, layout=[LayoutEntry(k, PARAM, k) for k in sd])],
        adapter="generic",
        architecture="generic",
        sources=[],
        name="v1-flow",
    )
    return compute_flow(base, 5, 0.3, device="cpu", progress=False)


def recorded_set() -> ParameterSet:
    from rganalysis.store.parameter_set import build_info

    g = torch.Generator().manual_seed(3)
    w0 = {"l1.weight": torch.randn(5, 4, generator=g), "l1.bias": torch.randn(5, generator=g)}
    w1 = {"l1.weight": w0["l1.weight"] * 0.5}
    w2 = {"l1.weight": w0["l1.weight"] * 0.25, "l1.bias": w0["l1.bias"] + 1}
    m = [torch.ones(5, 4, dtype=torch.bool)]
    m.append(torch.rand(5, 4, generator=g) > 0.3)
    m.append(~m[1] | (torch.rand(5, 4, generator=g) > 0.8))  # revives weights: not nested
    rewind = {k: v + 0.125 for k, v in w0.items()}
    layout = [LayoutEntry(k, PARAM, k) for k in w0]
    return ParameterSet(
        build_info(w0),
        {0: w0, 1: w1, 2: w2},
        {"l1.weight": m},
        n_rounds=3,
        layouts=[layout] * 3,
        metrics={"best_sa": [90.0, 89.5, float("nan")], "epoch": [10, 20, 30]},
        rewind=rewind,
        rewind_layout=layout,
        attrs={"name": "v1-recorded", "adapter": "generic", "architecture": "generic"},
        flow_attrs={"kind": "recorded", "layout": "test"},
        validate=False,
    )


def expected(name: str, p: ParameterSet) -> dict[str, np.ndarray]:
    out = {}
    for r in range(p.n_rounds):
        for n in p.names:
            out[f"{name}/{r}/{n}"] = to_numpy(p.tensor(n, r))
        for n in p.masked_names():
            out[f"{name}/mask/{r}/{n}"] = to_numpy(p.mask(n, r))
        for k in p.extra_keys():
            out[f"{name}/extra/{r}/{k}"] = to_numpy(p.extra(k, r))
    for n, t in (p.rewind_state() or {}).items():
        out[f"{name}/rewind/{n}"] = to_numpy(t)
    return out


def main(folder: str) -> None:
    d = Path(folder)
    arrays: dict[str, np.ndarray] = {}
    for name, make in (("v1-model", model_set), ("v1-flow", flow_set), ("v1-recorded", recorded_set)):
        p = make()
        p.save(d / f"{name}.h5", force=True, progress=False)
        arrays.update(expected(name, p))
    np.savez(d / "v1-expected.npz", **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
