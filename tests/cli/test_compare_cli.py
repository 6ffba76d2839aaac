"""`rganalysis compare`: the JSON, model stores, named errors, the Koopman spectrum."""

from __future__ import annotations

import json

import numpy as np

import rganalysis
from rganalysis.cli import main
from rganalysis.universality.analysis import UniversalityAnalysis
from rganalysis.universality.classes import (
    DEFAULT_THRESHOLDS,
)

from conftest import toy_pset, transform_flow


# --- the command line -----------------------------------------------------------------------------------------
def test_cli_compare_json(stores, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = main(
        ["compare", str(stores["mlp0"]), str(stores["mlp1"]), str(stores["cnn0"]), "--json", str(out), "-q"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "total distance = 1*unit_profile" in text and "classes" in text
    j = json.loads(out.read_text())
    assert j["models"] == ["mlp0", "mlp1", "cnn0"]
    D = np.array(j["distance"])
    np.testing.assert_array_equal(D, D.T)
    assert set(j["components"]) == {
        "spectrum",
        "fixed_point",
        "subspace",
        "survival",
        "units",
        "unit_profile",
    }
    assert j["mode"] == "invariant" and j["weights_rule"] == "invariant default"
    assert j["threshold"] == DEFAULT_THRESHOLDS["invariant"] and j["threshold_rule"] == "default (invariant)"
    assert all(v is None for v in np.array(j["components"]["survival"])[~np.eye(3, dtype=bool)])
    assert sorted(sum(j["classes"], [])) == sorted(j["models"])
    assert len(j["hierarchical"]["linkage"]) == 2 and j["hierarchical"]["method"] == "average"
    assert set(j["fits"]) == set(j["models"])
    # same numbers as the library
    ua = UniversalityAnalysis().fit([stores["mlp0"], stores["mlp1"], stores["cnn0"]])
    np.testing.assert_array_equal(D, ua.distance_.values)


def test_cli_compare_model_store_and_errors(stores, resnet18_sd, tmp_path, capsys):
    r18 = tmp_path / "r18.h5"
    toy_pset(resnet18_sd, "resnet18").save(r18, progress=False)
    # a single-round store is refused with a clear message ...
    rc = main(["compare", str(stores["mlp0"]), str(r18), "-q"])
    assert rc == 2 and "--rounds" in capsys.readouterr().err
    # ... or gets a data-free flow with --rounds/--rate; ResNet-18 vs MLPs in the normalised-depth space
    out = tmp_path / "r.json"
    rc = main(
        [
            "compare",
            str(stores["mlp0"]),
            str(r18),
            str(stores["mlp1"]),
            "--rounds",
            "5",
            "--rate",
            "0.2",
            "--names",
            "a,r18,b",
            "--threshold",
            "auto",
            "--json",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    j = json.loads(out.read_text())
    assert j["models"] == ["a", "r18", "b"] and j["threshold_rule"] == "largest_gap"
    assert j["fits"]["r18"]["flow"] == {"computed": True, "rounds": 5, "rate": 0.2, "rescaling": "none"}
    assert j["fits"]["r18"]["n_rounds"] == 6 and "flow" not in j["fits"]["a"]
    D = np.array(j["distance"])
    assert D[0, 1] > 0 and D[1, 2] > 0 and j["mode"] == "invariant"
    # a global weight scale is invisible to IMP: a model scaled by 3 has the same flow, distance 0
    scaled = tmp_path / "scaled.h5"
    with rganalysis.load(stores["mlp0"]) as f:
        transform_flow(f, lambda n, t: t * 3.0 if t.is_floating_point() else t, "scaled").save(
            scaled, progress=False
        )
    out2 = tmp_path / "scaled.json"
    assert (
        main(["compare", str(stores["mlp0"]), str(scaled), str(stores["mlp1"]), "--json", str(out2), "-q"])
        == 0
    )
    j = json.loads(out2.read_text())
    D = np.array(j["distance"])
    assert j["aligned"][0][1] and not j["aligned"][0][2] and j["mode"] == "invariant"
    assert D[0, 1] == 0.0 and D[0, 2] > 0 and D[0, 2] == D[1, 2]
    capsys.readouterr()
    assert main(["compare", str(stores["mlp0"]), str(stores["mlp1"]), "--weights", "spectrum=x", "-q"]) == 2
    assert "not a number" in capsys.readouterr().err
    assert main(["compare", str(stores["mlp0"]), str(tmp_path / "missing.h5"), "-q"]) == 2
    assert "missing.h5" in capsys.readouterr().err
    assert main(["compare", str(stores["mlp0"]), str(stores["mlp1"]), "--names", "x", "-q"]) == 2


def test_cli_compare_koopman_spectrum(stores, tmp_path):
    out = tmp_path / "k.json"
    rc = main(
        [
            "compare",
            str(stores["mlp0"]),
            str(stores["mlp1"]),
            str(stores["cnn0"]),
            "--spectrum",
            "koopman",
            "--json",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    j = json.loads(out.read_text())
    assert set(j["components"]) >= {"spectrum", "fixed_point", "subspace", "koopman", "unit_profile"}
    assert (
        j["weights"]["spectrum"] == 0 and j["weights"]["koopman"] == 1 and j["weights"]["unit_profile"] == 1
    )
    K = np.array(j["components"]["koopman"])
    np.testing.assert_array_equal(K, K.T)
    assert (K[~np.eye(3, dtype=bool)] > 0).all()
    D = np.array(j["distance"])
    parts = sum(np.array(j["components"][k]) for k in ("unit_profile", "koopman"))
    np.testing.assert_allclose(D, parts, rtol=1e-12, atol=1e-15)
    for f in j["fits"].values():
        assert f["koopman_eigenvalues"] and f["koopman_eigenvalues"][0]["abs"] > 0.5


def test_cli_compare_directed(stores, tmp_path, capsys):
    out = tmp_path / "directed.json"
    args = ["compare", str(stores["mlp0"]), str(stores["mlp1"]), str(stores["cnn0"]), "--directed", "-q"]
    assert main([*args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "directed transfer scores" in text and "lower = the source's ticket" in text
    d = json.loads(out.read_text())["directed"]
    assert d["sources"] == d["targets"] == ["mlp0", "mlp1", "cnn0"]
    S = np.array([[np.nan if x is None else x for x in row] for row in d["scores"]])
    np.testing.assert_array_equal(np.diag(S), 0.0)
    assert np.isnan(S[0, 2]) and np.isnan(S[2, 1])  # another architecture: no unit correspondence
    D = rganalysis.transfer_scores([str(stores["mlp0"]), str(stores["mlp1"])], names=["mlp0", "mlp1"])
    np.testing.assert_allclose(S[:2, :2], D.values, rtol=1e-12)
    assert S[0, 1] > 0 and S[0, 1] != S[1, 0]  # two initialisations: matched units, directed
    assert d["matching"][0][1] == "mass rank" and d["score"] == "coverage"
    # --directed divergence: the spread-only score, same matching
    assert main([*args[:-2], "--directed", "divergence", "-q", "--json", str(out), "--force"]) == 0
    d = json.loads(out.read_text())["directed"]
    C = rganalysis.transfer_scores(
        [str(stores["mlp0"]), str(stores["mlp1"])], names=["mlp0", "mlp1"], score="divergence"
    )
    S = np.array([[np.nan if x is None else x for x in row] for row in d["scores"]])
    assert d["score"] == "divergence" and "KL(p_T^g || p_S^g)" in d["formula"]
    np.testing.assert_allclose(S[:2, :2], C.values, rtol=1e-12)
    from rganalysis.cli import build_parser
    from rganalysis.universality.transfer import SCORES

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    (directed,) = [a for a in sub.choices["compare"]._actions if a.dest == "directed"]
    assert set(directed.choices) == set(SCORES)  # the parser names them without importing the scores
