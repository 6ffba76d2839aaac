"""Universality distances and classes: hand-built signatures with known answers, real (small) flows,
and `rganalysis compare`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.errors import InvalidParameterError, TooFewRoundsError
from rganalysis.universality.analysis import UniversalityAnalysis
from rganalysis.universality.classes import (
    DEFAULT_THRESHOLDS,
    classes_from_distance,
    hierarchical_clustering,
    largest_gap_threshold,
)
from rganalysis.universality.distances import (
    distance_matrix,
    fixed_point_distance,
    flow_distance,
    principal_angles,
    spectrum_distance,
    subspace_distance,
)
from rganalysis.universality.signature import (
    FlowSignature,
    auto_rank,
    flow_signature,
    koopman_eigenvalues,
    ridge_fixed_point,
)

B = 1.25  # scale factor of a flow at rate 0.2


def sig(
    name: str, exponents, vectors=None, fixed_point=None, ms=None, c: int = 3, b: float = B, extra_eigs=()
) -> FlowSignature:
    """A signature with eigenvalues b**y (real, positive) plus ``extra_eigs`` as given."""
    lam = np.concatenate(
        [np.asarray(b, float) ** np.asarray(exponents, float), np.asarray(extra_eigs, complex)]
    )
    lam = lam.astype(complex)
    V = np.eye(c, lam.size, dtype=complex) if vectors is None else np.asarray(vectors, complex)
    return FlowSignature(
        name,
        [f"k{i}" for i in range(c)],
        lam,
        V,
        b,
        0.05,
        np.zeros(c) if fixed_point is None else np.asarray(fixed_point, float),
        "fit",
        np.ones(c) if ms is None else np.asarray(ms, float),
        lam.size,
        9,
    )


# --- components on hand-built signatures --------------------------------------------------------------
def test_spectrum_distance_known_matching():
    a = sig("a", [0.5, 0.2], extra_eigs=[0.3])  # 0.3 is irrelevant (|lambda| < 0.95): not compared
    b = sig("b", [0.4])
    np.testing.assert_allclose(a.retained_exponents, [0.5, 0.2])
    # optimal: 0.5 <-> 0.4 (0.1) and 0.2 <-> padded 0 (0.2), mean over n = 2 pairs
    assert spectrum_distance(a, b) == pytest.approx(0.15, abs=1e-12)
    assert spectrum_distance(b, a) == pytest.approx(0.15, abs=1e-12)
    assert spectrum_distance(a, a) == 0.0
    # exponents, not eigenvalues: the same y at another rate is at distance 0
    assert spectrum_distance(sig("c", [0.5, 0.2], b=2.0), a) == pytest.approx(0.0, abs=1e-12)
    # a marginal eigenvalue (|lambda| = 0.97, y < 0) is retained; nothing retained -> 0 against nothing
    m = sig("m", [math.log(0.97) / math.log(B)])
    assert m.retained.all() and spectrum_distance(m, sig("e", [], extra_eigs=[0.5])) == pytest.approx(
        abs(math.log(0.97) / math.log(B)), abs=1e-12
    )
    assert spectrum_distance(sig("e1", [], extra_eigs=[0.1]), sig("e2", [], extra_eigs=[0.8])) == 0.0


def test_fixed_point_distance_units():
    a = sig("a", [0.3], fixed_point=[1.0, 2.0, 0.0], ms=[4.0, 1.0, 0.0])
    b = sig("b", [0.3], fixed_point=[0.0, 2.0, 3.0], ms=[0.0, 1.0, 0.0])
    # s = sqrt((4 + 0) / 2), 1, (0 -> 1): differences (1/sqrt 2, 0, 3) -> RMS
    expect = math.sqrt((0.5 + 0 + 9) / 3)
    assert fixed_point_distance(a, b) == pytest.approx(expect, rel=1e-12)
    assert fixed_point_distance(b, a) == pytest.approx(expect, rel=1e-12)
    assert fixed_point_distance(a, a) == 0.0


def test_ridge_fixed_point():
    J = np.diag([0.5, 0.99])
    c = np.array([1.0, 1.0])
    last = np.array([1.5, 0.5])
    fp, how = ridge_fixed_point(J, c, last, ridge=0.0)
    np.testing.assert_allclose(fp, [2.0, 100.0], rtol=1e-12)  # (I - J)^-1 c: the marginal direction runs off
    assert how == "exact"
    fp, how = ridge_fixed_point(J, c, last, ridge=0.05)
    # per eigen-direction m = 1 - lambda: y = y0 + m (c - m y0) / (m^2 + ridge^2)
    expect = [1.5 + 0.5 * (1 - 0.5 * 1.5) / (0.25 + 0.0025), 0.5 + 0.01 * (1 - 0.01 * 0.5) / (1e-4 + 0.0025)]
    np.testing.assert_allclose(fp, expect, rtol=1e-12)
    assert how == "ridge=0.05"
    # standardised couplings: the same point for the same map written in other units
    S = np.array([10.0, 0.1])
    fp_s, _ = ridge_fixed_point(S[:, None] * J / S[None, :], S * c, S * last, scale=S, ridge=0.05)
    np.testing.assert_allclose(fp_s, S * np.array(expect), rtol=1e-12)
    # a singular I - J (an eigenvalue exactly 1) without ridge: least squares nearest the last round
    fp, how = ridge_fixed_point(np.diag([1.0, 0.5]), np.array([0.0, 1.0]), np.array([3.0, 0.0]), ridge=0.0)
    np.testing.assert_allclose(fp, [3.0, 2.0], atol=1e-12)
    assert how == "lstsq"
    with pytest.raises(InvalidParameterError):
        ridge_fixed_point(J, c, last, ridge=-1.0)


def test_principal_angles_and_subspace_distance_of_known_subspaces():
    e = np.eye(3)
    th = 0.3
    a = sig("a", [0.5], vectors=e[:, :1])
    b = sig("b", [0.4], vectors=(math.cos(th) * e[:, 0] + math.sin(th) * e[:, 1])[:, None])
    np.testing.assert_allclose(principal_angles(a, b), [th], atol=1e-12)
    assert subspace_distance(a, b) == pytest.approx(math.sin(th), abs=1e-12)
    # span{e0, e1} vs span{e0, e2}: angles 0 and 90 degrees; ||P_a - P_b||_F^2 = 2 + 2 - 2 * 1
    a2 = sig("a2", [0.5, 0.2], vectors=e[:, [0, 1]])
    b2 = sig("b2", [0.5, 0.2], vectors=e[:, [0, 2]])
    np.testing.assert_allclose(principal_angles(a2, b2), [0.0, math.pi / 2], atol=1e-7)
    assert subspace_distance(a2, b2) == pytest.approx(math.sqrt(0.5), abs=1e-12)
    # one empty subspace: 1; both empty: 0; nested 1-d in 2-d: ||P||^2 = 1 + 2 - 2 -> sqrt(1/3)
    none = sig("n", [], extra_eigs=[0.2], vectors=e[:, :1])
    assert subspace_distance(a, none) == 1.0 and subspace_distance(none, none) == 0.0
    assert subspace_distance(a, a2) == pytest.approx(math.sqrt(1 / 3), abs=1e-12)
    # a complex-conjugate pair of retained eigenvalues spans a real 2-d subspace
    z = 1.2 * np.exp(0.4j)
    v = (e[:, 0] + 1j * e[:, 1]) / math.sqrt(2)
    cpair = FlowSignature(
        "c",
        ["k0", "k1", "k2"],
        [z, np.conj(z)],
        np.stack([v, v.conj()], 1),
        B,
        0.05,
        np.zeros(3),
        "fit",
        np.ones(3),
        2,
        9,
    )
    np.testing.assert_allclose(principal_angles(cpair, a2), [0.0, 0.0], atol=1e-7)
    assert subspace_distance(cpair, a2) == pytest.approx(0.0, abs=1e-7)
    # coupling units: a subspace is compared after dividing each coupling by s
    # (10, 1, 0) and (0, 1, 0) are 84 degrees apart in raw units, 45 degrees with s = (10, 1, 1)
    sa = sig("sa", [0.5], vectors=np.array([[10.0], [1.0], [0.0]]) / math.sqrt(101), ms=[100.0, 1.0, 1.0])
    sb = sig("sb", [0.5], vectors=np.array([[0.0], [1.0], [0.0]]), ms=[100.0, 1.0, 1.0])
    np.testing.assert_allclose(principal_angles(sa, sb), [math.pi / 4], atol=1e-12)
    assert subspace_distance(sa, sb) == pytest.approx(math.sin(math.pi / 4), abs=1e-12)


def test_flow_distance_total_weights_and_spaces():
    """Without unit signatures, the default total is the fitted-map distance of version 1."""
    a = sig("a", [0.5, 0.2], fixed_point=[1, 0, 0])
    b = sig("b", [0.4], fixed_point=[0, 0, 0])
    d = flow_distance(a, b)
    assert d.alignment is None and "survival" not in d.components
    assert d.components["spectrum"] == pytest.approx(0.15)
    assert d.components["fixed_point"] == pytest.approx(math.sqrt(1 / 3))
    assert d.components["subspace"] == pytest.approx(math.sqrt((2 + 1 - 2) / 3))
    assert d.total == pytest.approx(sum(d.components.values()))
    d2 = flow_distance(a, b, weights={"spectrum": 2.0, "fixed_point": 1.0})  # exactly these weights
    assert d2.total == pytest.approx(2 * 0.15 + math.sqrt(1 / 3))
    assert d2.components["subspace"] == d.components["subspace"]  # reported, not summed
    with pytest.raises(InvalidParameterError, match="unknown distance component"):
        flow_distance(a, b, weights={"fixd_point": 1})
    # different coupling spaces: only the spectrum is defined; asking for more names the fix
    c4 = sig("c4", [0.4], c=4)
    with pytest.raises(InvalidParameterError, match="depth_points"):
        flow_distance(a, c4, weights={"spectrum": 1, "fixed_point": 1})
    assert flow_distance(a, c4).total == pytest.approx(0.15)  # the defaults drop what is undefined
    dd = flow_distance(a, c4, weights={"spectrum": 1})
    assert dd.total == pytest.approx(0.15) and math.isnan(dd.components["fixed_point"])
    # koopman spectrum: takes the spectrum's weight, the coupling spectrum stays reported with weight 0
    a.koopman_eigenvalues = np.array([0.9, 0.1])
    b.koopman_eigenvalues = np.array([0.8])
    dk = flow_distance(a, b, spectrum="koopman")
    # in exponents z = log(lambda) / ln b, the shorter set padded with the dead mode EXPONENT_FLOOR
    lb = math.log(a.b)
    ya, yb = np.log([0.9, 0.1]) / lb, np.log([0.8]) / lb
    want = (abs(ya[0] - yb[0]) + abs(max(ya[1], -10.0) + 10.0)) / 2
    assert dk.components["koopman"] == pytest.approx(want)
    assert dk.weights["spectrum"] == 0 and dk.weights["koopman"] == 1
    assert dk.total == pytest.approx(want + d.components["fixed_point"] + d.components["subspace"])


def test_signature_json_round_trip_of_fields():
    a = sig("a", [0.5], extra_eigs=[0.0])
    j = a.to_json()
    assert [e["retained"] for e in j["eigenvalues"]] == [True, False]
    assert j["eigenvalues"][0]["exponent"] == pytest.approx(0.5)
    assert j["eigenvalues"][1]["exponent"] is None  # -inf
    json.dumps(j, allow_nan=False)


# --- classes ---------------------------------------------------------------------------------------------
KNOWN = np.array(
    [
        [0.0, 0.1, 0.2, 0.9, 1.0],
        [0.1, 0.0, 0.15, 0.95, 0.9],
        [0.2, 0.15, 0.0, 0.8, 0.85],
        [0.9, 0.95, 0.8, 0.0, 0.3],
        [1.0, 0.9, 0.85, 0.3, 0.0],
    ]
)
NAMES = ["a", "b", "c", "d", "e"]


def test_classes_from_known_matrix():
    assert classes_from_distance(KNOWN, NAMES, 0.5) == [["a", "b", "c"], ["d", "e"]]
    assert classes_from_distance(KNOWN, NAMES, 0.25) == [["a", "b", "c"], ["d"], ["e"]]
    assert classes_from_distance(KNOWN, NAMES, 0.8) == [NAMES]  # c-d = 0.8 joins everything (single link)
    assert classes_from_distance(KNOWN, NAMES, 0.05) == [[n] for n in NAMES]
    h = hierarchical_clustering(KNOWN, NAMES, "average", threshold=0.5)
    heights = [m["height"] for m in h["merges"]]
    # average linkage: a+b at 0.1, c joins at (0.2 + 0.15) / 2, d+e at 0.3, then the mean of 6 cross distances
    np.testing.assert_allclose(heights, [0.1, 0.175, 0.3, (0.9 + 1.0 + 0.95 + 0.9 + 0.8 + 0.85) / 6])
    assert h["clusters"] == [["a", "b", "c"], ["d", "e"]]
    assert sorted(h["dendrogram"]["ivl"]) == sorted(NAMES) and len(h["linkage"]) == 4
    # largest gap: between 0.3 and 0.9 -> 0.6
    assert largest_gap_threshold(KNOWN, NAMES) == pytest.approx(0.6)
    with pytest.raises(InvalidParameterError, match="symmetric"):
        classes_from_distance(KNOWN + np.triu(np.ones((5, 5)), 1), NAMES, 0.5)


def test_analysis_on_signatures_gives_classes_and_json():
    sigs = [sig("a", [0.5]), sig("b", [0.52]), sig("c", [0.1], vectors=np.eye(3)[:, [2]])]
    ua = UniversalityAnalysis().fit(sigs)
    D = ua.distance_.values
    assert ua.weights_rule_ == "fit default" and ua.threshold_rule_ == "default (fit)"
    assert D[0, 1] == pytest.approx(0.02) and D[0, 2] > DEFAULT_THRESHOLDS["fit"]
    assert ua.classes_ == [["a", "b"], ["c"]] and ua.threshold_ == DEFAULT_THRESHOLDS["fit"]
    j = ua.to_json()
    assert set(j) >= {"models", "distance", "components", "classes", "threshold", "hierarchical"}
    assert j["models"] == ["a", "b", "c"] and j["classes"] == [["a", "b"], ["c"]]
    assert j["graph"]["edges"] == [["a", "b", pytest.approx(0.02)]]
    json.dumps(j, allow_nan=False)
    ua2 = UniversalityAnalysis(threshold="auto").fit(sigs)
    assert ua2.threshold_rule_ == "largest_gap" and ua2.classes_ == [["a", "b"], ["c"]]


def test_real_flows_self_distance_zero_and_symmetric(stores):
    paths = [stores["mlp0"], stores["mlp1"], stores["cnn0"]]
    ua = UniversalityAnalysis().fit(paths)
    D = ua.distance_.values
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    assert (D[~np.eye(3, dtype=bool)] > 0).all()
    # other seeds and architectures: not aligned, the invariant unit profile is the default total
    assert ua.mode_ == "invariant" and not ua.aligned_[0, 1] and ua.weights_["unit_profile"] == 1.0
    C = ua.components_
    assert list(C["component"].values) == [
        "spectrum",
        "fixed_point",
        "subspace",
        "survival",
        "units",
        "unit_profile",
    ]
    assert np.isnan(C.sel(component="survival").values[0, 1])
    np.testing.assert_allclose(C.sel(component="unit_profile").values, D, rtol=1e-12, atol=1e-15)
    # distance of a flow to an independent fit of the same flow is exactly 0, component by component
    s0, s0b = (flow_signature(stores["mlp0"]) for _ in range(2))
    d = flow_distance(s0, s0b)
    assert d.alignment.identity and d.total == 0.0 and all(v == 0.0 for v in d.components.values())
    assert ua.names_ == ["mlp0", "mlp1", "cnn0"]


def test_auto_rank_and_model_store_needs_a_flow(stores):
    s = flow_signature(stores["cnn0"])
    assert 1 <= s.rank <= 3 and s.meta["warnings"] is not None
    with rganalysis.load(stores["mlp0"]) as p:
        from rganalysis.fit.couplings import flow_couplings, resample_depth

        K = resample_depth(flow_couplings(p), 8)
    # 3 layers interpolated onto 8 depths: the design has numerical rank 3
    assert auto_rank(K, rtol=1e-9, max_rank=99, gain=1.0) == 3
    assert auto_rank(K, rtol=1e-9, max_rank=2, gain=1.0) == 2
    assert auto_rank(K.isel(round=slice(0, 3)), rtol=1e-9, max_rank=99, gain=1.0) == 1  # 2 pairs: rank <= 1
    assert auto_rank(K) == 1  # no second direction halves the residual of a random-init MLP's flow
    with pytest.raises(TooFewRoundsError):
        auto_rank(K.isel(round=slice(0, 2)))
    # ridge 0: the exact fixed point of rganalysis fit
    s_exact = flow_signature(stores["cnn0"], fixed_point_ridge=0.0)
    assert s_exact.fixed_point_method in ("exact", "lstsq")
    np.testing.assert_allclose(s_exact.fixed_point, s.meta["fixed_point_exact"], rtol=1e-9, atol=1e-12)
    assert s.fixed_point_method == "ridge=0.05"
    with pytest.raises(TooFewRoundsError, match="--rounds"):
        flow_signature(stores["model"])
    s = flow_signature(stores["model"], rounds=6, rate=0.25)
    assert s.n_rounds == 7 and s.b == pytest.approx(4 / 3) and s.meta["flow"]["computed"]


def test_koopman_eigenvalues_of_a_known_linear_flow():
    """Weights that evolve as sum_k c_k lambda_k^n v_k: the DMD eigenvalues are the lambda_k."""
    from rganalysis.store.parameter_set import ParameterSet, build_info

    g = torch.Generator().manual_seed(0)
    lam = np.array([1.1, 0.9, 0.5])
    V = torch.randn(3, 40 * 30 + 20 * 40, generator=g, dtype=torch.float64)
    R = 9
    weights = {}
    for r in range(R):
        x = (torch.tensor(lam**r)[:, None] * V).sum(0)
        weights[r] = {
            "a.weight": x[:1200].reshape(40, 30).clone(),
            "b.weight": x[1200:].reshape(20, 40).clone(),
        }
    p = ParameterSet(build_info(weights[0]), weights, {}, n_rounds=R, layouts=[[]] * R)
    assert p.pruned_names() == ["a.weight", "b.weight"]
    ev = koopman_eigenvalues(p)  # default rank T - 1 = 8 is lowered to the numerical rank 3
    np.testing.assert_allclose(np.sort(ev.real)[::-1], lam, rtol=1e-6)
    np.testing.assert_allclose(ev.imag, 0.0, atol=1e-6)


def test_distance_matrix_shapes():
    sigs = [sig("a", [0.5]), sig("b", [0.4])]
    dm = distance_matrix(sigs)
    D, C = dm.total, dm.components
    assert D.dims == ("model", "model_other") and C.dims == ("component", "model", "model_other")
    # one pair whose fixed points and subspaces coincide: those components carry nothing and are dropped
    assert json.loads(C.attrs["weights"]) == {"spectrum": 1.0, "fixed_point": 0.0, "subspace": 0.0}
    assert (
        dm.rule == "fit default" and dm.mode == "invariant" and dm.dropped[-2:] == ["fixed_point", "subspace"]
    )
