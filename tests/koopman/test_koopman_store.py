"""Koopman / DMD of stored flows (rganalysis.koopman_flow, `rganalysis koopman`).

Cross-checks: a flow built from a known linear map over a ResNet-18's weights, written as an IMP
ticket series and ingested, gives back its eigenvalues and modes; a data-free IMP flow from the
store gives PyDMD's exact-DMD eigenvalues; the shortcut Gram of data-free flows equals the dense one.
"""

from __future__ import annotations

import json
import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from pydmd import DMD

import rganalysis
from rganalysis.errors import InvalidParameterError, RankError, TooFewRoundsError
from rganalysis.fit.spectra import match_eigenvalues
from rganalysis.koopman.dmd import KoopmanDMD, RankDeficiencyWarning, snapshot_gram
from rganalysis.koopman.modes import StoreInUseError, mode_groups, write_modes
from rganalysis.koopman.snapshots import _alive_rounds, select_names, snapshot_provider
from rganalysis.koopman.summary import format_koopman, koopman_json
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set
from rganalysis.store.parameter_set import ParameterSet, RoundData

from conftest import T_SERIES, TRUE


def _rel_err(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    found = np.asarray(found)
    return np.abs(found[match_eigenvalues(true, found)] - true) / np.abs(true)


def test_ticket_series_gives_back_the_linear_map(series):
    pset = rganalysis.load(series["path"])
    assert pset.flow_attrs["layout"] == "imp-ticket-series" and pset.n_rounds == T_SERIES
    assert pset.pruned_names() == series["masked"]  # 19 convs (the stem and fc are not masked)
    with pytest.warns(RankDeficiencyWarning, match="numerical rank 5"):
        dmd = KoopmanDMD(n_bags=50).fit(pset)
    pset.close()
    assert dmd.rank_ == 5 and dmd.numerical_rank_ == 5
    assert dmd.n_features_ == sum(series["comps"][k][0].numel() for k in series["masked"])
    assert _rel_err(dmd.eigenvalues_, TRUE).max() < 1e-6
    # the sixth singular value is float32 rounding, far below the fifth
    assert dmd.singular_values_[5] < 1e-6 * dmd.singular_values_[0] < dmd.singular_values_[4]
    # T_SERIES - 1 pairs give too few distinct bags for an interval (and exact data would give zero-width
    # ones); with no interval (and no b: the series does not prune) there is no class
    assert dmd.n_bags_used_ == 0 and "distinct bags" in dmd.ci_note_
    assert np.isnan(dmd.eigenvalue_ci_).all()
    assert list(dmd.classes_) == ["undetermined"] * 5
    # no pruning (all-ones masks): no scale factor, no exponents, said so
    assert dmd.exponents_ is None and dmd.b_ is None and "does not prune" in dmd.scale_note_
    # the store is read tensor by tensor through the generic (dense) path: weights change every round
    snaps = snapshot_provider(series["pset"], "conv1.weight,layer1.*conv*")
    g = snaps.gram("cpu")
    assert snaps.n_structured_ == 0
    z = np.concatenate(
        [
            np.concatenate(
                [
                    (series["pset"].tensor(n, r) * series["pset"].mask(n, r)).double().reshape(1, -1)
                    for r in range(T_SERIES)
                ]
            )
            for n in snaps.names
        ],
        axis=1,
    )
    np.testing.assert_allclose(g.gram, z @ z.T, rtol=1e-12)


def test_in_memory_and_layer_std_scaling(series):
    """The ingested (in-memory) set gives what the file gives; a fixed per-layer scale keeps the
    eigenvalues of a linear flow and changes its singular values."""
    subset = "layer2.*conv*.weight,fc.weight"
    a = KoopmanDMD(rank=5, subset=subset, n_bags=0).fit(series["path"])
    b = KoopmanDMD(rank=5, subset=subset, n_bags=0).fit(series["pset"])
    np.testing.assert_allclose(a.eigenvalues_, b.eigenvalues_, rtol=1e-12)
    assert a.tensor_names_ == [k for k in series["lin"] if k.startswith("layer2.") and "conv" in k] + [
        "fc.weight"
    ]
    c = KoopmanDMD(rank=5, subset=subset, scale="layer-std", n_bags=0).fit(series["path"])
    assert _rel_err(c.eigenvalues_, TRUE).max() < 1e-6
    assert not np.allclose(c.singular_values_, a.singular_values_, rtol=1e-3)
    assert a.layer_scales_["fc.weight"] == 1.0
    w = series["pset"].tensor("fc.weight", 0).double()  # theta_0 = v_0 + v_1 + v_2 + 2 v_3, fixed
    assert c.layer_scales_["fc.weight"] == pytest.approx(float(w.std(unbiased=False)), rel=1e-12)


def test_subsets(series):
    """``all`` adds the constant tensors (batch norm, biases): eigenvalue 1; globs select by name."""
    pset = series["pset"]
    names = select_names(pset, "all")
    assert "bn1.running_var" in names and "layer1.0.bn1.num_batches_tracked" not in names  # int64 skipped
    assert len(names) == 102 and sum(pset.info[n].numel for n in names) == 11_689_512 + 9_600  # + BN buffers
    dmd = KoopmanDMD(rank=6, subset="layer1.0.*", n_bags=0).fit(
        series["path"]
    )  # convs + constant batch norms
    assert dmd.tensor_names_[:3] == ["layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias"]
    assert dmd.n_features_ == 2 * (36_864 + 4 * 64)
    # rank 6 = T-1: the fit is exactly determined, so the float32 rounding of the stored weights
    # enters undamped (~5e-6 with --subset all; 1e-9 with one snapshot pair to spare, as in the first test)
    assert _rel_err(dmd.eigenvalues_, np.r_[1.0, TRUE]).max() < 3e-5
    assert select_names(pset, "layer4.1.conv2.weight, fc.*") == [
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ]
    with pytest.raises(InvalidParameterError, match="matches no floating-point tensor"):
        select_names(pset, "decoder.*")
    with pytest.raises(InvalidParameterError, match="matches no"):
        KoopmanDMD(subset="layer9.*").fit(series["path"])
    with pytest.raises(InvalidParameterError, match="scale"):
        KoopmanDMD(scale="global-std").fit(series["path"])


def _dense_snapshots(pset: ParameterSet, names: list[str]) -> np.ndarray:
    """(T, N) float64 snapshot matrix, built naively (small sets only)."""
    return np.stack(
        [
            np.concatenate(
                [(pset.tensor(n, r) * pset.mask(n, r)).double().reshape(-1).numpy() for n in names]
            )
            for r in range(pset.n_rounds)
        ]
    )


def test_imp_flow_matches_pydmd_through_the_store(imp_flow):
    with rganalysis.load(imp_flow["path"]) as pset:
        z = _dense_snapshots(pset, pset.pruned_names())
        snaps = snapshot_provider(pset)
        g = snaps.gram("cpu")
        assert snaps.n_structured_ == 3  # data-free, nested masks: the shortcut Gram
        np.testing.assert_allclose(g.gram, z @ z.T, rtol=1e-13)
        np.testing.assert_allclose(g.gram, snapshot_gram(snaps, device="cpu").gram, rtol=1e-13)
        dmd = KoopmanDMD(rank=4, n_bags=30).fit(pset)
    ref = DMD(svd_rank=4, exact=True)
    ref.fit(z.T)
    assert _rel_err(dmd.eigenvalues_, ref.eigs).max() < 1e-6
    # the flow as compute_flow returns it (in memory, masks derived lazily) gives the same fit
    with rganalysis.load(imp_flow["model"]) as model:
        mem = KoopmanDMD(rank=4, n_bags=0).fit(compute_flow(model, 9, 0.2, device="cpu", progress=False))
    np.testing.assert_allclose(mem.eigenvalues_, dmd.eigenvalues_, rtol=1e-12)
    # exponents with the flow's b = 1/(1-p)
    assert dmd.b_ == pytest.approx(1.25) and dmd.rate_ == pytest.approx(0.2)
    np.testing.assert_allclose(dmd.exponents_, np.log(np.abs(dmd.eigenvalues_)) / np.log(1.25), rtol=1e-12)
    j = koopman_json(dmd)
    assert all("exponent" in e for e in j["eigenvalues"]) and len(j["b_n"]) == 9
    assert "b = 1.2500 (rate 0.2)" in format_koopman(j)
    json.dumps(j, allow_nan=False)


def test_slabs_give_the_same_gram_and_modes(imp_flow, tmp_path):
    path = tmp_path / "flow.h5"
    shutil.copy(imp_flow["path"], path)
    whole = KoopmanDMD(rank=3, n_bags=0, scale="layer-std").fit(path)
    sliced = KoopmanDMD(rank=3, n_bags=0, scale="layer-std", block_elements=10 * 7).fit(path)
    np.testing.assert_allclose(sliced.gram_, whole.gram_, rtol=1e-13)
    with rganalysis.load(path) as p:
        assert len(snapshot_provider(p, block_elements=10 * 7).specs) == 60 + 30 + 10  # one row per slab
        z = _dense_snapshots(p, p.pruned_names())
    assert whole.tensor_names_ == ["a.weight", "b.weight", "c.weight"]
    write_modes(path, whole)
    with xr.open_dataset(path, engine="h5netcdf", group="koopman/mode_001") as ds:
        ref = {k: v.values.copy() for k, v in ds.items()}
    write_modes(path, sliced, block_elements=10 * 7, dtype="float64")
    with xr.open_dataset(path, engine="h5netcdf", group="koopman/mode_001") as ds:
        assert ds["a.weight"].dtype == np.float64
        for k, v in ref.items():
            np.testing.assert_allclose(ds[k].values, v, rtol=1e-5, atol=1e-6 * np.abs(v).max())
        got = np.concatenate([ds[n].values.reshape(-1) for n in whole.tensor_names_]).astype(np.complex128)
        if whole.eigenvalues_[1].imag != 0:
            got += 1j * np.concatenate([ds[f"{n}.imag"].values.reshape(-1) for n in whole.tensor_names_])
    # modes in parameter units (the per-layer scale undone): Phi = D (Z/D)^T coef for the scaled fit
    sizes = [int(np.prod(ref[n].shape)) for n in whole.tensor_names_]
    scales = np.concatenate(
        [np.full(k, whole.layer_scales_[n]) for k, n in zip(sizes, whole.tensor_names_, strict=True)]
    )
    phi = ((z / scales).T @ whole.mode_coef_[:, 1]) * scales
    np.testing.assert_allclose(got, phi, rtol=1e-9, atol=1e-12 * np.abs(phi).max())


def test_modes_are_written_safely(imp_flow, tmp_path, monkeypatch):
    path = tmp_path / "flow.h5"
    shutil.copy(imp_flow["path"], path)
    dmd = KoopmanDMD(rank=4, n_bags=0).fit(path)
    with h5py.File(path, "r+") as f:  # a leftover of an interrupted write
        f.create_group("koopman/partial_mode_007")
    assert write_modes(path, dmd, limit=2) == ["koopman/mode_000", "koopman/mode_001"]
    assert mode_groups(path) == ["koopman/mode_000", "koopman/mode_001"]
    with h5py.File(path, "r") as f:
        assert sorted(f["koopman"]) == ["mode_000", "mode_001"]
        before = f["koopman/mode_000/a.weight"][()]

    # a failure half-way leaves the earlier modes as they were and no partial group
    calls = {"n": 0}
    real_modes = KoopmanDMD.modes

    def failing(self, *a, **k):
        for blk in real_modes(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("disk full")
            yield blk

    monkeypatch.setattr(KoopmanDMD, "modes", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_modes(path, dmd)
    monkeypatch.undo()
    with h5py.File(path, "r") as f:
        assert sorted(f["koopman"]) == ["mode_000", "mode_001"]
        np.testing.assert_array_equal(f["koopman/mode_000/a.weight"][()], before)

    # a new write replaces every earlier mode group
    assert write_modes(path, dmd, indices=[3]) == ["koopman/mode_000"]
    ds = xr.open_dataset(path, engine="h5netcdf", group="koopman/mode_000")
    assert ds.attrs["eigenvalue_index"] == 3 and ds.attrs["eigenvalue_abs"] == pytest.approx(
        abs(dmd.eigenvalues_[3])
    )
    ds.close()
    assert mode_groups(path) == ["koopman/mode_000"]
    # the file open read-only elsewhere in this process: a named error, nothing written
    with rganalysis.load(path):
        with pytest.raises(StoreInUseError, match="close the ParameterSet"):
            write_modes(path, dmd)
    with pytest.raises(InvalidParameterError, match="fitted on a flow store"):
        write_modes(path, KoopmanDMD(rank=2).fit(np.random.default_rng(0).standard_normal((5, 20))))


def _linear_flow(T: int, n_comp: int) -> ParameterSet:
    """A recorded flow of T rounds whose two layers follow n_comp real modes (no masks)."""
    rng = np.random.default_rng(3)
    lam = np.array([0.95, 0.6, 0.3][:n_comp])
    shapes = {"l1.weight": (12, 8), "l1.bias": (12,), "l2.weight": (5, 12)}
    v = {k: rng.standard_normal((n_comp, *s)) for k, s in shapes.items()}
    rounds = [
        RoundData({k: torch.from_numpy(np.tensordot(lam**n, v[k], axes=1)) for k in shapes}) for n in range(T)
    ]
    return make_parameter_set(rounds, adapter="generic", architecture="generic", sources=[])


def test_rank_errors_and_warnings(imp_flow, tmp_path):
    pset = _linear_flow(6, 2)  # float64 weights: numerical rank 2
    with pytest.raises(RankError, match="exceeds the numerical rank 2"):
        KoopmanDMD(rank=3).fit(pset)
    with pytest.raises(RankError, match="T-1 = 5"):
        KoopmanDMD(rank=6).fit(pset)
    with pytest.warns(RankDeficiencyWarning, match="rank-deficient flow"):
        dmd = KoopmanDMD(n_bags=10).fit(pset)
    assert dmd.rank_ == 2 and _rel_err(dmd.eigenvalues_, np.array([0.95, 0.6])).max() < 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = KoopmanDMD(energy=0.999, n_bags=0).fit(pset)
    assert e.rank_ <= 2
    with pytest.raises(InvalidParameterError, match="either rank or energy"):
        KoopmanDMD(rank=1, energy=0.9).fit(pset)
    # a plain model: one round, no flow
    with pytest.raises(TooFewRoundsError, match="single-round"):
        KoopmanDMD().fit(imp_flow["model"])


def test_alive_rounds_and_unnested_masks():
    rng = np.random.default_rng(0)
    for n in (64, 13):  # the 64-bit word path and the byte path
        d = rng.integers(0, 6, n)
        m = (np.arange(5)[:, None] < d[None, :]).astype(np.uint8)
        np.testing.assert_array_equal(_alive_rounds(m), d)
        m[3, 0], m[2, 0] = 1, 0  # weight 0 revived at round 3
        assert _alive_rounds(m) is None
    # a set with masks that are not nested (as some recorded flows are) takes the dense path
    info_set = _linear_flow(5, 2)
    masks = {"l1.weight": [torch.from_numpy(rng.random((12, 8)) < 0.6) for _ in range(5)]}
    p = ParameterSet(info_set.info, info_set._weights, masks, n_rounds=5, validate=False)
    snaps = snapshot_provider(p, "all")
    g = snaps.gram("cpu").gram
    z = _dense_snapshots(p, snaps.names)
    np.testing.assert_allclose(g, z @ z.T, rtol=1e-13)
