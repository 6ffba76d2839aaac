"""A store's integer marks (``format_version``, ``write_complete``) of the wrong type are refused
(issue 25): a string ``"2"`` is not read as if it were version 2."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.cli import main
from rganalysis.errors import CorruptStoreError
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set, single_round


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    sd = {"a.weight": torch.randn(20, 10, generator=g), "b.weight": torch.randn(5, 20, generator=g)}
    pset = make_parameter_set([single_round(sd)], adapter="generic", architecture="t", sources=[], name="t")
    path = tmp_path_factory.mktemp("version_attrs") / "flow.h5"
    compute_flow(pset, 2, 0.2, device="cpu", progress=False).save(path, progress=False)
    return path


WRONG = {
    "str": "2",
    "bytes": np.bytes_(b"2"),
    "float": 2.0,
    "bool": True,
    "array": np.array([2, 2]),
}


@pytest.mark.parametrize("attr", ["format_version", "write_complete"])
@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_type_of_an_integer_mark_is_refused(store, tmp_path, attr, kind, capsys):
    p = tmp_path / "flow.h5"
    shutil.copy(store, p)
    with h5py.File(p, "a") as f:
        value = f.attrs[attr]
        assert isinstance(value, np.integer) and int(value) in (1, 2)  # what the writer records
        f.attrs[attr] = WRONG[kind]
    with pytest.raises(CorruptStoreError, match=f"the {attr} attribute is .*not an integer"):
        rganalysis.load(p)
    for command in ("info", "check"):
        assert main([command, str(p)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "[CorruptStoreError]" in err[0] and "not an integer" in err[0]
    with h5py.File(p, "a") as f:  # any integer dtype, scalar or of one element, is an integer
        f.attrs[attr] = np.array([int(value)], dtype=np.int16) if kind == "array" else np.uint8(value)
    with rganalysis.load(p) as back:
        assert back.n_rounds == 3
