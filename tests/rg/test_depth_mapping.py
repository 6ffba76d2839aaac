"""Masks mapped across depth: known block maps, drop-then-replicate round trips, names, shapes, densities,
and named errors on networks that cannot be mapped."""

from __future__ import annotations

import pytest
import torch

from rganalysis.errors import InvalidParameterError
from rganalysis.rg.depth_mapping import (
    ArchitectureMismatchError,
    block_map,
    block_structure,
    map_masks,
)
from rganalysis.train.resnets import digits_resnet, resnet_prunable


def _shapes(model):
    return {k: tuple(p.shape) for k, p in model.named_parameters() if k in resnet_prunable(model)}


def _random_masks(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(s, generator=g) < 0.3 + 0.05 * i for i, (k, s) in enumerate(_shapes(model).items())}


@pytest.mark.parametrize(
    "n, n_t, nearest, elt",
    [
        (4, 2, [0, 2], [0, 1]),
        (2, 4, [0, 1, 1, 1], [0, 1, 1, 1]),
        (3, 2, [0, 2], [0, 1]),
        (2, 3, [0, 1, 1], [0, 1, 1]),
        (3, 4, [0, 1, 2, 2], [0, 1, 2, 2]),
        (4, 3, [0, 1, 3], [0, 1, 2]),
        (4, 4, [0, 1, 2, 3], [0, 1, 2, 3]),
        (5, 1, [0], [0]),
    ],
)
def test_block_maps_known(n, n_t, nearest, elt):
    assert block_map(n, n_t) == nearest
    assert block_map(n, n_t, "elt") == elt


def test_block_structure_of_the_family():
    stages, outside = block_structure(resnet_prunable(digits_resnet(3, 8)))
    assert stages == {"stages.0": 3, "stages.1": 3}
    assert outside == ["stem.weight", "head.weight"]


@pytest.mark.parametrize("rule, kept", [("nearest", [0, 2, 2, 2]), ("elt", [0, 1, 1, 1])])
def test_drop_then_replicate_is_exact(rule, kept):
    deep, shallow = digits_resnet(4, 8), digits_resnet(2, 8, seed=1)
    src = _random_masks(deep)
    down = map_masks(src, _shapes(shallow), rule=rule)
    back = map_masks(down, _shapes(deep), rule=rule)
    assert list(back) == list(_shapes(deep))
    for s in (0, 1):
        for j, i in enumerate(kept):
            for rest in ("conv1.weight", "conv2.weight"):
                assert torch.equal(back[f"stages.{s}.{j}.{rest}"], src[f"stages.{s}.{i}.{rest}"])
    assert torch.equal(back["stages.1.0.downsample.weight"], src["stages.1.0.downsample.weight"])
    for k in ("stem.weight", "head.weight"):
        assert torch.equal(back[k], src[k])
    assert all(m.dtype == torch.bool for m in back.values())


def test_names_shapes_and_layer_densities_preserved():
    src_model, tgt_model = digits_resnet(3, 8), digits_resnet(4, 8)
    src = _random_masks(src_model)
    out = map_masks(src, _shapes(tgt_model))
    assert {k: tuple(v.shape) for k, v in out.items()} == _shapes(tgt_model)
    # target block j of 4 copies source block [0, 1, 2, 2][j] of 3: each layer keeps its source's density
    for s in (0, 1):
        for j, i in enumerate([0, 1, 2, 2]):
            a, b = out[f"stages.{s}.{j}.conv2.weight"], src[f"stages.{s}.{i}.conv2.weight"]
            assert a.float().mean() == b.float().mean()
    out["stem.weight"][:] = False  # a copy, not a view of the source
    assert src["stem.weight"].any()


def test_torchvision_resnets_map_both_ways():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        r18, r34 = torchvision.models.resnet18(), torchvision.models.resnet34()
    shapes = {m: {k: tuple(p.shape) for k, p in m.named_parameters() if p.dim() > 1} for m in (r18, r34)}
    src = {k: torch.ones(s, dtype=torch.bool) for k, s in shapes[r34].items()}
    src["layer3.3.conv1.weight"][0] = False
    out = map_masks(src, shapes[r18])
    assert set(out) == set(shapes[r18])
    # layer3 has 6 blocks in ResNet-34, 2 in ResNet-18: target block 1 copies block 1 + floor(0.5 * 5) = 3
    assert not out["layer3.1.conv1.weight"][0].any() and out["layer3.1.conv1.weight"][1:].all()
    assert out["layer3.0.conv1.weight"].all()
    up = map_masks(out, shapes[r34], rule="elt")
    assert set(up) == set(shapes[r34])


def test_incompatible_architectures_fail_with_named_errors():
    narrow, wide = digits_resnet(2, 8), digits_resnet(2, 16)
    with pytest.raises(ArchitectureMismatchError, match="would copy"):
        map_masks(_random_masks(narrow), _shapes(wide))
    one = digits_resnet(1, 8)
    # stage 1's only block is the strided one: it cannot fill a later position
    with pytest.raises(ArchitectureMismatchError, match="stages.1.1.conv1.weight"):
        map_masks(_random_masks(one), _shapes(digits_resnet(2, 8)))
    src = _random_masks(narrow)
    del src["head.weight"]
    with pytest.raises(ArchitectureMismatchError, match="no source tensor head.weight"):
        map_masks(src, _shapes(narrow))
    single = {k: v for k, v in _random_masks(narrow).items() if not k.startswith("stages.1")}
    with pytest.raises(ArchitectureMismatchError, match="different stages"):
        map_masks(single, _shapes(narrow))
    with pytest.raises(InvalidParameterError, match="unknown depth rule"):
        map_masks(_random_masks(narrow), _shapes(narrow), rule="stretch")
