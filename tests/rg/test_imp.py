"""The IMP loop and rescaling: densities, nesting, rewinding, training callbacks."""

from __future__ import annotations

import pytest
import torch

from rganalysis.errors import InvalidParameterError, MissingTensorError
from rganalysis.rg.imp import imp_flow
from rganalysis.rg.rescaling import RESCALINGS, register_rescaling, rescale
from rganalysis.store.state import State


def make_state(seed=0, shapes=((31, 17), (13, 7, 3, 3), (1001,))):
    gen = torch.Generator().manual_seed(seed)
    return State.dense({f"l{i}": torch.randn(s, generator=gen) for i, s in enumerate(shapes)})


def alive(state):
    return sum(int(m.sum()) for m in state.masks.values())


def test_global_flow_density_follows_geometric_law():
    state = make_state()
    total = sum(state.sizes().values())
    assert total == 31 * 17 + 13 * 7 * 9 + 1001 == 2347
    states = list(imp_flow(state, rounds=12, rate=0.2, progress=False))
    assert len(states) == 13 and states[0] is state
    survivors = [alive(s) for s in states]
    for n in range(12):  # exact recursion S_{n+1} = S_n - round(p S_n)
        assert survivors[n + 1] == survivors[n] - round(0.2 * survivors[n])
    for n, s in enumerate(survivors):  # each round's rounding moves at most half a weight
        assert abs(s / total - 0.8**n) <= 0.5 * n / total + 1e-12
    assert survivors[:4] == [2347, 1878, 1502, 1202]


def test_layer_flow_prunes_each_layer_geometrically():
    state = make_state(1)
    states = list(imp_flow(state, rounds=5, rate=0.5, scope="layer", progress=False))
    # S -> S - round(S / 2), Python's round halving to even: 500.5 -> 500, 131.5 -> 132
    assert [int(s.masks["l2"].sum()) for s in states] == [1001, 501, 251, 125, 63, 31]
    assert [int(s.masks["l0"].sum()) for s in states] == [527, 263, 131, 65, 33, 17]


def test_flow_masks_nested_and_weights_kept_without_rescaling():
    state = make_state(2)
    prev = None
    for s in imp_flow(state, rounds=6, rate=0.3, progress=False):
        for n in s.names:
            assert s.weights[n] is state.weights[n]
            if prev is not None:
                assert not (s.masks[n] & ~prev.masks[n]).any()
        prev = s


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True, "3"])
def test_bad_rounds_raise_at_call(rounds):
    with pytest.raises(InvalidParameterError):
        imp_flow(make_state(), rounds=rounds, rate=0.2, progress=False)  # no next() needed


@pytest.mark.parametrize("rounds", [2.0, 0, True])
def test_compute_flow_names_bad_rounds(rounds):
    from rganalysis.rg.flow import compute_flow
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    pset = make_parameter_set(
        [single_round(make_state().weights)], adapter="generic", architecture="x", sources=[]
    )
    with pytest.raises(InvalidParameterError, match="rounds must be an integer"):
        compute_flow(pset, rounds, 0.2, progress=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.0},
        {"rate": 1.0},
        {"rate": -0.1},
        {"rate": 0.2, "scope": "x"},
        {"rate": 0.2, "rescaling": "x"},
    ],
)
def test_bad_parameters_raise_at_call(kwargs):
    with pytest.raises(InvalidParameterError):
        imp_flow(make_state(), rounds=2, progress=False, **kwargs)


def test_rewind_resets_weights_and_keeps_masks():
    state = make_state(3)
    pruned = state.with_masks({n: torch.rand(m.shape) < 0.5 for n, m in state.masks.items()})
    rewind = {n: torch.full(w.shape, 7.0, dtype=torch.float64) for n, w in state.weights.items()}
    out = rescale(pruned, "rewind", rewind=rewind)
    for n in state.names:
        assert out.weights[n].dtype == torch.float32 and torch.equal(
            out.weights[n], torch.full(state.weights[n].shape, 7.0)
        )
        assert out.masks[n] is pruned.masks[n]
    assert rescale(pruned, "none") is pruned


