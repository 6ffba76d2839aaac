"""The parameter store: bit-exact round trips, named dimensions, provenance, lazy reading."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

import rganalysis
from rganalysis.adapters import ingest
from rganalysis.errors import MissingTensorError, StoreClosedError

from conftest import assert_state_dicts_equal


def roundtrip(src, tmp_path, **options):
    pset = ingest(src, **options)
    out = tmp_path / "out.h5"
    pset.save(out, progress=False)
    return pset, rganalysis.load(out), out


@pytest.mark.parametrize("wrap", ["plain", "module", "state_dict", "model"])
def test_resnet18_roundtrip_bit_exact(tmp_path, resnet18_sd, wrap):
    sd = {("module." + k if wrap == "module" else k): v for k, v in resnet18_sd.items()}
    obj = {wrap: sd, "epoch": 3} if wrap in ("state_dict", "model") else sd
    torch.save(obj, tmp_path / "r18.pth")
    _, back, _ = roundtrip(tmp_path / "r18.pth", tmp_path)
    assert back.attrs["architecture"] == "resnet18"
    assert back.attrs["adapter"] == "torchvision-resnet"
    assert_state_dicts_equal(back.to_state_dict(), sd)
    assert_state_dicts_equal(back.to_state_dict(layout="canonical"), resnet18_sd)
    module = back.to_module()
    assert_state_dicts_equal(module.state_dict(), resnet18_sd)


def test_resnet50_roundtrip_and_xarray(tmp_path):
    import torchvision

    torch.manual_seed(1)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(sd, tmp_path / "r50.pt")
    pset, back, out = roundtrip(tmp_path / "r50.pt", tmp_path)
    assert back.attrs["architecture"] == "resnet50"
    assert_state_dicts_equal(back.to_state_dict(), sd)
    assert sum(back.info[n].numel for n in back.prunable_names()) == 25_502_912
    ds = xr.open_dataset(out, engine="h5netcdf", group="parameters")
    w = ds["layer1.0.conv2.weight"]
    assert w.dims == ("out_channels_64", "in_channels_64", "kh_3", "kw_3")
    assert w.attrs["kind"] == "conv" and w.attrs["prunable"] == 1 and w.attrs["module"] == "layer1.0.conv2"
    assert ds["fc.weight"].dims == ("out_features_1000", "in_features_2048")
    assert ds["bn1.weight"].attrs["kind"] == "norm"
    np.testing.assert_array_equal(w.values, sd["layer1.0.conv2.weight"].numpy())


def test_safetensors_resnet(tmp_path, resnet18_sd):
    from safetensors.torch import load_file, save_file

    save_file({k: v.contiguous() for k, v in resnet18_sd.items()}, tmp_path / "r18.safetensors")
    _, back, _ = roundtrip(tmp_path / "r18.safetensors", tmp_path)
    assert back.attrs["architecture"] == "resnet18"
    # the source's key order is the file's (safetensors sorts keys); the model's order is kept in names
    assert_state_dicts_equal(back.to_state_dict(), load_file(tmp_path / "r18.safetensors"))
    assert back.names == list(resnet18_sd)


def test_tiny_bert_roundtrip(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    src = load_file(tiny_bert_dir / "model.safetensors")
    _, back, out = roundtrip(tiny_bert_dir, tmp_path)
    assert back.attrs["adapter"] == "hf-bert" and back.attrs["architecture"] == "BertModel"
    got = back.to_state_dict()
    assert set(got) == set(src)
    assert_state_dicts_equal({k: got[k] for k in src}, src)
    assert back.names.index("embeddings.word_embeddings.weight") < back.names.index(
        "encoder.layer.0.attention.self.query.weight"
    )
    assert back.names.index("encoder.layer.1.output.dense.weight") < back.names.index("pooler.dense.weight")
    assert back.info["embeddings.word_embeddings.weight"].kind == "embedding"
    assert not back.info["embeddings.word_embeddings.weight"].prunable
    # 2 layers x 6 linear weights + pooler
    assert len(back.prunable_names()) == 13
    module = back.to_module()
    assert type(module).__name__ == "BertModel"


def test_include_embeddings_flag(tmp_path, tiny_bert_dir):
    pset = ingest(tiny_bert_dir, include_embeddings=True)
    assert pset.info["embeddings.word_embeddings.weight"].prunable
    assert len(pset.prunable_names()) == 13 + 3


def test_minilm_shipped_checkpoint_roundtrip(tmp_path):
    from safetensors.torch import load_file

    from rganalysis.demo import minilm_path

    src = load_file(minilm_path() / "model.safetensors")
    pset, back, out = roundtrip(minilm_path(), tmp_path)
    assert len(back.names) == 104
    assert sum(i.numel for i in back.info.values()) == 22_713_728
    got = back.to_state_dict()
    assert set(got) == set(src)
    assert_state_dicts_equal({k: got[k] for k in src}, src)
    assert back.info["embeddings.position_ids"].kind == "other"
    assert back.info["embeddings.position_ids"].dtype == torch.int64
    # provenance
    sha = json.loads(back.attrs["sha256"])
    assert any(k.endswith("model.safetensors") for k in sha)
    assert back.attrs["adapter"] == "hf-bert"
    versions = json.loads(back.attrs["package_versions"])
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"].startswith(
        torch.__version__[:3]
    )
    with h5py.File(out) as f:
        assert f.attrs["format"] == "rganalysis-store"


def test_pruned_state_dict_roundtrip(tmp_path):
    import torch.nn.utils.prune as prune
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    params = [(m, "weight") for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.3)
    sd = model.state_dict()
    assert any(k.endswith("weight_orig") for k in sd)
    torch.save(sd, tmp_path / "ticket.pth")
    _, back, _ = roundtrip(tmp_path / "ticket.pth", tmp_path)
    assert back.attrs["adapter"] == "pruned" and back.attrs["architecture"] == "resnet18"
    assert_state_dicts_equal(back.to_state_dict(), sd)
    # masks became the store's masks; density is the pruned fraction
    assert back.masked_names() == [n for n in back.names if back.info[n].prunable]
    assert back.global_density().values[0] == pytest.approx(0.7, abs=1e-6)
    # the masked canonical state dict is what the pruned module computes
    masked = back.to_state_dict(layout="canonical", apply_masks=True)
    for name, _m in [(n, None) for n in back.masked_names()]:
        mod = model.get_submodule(name.rsplit(".", 1)[0])
        assert torch.equal(masked[name], mod.weight)


def test_dtypes_bit_exact(tmp_path):
    torch.manual_seed(0)
    sd = {
        "a.weight": torch.randn(4, 3).to(torch.bfloat16),
        "b.weight": torch.randn(5, 4).half(),
        "c.weight": torch.randn(2, 5, dtype=torch.float64),
        "d.flag": torch.tensor([True, False]),
        "e.count": torch.tensor(7),
        "f.weight": torch.tensor([[-0.0, 0.0], [1e-45, -3.4e38]]),
    }
    torch.save(sd, tmp_path / "m.pt")
    _, back, _ = roundtrip(tmp_path / "m.pt", tmp_path)
    got = back.to_state_dict()
    assert_state_dicts_equal(got, sd)
    assert torch.equal(got["f.weight"].view(torch.int32), sd["f.weight"].view(torch.int32))  # -0.0 kept


def test_lazy_reading_does_not_load_everything(tmp_path, resnet18_sd):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    _, back, _ = roundtrip(tmp_path / "r18.pth", tmp_path)
    assert all(not isinstance(v, torch.Tensor) for v in back._weights[0].values())
    w = back.tensor("layer2.0.conv1.weight")
    assert torch.equal(w, resnet18_sd["layer2.0.conv1.weight"])
    assert back.mask("layer2.0.conv1.weight").all() and back.mask("layer2.0.conv1.weight").dtype == torch.bool


def test_reading_a_closed_store_is_a_named_error(tmp_path):
    """A flow computed from a store reads the store's weights lazily; after the store is closed a tensor
    not read yet is a StoreClosedError (not a corrupt-store message), and what was read stays valid."""
    sd = {"a.weight": torch.randn(8, 4), "b.weight": torch.randn(3, 8)}
    torch.save(sd, tmp_path / "m.pt")
    rganalysis.save(ingest(tmp_path / "m.pt"), tmp_path / "m.h5")
    with rganalysis.load(tmp_path / "m.h5") as pset:
        flow = rganalysis.compute_flow(pset, rounds=2, rate=0.5, progress=False)
        a = flow.tensor("a.weight", 2)
    assert torch.equal(a, sd["a.weight"])
    with pytest.raises(StoreClosedError, match="is closed"):
        flow.tensor("b.weight", 2)


def test_compression_option(tmp_path, resnet18_sd):
    torch.save(resnet18_sd, tmp_path / "r18.pth")
    pset = ingest(tmp_path / "r18.pth")
    pset.save(tmp_path / "c.h5", compress=True, progress=False)
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["parameters"]["layer1.0.conv1.weight"].compression == "gzip"
    assert_state_dicts_equal(rganalysis.load(tmp_path / "c.h5").to_state_dict(), dict(resnet18_sd))
    pset.save(tmp_path / "u.h5", progress=False)
    with h5py.File(tmp_path / "u.h5") as f:
        assert f["parameters"]["layer1.0.conv1.weight"].compression is None


def test_flow_with_changing_weights_and_rewind_roundtrip(tmp_path):
    """Weights that change per round (/weights/round_NNNN) and a rewind point survive save + load."""
    from rganalysis.store.checkpoint import make_parameter_set
    from rganalysis.store.parameter_set import PARAM, LayoutEntry, RoundData

    torch.manual_seed(0)
    w0 = {"l1.weight": torch.randn(4, 3), "l1.bias": torch.randn(4), "l2.weight": torch.randn(2, 4)}
    w1 = {**w0, "l1.weight": w0["l1.weight"] * 2}
    m1 = {"l1.weight": (torch.rand(4, 3) > 0.5).float()}
    rounds = [
        RoundData(dict(w0), layout=[LayoutEntry(k, PARAM, k) for k in w0]),
        RoundData(dict(w1), masks=m1, layout=[LayoutEntry(k, PARAM, k) for k in w1]),
    ]
    rewind = {k: v + 1 for k, v in w0.items()}
    pset = make_parameter_set(
        rounds,
        adapter="generic",
        architecture="generic",
        sources=[],
        rewind=rewind,
        rewind_layout=[LayoutEntry(k, PARAM, k) for k in rewind],
    )
    pset.save(tmp_path / "f.h5", progress=False)
    back = rganalysis.load(tmp_path / "f.h5")
    assert back.n_rounds == 2
    assert torch.equal(back.tensor("l1.weight", 0), w0["l1.weight"])
    assert torch.equal(back.tensor("l1.weight", 1), w1["l1.weight"])
    assert torch.equal(back.tensor("l2.weight", 1), w0["l2.weight"])
    assert torch.equal(back.mask("l1.weight", 1), m1["l1.weight"].bool())
    assert back.mask("l1.weight", 0).all()
    got = back.rewind_state()
    assert set(got) == set(rewind) and all(torch.equal(got[k], rewind[k]) for k in rewind)


def test_public_reader_streams_versions_and_mask_blocks(tmp_path):
    """weight_runs / tensor(rows=) / read_masks read exactly what tensor() and mask() give, from disk in
    one call per run or per mask dataset."""
    from rganalysis.rg.flow import compute_flow
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    g = torch.Generator().manual_seed(0)
    sd = {"a.weight": torch.randn(12, 5, generator=g), "b.weight": torch.randn(3, 12, generator=g)}
    base = make_parameter_set(
        [single_round(sd)], adapter="generic", architecture="mlp", sources=[], name="m", rewind=dict(sd)
    )
    flow = compute_flow(base, 4, 0.3, device="cpu", progress=False)  # data-free: one run per tensor
    assert flow.weight_runs("a.weight") == [(0, 5)]
    flow.save(tmp_path / "f.h5", progress=False)

    def train(weights, masks):
        return {k: w * 2 for k, w in weights.items()}

    retrained = compute_flow(base, 3, 0.3, rescaling="rewind", train=train, device="cpu", progress=False)
    assert retrained.weight_runs("b.weight") == [(0, 1), (1, 2), (2, 3), (3, 4)]
    retrained.save(tmp_path / "r.h5", progress=False)
    for path in ("f.h5", "r.h5"):
        with rganalysis.load(tmp_path / path) as p:
            for name in p.pruned_names():
                masks = p.read_masks(name)
                assert masks.dtype == torch.bool and masks.shape == (p.n_rounds, *p.info[name].shape)
                for r in range(p.n_rounds):
                    assert torch.equal(masks[r], p.mask(name, r))
                np.testing.assert_array_equal(p.read_masks(name, slice(1, 3)).numpy(), masks[:, 1:3].numpy())
                for a, b in p.weight_runs(name):
                    assert torch.equal(p.tensor(name, a, rows=slice(2, 3)), p.tensor(name, b - 1)[2:3])
            assert p.changed_names(0) == p.names and p.read_masks("a.weight") is not None
    with pytest.raises(MissingTensorError):
        flow.weight_runs("nope")
