"""The data-free global flow in two passes (rganalysis.rg.survival) against iterating coarse_grain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rganalysis.rg.survival as sv
from rganalysis.rg.coarse_graining import coarse_grain
from rganalysis.store.state import State

AWKWARD = [(7,), (3, 5), (2, 3, 11), (1, 1, 1, 13), (17, 1), (1,)]


def iterated(weights, masks, rounds, rate):
    """Survival counts and survivors by running coarse_grain round after round."""
    names = [f"l{i}" for i in range(len(weights))]
    state = State(dict(zip(names, weights, strict=True)), dict(zip(names, masks, strict=True)))
    counts = [m.numpy().astype(np.uint8) for m in masks]
    alive = [[int(m.sum()) for m in masks]]
    for _ in range(rounds):
        state = coarse_grain(state, rate)
        for c, n in zip(counts, names, strict=True):
            c += state.masks[n].numpy()
        alive.append([int(state.masks[n].sum()) for n in names])
    return counts, np.array(alive)


def layers(gen, shapes, kind, p_alive):
    ws, ms = [], []
    for shape in shapes:
        if kind == "normal":
            w = torch.randn(shape, generator=gen) * torch.rand(1, generator=gen)
        elif kind == "ties":  # few distinct values, signed zeros: ties inside and across cut buckets
            w = torch.randint(-3, 4, shape, generator=gen).float() * 0.25
        else:  # magnitudes over 60 decades, subnormals and zeros
            w = torch.randn(shape, generator=gen) * 10.0 ** torch.randint(-40, 30, shape, generator=gen)
            w.view(-1)[::5][:2] = torch.tensor([float("nan"), -float("inf")])[: w.view(-1)[::5].numel()]
        ws.append(w)
        ms.append(torch.rand(shape, generator=gen) < p_alive)
    return ws, ms


@pytest.mark.parametrize("kind", ["normal", "ties", "wide"])
@pytest.mark.parametrize("p_alive", [1.0, 0.6])
@pytest.mark.parametrize(("rounds", "rate"), [(1, 0.2), (20, 0.2), (12, 0.5), (6, 0.8)])
def test_same_counts_as_iterating_coarse_grain(kind, p_alive, rounds, rate, monkeypatch):
    monkeypatch.setattr(sv, "GATHER_MIN", 1 << 30)  # small layers: cut buckets hold most of them
    gen = torch.Generator().manual_seed(rounds * 31 + int(rate * 10))
    shapes = AWKWARD + [(40, 50), (3, 3, 16, 8)]
    ws, ms = layers(gen, shapes, kind, p_alive)
    got = sv.survival_rounds(ws, ms, rounds, rate)
    assert got is not None
    want_counts, want_alive = iterated(ws, ms, rounds, rate)
    for g, w in zip(got[0], want_counts, strict=True):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got[1], want_alive)


def test_a_flow_that_empties_the_network_counts_zero_survivors():
    gen = torch.Generator().manual_seed(3)
    ws, ms = layers(gen, [(5,), (3,)], "normal", 1.0)
    counts, alive = sv.survival_rounds(ws, ms, 8, 0.8)
    # 8 -> 6 removed (2 left) -> round(1.6) = 2 removed: empty from round 2 on
    assert alive.sum(axis=1).tolist() == [8, 2, 0, 0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(
        np.concatenate([c for c in counts]), np.concatenate(iterated(ws, ms, 8, 0.8)[0])
    )


def test_chunk_and_worker_boundaries_keep_the_flat_order_of_ties(monkeypatch):
    """Equal keys in many chunks of several layers: the cut goes in (layer, flat index) order."""
    monkeypatch.setattr(sv, "GATHER_MIN", 1 << 30)
    import rganalysis.rg.coarse_graining as cg

    monkeypatch.setattr(cg, "CPU_CHUNK", 64)
    ws = [torch.full((300,), 0.5), torch.full((7, 41), -0.5), torch.full((200,), 0.5)]
    ms = [torch.ones(w.shape, dtype=torch.bool) for w in ws]
    counts, _ = sv.survival_rounds(ws, ms, 5, 0.3)
    want, _ = iterated(ws, ms, 5, 0.3)
    for g, w in zip(counts, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert counts[0].reshape(-1)[0] == 1 and counts[2].reshape(-1)[-1] == 6  # first goes first


def test_declines_what_it_does_not_compute():
    w, m = [torch.randn(100)], [torch.ones(100, dtype=torch.bool)]
    assert sv.survival_rounds([w[0].double()], m, 3, 0.2) is None  # float64: the iterated path
    assert sv.survival_rounds([w[0].half()], m, 3, 0.2) is None
    assert sv.survival_rounds(w, m, sv.MAX_ROUNDS + 1, 0.2) is None  # counts would reach the cut marker
    assert sv.survival_rounds(w, m, 3, 0.2) is not None
    # heavy ties: every weight in one cut bucket is more than the bounded gather
    big = [torch.full((1 << 18,), 0.5)]
    assert sv.survival_rounds(big, [torch.ones(1 << 18, dtype=torch.bool)], 3, 0.2) is None


@pytest.mark.parametrize(("rounds", "rate", "masked"), [(20, 0.2, False), (9, 0.7, True)])
def test_compute_flow_records_the_same_flow_either_way(rounds, rate, masked, monkeypatch):
    """``compute_flow`` takes this path for a data-free global flow; forcing the iterated path gives the
    same masks, densities and flow attributes (empty_from included)."""
    import rganalysis.rg.flow as fl
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    gen = torch.Generator().manual_seed(rounds)
    shapes = [(31, 17), (13, 7, 3, 3), (101,)]
    ws = {f"l{i}.weight": torch.randn(s, generator=gen) for i, s in enumerate(shapes)}
    sd = dict(ws)
    if masked:  # torch.nn.utils.prune's layout: the flow starts from these survivors
        sd = {}
        for k, w in ws.items():
            sd[k + "_orig"], sd[k + "_mask"] = w, (torch.rand(w.shape, generator=gen) < 0.8).float()
    pset = make_parameter_set([single_round(sd)], adapter="generic", architecture="x", sources=[])
    calls = []
    real = fl.survival_rounds
    monkeypatch.setattr(fl, "survival_rounds", lambda *a: calls.append(1) or real(*a))
    fast = fl.compute_flow(pset, rounds, rate, progress=False)
    monkeypatch.setattr(fl, "survival_rounds", lambda *a: None)
    slow = fl.compute_flow(pset, rounds, rate, progress=False)
    assert calls == [1]
    assert fast.flow_attrs == slow.flow_attrs
    assert ("empty_from" in fast.flow_attrs) == (rate == 0.7)
    np.testing.assert_array_equal(fast.densities().values, slow.densities().values)
    assert fast.densities().values[0].min() < (0.9 if masked else 1.01)
    for k in ws:
        for r in range(rounds + 1):
            assert torch.equal(fast.mask(k, r), slow.mask(k, r)), (k, r)
