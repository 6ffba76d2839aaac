"""The digits transfer experiment (examples/digits_transfer.py) end to end, in its --quick setting.

Slow but bounded (about 1.5 minutes on 2 CPU cores): real IMP with retraining on scikit-learn's
bundled digits, ticket transfers, universality distances and their Spearman correlation.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import rganalysis

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_transfer.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("digits_transfer", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_tasks_are_derived_from_bundled_digits():
    ex = _load_example()
    tasks = ex.make_tasks(seed=0)
    assert list(tasks) == ["digits", "permuted", "low", "noisy", "high", "labelnoise"]
    d = tasks["digits"]
    assert d.x_train.shape[1] == 64 and len(d.y_train) + len(d.y_test) == 1797
    assert set(tasks["low"].y_train.tolist()) == {0, 1, 2, 3, 4}
    assert set(tasks["high"].y_test.tolist()) == {5, 6, 7, 8, 9}
    # the permuted task is a relabelling: one fixed bijection of the classes
    pairs = set(zip(d.y_train.tolist(), tasks["permuted"].y_train.tolist(), strict=True))
    assert len(pairs) == 10 and len({b for _, b in pairs}) == 10
    assert (
        0.3 < float((tasks["labelnoise"].y_train != d.y_train).float().mean()) < 0.4
    )  # 40% drawn, 1/10 unchanged
    assert not np.allclose(tasks["noisy"].x_test.numpy(), d.x_test.numpy())


@pytest.mark.slow
def test_quick_transfer_experiment(tmp_path):
    ex = _load_example()
    lines: list[str] = []
    res = ex.run(tmp_path, quick=True, seed=0, log=lines.append)
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["quick"] is True
    tasks = ["digits", "low", "noisy", "high"]
    for arch in ("mlp", "cnn"):
        a = res["archs"][arch]
        assert a["tasks"] == tasks
        acc = np.array(a["transfer_accuracy"])
        assert acc.shape == (4, 4) and ((acc >= 0) & (acc <= 1)).all()
        # real training at 3 % density: the tickets beat chance and random masks of their layer densities
        native = np.array(a["native_accuracy"])
        assert native[0] > 0.85 and (native > 0.5).all()
        assert native.mean() > np.mean(a["random_mask_accuracy"]) + 0.1
        for t in tasks:
            rho = a["global_density"][t]
            assert rho[0] == 1.0 and rho[-1] == pytest.approx(0.5**5, rel=0.02)
            assert len(a["imp_accuracy"][t]) == 6  # dense + 5 rounds
        # the flows are stores rganalysis reads back, with weights retrained every round
        with rganalysis.load(tmp_path / "flows" / f"{arch}-digits.h5") as f:
            assert f.n_rounds == 6 and f.flow_attrs["rescaling"] == "rewind"
            name = f.pruned_names()[0]
            assert not np.array_equal(f.tensor(name, 1).numpy(), f.tensor(name, 2).numpy())
    comp = res["compare"]
    assert len(comp["models"]) == 8 and sorted(sum(comp["classes"], [])) == sorted(comp["models"])
    D = np.array(comp["distance"])
    np.testing.assert_array_equal(D, D.T)
    assert len(res["pairs"]) == 2 * 4 * 3
    for p in res["pairs"]:
        assert math.isfinite(p["gap"]) and math.isfinite(p["distance"])
    s = res["spearman"]["all"]["distance"]
    assert s["n"] == 24 and -1 <= s["rho"] <= 1 and 0 <= s["p"] <= 1
    assert any("Spearman" in line for line in lines)
