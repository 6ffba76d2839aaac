"""`rganalysis ingest` and `rganalysis info` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import xarray as xr

import rganalysis
from rganalysis.cli import main


def test_ingest_and_info_json(tmp_path, resnet18_sd, capsys):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    assert main(["ingest", str(tmp_path / "r18.pth"), "-o", str(tmp_path / "r18.h5"), "--name", "rn18", "-q"]) == 0
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


def test_module_entry_point(tmp_path, resnet18_sd):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    r = subprocess.run([sys.executable, "-m", "rganalysis", "ingest", str(tmp_path / "r18.pth"), "-o",
                        str(tmp_path / "x.h5"), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ds = xr.open_dataset(tmp_path / "x.h5", engine="h5netcdf", group="parameters")
    assert "conv1.weight" in ds
    assert rganalysis.load(tmp_path / "x.h5").n_rounds == 1
