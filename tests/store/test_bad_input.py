"""Every bad input gives a named error, a non-zero exit, and no output file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as prune

from rganalysis.adapters import ingest
from rganalysis.cli import main
from rganalysis.errors import (
    AdapterNotFoundError,
    CorruptCheckpointError,
    MaskShapeError,
    NonBinaryMaskError,
    NonFiniteWeightsError,
    PickleRefusedError,
    UnknownArchitectureError,
)

from conftest import no_output


def _ticket(tmp_path):
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    for m in (lin[0], lin[2]):
        prune.l1_unstructured(m, "weight", amount=0.4)
    return dict(lin.state_dict())


def _cli_fails(tmp_path, src, error, *extra):
    code = main(["ingest", str(src), "-o", str(tmp_path / "out.h5"), "-q", *extra])
    assert code == 2
    no_output(tmp_path)


def test_truncated_file(tmp_path, resnet18_sd, capsys):
    torch.save(resnet18_sd, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError):
        ingest(tmp_path / "cut.pth")
    _cli_fails(tmp_path, tmp_path / "cut.pth", CorruptCheckpointError)
    assert "CorruptCheckpointError" in capsys.readouterr().err


def test_garbage_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CorruptCheckpointError):
        ingest(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CorruptCheckpointError):
        ingest(tmp_path / "junk.safetensors")


def test_mask_shape_mismatch(tmp_path, capsys):
    sd = _ticket(tmp_path)
    sd["0.weight_mask"] = torch.ones(5, 7)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(MaskShapeError, match="0.weight"):
        ingest(tmp_path / "bad.pth")
    _cli_fails(tmp_path, tmp_path / "bad.pth", MaskShapeError)
    assert "MaskShapeError" in capsys.readouterr().err


def test_non_binary_mask(tmp_path):
    sd = _ticket(tmp_path)
    sd["2.weight_mask"] = sd["2.weight_mask"] * 0.5
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(NonBinaryMaskError, match="0.5"):
        ingest(tmp_path / "bad.pth")
    _cli_fails(tmp_path, tmp_path / "bad.pth", NonBinaryMaskError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights(tmp_path, resnet18_sd, bad):
    sd = dict(resnet18_sd)
    w = sd["layer1.0.conv1.weight"].clone()
    w[0, 0, 0, 0] = bad
    sd["layer1.0.conv1.weight"] = w
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(NonFiniteWeightsError, match="layer1.0.conv1.weight"):
        ingest(tmp_path / "bad.pth")
    _cli_fails(tmp_path, tmp_path / "bad.pth", NonFiniteWeightsError)


def test_unknown_architecture(tmp_path):
    torch.save({"fc.weight": torch.randn(3, 4)}, tmp_path / "m.pth")
    with pytest.raises(UnknownArchitectureError, match="vit_h_14"):
        ingest(tmp_path / "m.pth", architecture="vit_h_14")
    _cli_fails(tmp_path, tmp_path / "m.pth", UnknownArchitectureError, "--architecture", "vit_h_14")


def test_nothing_fits_lists_each_adapter(tmp_path):
    torch.save({"running_mean": torch.zeros(3)}, tmp_path / "m.pth")
    with pytest.raises(AdapterNotFoundError) as e:
        ingest(tmp_path / "m.pth")
    assert set(e.value.reasons) >= {"pruned", "torchvision-resnet", "hf-bert", "generic"}
    assert "generic" in str(e.value) and "no conv, linear or embedding" in str(e.value)


def test_failure_during_write_leaves_nothing(tmp_path, resnet18_sd, monkeypatch):
    import rganalysis.store.hdf5 as store

    torch.save(resnet18_sd, tmp_path / "r18.pth")
    pset = ingest(tmp_path / "r18.pth")
    calls = {"n": 0}
    real = store.to_numpy

    def flaky(t):
        calls["n"] += 1
        if calls["n"] == 30:
            raise OSError("disk full")
        return real(t)

    monkeypatch.setattr(store, "to_numpy", flaky)
    with pytest.raises(OSError, match="disk full"):
        pset.save(tmp_path / "out.h5", progress=False)
    no_output(tmp_path)


def test_whole_model_pickle_refused(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.save(model, tmp_path / "model.pt")
    with pytest.raises(PickleRefusedError, match="--allow-pickle"):
        ingest(tmp_path / "model.pt")
    _cli_fails(tmp_path, tmp_path / "model.pt", PickleRefusedError)
    assert "--allow-pickle" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="can run code"):
        pset = ingest(tmp_path / "model.pt", allow_pickle=True)
    assert torch.equal(pset.tensor("0.weight"), model[0].weight.detach())


def test_an_unknown_adapter_name_is_named_as_such(tmp_path):
    from rganalysis.errors import InvalidParameterError

    torch.save({"l.weight": torch.randn(3, 3)}, tmp_path / "m.pth")
    with pytest.raises(InvalidParameterError, match=r"unknown adapter 'zzz'; known: .*generic"):
        ingest(tmp_path / "m.pth", adapter="zzz")
    p = ingest(tmp_path / "m.pth")
    d = p.densities()
    assert d.attrs["adapter"] == "generic" and d.attrs["source"].endswith("m.pth") and "units" in d.attrs
