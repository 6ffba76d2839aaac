"""`rganalysis demo`, the README's main command: the whole pipeline on the embedded default."""

from __future__ import annotations

import re

import pytest

from rganalysis.cli import main


@pytest.mark.slow
def test_demo_tells_the_real_story(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    # one verdict line per model; verdicts only with their intervals
    for name in ("all-MiniLM-L6-v2", "resnet18", "digits-digits0-4", "digits-alldigits-flipped"):
        assert re.search(rf"^{re.escape(name)}: fixed point ", text, re.M), name
    assert "resnet18: " in text and "[random init: a scale example]" in text
    assert (
        "all-MiniLM-L6-v2: " in text
        and "random init" not in text.split("all-MiniLM-L6-v2: ")[1].split("\n")[0]
    )
    assert "layer collapse: pooler.dense.weight" in text  # MiniLM's pooler is emptied by global pruning
    assert re.search(
        r"leading \|lambda\| = [0-9.]+ \[[0-9.]+, [0-9.]+\] \((relevant|irrelevant|marginal|undetermined)\)",
        text,
    )
    # real tickets (they beat random masks of their layer densities), ranked by the default distance
    rows = re.findall(r"ticket (0\.\d+) vs random (0\.\d+); rho ([+-]\d\.\d+)", text)
    assert len(rows) == 5 and all(float(t) > float(r) + 0.2 for t, r, _ in rows)
    mean = float(re.search(r"mean within-target rho ([+-]\d\.\d+)", text).group(1))
    assert mean < -0.5 and "aligned comparison" in text
    html = (out / "report.html").read_text()
    for key in ('id="fig-transfers"', 'id="transfer-pairs"', "looks untrained", "Layer collapse"):
        assert key in html, key
