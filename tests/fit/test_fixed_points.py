"""Fixed-point classification, scale factors, distances and the JSON spectrum."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

from rganalysis.errors import InvalidParameterError, TooFewRoundsError
from rganalysis.fit.fixed_points import (
    MARGINAL_Y,
    classify_eigenvalues,
    distance_to_fixed_point,
    effective_scale_factor,
    exponent_class,
    exponents,
    fixed_point_type,
    interval_class,
    near_fixed_point,
    per_round_scale_factors,
    scale_factor,
    spectrum_json,
)
from rganalysis.fit.intervals import IntervalWarning
from rganalysis.fit.jacobian import TrajectoryEstimator


def test_scale_factors() -> None:
    assert scale_factor(0.2) == pytest.approx(1.25)
    with pytest.raises(InvalidParameterError):
        scale_factor(1.0)
    b = per_round_scale_factors([1.0, 0.8, 0.4, 0.3])
    np.testing.assert_allclose(b, [1.25, 2.0, 4 / 3])
    assert effective_scale_factor(b) == pytest.approx((1.25 * 2.0 * 4 / 3) ** (1 / 3))
    assert effective_scale_factor(b) == pytest.approx((1.0 / 0.3) ** (1 / 3))  # = (rho_0/rho_R)^(1/R)
    with pytest.raises(TooFewRoundsError):
        per_round_scale_factors([1.0])
    with pytest.raises(InvalidParameterError, match="> 1"):
        effective_scale_factor([1.0, 1.0])


def test_exponent_of_a_fitted_contraction() -> None:
    """A flow K_{n+1} = 0.7 K_n + 0.1 at rate 0.2: the fit finds lambda = 0.7 and y = ln 0.7 / ln 1.25."""
    flows = [np.array([k0 * 0.7**n + (1 - 0.7**n) / 3 for n in range(8)])[:, None] for k0 in (0.0, 1.0, 2.0)]
    est = TrajectoryEstimator(n_bootstrap=0).fit(flows)
    y = exponents(est.eigenvalues_, scale_factor(0.2))
    assert est.eigenvalues_[0].real == pytest.approx(0.7, abs=1e-12)
    assert y[0] == pytest.approx(math.log(0.7) / math.log(1.25), abs=1e-10)  # -1.598
    # an uneven recorded flow: per-round factors b_n enter through their geometric mean
    b = per_round_scale_factors([1.0, 0.8, 0.4])
    assert exponents([0.5], b)[0] == pytest.approx(math.log(0.5) / math.log(math.sqrt(1.25 * 2.0)))
    assert exponents([0.0], 1.25)[0] == -math.inf


def test_classify_eigenvalues() -> None:
    # b = 1.25: the marginal band |y| <= 0.2 is |lambda| in [0.9564, 1.0456]
    recs = classify_eigenvalues(
        [1.5, 1.02 + 0.01j, 0.8, 0.0],
        1.25,
        ci=np.array([[1.4, 1.6], [1.0, 1.04], [0.79, 0.81], [0.0, 0.01]]),
    )
    assert [r["class"] for r in recs] == ["relevant", "marginal", "irrelevant", "irrelevant"]
    assert recs[1]["re"] == 1.02 and recs[1]["im"] == 0.01
    assert recs[1]["abs"] == pytest.approx(abs(1.02 + 0.01j))
    assert recs[0]["exponent"] == pytest.approx(math.log(1.5) / math.log(1.25))
    assert recs[2]["ci_low"] == 0.79 and recs[2]["ci_high"] == 0.81
    assert recs[2]["exponent_ci_low"] == pytest.approx(math.log(0.79) / math.log(1.25))
    assert recs[3]["exponent_ci_low"] == -math.inf
    est = [r["class_estimate"] for r in classify_eigenvalues([1.04, 1.05], 1.25)]
    assert est == ["marginal", "relevant"]
    # without an interval there is no verdict
    assert classify_eigenvalues([1.5], 1.25)[0]["class"] == "undetermined"
    with pytest.raises(InvalidParameterError):
        classify_eigenvalues([1.0], 1.25, ci=np.zeros((2, 2)))


def test_classes_are_cut_on_the_exponent_not_on_lambda() -> None:
    """|lambda| = 0.95 is irrelevant at p = 0.2 (y = -0.230) and marginal at p = 0.5 (y = -0.074): the
    class follows y = ln|lambda| / ln b (on main it was cut on |lambda| and marginal at both).  The same
    map at several rates (lambda = b^y for one y) gets one class whatever b."""
    assert MARGINAL_Y == 0.2
    ci = np.array([[0.949, 0.951]])
    assert classify_eigenvalues([0.95], 1.25, ci=ci)[0]["class"] == "irrelevant"
    assert classify_eigenvalues([0.95], 2.0, ci=ci)[0]["class"] == "marginal"
    for y in (-1.0, -0.1, 0.5):
        classes = set()
        for b in (1.25, 2.0, 4.0):
            lam = b**y
            rec = classify_eigenvalues([lam], b, ci=np.array([[lam * b**-0.05, lam * b**0.05]]))[0]
            assert rec["exponent"] == pytest.approx(y)
            classes.add(rec["class"])
        assert classes == {exponent_class(y)}
    assert interval_class(-0.3, -0.21) == "irrelevant" and interval_class(-0.3, -0.19) == "undetermined"


def test_fixed_point_type() -> None:
    b = 1.25
    assert fixed_point_type([0.8, 0.1], b=b) == "stable"
    assert fixed_point_type([1.5, 2.0], b=b) == "unstable"
    assert fixed_point_type([1.5, 0.5], b=b) == "saddle"
    assert fixed_point_type([1.5, 1.0, 0.5], b=b) == "saddle"
    assert fixed_point_type([1.0, 0.5], b=b) == "marginal"
    assert fixed_point_type([1.01], b=b) == "marginal"
    assert fixed_point_type([1.01], b=b, band=0.0) == "unstable"
    with pytest.raises(InvalidParameterError):
        fixed_point_type([], b=b)
    with pytest.raises(InvalidParameterError, match="scale factor"):
        fixed_point_type([0.5])


def test_distance_and_near_fixed_point() -> None:
    flow = xr.DataArray(
        np.array([[1.0, 1.0], [0.6, 0.5], [0.52, 0.51]]),
        dims=("round", "coupling"),
        coords={"round": [0, 1, 2], "coupling": ["a", "b"]},
    )
    fp = np.array([0.5, 0.5])
    d = distance_to_fixed_point(flow, fp)
    assert d.dims == ("round",)
    np.testing.assert_allclose(d.values, [math.hypot(0.5, 0.5), 0.1, math.hypot(0.02, 0.01)])
    v = near_fixed_point(flow, fp, tol=0.05)
    assert v and v.measure == "relative" and v.tol == 0.05 and v.round == 2
    assert v.distance == pytest.approx(math.hypot(0.02, 0.01) / math.hypot(0.5, 0.5))
    assert not near_fixed_point(flow, fp, tol=0.01)
    v0 = near_fixed_point(flow, [0.0, 0.0], tol=0.05)  # the origin: absolute distance, said so
    assert v0.measure == "absolute" and not v0.near
    assert v0.to_dict()["tol"] == 0.05
    with pytest.raises(InvalidParameterError, match="not finite"):
        distance_to_fixed_point(flow, [np.nan, 0.0])
    np.testing.assert_allclose(distance_to_fixed_point(flow.values, fp, scale=[0.1, 1.0]).values[1], 1.0)


def test_spectrum_json_from_arrays_is_strict_json() -> None:
    out = spectrum_json(
        [0.8, 0.0, 1.2 + 0.1j],
        [1.25, 1.25, 2.0],
        ci=np.array([[0.79, 0.81], [0.0, 0.02], [1.1, 1.3]]),
    )
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["type"] == "saddle"
    assert back["scale_factor"] == pytest.approx((1.25 * 1.25 * 2.0) ** (1 / 3))
    assert back["scale_factors"] == [1.25, 1.25, 2.0]
    e = back["eigenvalues"]
    assert set(e[0]) == {
        "re",
        "im",
        "abs",
        "exponent",
        "class",
        "class_estimate",
        "ci_low",
        "ci_high",
        "exponent_ci_low",
        "exponent_ci_high",
    }
    assert e[1]["exponent"] is None and e[1]["class"] == "irrelevant"
    assert e[2]["class"] == "relevant" and e[2]["im"] == pytest.approx(0.1)
    # no interval, no verdict: the estimate's class is kept apart
    no_ci = spectrum_json([0.5, 1.3], 1.25)
    assert no_ci["eigenvalues"][0]["ci_low"] is None and no_ci["eigenvalues"][0]["class"] == "undetermined"
    assert no_ci["eigenvalues"][0]["class_estimate"] == "irrelevant" and no_ci["type"] == "undetermined"
    assert no_ci["type_estimate"] == "saddle"


def test_verdicts_only_where_the_interval_supports_them() -> None:
    from rganalysis.fit.fixed_points import fixed_point_type, interval_class

    assert interval_class(0.25, 1.3) == "relevant" and interval_class(-3.0, -0.25) == "irrelevant"
    assert interval_class(-0.19, 0.15) == "marginal" and interval_class(-0.5, 0.8) == "undetermined"
    assert interval_class(-17.5, 8.0) == "undetermined" and interval_class(np.nan, 0.5) == "undetermined"
    # the random-init ResNet-18: a point estimate 1.049 with an interval from 0.02 to 6
    out = spectrum_json([1.049, 0.8], 1.25, ci=np.array([[0.02, 6.0], [0.7, 0.85]]))
    assert [x["class"] for x in out["eigenvalues"]] == ["undetermined", "irrelevant"]
    # (y = ln 1.049 / ln 1.25 = 0.214 lies above the band 0.2: the estimate alone would say saddle)
    assert out["type"] == "undetermined" and out["type_estimate"] == "saddle"
    lam = [1.3, 0.5, 0.9]
    assert (
        fixed_point_type(lam, classes=["relevant", "irrelevant", "undetermined"]) == "saddle"
    )  # fixed anyway
    assert fixed_point_type(lam, classes=["irrelevant", "undetermined", "irrelevant"]) == "undetermined"
    assert fixed_point_type(lam, classes=["irrelevant"] * 3) == "stable"


def test_spectrum_json_from_an_estimator() -> None:
    rng = np.random.default_rng(0)
    A = np.array([[0.9, 0.2], [0.0, 0.3]])
    c = np.array([0.05, 0.1])
    flows = []
    for _ in range(3):
        k = [rng.normal(size=2)]
        for _ in range(4):
            k.append(A @ k[-1] + c)
        flows.append(np.array(k))
    # noise-free pairs: every resample gives the fit back, a zero-width "interval" that is not reported
    with pytest.warns(IntervalWarning, match="2 zero-width"):
        est = TrajectoryEstimator(n_bootstrap=20).fit(flows)
    out = json.loads(json.dumps(spectrum_json(est, scale_factor(0.2)), allow_nan=False))
    assert out["type"] == "undetermined" and out["type_estimate"] == "stable"
    assert [round(x["abs"], 6) for x in out["eigenvalues"]] == [0.9, 0.3]
    assert out["couplings"] == ["k0", "k1"]
    np.testing.assert_allclose(out["fixed_point"], np.linalg.solve(np.eye(2) - A, c), atol=1e-9)
    assert len(out["eigenvectors"]) == 2 and len(out["eigenvectors"][0]["re"]) == 2
    assert out["diagnostics"]["n_pairs"] == 12 and out["diagnostics"]["condition_number"] > 0
    assert out["eigenvalues"][0]["ci_low"] is None and out["eigenvalues"][0]["class"] == "undetermined"
