"""One wording of the fixed-point verdict for the console (`fit`), the demo and the report: an
extrapolated fixed point gets no type ("stable" ...), the words "extrapolated, not reached" and the
distance the report gives; the console says everything the report says about nearness."""

from __future__ import annotations

import copy
import re

from rganalysis.demo import _verdict
from rganalysis.fit.fixed_points import fixed_point_wording
from rganalysis.fit.flowfit import format_spectrum

BASE = {
    "models": ["all-MiniLM-L6-v2"],
    "estimator": "trajectory",
    "couplings": ["density_rel[depth=0.000]", "density_rel[depth=0.500]", "density_rel[depth=1.000]"],
    "b": 1.25,
    "rate": 0.2,
    "tol": 0.05,
    "fixed_point_type": "stable",
    "fixed_point_type_estimate": "stable",
    "fixed_point_extrapolated": False,
    "fixed_point_outside_domain": [],
    "near_fixed_point": {
        "near": False,
        "distance": 3.349,
        "tol": 0.05,
        "measure": "relative",
        "round": 8,
        "fixed_point_norm": 1.0,
    },
    "collapsed_layers": {},
    "eigenvalues": [
        {
            "re": 0.9005,
            "im": 0.0,
            "abs": 0.9005,
            "exponent": -0.47,
            "class": "irrelevant",
            "ci_low": 0.85,
            "ci_high": 0.93,
        }
    ],
}


def _extrapolated() -> dict:
    j = copy.deepcopy(BASE)
    j["fixed_point_type"] = "extrapolated"
    j["fixed_point_extrapolated"] = True
    j["fixed_point_outside_domain"] = ["density_rel[depth=0.000]", "density_rel[depth=1.000]"]
    return j


def test_an_extrapolated_fixed_point_gets_no_type_and_its_distance_everywhere() -> None:
    j = _extrapolated()
    for text in (format_spectrum(j), _verdict(j), " ".join(fixed_point_wording(j))):
        assert "stable" not in text and "saddle" not in text
        assert "extrapolated, not reached" in text
        assert re.search(r"relative distance 3\.3(49|5) at round 8", text), text
        assert "2 of 3" in text and "density_rel[depth=0.000]" in text
        assert "not near" not in text and "near (" not in text  # no nearness verdict about it either
    # even if a JSON still says stable (e.g. written before), the extrapolation flag wins
    j["fixed_point_type"] = "stable"
    assert "stable" not in format_spectrum(j).splitlines()[1]


def test_a_reachable_fixed_point_prints_type_and_nearness_as_the_report_does() -> None:
    line = format_spectrum(BASE).splitlines()[1]
    assert line == "  fixed point: stable; not near (relative distance 3.349 at round 8 > tol 0.05)"
    assert _verdict(BASE).startswith(
        "fixed point stable, not near (relative distance 3.35 at round 8 > tol 0.05)"
    )
    j = copy.deepcopy(BASE)
    j["fixed_point_type"] = "undetermined"
    j["fixed_point_type_estimate"] = "saddle"
    assert "undetermined (estimate: saddle; the intervals do not fix it)" in format_spectrum(j)
    j["near_fixed_point"] = None
    assert "no finite fixed point (I - J singular)" in format_spectrum(j)