def test_rewind_flow_defaults_to_round_zero_weights():
    state = make_state(4)
    drifted = state.with_weights({n: w * 3 + 1 for n, w in state.weights.items()})
    states = list(
        imp_flow(drifted, rounds=2, rate=0.25, rescaling="rewind", rewind=state.weights, progress=False)
    )
    assert all(torch.equal(states[2].weights[n], state.weights[n]) for n in state.names)
    states = list(imp_flow(drifted, rounds=2, rate=0.25, rescaling="rewind", progress=False))
    assert all(torch.equal(states[2].weights[n], drifted.weights[n]) for n in state.names)


def test_rescale_errors():
    state = make_state()
    with pytest.raises(InvalidParameterError, match="unknown rescaling"):
        rescale(state, "bogus")
    with pytest.raises(InvalidParameterError, match="rewind"):
        rescale(state, "rewind")
    with pytest.raises(MissingTensorError):
        rescale(state, "rewind", rewind={"l0": state.weights["l0"]})
    bad = dict(state.weights, l1=torch.zeros(3))
    with pytest.raises(InvalidParameterError, match="l1"):
        rescale(state, "rewind", rewind=bad)
    with pytest.raises(InvalidParameterError, match="dict"):
        rescale(state, train=lambda w, m: None)


def test_train_called_once_per_round_and_its_weights_drive_the_next_pruning():
    state = State.dense({"w": torch.arange(1.0, 11.0)})  # 1..10: magnitude pruning removes the front
    calls = []

    def train(weights, masks):
        calls.append((weights["w"].clone(), masks["w"].clone()))
        weights["w"].mul_(-1)  # in place on the copy it was given
        return {"w": weights["w"].flip(0)}  # the trained net makes the *back* weights small

    states = list(imp_flow(state, rounds=3, rate=0.2, rescaling="rewind", train=train, progress=False))
    assert len(calls) == 3
    # round 1 prunes the 1 and the 2; the trained weights are -10..-1, so round 2 prunes the two
    # smallest trained magnitudes (flat indices 9 and 8), round 3 the next one (index 7)
    assert calls[0][1].tolist() == [False, False] + [True] * 8
    assert states[1].masks["w"].tolist() == [False, False] + [True] * 8
    assert states[2].masks["w"].tolist() == [False, False] + [True] * 6 + [False, False]
    assert states[3].masks["w"].tolist() == [False, False] + [True] * 5 + [False] * 3
    assert torch.equal(calls[1][0], torch.arange(1.0, 11.0))  # each round rewinds first
    assert torch.equal(state.weights["w"], torch.arange(1.0, 11.0))  # the rewind point was not touched
    assert torch.equal(states[3].weights["w"], -torch.arange(10.0, 0.0, -1.0))


def test_custom_rescaling_registers_by_name():
    @register_rescaling("halve")
    def halve(state, rewind):
        return state.with_weights({n: w / 2 for n, w in state.weights.items()})

    try:
        states = list(imp_flow(make_state(), rounds=2, rate=0.5, rescaling="halve", progress=False))
        assert torch.equal(states[2].weights["l0"], make_state().weights["l0"] / 4)
    finally:
        del RESCALINGS["halve"]


def test_progress_bar_only_when_asked(capsys):
    list(imp_flow(make_state(), rounds=2, rate=0.5, progress=False))
    assert capsys.readouterr().err == ""
    list(imp_flow(make_state(), rounds=2, rate=0.5, progress=True))
    err = capsys.readouterr().err
    assert "2/2" in err and "density=0.2501" in err  # 587 / 2347


def test_a_training_that_returns_non_finite_survivors_is_refused_by_name():
    """A diverged training (NaN weights) must not be recorded as a flow; NaN where the mask prunes is fine."""
    from rganalysis.errors import NonFiniteWeightsError

    state = make_state(3)
    masks = {
        k: torch.rand(m.shape, generator=torch.Generator().manual_seed(0)) < 0.5
        for k, m in state.masks.items()
    }
    state = state.with_masks(masks)

    def diverged(weights, masks):
        return {k: w * float("nan") for k, w in weights.items()}

    with pytest.raises(NonFiniteWeightsError, match="surviving value"):
        rescale(state, "none", train=diverged)

    def nan_where_pruned(weights, masks):
        return {k: torch.where(masks[k], w, torch.full_like(w, float("nan"))) for k, w in weights.items()}

    out = rescale(state, "none", train=nan_where_pruned)
    assert all(bool(torch.isfinite(out.weights[k][masks[k]]).all()) for k in masks)
