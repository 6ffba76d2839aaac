"""Coarse-graining: exact counts, the tie rule, agreement with a full-sort reference, dtypes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

import rganalysis.rg.coarse_graining as cg
from rganalysis.errors import (
    InvalidParameterError,
    MaskShapeError,
    MissingTensorError,
    NonBinaryMaskError,
)
from rganalysis.rg.coarse_graining import (
    SCOPES,
    coarse_grain,
    layer_scope,
    n_removed,
    register_scope,
    remove_smallest,
)
from rganalysis.store.state import State

AWKWARD = [(7,), (3, 5), (2, 3, 11), (1, 1, 1, 13), (17, 1), (1,)]


def reference(weights, masks, k):
    """Full sort: survivors ranked by (|w| in float64, layer position, flat index); drop the first k."""
    mags = torch.cat([w.detach().to(torch.float64).abs().reshape(-1) for w in weights])
    alive = torch.cat([m.reshape(-1) for m in masks])
    idx = torch.nonzero(alive).squeeze(1)
    order = torch.sort(mags[idx], stable=True).indices  # stable: ties stay in (layer, flat) order
    flat = alive.clone()
    flat[idx[order[:k]]] = False
    return list(torch.split(flat, [m.numel() for m in masks])), [m.shape for m in masks]


def as_list(out, shapes):
    return [o.view(s) for o, s in zip(out, shapes, strict=True)]


def random_layers(gen, shapes, dtypes, p_alive=0.7, kind="normal"):
    ws, ms = [], []
    for i, shape in enumerate(shapes):
        if kind == "normal":
            w = torch.randn(shape, generator=gen)
        elif kind == "ties":  # small integers: many exact ties, signed zeros
            w = torch.randint(-3, 4, shape, generator=gen).float()
        else:  # magnitudes over 60 decades, subnormals for float16/bfloat16
            w = torch.randn(shape, generator=gen) * 10.0 ** torch.randint(-30, 30, shape, generator=gen)
        ws.append(w.to(dtypes[i % len(dtypes)]))
        ms.append(torch.rand(shape, generator=gen) < p_alive)
    return ws, ms


def n_alive(masks):
    return sum(int(m.sum()) for m in masks)


# --- exact counts ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rate", "removed"), [(0.013, 1), (0.2, 18), (0.37, 34), (0.5, 46), (0.9, 83), (0.999, 92)]
)
def test_global_removes_exactly_round_rate_survivors(rate, removed):
    gen = torch.Generator().manual_seed(0)
    ws, ms = random_layers(gen, AWKWARD, [torch.float32])
    state = State(dict(zip("abcdef", ws, strict=True)), dict(zip("abcdef", ms, strict=True)))
    before = n_alive(ms)
    after = n_alive(coarse_grain(state, rate).masks.values())
    assert before == 92  # of 7 + 15 + 66 + 13 + 17 + 1 = 119 weights, with this seed
    assert before - after == removed == round(rate * before)


@pytest.mark.parametrize("rate", [0.1, 0.33, 0.5, 0.77])
def test_layer_scope_removes_round_rate_per_layer(rate):
    gen = torch.Generator().manual_seed(1)
    ws, ms = random_layers(gen, AWKWARD, [torch.float32], p_alive=0.9)
    names = [f"l{i}" for i in range(len(ws))]
    state = State(dict(zip(names, ws, strict=True)), dict(zip(names, ms, strict=True)))
    new = coarse_grain(state, rate, scope="layer")
    for n, m in zip(names, ms, strict=True):
        s = int(m.sum())
        assert s - int(new.masks[n].sum()) == round(rate * s), n


def test_n_removed_uses_python_round():
    assert n_removed(5, 0.5) == 2  # halves to even
    assert n_removed(7, 0.5) == 4
    assert n_removed(10, 0.26) == 3
    assert n_removed(0, 0.5) == 0


# --- agreement with the full-sort reference ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["normal", "ties", "wide-range"])
@pytest.mark.parametrize(
    "dtypes",
    [
        [torch.float32],
        [torch.float16],
        [torch.bfloat16],
        [torch.float32, torch.float16, torch.bfloat16],
        [torch.float64, torch.float32, torch.float16],
    ],
    ids=["f32", "f16", "bf16", "mixed", "with-f64"],
)
@pytest.mark.parametrize("path", ["gather", "histogram", "bracket", "bracket-missed"])
def test_matches_full_sort_reference_bit_for_bit(kind, dtypes, path, monkeypatch):
    if path.startswith("bracket"):  # the one-pass sample bracket even on tiny layers
        monkeypatch.setattr(cg, "SAMPLE_MIN", 1)
        monkeypatch.setattr(cg, "SAMPLE", 8)
    if path == "bracket-missed":  # a bracket 2 sampled ranks either side: often misses, falls back
        monkeypatch.setattr(cg, "SAMPLE_SIGMAS", 0.0)
    if path == "histogram":  # resolve the top bucket by a second histogram pass, never by gathering
        monkeypatch.setattr(cg, "GATHER_MIN", 0)
        monkeypatch.setattr(cg, "GATHER_FRACTION", 1 << 62)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{kind}{dtypes}".encode()))
    for trial in range(20):
        nl = int(torch.randint(1, 5, (1,), generator=gen))
        shapes = [
            tuple(
                int(x)
                for x in torch.randint(1, 30, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen)
            )
            for _ in range(nl)
        ]
        ws, ms = random_layers(
            gen, shapes, dtypes, p_alive=float(torch.rand(1, generator=gen)) * 0.8 + 0.2, kind=kind
        )
        s = n_alive(ms)
        k = int(torch.randint(0, s + 1, (1,), generator=gen))
        chunk = int(torch.randint(5, 300, (1,), generator=gen))  # many chunks: thread groups, tie walk
        ours = remove_smallest(ws, ms, k, chunk_size=chunk)
        ref, shapes_ = reference(ws, ms, k)
        for o, r, shape in zip(ours, ref, shapes_, strict=True):
            assert o.dtype == torch.bool and o.shape == shape
            assert torch.equal(o, r.view(shape)), (trial, k, chunk)
        assert n_alive(ours) == s - k


def test_default_chunking_matches_reference_on_a_larger_model():
    gen = torch.Generator().manual_seed(3)
    ws, ms = random_layers(gen, [(300, 1000), (5000,), (700, 3, 3), (1000, 10)], [torch.float32], p_alive=0.6)
    ms[1][:] = True  # one layer with a full mask (fast path)
    k = n_removed(n_alive(ms), 0.3)
    ours = remove_smallest(ws, ms, k)
    ref, shapes = reference(ws, ms, k)
    assert all(torch.equal(o, r.view(s)) for o, r, s in zip(ours, ref, shapes, strict=True))


# --- the tie rule -----------------------------------------------------------------------------------
def test_all_equal_weights_remove_in_layer_then_flat_order():
    ws = {"a": torch.ones(5), "b": torch.full((2, 3), -1.0), "c": torch.ones(3)}
    state = State.dense(ws)
    new = coarse_grain(state, 0.5)  # 14 survivors, round(7.0) = 7 go: all of a, then b[0, 0], b[0, 1]
    assert new.masks["a"].tolist() == [False] * 5
    assert new.masks["b"].tolist() == [[False, False, True], [True, True, True]]
    assert new.masks["c"].tolist() == [True] * 3
    again = coarse_grain(state, 0.5)
    assert all(torch.equal(new.masks[n], again.masks[n]) for n in ws)


@pytest.mark.parametrize("gather_min", [0, 1 << 16])
def test_ties_across_chunk_boundaries_follow_flat_order(gather_min, monkeypatch):
    monkeypatch.setattr(cg, "GATHER_MIN", gather_min)
    w = torch.ones(1000)
    m = torch.ones(1000, dtype=torch.bool)
    m[::7] = False  # pruned entries interleaved with the ties
    assert int(m.sum()) == 857
    out = remove_smallest([w, w.clone()], [m, m.clone()], 900, chunk_size=13)
    # layer 0's 857 survivors all go, then the first 43 survivors of layer 1 in flat order
    assert torch.equal(out[0], torch.zeros(1000, dtype=torch.bool))
    second = m.clone()
    second[torch.nonzero(m).squeeze(1)[:43]] = False
    assert torch.equal(out[1], second)
    assert int(out[1].sum()) == 857 - 43


def test_signed_zeros_tie_and_smallest_magnitude_goes_first():
    w = torch.tensor([-0.0, 3.0, 0.0, -1.0, 2.0, -2.0])
    out = remove_smallest([w], [torch.ones(6, dtype=torch.bool)], 4)[0]
    # order: -0.0 (idx 0), 0.0 (idx 2), -1.0 (idx 3), then the first 2-magnitude: 2.0 (idx 4)
    assert out.tolist() == [False, True, False, False, False, True]


def test_flat_index_is_row_major_for_non_contiguous_weights():
    base = torch.ones(3, 4)
    w = base.t()  # (4, 3), non-contiguous
    out = remove_smallest([w], [torch.ones(4, 3, dtype=torch.bool)], 2)[0]
    assert out.tolist()[0] == [False, False, True]
    assert out[1:].all()


# --- pruned weights stay pruned, masks nested -------------------------------------------------------
def test_pruned_weights_never_revived_and_not_counted():
    w = torch.tensor([10.0, 1.0, 2.0, 3.0, 0.001])
    m = torch.tensor([False, True, True, True, False])  # the largest and the smallest are pruned
    new = coarse_grain(State({"w": w}, {"w": m}), 1 / 3)  # 3 survivors, 1 goes: the 1.0
    assert new.masks["w"].tolist() == [False, False, True, True, False]
    assert torch.equal(new.weights["w"], w)  # weights untouched


def test_masks_nested_over_rounds():
    gen = torch.Generator().manual_seed(5)
    ws, ms = random_layers(gen, AWKWARD, [torch.float32, torch.bfloat16], p_alive=1.0)
    state = State.dense(dict(zip("abcdef", ws, strict=True)))
    for _ in range(6):
        new = coarse_grain(state, 0.3)
        for n in state.names:
            assert not (new.masks[n] & ~state.masks[n]).any()  # nothing revived
            assert new.masks[n] is not state.masks[n]
        assert n_alive(state.masks.values()) - n_alive(new.masks.values()) == round(
            0.3 * n_alive(state.masks.values())
        )
        state = new


# --- dtypes -----------------------------------------------------------------------------------------
def test_half_precision_magnitudes_compared_exactly():
    # 0.1 in float16 is 0.0999755859375, in bfloat16 0.10009765625, in float32 0.100000001490116
    ws = [
        torch.tensor([0.1], dtype=torch.bfloat16),
        torch.tensor([0.1]),
        torch.tensor([0.1], dtype=torch.float16),
    ]
    ms = [torch.ones(1, dtype=torch.bool) for _ in ws]
    assert [bool(o) for o in remove_smallest(ws, ms, 1)] == [True, True, False]
    assert [bool(o) for o in remove_smallest(ws, ms, 2)] == [True, False, False]


def test_float64_resolves_below_float32_precision():
    ws = [torch.tensor([1.0 + 1e-12, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.5])]
    ms = [torch.ones(2, dtype=torch.bool) for _ in ws]
    out = remove_smallest(ws, ms, 3)  # 0.5, then the tie 1.0 (layer 0 before layer 1), then 1.0 of layer 1
    assert out[0].tolist() == [True, False] and out[1].tolist() == [False, False]
    out = remove_smallest(ws, ms, 2)
    assert out[0].tolist() == [True, False] and out[1].tolist() == [True, False]


def test_result_stays_on_the_weights_device_and_keeps_shapes():
    w = torch.randn(4, 3, 2, dtype=torch.float16)
    new = coarse_grain(State.dense({"w": w}), 0.25)
    assert new.masks["w"].shape == (4, 3, 2) and new.masks["w"].device == w.device
    assert int(new.masks["w"].sum()) == 18


# --- prunable subsets, scopes, errors ---------------------------------------------------------------
def test_prunable_subset_leaves_other_layers_alone():
    ws = {"a": torch.full((10,), 0.01), "b": torch.arange(1.0, 11.0), "c": torch.full((10,), 0.02)}
    state = State.dense(ws)
    new = coarse_grain(state, 0.3, prunable=["b"])
    assert new.masks["a"].all() and new.masks["c"].all()
    assert new.masks["b"].tolist() == [False] * 3 + [True] * 7
    # 20 survivors, 5 go: the first five of c (all 0.02, below every weight of b)
    new = coarse_grain(state, 0.25, prunable=["c", "b"])
    assert new.masks["a"].all()
    assert new.masks["c"].tolist() == [False] * 5 + [True] * 5 and new.masks["b"].all()


def test_custom_scope_is_one_function():
    @register_scope("every-other-layer")
    def every_other(weights, masks, rate):
        out = layer_scope(weights[::2], masks[::2], rate)
        return [out[i // 2] if i % 2 == 0 else m.clone() for i, m in enumerate(masks)]

    try:
        state = State.dense(
            {"a": torch.arange(1.0, 5.0), "b": torch.arange(1.0, 5.0), "c": torch.arange(1.0, 5.0)}
        )
        new = coarse_grain(state, 0.5, scope="every-other-layer")
        assert [int(new.masks[n].sum()) for n in "abc"] == [2, 4, 2]
    finally:
        del SCOPES["every-other-layer"]


@pytest.mark.parametrize("rate", [0, 0.0, 1, 1.0, -0.2, 1.5, float("nan"), float("inf"), "x", None])
def test_rate_outside_open_unit_interval_raises(rate):
    with pytest.raises(InvalidParameterError):
        coarse_grain(State.dense({"w": torch.ones(4)}), rate)


def test_bad_inputs_raise_named_errors():
    state = State.dense({"w": torch.ones(4)})
    with pytest.raises(InvalidParameterError, match="unknown scope"):
        coarse_grain(state, 0.5, scope="nope")
    with pytest.raises(MissingTensorError):
        coarse_grain(state, 0.5, prunable=["w", "v"])
    with pytest.raises(MaskShapeError):
        coarse_grain(State({"w": torch.ones(4)}, {"w": torch.ones(2, 2, dtype=torch.bool)}), 0.5)
    with pytest.raises(NonBinaryMaskError):
        coarse_grain(State({"w": torch.ones(4)}, {"w": torch.tensor([0.0, 1.0, 2.0, 1.0])}), 0.5)
    with pytest.raises(InvalidParameterError, match="floating point"):
        coarse_grain(State.dense({"w": torch.ones(4, dtype=torch.int64)}), 0.5)
    with pytest.raises(InvalidParameterError):
        remove_smallest([torch.ones(4)], [torch.ones(4, dtype=torch.bool)], 5)
    for k in (0.2, 2.0, True):  # a rate or a float count is not a count of survivors
        with pytest.raises(InvalidParameterError, match="integer count"):
            remove_smallest([torch.ones(4)], [torch.ones(4, dtype=torch.bool)], k)


def test_binary_float_masks_are_accepted():
    state = State({"w": torch.arange(1.0, 5.0)}, {"w": torch.tensor([1.0, 1.0, 0.0, 1.0])})
    assert coarse_grain(state, 0.34).masks["w"].tolist() == [False, True, False, True]


def test_nothing_to_remove_gives_fresh_equal_masks():
    m = torch.tensor([True, False, False, False])
    new = coarse_grain(State({"w": torch.ones(4)}, {"w": m}), 0.4)  # round(0.4) = 0
    assert torch.equal(new.masks["w"], m) and new.masks["w"] is not m


def test_many_exact_zeros_take_the_histogram_path_and_go_in_flat_order():
    # 210,000 exact zeros in a 300,000-weight layer: the threshold bucket is too big to gather
    gen = torch.Generator().manual_seed(11)
    w = torch.randn(300_000, generator=gen)
    zeros = torch.randperm(300_000, generator=gen)[:210_000]
    w[zeros] = 0.0
    w[zeros[:1000]] = -0.0
    assert 210_000 > cg.GATHER_MIN and 210_000 > 300_000 // cg.GATHER_FRACTION
    out = remove_smallest([w], [torch.ones(300_000, dtype=torch.bool)], 150_000)[0]
    expect = torch.ones(300_000, dtype=torch.bool)
    expect[torch.sort(zeros).values[:150_000]] = False  # the first 150,000 zeros in flat order
    assert torch.equal(out, expect)


@pytest.mark.parametrize("masked", [False, True])
def test_one_pass_bracket_is_taken_on_a_large_model_and_matches_the_reference(masked, monkeypatch):
    """ResNet-like sizes: the sample bracket holds the k-th key (no fallback), and the masks are the
    full sort's, bit for bit, dense and masked, with exact ties at the threshold."""
    taken = []
    bracket = cg._finish_by_bracket
    monkeypatch.setattr(cg, "_finish_by_bracket", lambda *a: taken.append(bracket(*a)) or taken[-1])
    gen = torch.Generator().manual_seed(5)
    ws, ms = random_layers(gen, [(256, 64, 3, 3), (70_001,), (1000, 130)], [torch.float32], p_alive=0.8)
    ws[1][:5000] = ws[0].reshape(-1)[:5000]  # duplicated magnitudes: ties across layers
    if not masked:
        ms = [torch.ones_like(m) for m in ms]
    k = n_removed(n_alive(ms), 0.2)
    ours = remove_smallest(ws, ms, k)
    ref, shapes = reference(ws, ms, k)
    assert taken == [True]
    assert all(torch.equal(o, r.view(s)) for o, r, s in zip(ours, ref, shapes, strict=True))
    assert n_alive(ours) == n_alive(ms) - k


def test_a_bracket_that_misses_falls_back_to_the_exact_radix_select(monkeypatch):
    """A sample biased towards large magnitudes brackets keys far above the k-th: the pass runs,
    misses, and the radix select rewrites every mask; the result is still the full sort's."""
    taken = []
    bracket = cg._finish_by_bracket
    monkeypatch.setattr(cg, "_finish_by_bracket", lambda *a: taken.append(bracket(*a)) or taken[-1])
    sample = cg._sample_keys
    monkeypatch.setattr(cg, "_sample_keys", lambda plan: np.sort(sample(plan))[-5000:])
    gen = torch.Generator().manual_seed(6)
    ws, ms = random_layers(gen, [(400, 300), (50_000,)], [torch.float32], p_alive=0.9)
    k = n_removed(n_alive(ms), 0.3)
    ours = remove_smallest(ws, ms, k)
    ref, shapes = reference(ws, ms, k)
    assert taken == [False]
    assert all(torch.equal(o, r.view(s)) for o, r, s in zip(ours, ref, shapes, strict=True))
