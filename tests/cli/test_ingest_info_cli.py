"""`rganalysis ingest` and `rganalysis info` from the command line (and ``python -m rganalysis``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import xarray as xr

import rganalysis
from rganalysis.adapters import ingest
from rganalysis.cli import main
from rganalysis.errors import (
    OutputExistsError,
)

from conftest import check_densities, no_output


def test_existing_output_needs_force(tmp_path, resnet18_sd, capsys):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    (tmp_path / "out.h5").write_bytes(b"precious")
    assert main(["ingest", str(tmp_path / "r18.pth"), "-o", str(tmp_path / "out.h5"), "-q"]) == 2
    assert "OutputExistsError" in capsys.readouterr().err
    assert (tmp_path / "out.h5").read_bytes() == b"precious"
    with pytest.raises(OutputExistsError):
        ingest(tmp_path / "r18.pth").save(tmp_path / "out.h5", progress=False)
    assert main(["ingest", str(tmp_path / "r18.pth"), "-o", str(tmp_path / "out.h5"), "-q", "--force"]) == 0
    assert (tmp_path / "out.h5").read_bytes()[:4] == b"\x89HDF"


def test_missing_source(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "nope.pth"), "-o", str(tmp_path / "out.h5")]) == 2
    assert "nope.pth" in capsys.readouterr().err
    no_output(tmp_path)


def test_bert_masks_from_the_command_line(bert_tickets, tmp_path):
    from rganalysis.cli import main

    d, sd, masks, files = bert_tickets
    out = tmp_path / "T.h5"
    assert (
        main(["ingest", str(d), "--mask", str(files[0]), "--mask", str(files[1]), "-o", str(out), "-q"]) == 0
    )
    with rganalysis.load(out) as back:
        assert back.n_rounds == 3
        check_densities(back, [{}, *masks[:2]])
    assert (
        main(
            [
                "ingest",
                str(d),
                "--mask",
                str(files[1]),
                "--mask",
                str(files[0]),
                "-o",
                str(tmp_path / "x.h5"),
                "-q",
            ]
        )
        == 2
    )
    assert not (tmp_path / "x.h5").exists()


def test_ingest_and_info_json(tmp_path, resnet18_sd, capsys):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    assert (
        main(["ingest", str(tmp_path / "r18.pth"), "-o", str(tmp_path / "r18.h5"), "--name", "rn18", "-q"])
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r18.h5"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["name"] == "rn18" and s["architecture"] == "resnet18"
    assert s["parameters"]["total"] == sum(v.numel() for v in resnet18_sd.values())
    assert s["parameters"]["prunable"] == 11_166_912 + 512_000
    assert s["rounds"][0]["global_density"] == 1.0
    assert {layer["kind"] for layer in s["layers"]} == {"conv", "norm", "linear", "bias"}
    assert main(["info", str(tmp_path / "r18.h5")]) == 0
    text = capsys.readouterr().out
    assert "layer4.1.conv2.weight" in text and "global density" in text
    # without --name the label is the output's stem (a HuggingFace folder's weights are all "model")
    (tmp_path / "hf").mkdir()
    torch.save(resnet18_sd, tmp_path / "hf" / "model.pth")
    assert (
        main(["ingest", str(tmp_path / "hf" / "model.pth"), "-o", str(tmp_path / "resnet-a.h5"), "-q"]) == 0
    )
    assert rganalysis.load(tmp_path / "resnet-a.h5").attrs["name"] == "resnet-a"


def test_module_entry_point(tmp_path, resnet18_sd):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rganalysis",
            "ingest",
            str(tmp_path / "r18.pth"),
            "-o",
            str(tmp_path / "x.h5"),
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    ds = xr.open_dataset(tmp_path / "x.h5", engine="h5netcdf", group="parameters")
    assert "conv1.weight" in ds
    assert rganalysis.load(tmp_path / "x.h5").n_rounds == 1


def test_architecture_option_is_checked(tmp_path, resnet18_sd, capsys):
    """--architecture names what the user expects: another name than the detected one is refused, never
    silently replaced."""
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    for name in ("resnet50", "bogus"):
        assert (
            main(
                [
                    "ingest",
                    str(tmp_path / "r18.pth"),
                    "-o",
                    str(tmp_path / f"{name}.h5"),
                    "--architecture",
                    name,
                    "-q",
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "[ArchitectureMismatchError]" in err and "reads as 'resnet18'" in err, err
        assert not (tmp_path / f"{name}.h5").exists()
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "r18.pth"),
                "-o",
                str(tmp_path / "ok.h5"),
                "--architecture",
                "resnet18",
                "-q",
            ]
        )
        == 0
    )


def test_a_sweep_names_the_file_that_failed(tmp_path, capsys):
    torch.save({"fc.weight": torch.ones(3, 4)}, tmp_path / "good.pth")
    torch.save([torch.ones(2)], tmp_path / "a-list.pt")
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "good.pth"),
                str(tmp_path / "a-list.pt"),
                "-o",
                str(tmp_path / "out"),
                "-q",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "[CorruptCheckpointError]" in err and "a-list.pt" in err, err
    assert (tmp_path / "out" / "good.h5").exists()


def test_a_file_with_no_state_dict_is_named(tmp_path, capsys):
    torch.save({}, tmp_path / "empty.pth")
    assert main(["ingest", str(tmp_path / "empty.pth"), "-o", str(tmp_path / "e.h5")]) == 2
    err = capsys.readouterr().err
    assert "[CorruptCheckpointError]" in err and "empty.pth: no state dict found" in err
    assert not (tmp_path / "e.h5").exists()


def test_a_long_layer_collapse_is_listed_short(tmp_path, capsys):
    """Nine tiny layers that a global flow empties: six are named, the rest counted."""
    g = torch.Generator().manual_seed(0)
    sd = {f"small{i}.weight": 1e-3 * torch.randn(4, 4, generator=g) for i in range(9)}
    sd["big.weight"] = torch.randn(64, 64, generator=g)
    torch.save(sd, tmp_path / "m.pth")
    assert main(["ingest", str(tmp_path / "m.pth"), "-o", str(tmp_path / "m.h5"), "-q"]) == 0
    assert main(["flow", str(tmp_path / "m.h5"), "-o", str(tmp_path / "f.h5"), "--rounds", "4", "-q"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("layer collapse"))
    assert line.startswith("layer collapse: 9 layer(s) emptied: small0.weight (from round")
    assert line.count("(from round") == 6 and line.endswith(
        "and 3 more (rganalysis info shows every layer's densities)"
    )


def test_a_layer_that_holds_weights_is_not_printed_as_empty():
    from rganalysis.store.summary import _density_text

    assert (
        _density_text(3.5e-5) == "3e-5" and _density_text(0.0) == "0.0000" and _density_text(0.25) == "0.2500"
    )
