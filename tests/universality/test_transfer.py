"""The directed transfer score: a known answer, its direction, and the symmetries of IMP."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.errors import InvalidParameterError
from rganalysis.store.parameter_set import ParameterSet, build_info
from rganalysis.universality.transfer import transfer_scores

W = torch.randn(10, 20, generator=torch.Generator().manual_seed(0))


def _flow(masks, w=W, name="f"):
    R = len(masks)
    return ParameterSet(
        build_info({"fc.weight": w}),
        {0: {"fc.weight": w}},
        {"fc.weight": [torch.as_tensor(m, dtype=torch.bool) for m in masks]},
        n_rounds=R,
        layouts=[[]] * R,
        attrs={"name": name},
    )


def _masks(superset: bool):
    """Round 0 dense; then 100 and 50 of the 200 weights.  The subset task's IMP keeps output units 0-4 only;
    the superset task's keeps all ten.  Both keep the input units alike (5 connections each at round 1; 5
    each for inputs 0-9 at round 2), so only the output side differs."""
    rows, cols = np.arange(10)[:, None], np.arange(20)[None, :]
    if superset:
        checker = (rows % 2) == (cols % 2)
        r1, r2 = checker & np.ones((10, 20), bool), checker & (cols < 10)
    else:
        r1, r2 = (rows < 5) & np.ones((1, 20), bool), (rows < 5) & (cols < 10)
    return [np.ones((10, 20), bool), r1, r2]


def _kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def test_known_answer_and_direction():
    sub, sup = _flow(_masks(False), name="sub"), _flow(_masks(True), name="sup")
    D = transfer_scores([sub, sup], score="divergence")
    assert D.dims == ("source", "target") and list(D.source.values) == ["sub", "sup"]
    # output units: survival-weighted mass sum over rounds 1, 2 of the fraction alive, + 1/(2 * fan 20)
    m_sub = np.array([1.0 + 0.5] * 5 + [0.0] * 5) + 0.025
    m_sup = np.full(10, 0.5 + 0.25) + 0.025
    p_sub, p_sup = m_sub / m_sub.sum(), m_sup / m_sup.sum()
    # two unit groups (output, input); the input group's distributions are equal (divergence 0)
    assert D.sel(source="sup", target="sub") == pytest.approx(_kl(p_sub, p_sup) / math.log(10) / 2, rel=1e-12)
    assert D.sel(source="sub", target="sup") == pytest.approx(_kl(p_sup, p_sub) / math.log(10) / 2, rel=1e-12)
    # the superset ticket serves the subset task better than the reverse
    assert D.sel(source="sup", target="sub") < D.sel(source="sub", target="sup") / 2  # 0.133 vs 0.299
    np.testing.assert_array_equal(np.diag(D.values), 0.0)
    assert D.attrs["matching"][0][1] == "aligned"


@pytest.mark.parametrize("score", ["coverage", "divergence"])
def test_permutation_and_scale_do_not_change_it_a_shuffle_does(score):
    sub, sup = _flow(_masks(False), name="sub"), _flow(_masks(True), name="sup")
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    moved = _flow([m[perm.numpy()] for m in _masks(True)], w=3.0 * W[perm], name="sup")
    a = transfer_scores([sub, sup], score=score).values
    b = transfer_scores([sub, moved], score=score).values
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=0)
    # another starting point (not aligned): units paired by the rank of their mass, same answer here
    other = _flow(_masks(True), w=torch.randn(10, 20, generator=torch.Generator().manual_seed(5)), name="sup")
    D = transfer_scores([sub, other], score=score)
    assert D.attrs["matching"][0][1] == "mass rank"
    np.testing.assert_allclose(D.values, a, rtol=1e-12, atol=0)
    # a shuffle of the surviving weights inside the layer moves units: the score sees it
    rng = np.random.default_rng(2)
    flat = [m.reshape(-1) for m in _masks(False)]
    order = rng.permutation(200)
    shuffled = _flow([f[order].reshape(10, 20) for f in flat], name="shuffled")
    assert transfer_scores([sub, shuffled], score=score).values[1, 0] > 0.05


def test_the_default_score_is_the_coverage_deficit():
    sub, sup = _flow(_masks(False), name="sub"), _flow(_masks(True), name="sup")
    D = transfer_scores([sub, sup])
    assert D.attrs["score"] == "coverage"
    np.testing.assert_array_equal(D.values, transfer_scores([sub, sup], score="coverage").values)


def test_bad_input():
    sub = _flow(_masks(False))
    with pytest.raises(InvalidParameterError, match="at least 2"):
        transfer_scores([sub])
    with pytest.raises(InvalidParameterError, match="names"):
        transfer_scores([sub, sub], names=["a"])
    wide = ParameterSet(
        build_info({"fc.weight": torch.randn(12, 20)}),
        {0: {"fc.weight": torch.randn(12, 20)}},
        {"fc.weight": [torch.ones(12, 20, dtype=torch.bool)] * 3},
        n_rounds=3,
        layouts=[[]] * 3,
    )
    with pytest.warns(UserWarning, match="different architectures are NaN"):
        D = transfer_scores([sub, wide], names=["a", "b"])
    assert math.isnan(D.values[0, 1]) and math.isnan(D.values[1, 0]) and D.values[0, 0] == 0


def test_public_and_from_stores(tmp_path):
    sub, sup = _flow(_masks(False), name="sub"), _flow(_masks(True), name="sup")
    paths = [tmp_path / "sub.h5", tmp_path / "sup.h5"]
    for f, p in zip((sub, sup), paths, strict=True):
        rganalysis.save(f, p)
    D = rganalysis.transfer_scores([str(p) for p in paths], names=["sub", "sup"])
    np.testing.assert_array_equal(D.values, transfer_scores([sub, sup], names=["sub", "sup"]).values)


def test_coverage_sees_how_much_each_layer_keeps():
    """``score="coverage"``: the share of the target's unit mass the source lacks.  Where two flows keep the
    same amount of every layer it is symmetric (sum (a - b)_+ - sum (b - a)_+ = sum a - sum b); its direction
    is how much each layer keeps."""
    sub, sup = _flow(_masks(False), name="sub"), _flow(_masks(True), name="sup")
    C = transfer_scores([sub, sup], score="coverage")
    assert C.attrs["score"] == "coverage" and "max(0, m_T(u) - m_S(u))" in C.attrs["formula"]
    # outputs: sub 1.5 on units 0-4, sup 0.75 on all ten, so either lacks half the other's mass; inputs equal
    assert C.sel(source="sup", target="sub") == pytest.approx(0.25, rel=1e-12)
    assert C.sel(source="sub", target="sup") == pytest.approx(0.25, rel=1e-12)
    # a flow with sup's densities (so compared round by round) that prunes round 2 elsewhere: it keeps sup's
    # first round (checker) and then rows 0-4 of it.  Masses (round 1 + round 2): outputs, sup 0.5 + 0.25
    # each, `more` 0.5 + 0.5 (rows 0-4) and 0.5 + 0 (rows 5-9); inputs, sup 0.5 + 0.5 (cols 0-9) and 0.5 + 0
    # (cols 10-19), `more` 0.5 + 0.3 (even cols: 3 of rows 0-4) and 0.5 + 0.2 (odd cols)
    m = _masks(True)
    rows, cols = np.arange(10), np.arange(20)
    more = _flow([m[0], m[1], m[1] & (rows[:, None] < 5)], name="more")
    C = transfer_scores([more, sup], score="coverage")
    out_sup, out_more = np.full(10, 0.75), np.where(rows < 5, 1.0, 0.5)
    in_sup, in_more = np.where(cols < 10, 1.0, 0.5), np.where(cols % 2 == 0, 0.8, 0.7)

    def lacks(t, s):  # the share of the target's mass the source lacks
        return np.maximum(t - s, 0).sum() / t.sum()

    assert C.sel(source="more", target="sup") == pytest.approx(
        (lacks(out_sup, out_more) + lacks(in_sup, in_more)) / 2, rel=1e-12
    )
    assert C.sel(source="sup", target="more") == pytest.approx(
        (lacks(out_more, out_sup) + lacks(in_more, in_sup)) / 2, rel=1e-12
    )
    # a flow that stops pruning after round 1 is compared where both reach (density 0.5): it is sup there
    stopped = _flow([m[0], m[1], m[1]], name="stopped")
    np.testing.assert_array_equal(transfer_scores([stopped, sup], score="coverage").values, 0.0)
    with pytest.raises(InvalidParameterError, match="unknown transfer score"):
        transfer_scores([sub, sup], score="jaccard")


def test_one_matching_per_matrix():
    """Same starting weights: units are matched by alignment; a flow from another start can only be matched
    by mass rank, the best pairing for the masses compared, so its scores are lower by construction.  One
    architecture gets one matching: ``auto`` scores the pairs that align and leaves that architecture's other
    pairs NaN (with a warning), so a flow of another start added to a call never changes the aligned scores;
    an architecture none of whose pairs align is matched by mass rank throughout."""
    sub = _flow(_masks(False), name="sub")
    flipped = _flow([m[::-1].copy() for m in _masks(False)], name="flipped")  # keeps output units 5-9
    other = _flow(
        _masks(True), w=torch.randn(10, 20, generator=torch.Generator().manual_seed(5)), name="other"
    )
    aligned = transfer_scores([sub, flipped])
    assert aligned.attrs["matching"][0][1] == "aligned"
    assert aligned.values[0, 1] > 0.2  # other units kept: sub's ticket lacks what flipped's task needs
    by_mass = transfer_scores([sub, flipped], matching="mass rank")
    assert by_mass.attrs["matching"][0][1] == "mass rank"
    assert by_mass.values[0, 1] == pytest.approx(0.0, abs=1e-12)  # the same mass profile, relabelled
    with pytest.warns(UserWarning, match=r"2 pair\(s\) of flows do not start from the same weights"):
        mixed = transfer_scores([sub, flipped, other])
    np.testing.assert_array_equal(mixed.values[:2, :2], aligned.values)  # unchanged by the third flow
    assert np.isnan(mixed.values[2, :2]).all() and np.isnan(mixed.values[:2, 2]).all()
    assert mixed.attrs["matching"][0][1] == "aligned" and mixed.attrs["matching"][0][2] == "none"
    # no pair aligns: mass rank for all, no warning
    lone = _flow(
        _masks(False), w=torch.randn(10, 20, generator=torch.Generator().manual_seed(6)), name="lone"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        foreign = transfer_scores([sub, other, lone])
    assert {x for row in foreign.attrs["matching"] for x in row} == {"self", "mass rank"}
    np.testing.assert_array_equal(
        foreign.values, transfer_scores([sub, other, lone], matching="mass rank").values
    )
    # another architecture's tickets of one start keep their alignment: one scale per architecture
    w12 = torch.randn(12, 20, generator=torch.Generator().manual_seed(7))
    a12 = _flow([np.ones((12, 20), bool), np.arange(12)[:, None] < np.full((1, 20), 6)], w=w12, name="a12")
    b12 = _flow([np.ones((12, 20), bool), np.arange(12)[:, None] >= np.full((1, 20), 6)], w=w12, name="b12")
    with pytest.warns(UserWarning):
        both = transfer_scores([sub, other, lone, a12, b12])
    assert both.attrs["matching"][3][4] == "aligned" and both.attrs["matching"][0][1] == "mass rank"
    assert np.isnan(both.values[0, 3]) and both.values[3, 4] > 0.1
    only = transfer_scores([sub, flipped, other], matching="aligned")
    np.testing.assert_array_equal(only.values[:2, :2], aligned.values)
    assert np.isnan(only.values[2, :2]).all() and np.isnan(only.values[:2, 2]).all()
    assert only.attrs["matching"][0][2] == "none"
    with pytest.raises(InvalidParameterError, match="unknown unit matching"):
        transfer_scores([sub, other], matching="hungarian")


def test_flows_of_other_lengths_align_and_meet_at_matched_densities():
    """A flow cut a round short starts from the same weights: it is aligned (not matched by mass rank), and
    scored on the densities both flows reach, i.e. as if the longer one were cut as well."""
    sub, short = _flow(_masks(False), name="sub"), _flow(_masks(True)[:2], name="short")
    D = transfer_scores([sub, short])
    assert D.attrs["matching"][0][1] == "aligned"
    cut = transfer_scores([_flow(_masks(False)[:2], name="sub"), short])
    np.testing.assert_allclose(D.values, cut.values, rtol=1e-12, atol=0)
    assert D.values[0, 1] > 0.05  # round 1: sub keeps rows 0-4, short every row (checker)
    C = transfer_scores([sub, short], score="coverage")
    np.testing.assert_allclose(
        C.values, transfer_scores([_flow(_masks(False)[:2]), short], score="coverage").values, rtol=1e-12
    )


def test_a_store_of_rounds_without_masks_is_not_a_flow():
    w = W.clone()
    nomask = ParameterSet(
        build_info({"fc.weight": w}),
        {0: {"fc.weight": w}},
        {},
        n_rounds=3,
        layouts=[[]] * 3,
        attrs={"name": "x"},
    )
    with pytest.raises(InvalidParameterError, match="no mask in any of them: not an IMP flow"):
        transfer_scores([_flow(_masks(False)), nomask])


def test_the_table_names_its_score_and_why_a_cell_is_blank():
    from rganalysis.universality.transfer import format_transfer_scores

    sub, sup = _flow(_masks(False), name="sub"), _flow(_masks(True), name="sup")
    text = format_transfer_scores(transfer_scores([sub, sup]))
    assert "coverage score; row = the ticket's source task" in text and "not scored" not in text
    other = _flow(_masks(True), w=torch.randn(10, 20, generator=torch.Generator().manual_seed(5)), name="o")
    with pytest.warns(UserWarning, match="not scored"):
        text = format_transfer_scores(transfer_scores([sub, sup, other], score="divergence"))
    assert "divergence score;" in text and "'-': not scored, no unit correspondence" in text


def test_a_small_score_is_not_printed_as_zero():
    from rganalysis.universality.transfer import _score_text

    assert _score_text(3.5e-6, 4) == "3.5e-06" and _score_text(0.0, 4) == "0.0000"
    assert _score_text(0.01234, 4) == "0.0123" and _score_text(float("nan"), 4) == "-"


def test_mass_rank_across_lengths_pairs_units_where_the_score_compares_them():
    """Flows of other starts and lengths: units paired in the order of their mass at the densities both
    reach.  The source's one pruned round is the target's first round with the rows relabelled, so at the
    one common density (0.5) a pairing exists that makes them equal: the score must be 0, whatever the
    target's second round does (it reverses the rows' order)."""
    r1 = np.zeros((10, 20), bool)
    for u in range(10):
        r1[u, : 2 * (u % 5) + 6] = True
    r2 = np.zeros((10, 20), bool)
    for u in range(10):
        r2[u, : max(0, 10 - 2 * (u % 5) - 4)] = True
    target = _flow([np.ones((10, 20), bool), r1, r2 & r1], name="T")
    perm = np.random.default_rng(3).permutation(10)
    w2 = torch.randn(10, 20, generator=torch.Generator().manual_seed(9))
    source = _flow([np.ones((10, 20), bool), r1[perm]], w=w2, name="S")
    D = transfer_scores([source, target])
    assert D.attrs["matching"][0][1] == "mass rank"
    np.testing.assert_array_equal(D.values, 0.0)


def test_flows_that_share_no_pruned_density_are_not_scored_and_say_so():
    from rganalysis.universality.transfer import NO_COMMON_DENSITY, format_transfer_scores

    rows = np.arange(10)[:, None] + np.zeros((1, 20), int)
    sparse = _flow([np.ones((10, 20), bool), rows < 1, rows < 1], name="sparse")  # density 0.1
    dense = _flow([np.ones((10, 20), bool), rows < 8, rows < 7], name="dense")  # 0.8, 0.7
    with pytest.warns(UserWarning, match="share no pruned density"):
        D = transfer_scores([sparse, dense])
    assert np.isnan(D.values[0, 1]) and np.isnan(D.values[1, 0])
    assert D.attrs["matching"][0][1] == NO_COMMON_DENSITY
    assert "share no pruned density" in format_transfer_scores(D)


def test_one_path_is_not_a_list_of_flows(tmp_path):
    from rganalysis.universality.analysis import UniversalityAnalysis

    with pytest.raises(InvalidParameterError, match="are sequences"):
        transfer_scores("flow.h5")
    with pytest.raises(InvalidParameterError, match="are sequences"):
        transfer_scores([_flow(_masks(False)), _flow(_masks(True))], names="ab")
    with pytest.raises(InvalidParameterError, match="are sequences"):
        UniversalityAnalysis().fit(tmp_path / "flow.h5")
