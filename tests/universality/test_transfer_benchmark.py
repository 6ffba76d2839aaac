"""The ticket-transfer benchmark (examples/transfer_benchmark.py): task design, scoring statistics,
deterministic generation on a tiny config, and the whole --quick run (about a minute on 2 CPU cores).

Nothing here asserts how well any real distance predicts the gaps: that is what the benchmark measures.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transfer_benchmark.py"


@pytest.fixture(scope="module")
def tb():
    spec = importlib.util.spec_from_file_location("transfer_benchmark", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------------- tasks
def test_task_design(tb):
    tasks = tb.make_tasks(tb.FULL_TASKS, seed=0)
    specs = tb.TASK_SPECS
    fams = {f: [t for t in tb.FULL_TASKS if specs[t].family == f] for f in tb.FAMILIES}
    assert len(tb.FULL_TASKS) >= 8 and all(len(v) >= 4 for v in fams.values())
    assert len(fams["input_transforms"]) - 1 >= 3  # at least three transforms besides the identity
    # class subsets: 5 classes each, overlaps over ordered pairs span 0..100 %
    overlaps = {
        tb.class_overlap(specs[a], specs[b])
        for a in fams["class_subsets"]
        for b in fams["class_subsets"]
        if a != b
    }
    assert overlaps == {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    for t in fams["class_subsets"]:
        assert set(tasks[t].y_train.tolist()) == set(specs[t].classes) and len(specs[t].classes) == 5
        assert set(tasks[t].y_test.tolist()) == set(specs[t].classes)
    for t in fams["input_transforms"]:
        assert set(tasks[t].y_train.tolist()) == set(range(10))
    o = tasks["orig"]
    assert o.x_train.shape[1] == 64 and o.x_train.dtype == torch.float32
    assert len(o.y_train) + len(o.y_test) == 1797
    img = o.x_test.reshape(-1, 8, 8)
    assert torch.equal(tasks["hflip"].x_test.reshape(-1, 8, 8), img.flip(2))
    assert torch.equal(tasks["transpose"].x_test.reshape(-1, 8, 8), img.transpose(1, 2))
    assert torch.allclose(tasks["invert"].x_test, 1 - o.x_test)
    assert torch.equal(torch.sort(tasks["permute"].x_test, 1).values, torch.sort(o.x_test, 1).values)
    assert not torch.equal(tasks["permute"].x_test, o.x_test)
    # the split and the random transforms are functions of the seed
    again = tb.make_tasks(["noise", "permute"], seed=0)
    assert torch.equal(again["noise"].x_train, tasks["noise"].x_train)
    assert not torch.equal(tb.make_tasks(["noise"], seed=1)["noise"].x_train[:5], tasks["noise"].x_train[:5])


def test_training_regimes(tb):
    """The held-out family: same inputs as ``orig``, only the training labels or samples differ."""
    tasks = tb.make_tasks(["orig", "labelnoise20", "labelnoise40", "few20", "imbalanced"], seed=5)
    o = tasks["orig"]
    n = len(o.y_train)
    for name, q in (("labelnoise20", 0.2), ("labelnoise40", 0.4)):
        t = tasks[name]
        assert torch.equal(t.x_train, o.x_train) and torch.equal(t.y_test, o.y_test)
        assert int((t.y_train != o.y_train).sum()) == round(q * n)  # every replaced label is another class
    counts = np.bincount(o.y_train.numpy(), minlength=10)
    np.testing.assert_array_equal(
        np.bincount(tasks["few20"].y_train.numpy(), minlength=10), np.round(0.2 * counts)
    )
    imb = np.bincount(tasks["imbalanced"].y_train.numpy(), minlength=10)
    np.testing.assert_array_equal(imb[:5], counts[:5])
    np.testing.assert_array_equal(imb[5:], np.round(0.15 * counts[5:]))
    for t in ("few20", "imbalanced"):
        assert torch.equal(tasks[t].x_test, o.x_test)
        # kept samples are rows of orig's training set with their clean labels
        rows = {tuple(r) for r in o.x_train.numpy().round(6).tolist()}
        assert all(tuple(r) in rows for r in tasks[t].x_train.numpy().round(6).tolist()[:50])
    assert not set(tb.CALIBRATION_TASKS) & {
        t for t, s in tb.TASK_SPECS.items() if s.family in tb.HELD_OUT_FAMILIES
    }


def test_regimes_kept_out_of_calibration(tb, tmp_path):
    with pytest.raises(SystemExit):
        tb.main(["generate", "--seeds", "0", "--tasks", "orig,few20", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        tb.main(["generate", "--seeds", "0,8", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------- statistics
def test_family_null_fails_a_family_detector(tb):
    """A distance that only tells the families apart ranks the pooled pairs, yet under relabelling within
    families it is unchanged, so its family-preserving p is 1."""
    fams = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    k = len(fams)
    same = np.equal.outer(np.array(fams), np.array(fams))
    gap = np.where(same, -0.01, -0.3) + 0.001 * _synthetic_gap(k, 2)
    np.fill_diagonal(gap, 0.0)
    D = np.where(same, 0.0, 1.0)
    fperms = tb.family_permutations(fams, 500, seed=1)
    assert all(sorted(np.array(fams)[p]) == sorted(fams) and list(np.array(fams)[p]) == fams for p in fperms)
    r = tb.score_group(D, gap, [f"t{i}" for i in range(k)], tb.permutations(k, 500, 0), fperms)
    assert r["mean_rho"] < -0.5 and r["perm_p"] < 0.01
    assert r["perm_p_family"] == 1.0 and r["perm_p_family_source"] == 1.0
    c = tb.combine([r])
    assert c["perm_p_family"] == 1.0


def test_goal_check(tb):
    gap = _synthetic_gap(8, 4)
    names = [f"t{i}" for i in range(8)]
    perms = tb.permutations(8, 500, seed=0)

    def cell(D):
        r = tb.score_group(D, gap, names, perms)
        return {"x": {"all": {"combined": tb.combine([r])}}}

    scores = {
        "oracle": cell(-gap),
        **{b: cell(tb.random_distance([], names, "mlp", 0, None)) for b in tb.BASELINES},
    }
    goal = tb.goal_check(scores, "oracle")["x"]["all"]
    assert all(v["met"] for v in goal.values()), goal
    scores["target_recall"] = cell(-gap + 1e-3 * _synthetic_gap(8, 9))  # a baseline as good as the oracle
    goal = tb.goal_check(scores, "oracle")["x"]["all"]
    assert not goal["margin_target >= 0.1"]["met"] and goal["rho_target <= -0.5"]["met"]


# ---------------------------------------------------------------------------------------------------- statistics
def test_target_recall_is_directed_at_one_global_density(tb):
    # per layer, not pooled: b keeps 1 of a's 3 weights in l1 and a's 1 in l2, 1 - (1/3 + 1)/2 = 1/3, and a keeps
    # b's 1 in l1 and 1 of b's 3 in l2, also 1/3.  c holds 2 weights, both in l1: it keeps 2 of a's 3 there and
    # none of a's l2 (2/3), while a keeps all of c (0): the pooled 1 - |s & t| / |t| would give 1/2 and 0
    a = {
        "l1": torch.tensor([1, 1, 1, 0], dtype=torch.bool),
        "l2": torch.tensor([1, 0, 0, 0], dtype=torch.bool),
    }
    b = {
        "l1": torch.tensor([1, 0, 0, 0], dtype=torch.bool),
        "l2": torch.tensor([1, 1, 1, 0], dtype=torch.bool),
    }
    c = {
        "l1": torch.tensor([1, 1, 0, 0], dtype=torch.bool),
        "l2": torch.tensor([0, 0, 0, 0], dtype=torch.bool),
    }
    D = tb._ticket_recall_distance([a, b, c])
    assert D[1, 0] == pytest.approx(1 / 3) and D[0, 1] == pytest.approx(1 / 3)
    # c keeps 2 of a's 3 in l1 and none of a's l2: 1 - (2/3 + 0)/2; a keeps both of c's (l2 empty in c)
    assert D[2, 0] == pytest.approx(2 / 3) and D[0, 2] == pytest.approx(0.0)
    assert np.diag(D).tolist() == [0.0, 0.0, 0.0]


def test_rowwise_spearman_matches_scipy(tb):
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 7)), rng.random((20, 7))
    x[3, :3] = x[3, 3]  # ties
    ours = tb.rowwise_spearman(x, y)
    for i in range(20):
        assert ours[i] == pytest.approx(spearmanr(x[i], y[i]).statistic, abs=1e-12)
    assert tb.rowwise_spearman(np.ones(5), y[0, :5]) == 0.0  # constant: no ranking information


def _synthetic_gap(k: int, seed: int) -> np.ndarray:
    g = -np.random.default_rng(seed).random((k, k))
    np.fill_diagonal(g, 0.0)
    return g


def test_minus_gap_distance_is_perfect(tb):
    gap = _synthetic_gap(8, 1)
    perms = tb.permutations(8, 2000, seed=3)
    r = tb.score_group(-gap, gap, [f"t{i}" for i in range(8)], perms)
    assert all(v == pytest.approx(-1.0) for v in r["rho_per_target"].values())
    assert r["mean_rho"] == pytest.approx(-1.0) and r["n_negative"] == r["n_targets"] == 8
    assert r["perm_p"] < 0.01 and r["pooled_rho"] == pytest.approx(-1.0)
    assert r["perm_p"] == pytest.approx(1 / 2001, abs=3 / 2001)  # only (near-)identity relabellings tie


def test_random_distance_p_is_not_tiny(tb):
    ps = []
    for s in range(20):
        gap = _synthetic_gap(8, 100 + s)
        D = tb.random_distance([], [f"t{i}" for i in range(8)], "mlp", s, None)
        np.testing.assert_array_equal(D, D.T)
        ps.append(tb.score_group(D, gap, [f"t{i}" for i in range(8)], tb.permutations(8, 500, s))["perm_p"])
    assert min(ps) > 0.005 and 0.25 < np.mean(ps) < 0.75  # roughly uniform under the null


def test_permutation_relabels_tasks(tb):
    rng = np.random.default_rng(0)
    D, gap = rng.random((5, 5)), _synthetic_gap(5, 0)
    perms = tb.permutations(5, 7, seed=0)
    null = tb.permuted_target_rhos(D, gap, perms)
    assert null.shape == (7, 5)
    p = perms[2]
    np.testing.assert_allclose(null[2], tb.target_rhos(D[np.ix_(p, p)], gap))
    np.testing.assert_array_equal(tb.permutations(5, 7, seed=0), perms)  # seeded


def test_combined_over_seeds(tb):
    parts = []
    for s in range(3):
        gap = _synthetic_gap(6, s)
        parts.append(tb.score_group(-gap, gap, list("abcdef"), tb.permutations(6, 1000, s)))
    c = tb.combine(parts)
    assert c["n_targets"] == 18 and c["n_negative"] == 18 and c["mean_rho"] == pytest.approx(-1.0)
    assert c["perm_p"] < min(
        p["perm_p"] for p in parts
    )  # independent permutations per seed multiply the evidence


def test_unit_degree_vector(tb):
    lin = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)  # linear (out 2, in 3), 2 weights
    conv = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    conv[0, 0, 0, 0] = conv[0, 0, 1, 1] = conv[1, 0, 2, 2] = True  # conv (out 2, in 1), 3 weights
    v = tb.unit_degree_vector({"a": lin, "b": conv})
    np.testing.assert_allclose(v, [1, 0, 0.5, 0.5, 0, 2 / 3, 1 / 3, 1])
    D = tb.unit_degree_cosine(
        [],
        ["x", "y"],
        "mlp",
        0,
        type("G", (), {"last_masks": lambda self, t: {"a": lin if t == "x" else ~lin, "b": conv}})(),
    )
    assert D.shape == (2, 2) and D[0, 0] == 0 and 0 < D[0, 1] < 1


def test_random_mask_keeps_layer_counts(tb):
    g = torch.Generator().manual_seed(0)
    ticket = {"a": torch.rand(30, 20, generator=g) < 0.1, "b": torch.rand(4, 2, 3, 3, generator=g) < 0.5}
    m = tb.random_mask(ticket, seed=5)
    assert {k: int(v.sum()) for k, v in m.items()} == {k: int(v.sum()) for k, v in ticket.items()}
    assert all(torch.equal(m[k], tb.random_mask(ticket, seed=5)[k]) for k in m)


# ---------------------------------------------------------------------------------------------------- generation
def test_generation_is_bit_identical_and_cached(tb, tmp_path):
    cfg = tb.BenchConfig(tasks=("cls01234", "cls56789", "orig"), rounds=2, rate=0.5, epochs=2)
    logs: list[str] = []
    a = tb.generate_one(tmp_path / "a", "mlp", 7, cfg, log=logs.append)
    b = tb.generate_one(tmp_path / "b", "mlp", 7, cfg, log=logs.append)
    for k in (
        "transfer_accuracy",
        "native_accuracy",
        "random_mask_accuracy",
        "imp_accuracy",
        "global_density",
        "layer_density",
        "dense_accuracy",
    ):
        assert a[k] == b[k], k
    assert a["native_equals_imp_last_round"] is True
    acc = np.array(a["transfer_accuracy"])
    assert acc.shape == (3, 3) and ((acc >= 0) & (acc <= 1)).all()
    assert a["global_density"]["orig"][-1] == pytest.approx(0.25, rel=0.01)
    # a complete generation is reused, not recomputed; other settings in the same folder are refused
    c = tb.generate_one(tmp_path / "a", "mlp", 7, cfg, log=logs.append)
    assert c["timing"] == a["timing"] and any("skipped" in line for line in logs)
    with pytest.raises(RuntimeError, match="other settings"):
        tb.generate_one(
            tmp_path / "a", "mlp", 7, tb.BenchConfig(tasks=cfg.tasks, rounds=2, rate=0.5, epochs=3)
        )
    # an interrupted run (JSON lost) reuses its finished flows and gives the same numbers
    (tmp_path / "b" / "seed_7" / "mlp" / "generation.json").unlink()
    d = tb.generate_one(tmp_path / "b", "mlp", 7, cfg, log=logs.append)
    assert d["timing"]["flows_reused"] == list(cfg.tasks) and d["transfer_accuracy"] == a["transfer_accuracy"]


def test_held_out_seeds_are_refused_without_flag(tb, tmp_path):
    for seed in ("2", "8", "11"):  # spent (held out before) and fresh held-out
        with pytest.raises(SystemExit):
            tb.main(["generate", "--seeds", seed, "--out", str(tmp_path), "--quick"])
    for seed in ("6", "9"):  # spent even with the flag
        with pytest.raises(SystemExit):
            tb.main(["generate", "--seeds", seed, "--held-out", "--out", str(tmp_path), "--quick"])
    assert not any(tmp_path.iterdir())
    # the committed ledgers spend their seeds whatever registration a run names
    assert {2, 5, 8, 9, 10} <= tb.spent_seeds(tmp_path / "other.json") and not {11, 12, 13} & tb.spent_seeds()


def _commit(root, *paths):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    subprocess.run([*git, "add", *(str(p.relative_to(root)) for p in paths)], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "commit"], check=True)


@pytest.fixture
def checkout(tb, tmp_path, monkeypatch):
    """A git checkout standing in for the repository (its docs/ holds registrations and ledgers); the code
    hash is the real one."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "README").write_text("x")
    _commit(root, root / "README")
    real = tb.scoring_sha256()
    monkeypatch.setattr(tb, "_ROOT", root)
    monkeypatch.setattr(tb, "scoring_sha256", lambda root=None: real)
    return root


