"""Damaged, edited, incomplete and locked stores: a named error when opened or first read, exit status 2
and one line (no traceback) from `rganalysis check` and `rganalysis info`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib

import h5py
import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.cli import main
from rganalysis.errors import (
    ChecksumError,
    CorruptStoreError,
    DensityMismatchError,
    IncompleteStoreError,
    MasksNotNestedError,
    NonBinaryMaskError,
    NonFiniteWeightsError,
    StoreFormatError,
    StoreLockedError,
)
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.index import ATTRS_CRC_ATTR, text_attr_crcs
from rganalysis.store.parameter_set import ParameterSet, build_info


def one_line_error(capsys, argv: list[str], name: str) -> str:
    """Run the CLI: exit status 2, exactly one line on stderr naming ``name``, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"[{name}]" in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A computed flow (6 rounds, nested: survival masks) and a recorded flow with masks that are not
    nested (per-round masks), as stores."""
    d = tmp_path_factory.mktemp("integrity")
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": torch.randn(40, 30, generator=g),
        "a.bias": torch.zeros(40),
        "b.weight": torch.randn(10, 40, generator=g),
    }
    base = make_parameter_set([single_round(sd)], adapter="generic", architecture="mlp", sources=[], name="m")
    compute_flow(base, 5, 0.3, device="cpu", progress=False).save(d / "flow.h5", progress=False)
    m0 = torch.rand(40, 30, generator=g) > 0.5
    masks = {"a.weight": [torch.ones(40, 30, dtype=torch.bool), m0, ~m0]}
    ParameterSet(
        build_info(sd), {0: sd}, masks, n_rounds=3, flow_attrs={"kind": "recorded"}, validate=False
    ).save(d / "recorded.h5", progress=False)
    return d


def copy(good, tmp_path, name="flow.h5"):
    shutil.copy(good / name, tmp_path / name)
    return tmp_path / name


def set_crc(f: h5py.File, group: str, var: str) -> None:
    """Make the recorded checksum of /group/var match its (edited) data: an edit that hides itself from
    the checksum, so that the value checks are what must catch it."""
    ds = f[group][var]
    crc = zlib.crc32(np.ascontiguousarray(ds[()]).tobytes())
    ds.attrs["crc32"] = crc
    index = json.loads(f[group].attrs["tensors"])
    for e in index:
        if e["name"] == var:
            e["crc32"] = crc
    f[group].attrs["tensors"] = json.dumps(index)
    f.attrs[ATTRS_CRC_ATTR] = json.dumps(text_attr_crcs(f))


def test_good_stores_check_ok(good, capsys):
    assert main(["check", str(good / "flow.h5"), str(good / "recorded.h5")]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (format 2") == 2 and "checksums" in out


def test_missing_group(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        del f["rounds"]
    with pytest.raises(CorruptStoreError, match="no /rounds group"):
        rganalysis.load(p)
    one_line_error(capsys, ["check", str(p)], "CorruptStoreError")
    one_line_error(capsys, ["info", str(p)], "CorruptStoreError")


def test_missing_variable(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        del f["parameters/b.weight"]
    with pytest.raises(CorruptStoreError, match="b.weight"):
        rganalysis.load(p)
    one_line_error(capsys, ["check", str(p)], "CorruptStoreError")
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        del f["masks/a.weight"]
    with pytest.raises(CorruptStoreError, match="masks/a.weight"):
        rganalysis.load(p)


def test_parameter_of_the_wrong_shape(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        attrs = dict(f["parameters/b.weight"].attrs)
        del f["parameters/b.weight"]
        ds = f["parameters"].create_dataset("b.weight", data=np.zeros((10, 41), np.float32))
        for k, v in attrs.items():
            if k != "DIMENSION_LIST":
                ds.attrs[k] = v
    with pytest.raises(CorruptStoreError, match=r"shape \(10, 41\)"):
        rganalysis.load(p)
    one_line_error(capsys, ["check", str(p)], "CorruptStoreError")


def test_bit_rot_is_a_checksum_error(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "r") as f:
        offset = f["parameters/a.weight"].id.get_offset()
    data = bytearray(p.read_bytes())
    data[offset + 123] ^= 0x10  # one bit of one weight, on disk
    p.write_bytes(bytes(data))
    with rganalysis.load(p) as back:
        back.tensor("b.weight")  # other tensors read
        with pytest.raises(ChecksumError, match="a.weight"):
            back.tensor("a.weight")
    line = one_line_error(capsys, ["check", str(p)], "ChecksumError")
    assert "/parameters/a.weight" in line


def test_edit_through_hdf5_is_a_checksum_error(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        f["parameters/a.weight"][0, 0] = 123.0
    with rganalysis.load(p) as back, pytest.raises(ChecksumError):
        back.to_state_dict()
    one_line_error(capsys, ["check", str(p)], "ChecksumError")


def test_a_damaged_index_is_not_read_as_other_names(good, tmp_path, capsys):
    """A flipped byte in a tensor's name inside the group index (text attributes, which HDF5 does not
    checksum) is a CorruptStoreError, never a renamed tensor in the state dict."""
    p = copy(good, tmp_path)
    data = bytearray(p.read_bytes())
    hits = [i for i in range(len(data)) if data.startswith(b'"b.weight"', i)]
    assert len(hits) >= 2  # /parameters' order and tensors
    for i in hits:
        data[i + 5] ^= 0x20  # "b.weight" -> "b.Weight"
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="fails its CRC-32"):
        rganalysis.load(p)
    line = one_line_error(capsys, ["check", str(p)], "CorruptStoreError")
    assert "fails its CRC-32" in line


def test_provenance_edited_through_hdf5_is_detected(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        f.attrs["name"] = "another model"
    one_line_error(capsys, ["check", str(p)], "CorruptStoreError")


def test_damaged_hdf5_metadata_is_one_line(good, tmp_path, capsys):
    """Bytes of an object header flipped: HDF5's own metadata checksum fails; a CorruptStoreError, not
    h5py's KeyError or OSError."""
    p = copy(good, tmp_path)
    with h5py.File(p, "r") as f:
        header = h5py.h5o.get_info(f["rounds"].id).addr
    data = bytearray(p.read_bytes())
    for i in range(8):
        data[header + 16 + i] ^= 0xA5
    p.write_bytes(bytes(data))
    for cmd in ("check", "info"):
        one_line_error(capsys, [cmd, str(p)], "CorruptStoreError")


