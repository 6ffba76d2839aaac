"""Devices: an unavailable one is refused with a named error before any work (not a CUDA traceback)."""

from __future__ import annotations

import pytest
import torch

from rganalysis.errors import DeviceUnavailableError, InvalidParameterError
from rganalysis.store.state import resolve_device


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_device_this_machine_lacks_is_refused_by_name():
    with pytest.raises(DeviceUnavailableError, match="cuda:99"):
        resolve_device("cuda:99")  # no machine has 100 GPUs
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(InvalidParameterError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_the_command_line_says_it_in_one_line(tmp_path, capsys):
    from rganalysis.cli import main

    torch.save({"l.weight": torch.randn(8, 8)}, tmp_path / "m.pth")
    assert main(["ingest", str(tmp_path / "m.pth"), "-o", str(tmp_path / "m.h5"), "-q"]) == 0
    code = main(["flow", str(tmp_path / "m.h5"), "-o", str(tmp_path / "f.h5"), "--device", "cuda:99", "-q"])
    assert code == 2 and not (tmp_path / "f.h5").exists()
    assert "DeviceUnavailableError" in capsys.readouterr().err