def test_registration_binds_the_held_out_run(tb, tmp_path, monkeypatch, checkout):
    reg_path, out = checkout / "docs" / "transfer-registration.json", tmp_path / "out"
    held = [
        "run",
        "--seeds",
        "11",
        "--held-out",
        "--out",
        str(out),
        "--quick",
        "--registration",
        str(reg_path),
    ]
    with pytest.raises(SystemExit) as e:  # no registration
        tb.main(held)
    assert e.value.code == 2 and not out.exists()
    with pytest.raises(SystemExit) as e:  # held-out seeds only end to end
        tb.main(["generate", *held[1:]])
    assert e.value.code == 2 and not out.exists()
    assert tb.main(["register", "--choice", "directed_units", "--registration", str(reg_path)]) == 0
    reg = json.loads(reg_path.read_text())
    assert reg["choice"] == "directed_units" and reg["held_out_seeds"] == [11, 12, 13]
    assert reg["scoring_sha256"] == tb.scoring_sha256() and "KL(p_T^g || p_S^g)" in reg["formula"]
    assert set(reg["baselines"]) >= {"mask_jaccard", "unit_degree_cosine", "target_recall", "random"}
    assert reg["run"] == tb.run_settings()
    # the whole package is the scoring code: its defaults (the registered weights) and training included
    files = tb.scoring_files(Path(__file__).resolve().parents[2])
    assert {
        "rganalysis/universality/defaults.py",
        "rganalysis/universality/analysis.py",
        "rganalysis/train/masked.py",
    } <= set(files)
    with pytest.raises(SystemExit) as e:  # written once
        tb.main(["register", "--registration", str(reg_path)])
    assert e.value.code == 2
    with pytest.raises(tb.RegistrationError, match="not committed"):
        tb.check_registration([11, 12], reg_path)
    _commit(checkout, reg_path)
    assert tb.check_registration([11, 12], reg_path)["choice"] == "directed_units"
    with pytest.raises(tb.RegistrationError, match="not the registered"):
        tb.check_registration([14], reg_path)
    # a registration elsewhere (committed in a repository of its own) binds nothing
    other = tmp_path / "elsewhere" / "transfer-registration.json"
    other.parent.mkdir()
    other.write_text(reg_path.read_text())
    subprocess.run(["git", "init", "-q", str(other.parent)], check=True)
    _commit(other.parent, other)
    with pytest.raises(tb.RegistrationError, match="a registration that binds lives in"):
        tb.check_registration([11], other)
    with pytest.raises(tb.RegistrationError, match="a registration lives in"):
        tb.register("directed_units", candidates=[], path=tmp_path / "transfer-registration-x.json")
    # other settings than the registered ones (here the quick run's) spend no held-out seed
    assert tb.check_registration([11], reg_path, config=tb.BenchConfig().to_json(), run=tb.run_settings())
    with pytest.raises(
        tb.RegistrationError, match=r"registered settings only; this one differs in .*rounds \(4"
    ):
        tb.check_registration([11], reg_path, config=tb.BenchConfig.quick().to_json())
    for run, what in (
        (tb.run_settings(archs=["mlp"]), "archs"),
        (tb.run_settings(n_perm=5), "n_perm"),
        (tb.run_settings(distances=["mask_jaccard"]), "distances"),
        (tb.run_settings(threads=2), "threads"),
    ):
        with pytest.raises(
            tb.RegistrationError, match=rf"registered run settings only; this one differs in {what}"
        ):
            tb.check_registration([11], reg_path, run=run)
    with pytest.raises(SystemExit) as e:  # the command line: the quick settings of `held` are refused
        tb.main(held)
    assert e.value.code == 2 and not out.exists()
    # the scoring code changed after registering: refused
    monkeypatch.setattr(tb, "scoring_sha256", lambda root=None: "0" * 64)
    with pytest.raises(tb.RegistrationError, match="scoring code changed"):
        tb.check_registration([11], reg_path)
    monkeypatch.setattr(tb, "scoring_sha256", lambda root=None: reg["scoring_sha256"])
    # an edit of the committed registration unbinds it
    reg_path.write_text(reg_path.read_text().replace('"directed_units"', '"mask_jaccard"', 1))
    with pytest.raises(tb.RegistrationError, match="not committed as it is"):
        tb.check_registration([11], reg_path)
    subprocess.run(
        ["git", "-C", str(checkout), "checkout", "-q", "--", "docs/transfer-registration.json"], check=True
    )
    # a seed is spent when its run starts: claimed once, refused the second time (and by a parallel run)
    tb.claim_seeds([11], reg_path)
    with pytest.raises(tb.RegistrationError, match=r"\[11\] were scored already"):
        tb.check_registration([11, 12], reg_path)
    with pytest.raises(tb.RegistrationError, match="claimed by another run"):
        tb.claim_seeds([11], reg_path)
    assert tb.check_registration([12], reg_path)
    tb.record_scored([11], reg_path)
    ledger = json.loads((checkout / "docs" / "transfer-registration-ledger.json").read_text())
    assert ledger["scored_seeds"] == [11] and ledger["runs"][0]["finished"] is not None
    # the ledger of docs/ spends its seeds for any later registration
    assert 11 in tb.spent_seeds()
    with pytest.raises(tb.RegistrationError, match="scored before: register fresh seeds"):
        tb.register(
            "directed_units",
            candidates=[],
            path=checkout / "docs" / "transfer-registration-v9.json",
            seeds=[11],
        )


