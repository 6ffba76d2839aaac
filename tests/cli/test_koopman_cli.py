"""`rganalysis koopman`: the spectrum JSON, the modes written into the flow file, named errors."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import xarray as xr

import rganalysis
from rganalysis.cli import main
from rganalysis.koopman.modes import mode_groups

from conftest import T_SERIES


def test_cli_spectrum_json_and_modes(series, tmp_path, capsys):
    path = tmp_path / "series.h5"  # modes go into the flow file itself (loading it ignores /koopman)
    shutil.copyfile(series["path"], path)
    out = tmp_path / "k.json"
    subset = "layer1.*conv*,layer4.1.conv2.weight"  # 2.5 M of the 10.6 M masked weights: a faster test
    assert (
        main(
            [
                "koopman",
                str(path),
                "--rank",
                "5",
                "--subset",
                subset,
                "--modes-limit",
                "2",
                "--bags",
                "20",
                "--json",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "7 snapshots of" in text and "rank 5 (numerical rank 5)" in text and "0.90000" in text
    j = json.loads(out.read_text())
    assert j["snapshots"] == T_SERIES and j["rank"] == 5 and len(j["singular_values"]) == T_SERIES - 1
    assert j["subset"] == subset and j["tensors"] == 5 and j["b"] is None
    assert set(j["eigenvalues"][0]) == {"re", "im", "abs", "class", "ci_low", "ci_high"}  # no b: no exponent
    assert [round(e["abs"], 6) for e in j["eigenvalues"]] == [0.9, 0.8, 0.8, 0.7, 0.5]
    assert j["eigenvalues"][1]["im"] > 0 and j["eigenvalues"][2]["im"] == -j["eigenvalues"][1]["im"]
    assert len(j["amplitudes"]) == 5 and j["modes"] == ["koopman/mode_000", "koopman/mode_001"]
    assert mode_groups(path) == j["modes"]
    # a second --modes run does not replace them without --force
    again = [
        "koopman",
        str(path),
        "--rank",
        "5",
        "--subset",
        subset,
        "--modes-limit",
        "1",
        "--bags",
        "0",
        "-q",
    ]
    assert main(again) == 2
    assert "[OutputExistsError]" in capsys.readouterr().err and mode_groups(path) == j["modes"]

    # modes: amplitude * mode is the component of x_0 -- v_0 (the initial weights) for lambda = 0.9,
    # v_3 + i v_4 for the pair 0.8 e^{+0.6i}; written under the model's names, shapes and dimensions
    comps = series["comps"]
    m0 = xr.open_dataset(path, engine="h5netcdf", group="koopman/mode_000")
    m1 = xr.open_dataset(path, engine="h5netcdf", group="koopman/mode_001")
    names = [k for k in series["lin"] if k.startswith("layer1.")] + ["layer4.1.conv2.weight"]
    assert sorted(m0.data_vars) == sorted(names)  # a real eigenvalue: no imaginary parts
    assert m0.attrs["eigenvalue_re"] == pytest.approx(0.9, rel=1e-6)
    assert m0.attrs["class"] == "undetermined"  # exact series: zero-width bags, no interval, no class
    assert m1.attrs["eigenvalue_im"] > 0 and sorted(m1.data_vars) == sorted(
        names + [f"{n}.imag" for n in names]
    )
    a0 = complex(m0.attrs["amplitude_re"], m0.attrs["amplitude_im"])
    a1 = complex(m1.attrs["amplitude_re"], m1.attrs["amplitude_im"])
    with rganalysis.load(path) as p:
        dims = {n: p.info[n].dims for n in p.names}
    for name in ("layer1.0.conv1.weight", "layer4.1.conv2.weight"):
        assert m0[name].dims == tuple(dims[name])
        v0 = comps[name][0].double().numpy()
        got0 = (a0 * m0[name].values.astype(np.complex128)).real
        assert np.abs(got0 - v0).max() < 1e-5 * np.abs(v0).max()
        u = comps[name][3].double().numpy() + 1j * comps[name][4].double().numpy()
        got1 = a1 * (m1[name].values + 1j * m1[f"{name}.imag"].values)
        assert np.abs(got1 - u).max() < 1e-5 * np.abs(u).max()
    m0.close()
    m1.close()
    with h5py.File(path, "r") as f:
        assert not [k for k in f["koopman"] if k.startswith("partial_")]
        assert json.loads(f["koopman"].attrs["summary"])["rank"] == 5
    # the store still loads as before
    with rganalysis.load(path) as p:
        assert p.n_rounds == T_SERIES and p.pruned_names() == series["masked"]


def test_cli_named_errors(imp_flow, capsys):
    assert main(["koopman", str(imp_flow["model"]), "-q"]) == 2
    assert "[TooFewRoundsError]" in capsys.readouterr().err
    assert main(["koopman", str(imp_flow["path"]), "--rank", "10", "-q"]) == 2
    assert "[RankError]" in capsys.readouterr().err
    assert main(["koopman", str(imp_flow["path"]), "--subset", "nothing.*", "-q"]) == 2
    assert "[InvalidParameterError]" in capsys.readouterr().err
    assert main(["koopman", str(imp_flow["path"]), "--modes-limit", "0", "-q"]) == 2
    assert main(["koopman", str(imp_flow["dir"] / "missing.h5"), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["koopman", str(imp_flow["path"]), "--rank", "2", "--energy", "0.9"])
