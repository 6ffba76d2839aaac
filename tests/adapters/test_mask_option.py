"""``--mask`` is applied or refused, never dropped (issue 25): a missing, unreadable, hostile (pickle)
or non-matching mask file exits 2 with a named error for every adapter, and nothing is written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rganalysis.cli import main

CASES = ("missing", "unreadable", "hostile", "non-matching")


def _mask_file(kind: str, d) -> str:
    p = d / f"{kind}.pt"
    if kind == "unreadable":
        p.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    elif kind == "hostile":
        torch.save(nn.Linear(2, 2), p)  # a pickle of objects: loading it could run code
    elif kind == "non-matching":
        torch.save({"no.such.weight_mask": torch.ones(3, 3)}, p)
    return str(p)


@pytest.fixture(params=["generic", "torchvision-resnet", "hf-bert"])
def source(request, tmp_path, bert_tickets):
    if request.param == "hf-bert":
        return request.param, bert_tickets[0]
    if request.param == "generic":
        sd = {"a.weight": torch.randn(5, 4), "b.weight": torch.randn(3, 5)}
    else:
        import torchvision

        sd = torchvision.models.resnet18(weights=None, num_classes=3).state_dict()
    torch.save(sd, tmp_path / "model.pt")
    return request.param, tmp_path / "model.pt"


EXPECTED = {
    "missing": "[FileNotFoundError] no such file or directory",
    "unreadable": "[CorruptCheckpointError]",
    "hostile": "[PickleRefusedError]",
}


@pytest.mark.parametrize("kind", CASES)
def test_bad_mask_is_refused_for_every_adapter(source, kind, tmp_path, capsys):
    adapter, src = source
    out = tmp_path / "s.h5"
    mask = _mask_file(kind, tmp_path)
    rc = main(["ingest", str(src), "--mask", mask, "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not out.exists()
    assert len(err.strip().splitlines()) == 1
    if kind in EXPECTED:
        assert EXPECTED[kind] in err and kind in err
    elif adapter == "hf-bert":  # reads masks: checks them against the weights
        assert "[MissingTensorError]" in err
    else:
        assert f"[InvalidParameterError] --mask {mask}: the '{adapter}' adapter" in err
        assert "does not apply mask files (only hf-bert do)" in err


def test_good_mask_for_an_adapter_that_cannot_apply_it_is_refused(tmp_path, capsys):
    sd = {"a.weight": torch.randn(5, 4), "b.weight": torch.randn(3, 5)}
    torch.save(sd, tmp_path / "mlp.pth")
    torch.save({k + "_mask": torch.ones_like(v) for k, v in sd.items()}, tmp_path / "m.pth")
    rc = main(
        ["ingest", str(tmp_path / "mlp.pth"), "--mask", str(tmp_path / "m.pth"), "-o", str(tmp_path / "s.h5")]
    )
    assert rc == 2 and not (tmp_path / "s.h5").exists()
    assert "masks would be dropped" in capsys.readouterr().err