def test_within_source_and_antisymmetry(tb):
    gap = _synthetic_gap(6, 4)
    perms = tb.permutations(6, 500, seed=1)
    r = tb.score_group(-gap, gap, [f"t{i}" for i in range(6)], perms)
    assert r["mean_rho_source"] == pytest.approx(-1.0) and r["n_negative_source"] == 6
    assert r["perm_p_source"] < 0.01
    assert r["antisymmetry"] == 1.0  # -gap is directed the right way on every pair
    assert tb.score_group(gap, gap, [f"t{i}" for i in range(6)], perms)["antisymmetry"] == 0.0
    assert tb.score_group((gap + gap.T) / 2, gap, [f"t{i}" for i in range(6)], perms)["antisymmetry"] is None
    # the directed baseline: the fraction of the target's ticket the source's lacks
    a = {"w": torch.tensor([True, True, False, False])}
    b = {"w": torch.tensor([True, True, True, True])}
    D = tb._ticket_recall_distance([a, b])
    np.testing.assert_array_equal(D, [[0.0, 0.5], [0.0, 0.0]])


# ---------------------------------------------------------------------------------------------------- quick run
def _numbers(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "timing"}


@pytest.mark.slow
def test_quick_benchmark(tb, tmp_path, capsys):
    assert tb.main(["--quick", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert "Within-target Spearman rho" in stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "distance_vs_gap.png").stat().st_size > 10_000
    s = res["settings"]
    assert (
        s["seeds"] == [0]
        and s["config"]["tasks"] == list(tb.QUICK_TASKS)
        and s["distances"] == list(tb.DISTANCES)
    )
    n = len(tb.QUICK_TASKS)
    for arch in ("mlp", "cnn"):
        g = res["generation"][f"{arch}/seed_0"]
        acc = np.array(g["transfer_accuracy"])
        assert acc.shape == (n, n) and ((acc >= 0) & (acc <= 1)).all()
        assert g["native_equals_imp_last_round"]
        assert (
            np.mean(g["native_accuracy"]) > np.mean(g["random_mask_accuracy"]) + 0.1
        )  # tickets beat random masks
        for t in tb.QUICK_TASKS:
            assert (tmp_path / "seed_0" / arch / "flows" / f"{t}.h5").exists()
        for name in tb.DISTANCES:
            D = np.array(res["distances"][name][f"{arch}/seed_0"])
            assert D.shape == (n, n) and np.isfinite(D).all()
    assert len(res["pairs"]) == 2 * n * (n - 1)
    assert all(math.isfinite(p["gap"]) and -1 <= p["gap"] <= 1 for p in res["pairs"])
    groups = ["class_subsets", "input_transforms", "all"]  # the quick tasks hold no training regime
    for name in tb.DISTANCES:
        for arch in ("mlp", "cnn", "both"):
            assert sorted(res["scores"][name][arch]) == sorted(groups)
            for group in groups:
                c = res["scores"][name][arch][group]["combined"]
                assert -1 <= c["mean_rho"] <= 1 and 0 < c["perm_p"] <= 1 and c["n_perm"] == 2000
                assert c["n_targets"] == (2 if arch == "both" else 1) * (n if group == "all" else n // 2)
    # the default universality distance ranks the quick run's transfers (seed 0: -0.72, 12 of 12 targets
    # negative, one thread, deterministic): a wrong distance scores ~0 here, as the random one does
    best = res["scores"]["rganalysis"]
    assert best["both"]["all"]["combined"]["mean_rho"] < -0.5
    assert best["mlp"]["all"]["combined"]["mean_rho"] < 0 and best["cnn"]["all"]["combined"]["mean_rho"] < 0
    assert best["both"]["class_subsets"]["combined"]["n_negative"] == 6
    # the score stage is deterministic: run it again on the cached generation
    again = tb.score(
        tmp_path, [0], ["mlp", "cnn"], n_perm=2000, figure=False, write=False, log=lambda _: None
    )
    assert _numbers(json.loads(json.dumps(again))) == _numbers(res)
    # a distance defined as -gap scores a within-target rho of -1 for every target
    minus_gap = {"minus_gap": lambda paths, names, arch, seed, data: -data.gap}
    r = tb.score(tmp_path, [0], ["mlp"], minus_gap, n_perm=200, figure=False, write=False, log=lambda _: None)
    for group in groups:
        per = r["scores"]["minus_gap"]["mlp"][group]["seeds"]["0"]["rho_per_target"]
        assert all(v == pytest.approx(-1.0) for v in per.values()), (group, per)