def test_nan_weight(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        f["parameters/a.weight"][3, 4] = np.nan
        set_crc(f, "parameters", "a.weight")
    with rganalysis.load(p) as back, pytest.raises(NonFiniteWeightsError, match="1 NaN/Inf"):
        back.tensor("a.weight")
    one_line_error(capsys, ["check", str(p)], "NonFiniteWeightsError")


def test_non_finite_weights_the_store_records_are_read(tmp_path):
    sd = {"a.weight": torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])}
    ParameterSet(build_info(sd), {0: sd}, validate=False).save(tmp_path / "nan.h5", progress=False)
    with h5py.File(tmp_path / "nan.h5") as f:
        assert f["parameters/a.weight"].attrs["finite"] == 0
    with rganalysis.load(tmp_path / "nan.h5") as back:
        assert torch.equal(back.tensor("a.weight").isnan(), sd["a.weight"].isnan())
    assert main(["check", str(tmp_path / "nan.h5")]) == 0


def test_survival_mask_out_of_range(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        assert f["masks/a.weight"].attrs["encoding"] == "survival"
        f["masks/a.weight"][0, 0] = 9  # 6 rounds: survival rounds are 0..6
        set_crc(f, "masks", "a.weight")
    with rganalysis.load(p) as back, pytest.raises(NonBinaryMaskError, match="survival round 9"):
        back.read_masks("a.weight")
    one_line_error(capsys, ["check", str(p)], "NonBinaryMaskError")
    one_line_error(capsys, ["info", str(p)], "NonBinaryMaskError")


def test_per_round_mask_not_binary(good, tmp_path, capsys):
    p = copy(good, tmp_path, "recorded.h5")
    with h5py.File(p, "a") as f:
        assert f["masks/a.weight"].attrs["encoding"] == "per_round"
        f["masks/a.weight"][1, 0, 0] = 2
        set_crc(f, "masks", "a.weight")
    with rganalysis.load(p) as back, pytest.raises(NonBinaryMaskError, match="not 0/1"):
        back.mask("a.weight", 1)
    one_line_error(capsys, ["check", str(p)], "NonBinaryMaskError")


def test_masks_not_nested_where_the_store_says_they_are(good, tmp_path, capsys):
    p = copy(good, tmp_path, "recorded.h5")
    with h5py.File(p, "a") as f:
        f.attrs["masks_nested"] = 1
    with rganalysis.load(p) as back, pytest.raises(MasksNotNestedError, match="revives"):
        back.read_masks("a.weight")
    one_line_error(capsys, ["check", str(p)], "MasksNotNestedError")


def test_density_table_that_disagrees_with_the_masks(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        d = f["rounds/density"]
        d[3, 0] = d[3, 0] + 0.01
        d.attrs["crc32"] = zlib.crc32(np.ascontiguousarray(d[()]).tobytes())
    with rganalysis.load(p) as back, pytest.raises(DensityMismatchError, match="round 3"):
        back.densities()
    one_line_error(capsys, ["check", str(p)], "DensityMismatchError")
    one_line_error(capsys, ["info", str(p)], "DensityMismatchError")


def test_incomplete_stores(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        del f.attrs["write_complete"]
    with pytest.raises(IncompleteStoreError, match=r"incomplete file \(interrupted write\)"):
        rganalysis.load(p)
    one_line_error(capsys, ["info", str(p)], "IncompleteStoreError")
    data = (good / "flow.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(IncompleteStoreError, match="incomplete file"):
        rganalysis.load(tmp_path / "cut.h5")
    one_line_error(capsys, ["check", str(tmp_path / "cut.h5")], "IncompleteStoreError")
    temp = tmp_path / ".out.h5.rganalysis-partial-999999-0a1b2c3d"
    shutil.copy(good / "flow.h5", temp)
    with pytest.raises(IncompleteStoreError, match="temporary file"):
        rganalysis.load(temp)


def test_not_a_store(tmp_path, capsys):
    (tmp_path / "junk.h5").write_bytes(b"\x00junk" * 100)
    with pytest.raises(StoreFormatError, match="not an HDF5 file"):
        rganalysis.load(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreFormatError, match="not an rganalysis store"):
        rganalysis.load(tmp_path / "plain.h5")
    one_line_error(capsys, ["check", str(tmp_path / "plain.h5")], "StoreFormatError")


def test_newer_format_version(good, tmp_path):
    p = copy(good, tmp_path)
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(StoreFormatError, match="format version 99"):
        rganalysis.load(p)


_HOLD = """
import sys, time, h5py
f = h5py.File(sys.argv[1], "a")
print("open", flush=True)
time.sleep(60)
"""


def test_store_locked_by_a_writer(good, tmp_path, capsys):
    p = copy(good, tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(p)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(StoreLockedError, match="being written by another process"):
            rganalysis.load(p)
        one_line_error(capsys, ["info", str(p)], "StoreLockedError")
    finally:
        proc.kill()
        proc.wait()
    assert rganalysis.load(p).n_rounds == 6  # the lock went with the writer


_SLOW_INGEST = """
import sys, time
import rganalysis.store.hdf5 as h
put = h._put_tensor
def slow(*a, **k):
    time.sleep(0.2)
    return put(*a, **k)
h._put_tensor = slow
from rganalysis.cli import main
main(["ingest", sys.argv[1], "-o", sys.argv[2], "-q"])
"""


def test_kill_9_during_ingest_leaves_a_file_that_says_so_and_is_cleaned_next_time(tmp_path, capsys):
    import time

    g = torch.Generator().manual_seed(0)
    sd = {f"l{i}.weight": torch.randn(64, 64, generator=g) for i in range(40)}
    torch.save(sd, tmp_path / "m.pt")
    out = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_INGEST, str(tmp_path / "m.pt"), str(out)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            temps = list(tmp_path.glob(".out.h5.rganalysis-partial-*"))
            if temps and temps[0].stat().st_size > 0:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # a few tensors written
    finally:
        proc.kill()  # SIGKILL: no clean-up runs
        proc.wait()
    assert not out.exists()
    (temp,) = tmp_path.glob(".out.h5.rganalysis-partial-*")
    with pytest.raises(IncompleteStoreError, match="incomplete file"):
        rganalysis.load(temp)
    one_line_error(capsys, ["check", str(temp)], "IncompleteStoreError")
    assert main(["ingest", str(tmp_path / "m.pt"), "-o", str(out), "-q"]) == 0
    assert not temp.exists(), "the stale temporary file of the killed write was not removed"
    assert rganalysis.load(out).n_rounds == 1
