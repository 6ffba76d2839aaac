"""`rganalysis compare --help` and the README describe the default distance as it is: which components
carry weight (docs/universality.md), built from the weights the code uses."""

from __future__ import annotations

import re
from pathlib import Path

from rganalysis.cli import build_parser
from rganalysis.universality.distances import DEFAULT_WEIGHTS_ALIGNED, DEFAULT_WEIGHTS_INVARIANT

README = Path(__file__).resolve().parents[2] / "README.md"


def _help() -> str:
    cmd = build_parser().get_default("commands")["compare"]
    return " ".join((cmd.description + " " + cmd.format_help()).split())


def test_compare_help_names_the_weighted_components() -> None:
    text = _help()
    carried = {k for w in (DEFAULT_WEIGHTS_ALIGNED, DEFAULT_WEIGHTS_INVARIANT) for k, v in w.items() if v}
    assert carried == {"survival", "units", "unit_profile"}
    assert f"survival + {DEFAULT_WEIGHTS_ALIGNED['units']:g} x units" in text
    assert "between other flows unit_profile" in text
    zero = re.search(r"fitted-map components \(([^)]*)\) are computed and reported but carry weight 0", text)
    assert zero and {z.strip() for z in zero.group(1).split(",")} == {
        "spectrum",
        "fixed_point",
        "subspace",
        "koopman",
        "response_spectrum",
    }
    # the one-line help no longer says the distance is the spectrum, fixed point and subspace
    assert "(spectrum, fixed point, subspace)" not in text


def test_readme_describes_the_default_distance() -> None:
    text = " ".join(README.read_text().split())
    assert "survival + 10 × units" in text and "unit_profile" in text
    assert "weight 0" in text
