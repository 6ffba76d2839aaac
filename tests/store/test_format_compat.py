"""Stores written by format version 1 (tests/data, made by the writer as of cf1bfec) still load
bit-exactly, and a store re-saved today keeps every bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.store.index import FORMAT_VERSION
from rganalysis.store.tensors import to_numpy

DATA = Path(__file__).resolve().parents[1] / "data"
NAMES = ("v1-model", "v1-flow", "v1-recorded")


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "v1-expected.npz") as z:
        return {k: z[k] for k in z.files}


def _check_values(p: rganalysis.ParameterSet, name: str, expected: dict[str, np.ndarray]) -> int:
    n = 0
    for key, want in expected.items():
        parts = key.split("/")
        if parts[0] != name:
            continue
        if parts[1] == "mask":
            got = p.mask(parts[3], int(parts[2]))
        elif parts[1] == "extra":
            got = p.extra(parts[3], int(parts[2]))
        elif parts[1] == "rewind":
            got = p.rewind_tensor(parts[2])
        else:
            got = p.tensor(parts[2], int(parts[1]))
        a = to_numpy(got)
        assert a.dtype == want.dtype and a.shape == want.shape, key
        assert a.tobytes() == want.tobytes(), key  # bit-exact (-0.0, bfloat16 bits)
        n += 1
    return n


@pytest.mark.parametrize("name", NAMES)
def test_format_1_stores_load_bit_exactly(name, expected):
    with rganalysis.load(DATA / f"{name}.h5") as p:
        assert p._reader.index.version == 1
        assert _check_values(p, name, expected) > 0
        for n in p.masked_names():
            masks = p.read_masks(n)
            assert masks.shape == (p.n_rounds, *p.info[n].shape) and masks.dtype == torch.bool
            for r in range(p.n_rounds):
                assert torch.equal(masks[r], p.mask(n, r))
        layers, table = p.density_table()
        assert table.shape == (p.n_rounds, len(layers))


def test_format_1_details(expected):
    with rganalysis.load(DATA / "v1-model.h5") as p:
        assert p.info["lin.bias"].dtype == torch.bfloat16 and p.info["flags"].dtype == torch.bool
        sd = p.to_state_dict()
        assert list(sd)[3:5] == ["lin.weight_orig", "lin.weight_mask"]
        assert sd["lin.weight_mask"].dtype == torch.float32
        assert p.extra_keys() == ["key_encoder.fc.weight"]
    with rganalysis.load(DATA / "v1-flow.h5") as p:
        assert p.n_rounds == 6 and p.masks_nested is True and p.flow_attrs["kind"] == "computed"
        g = p.global_density().values
        assert g[0] == 1.0 and 0.15 < g[-1] < 0.2  # 0.7 ** 5 = 0.168 of the pruned weights
    with rganalysis.load(DATA / "v1-recorded.h5") as p:
        assert p.masks_nested is False
        assert p.metrics["epoch"] == [10.0, 20.0, 30.0] and np.isnan(p.metrics["best_sa"][2])
        assert p.weight_runs("l1.weight") == [(0, 1), (1, 2), (2, 3)]
        assert p.weight_runs("l1.bias") == [(0, 2), (2, 3)]


@pytest.mark.parametrize("name", NAMES)
def test_format_1_resaved_as_current_keeps_every_bit(name, expected, tmp_path):
    with rganalysis.load(DATA / f"{name}.h5") as p:
        p.save(tmp_path / "new.h5", progress=False)
        nested = p.masks_nested
    with rganalysis.load(tmp_path / "new.h5") as q:
        assert q._reader.index.version == FORMAT_VERSION
        assert _check_values(q, name, expected) > 0
        assert q.masks_nested is nested
        encodings = {m.encoding for m in q._reader.index.masks.values()}
        assert encodings <= ({"survival"} if nested else {"per_round", "survival"})
