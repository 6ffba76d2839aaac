"""The store's layout and speed-related choices: nested masks as survival rounds (one integer per
weight), masks that are not nested round by round, plain xarray and h5py readers, the torch-free
`info`, sweeps and ticket series ingested in processes (same stores as serial), and bad inputs at the
edges (broadcast tensors, huge --rounds, rounds that prune nothing, survival counts past int16)."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

import rganalysis
from rganalysis.adapters import ingest, ingest_many
from rganalysis.cli import main
from rganalysis.errors import CorruptCheckpointError, ExpandedTensorError, InsufficientResourcesError
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.store.index import ATTRS_CRC_ATTR
from rganalysis.store.parameter_set import ParameterSet, build_info

from conftest import assert_state_dicts_equal


def small_model(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(50, 30, generator=g),
        "a.bias": torch.zeros(50),
        "b.weight": torch.randn(8, 50, generator=g),
    }


def store_contents(path) -> dict:
    """Every attribute and dataset of a store (dimension references as the names they point to), but the
    time it was written: equal for two writes of the same set."""
    out = {}
    with h5py.File(path, "r") as f:

        def attrs(obj):
            a = {}
            for k, v in obj.attrs.items():
                if k in ("created", "DIMENSION_LIST", "REFERENCE_LIST"):
                    continue
                if k == ATTRS_CRC_ATTR:  # less the CRC of the time
                    crcs = json.loads(v)
                    crcs["/"].pop("created")
                    v = json.dumps(crcs, sort_keys=True)
                a[k] = v.tobytes() if isinstance(v, np.ndarray) else v
            if isinstance(obj, h5py.Dataset) and "DIMENSION_LIST" in obj.attrs:
                a["dims"] = [f[r[-1]].name for r in obj.attrs["DIMENSION_LIST"]]
            return a

        out["/"] = attrs(f)

        def visit(name, obj):
            data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) and obj.dtype.kind != "O" else None
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "O":
                data = list(obj[()])
            out[name] = (attrs(obj), data)

        f.visititems(visit)
    return out


def test_nested_masks_are_stored_as_survival_rounds(tmp_path):
    base = make_parameter_set(
        [single_round(small_model())], adapter="generic", architecture="mlp", sources=[]
    )
    flow = compute_flow(base, 7, 0.3, device="cpu", progress=False)
    flow.save(tmp_path / "f.h5", progress=False)
    with h5py.File(tmp_path / "f.h5") as f:
        ds = f["masks/a.weight"]
        assert ds.dtype == np.uint8 and ds.shape == (50, 30) and ds.attrs["encoding"] == "survival"
        survival = ds[()]
        assert survival.max() <= 8 and f.attrs["masks_nested"] == 1 and f.attrs["format_version"] == 2
    with rganalysis.load(tmp_path / "f.h5") as back:
        masks = back.read_masks("a.weight")
        assert masks.shape == (8, 50, 30) and masks.dtype == torch.bool
        for r in range(8):
            assert torch.equal(masks[r], flow.mask("a.weight", r))
            assert torch.equal(back.mask("a.weight", r), torch.from_numpy(survival > r))
        assert torch.equal(back.read_masks("a.weight", slice(10, 20)), masks[:, 10:20])
        np.testing.assert_array_equal(back.survival_array("a.weight"), survival)
    # plain xarray: the mask of round r is survival > r
    ds = xr.open_dataset(tmp_path / "f.h5", engine="h5netcdf", group="masks")
    assert ds["a.weight"].dims == ("out_features_50", "in_features_30")
    np.testing.assert_array_equal((ds["a.weight"] > 3).values, masks[3].numpy())
    rounds = xr.open_dataset(tmp_path / "f.h5", engine="h5netcdf", group="rounds")
    np.testing.assert_array_equal(rounds["density"].values, flow.densities().values)


def test_masks_that_are_not_nested_round_trip_round_by_round(tmp_path):
    sd = small_model()
    g = torch.Generator().manual_seed(3)
    m = [torch.rand(50, 30, generator=g) > p for p in (0.0, 0.4, 0.2, 0.6)]  # revives weights
    p = ParameterSet(build_info(sd), {0: sd}, {"a.weight": m}, n_rounds=4, validate=False)
    assert p.survival_array("a.weight") is None
    p.save(tmp_path / "r.h5", progress=False)
    with h5py.File(tmp_path / "r.h5") as f:
        ds = f["masks/a.weight"]
        assert ds.attrs["encoding"] == "per_round" and ds.shape == (4, 50, 30) and ds.compression == "gzip"
        assert f.attrs["masks_nested"] == 0
    with rganalysis.load(tmp_path / "r.h5") as back:
        assert back.masks_nested is False
        for r in range(4):
            assert torch.equal(back.mask("a.weight", r), m[r])
        assert torch.equal(back.read_masks("a.weight"), torch.stack(m))


def test_store_layout_for_netcdf_readers(tmp_path, resnet18_sd):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    ingest(tmp_path / "r18.pth").save(tmp_path / "r18.h5", progress=False)
    ds = xr.open_dataset(tmp_path / "r18.h5", engine="h5netcdf", group="parameters")
    w = ds["layer1.0.conv2.weight"]
    assert w.dims == ("out_channels_64", "in_channels_64", "kh_3", "kw_3")
    assert w.attrs["kind"] == "conv" and w.attrs["torch_dtype"] == "float32"
    assert list(ds.data_vars)[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]  # model order
    with h5py.File(tmp_path / "r18.h5") as f:
        index = json.loads(f["parameters"].attrs["tensors"])
        assert [e["name"] for e in index] == list(resnet18_sd)
        e = index[0]
        assert e["crc32"] == f["parameters/conv1.weight"].attrs["crc32"] and e["finite"] == 1
        assert f["parameters/conv1.weight"].dims[0][0].name == "/parameters/out_channels_64"
        assert "_NCProperties" in f.attrs


def test_resnet_shapes_without_torchvision_match_torchvision():
    import torchvision

    from rganalysis.adapters._common import RESNETS, _resnet_shapes

    for arch in RESNETS:
        with torch.device("meta"):
            ref = {
                k: tuple(v.shape)
                for k, v in getattr(torchvision.models, arch)(weights=None).state_dict().items()
            }
        assert list(_resnet_shapes(arch).items()) == list(ref.items()), arch


@pytest.mark.parametrize("command", ["info", "check"])
def test_info_and_check_import_neither_torch_nor_xarray(imp_flow, command):
    code = (
        "import sys; from rganalysis.cli import main; rc = main([sys.argv[1], sys.argv[2]]); "
        "print([m for m in ('torch', 'xarray', 'matplotlib', 'pandas', 'h5netcdf') if m in sys.modules], rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, command, str(imp_flow["path"])], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[] 0"
    assert ("global density" if command == "info" else ": ok (format 2") in r.stdout


def test_sweep_in_processes_writes_the_serial_stores(tmp_path):
    sources = []
    for i in range(3):
        torch.save(small_model(i), tmp_path / f"m{i}.pt")
        sources.append(tmp_path / f"m{i}.pt")
    (tmp_path / "serial").mkdir()
    serial = ingest_many(sources, [tmp_path / "serial" / f"m{i}.h5" for i in range(3)])
    assert main(["ingest", *map(str, sources), "-o", str(tmp_path / "par"), "--workers", "2", "-q"]) == 0
    assert [r["parameters"] for r in serial] == [1950] * 3
    for i in range(3):
        a, b = store_contents(tmp_path / "serial" / f"m{i}.h5"), store_contents(tmp_path / "par" / f"m{i}.h5")
        assert a == b


def test_ticket_series_read_in_processes_gives_the_serial_store(series, tmp_path):
    pset = ingest(series["path"].parent, workers=2)
    pset.save(tmp_path / "par.h5", progress=False)
    assert store_contents(tmp_path / "par.h5") == store_contents(series["path"])


def test_broadcast_tensors(tmp_path, capsys):
    sd = {
        "fc.weight": torch.randn(3, 4),
        "big": torch.zeros(1).expand(1_000_000),
        "small": torch.ones(1).expand(4, 3),
    }
    torch.save(sd, tmp_path / "exp.pt")
    assert (tmp_path / "exp.pt").stat().st_size < 10_000  # 4 MB of zeros that take one float on disk
    with pytest.raises(ExpandedTensorError, match="'big'.*1,000,000x"):
        ingest(tmp_path / "exp.pt")
    assert main(["ingest", str(tmp_path / "exp.pt"), "-o", str(tmp_path / "out.h5"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "[ExpandedTensorError]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5").exists()
    del sd["big"]  # a small broadcast is stored at its full size, bit-exactly
    torch.save(sd, tmp_path / "ok.pt")
    ingest(tmp_path / "ok.pt").save(tmp_path / "ok.h5", progress=False)
    assert_state_dicts_equal(
        rganalysis.load(tmp_path / "ok.h5").to_state_dict(), {k: v.contiguous() for k, v in sd.items()}
    )


def test_random_bytes_and_other_files_say_what_they_are(tmp_path, capsys, imp_flow):
    (tmp_path / "x.pth").write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(
        CorruptCheckpointError, match="not a readable PyTorch checkpoint: unrecognised binary data"
    ):
        ingest(tmp_path / "x.pth", adapter="generic")
    assert main(["ingest", str(tmp_path / "x.pth"), "-o", str(tmp_path / "o.h5"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "CorruptCheckpointError" in err and "pickle of Python objects" not in err
    (tmp_path / "store.pth").write_bytes(imp_flow["path"].read_bytes())
    with pytest.raises(CorruptCheckpointError, match="an HDF5 file"):
        ingest(tmp_path / "store.pth", adapter="generic")


def test_rounds_that_do_not_fit_are_refused_up_front(gaussian_model, tmp_path, capsys, monkeypatch):
    from rganalysis.rg import budget

    src = str(gaussian_model / "gauss.h5")
    monkeypatch.setattr(budget, "available_memory", lambda: 50 * 2**20)
    assert (
        main(
            [
                "flow",
                src,
                "-o",
                str(tmp_path / "f.h5"),
                "--rounds",
                "1000",
                "--rate",
                "0.2",
                "--rescaling",
                "rewind",
                "-q",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "[InsufficientResourcesError]" in err
        and "--rounds 1000 would need about" in err
        and "GB of memory" in err
    )
    assert not (tmp_path / "f.h5").exists()
    # the estimate: every round's weights kept (rewinding), 130,000 float32 pruned weights
    with rganalysis.load(src) as p:
        sizes = {n: (p.info[n].numel, 4) for n in p.pruned_names()}
    b = budget.flow_budget(
        sizes, [v[0] for v in sizes.values()], 1000, 0.2, rescaling="rewind", output_dir=tmp_path
    )
    assert b.memory == 130_000 * 4 * 1001 + 130_000 * (1 + 2 + budget.ROUND_SCRATCH)
    with pytest.raises(InsufficientResourcesError):
        b.check()


def test_long_flows_flag_the_rounds_that_prune_nothing(gaussian_model, tmp_path, capsys):
    out = tmp_path / "f.h5"
    argv = [
        "flow",
        str(gaussian_model / "gauss.h5"),
        "-o",
        str(out),
        "--rounds",
        "10000",
        "--rate",
        "0.2",
        "-q",
    ]
    assert main(argv + ["--device", "cpu"]) == 0
    cap = capsys.readouterr()
    with rganalysis.load(out) as f:
        e = f.flow_attrs["empty_from"]
        assert 40 < e < 80  # 130,000 weights: round(0.2 * survivors) is 0 once 2 are left
        assert (
            f"rounds {e}-10000 pruned nothing" in cap.out
            and f"rounds {e}-10000 will prune nothing" in cap.err
        )
        assert f.n_rounds == 10001
        with h5py.File(out) as h:
            assert h["masks/a.weight"].dtype == np.uint16  # 10,001 rounds
        assert torch.equal(f.mask("c.weight", 10000), f.mask("c.weight", e))
        g = f.global_density().values
        assert g[e - 2] > g[e - 1] == g[e] == g[-1] > 0  # round e is the first to remove nothing
    assert (
        main(
            [
                "flow",
                str(gaussian_model / "gauss.h5"),
                "-o",
                str(tmp_path / "g.h5"),
                "--rounds",
                "3",
                "--rate",
                "1e-9",
                "-q",
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert "rounds 1-3 pruned nothing" in cap.out and "will prune nothing" in cap.err
    with rganalysis.load(tmp_path / "g.h5") as f:
        assert f.flow_attrs["empty_from"] == 1 and np.all(f.global_density().values == 1.0)


def test_survival_counts_do_not_wrap_past_int16(tmp_path):
    sd = {"w.weight": torch.arange(1.0, 13.0).reshape(3, 4)}
    base = make_parameter_set([single_round(sd)], adapter="generic", architecture="mlp", sources=[])
    flow = compute_flow(base, 40_000, 0.5, device="cpu", progress=False)
    # 12 -> 6 -> 3 -> 1 (round(1.5) = 2 removed) -> 1: the largest weight survives every round
    assert flow.flow_attrs["empty_from"] == 4
    s = flow.survival_array("w.weight")
    assert s.max() == 40_001 and s.dtype == np.uint16  # on disk: 0 .. 40,001 fit in uint16
    assert flow._survival_tensor("w.weight").dtype == torch.int32  # counted in int32 (int16 would wrap)
    assert flow.mask("w.weight", 40_000).sum() == 1 and bool(flow.mask("w.weight", 40_000)[2, 3])
    flow.save(tmp_path / "f.h5", progress=False)
    with rganalysis.load(tmp_path / "f.h5") as back:
        assert back.read_masks("w.weight")[-1].sum() == 1
        assert back.densities().values[-1, 0] == pytest.approx(1 / 12)


def test_the_format_page_lists_every_stored_dtype():
    """docs/store-format.md's dtype table is the writer's (a reader with only h5py relies on it)."""
    import re
    from pathlib import Path

    from rganalysis.store.index import STORED_DTYPES

    text = (Path(__file__).resolve().parents[2] / "docs" / "store-format.md").read_text()
    table = text[text.index("| torch dtype |") : text.index("## Root attributes")]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names = [n.strip(" `") for n in cells[0].split(",")]
        stored = [t.strip(" `").replace("\\|", "|") for t in cells[1].split(":")[0].split(",")]
        for n, t in zip(names, stored * len(names) if len(stored) == 1 else stored, strict=False):
            rows[n] = t.split()[0]
    assert {k: rows[k] for k in STORED_DTYPES} == STORED_DTYPES
