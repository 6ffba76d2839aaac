"""Published lottery-ticket layouts load as released, byte for byte, as models or recorded IMP flows.

Every layout is written here with the keys, nesting and dtypes of the code base that publishes it
(no downloads): IMP ticket series (CVPR 2021 lottery-tickets-in-pre-training), BERT-tickets (HF folder
+ mask.pt files), open_lth runs, generic state dicts, MoCo/SimCLR backbones and whole-model pickles.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

import rganalysis
from rganalysis.adapters import ingest
from rganalysis.adapters._common import MaskMismatchError, mask_file_dict, rewind_state_dict
from rganalysis.errors import (
    InvalidParameterError,
    MaskShapeError,
    MasksNotNestedError,
    MissingTensorError,
    PickleRefusedError,
    SparsityReportMismatchError,
    UnknownArchitectureError,
)
from rganalysis.store.checkpoint import load_checkpoint

from conftest import (
    assert_state_dicts_equal,
    bert_mask_shapes,
    check_densities,
    nested_masks,
    write_bert_dir,
)


# ====================================================================== helpers
def save_load(pset: rganalysis.ParameterSet, tmp_path: Path, name: str = "out.h5") -> rganalysis.ParameterSet:
    out = tmp_path / name
    pset.save(out, progress=False)
    return rganalysis.load(out)


def assert_refused(tmp_path: Path, error: type, match: str, source: Path, **options) -> None:
    """Ingesting ``source`` (and saving) fails with ``error`` and leaves no output, not even a temp file."""
    out = tmp_path / "refused.h5"
    with pytest.raises(error, match=match):
        ingest(source, **options).save(out, progress=False)
    assert not out.exists()
    assert not list(tmp_path.glob(".refused.h5*"))


# ====================================================================== 1. IMP ticket series
class TinyCNN(nn.Module):
    """Stem conv1, two pruned convs, a dense fc head: the ticket code's pruning pattern on a small net."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, bias=False), nn.Conv2d(8, 16, 3, bias=False))
        self.fc = nn.Linear(16, 10)


def cifar_resnet18() -> nn.Module:
    import torchvision

    m = torchvision.models.resnet18(weights=None, num_classes=10)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def write_ticket_series(
    d: Path,
    make,
    n_states: int,
    *,
    prefix: str = "module.",
    rate: float = 0.8,
    mask_entry: tuple[int, ...] = (),
    both_files: tuple[int, ...] = (),
    momentum: bool = False,
    masks: list[dict] | None = None,
) -> dict:
    """The CVPR 2021 ticket code's folder: ``{k}model_SA_best.pth.tar`` per IMP state k (and, for k in
    ``both_files``, a ``{k}checkpoint.pth.tar`` of another epoch).  Returns what was written."""
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    base = make()
    init = {prefix + k: v.clone() for k, v in base.state_dict().items()}
    convs = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d)][1:]  # the stem conv1 stays dense
    shapes = {f"{n}.weight": tuple(base.get_submodule(n).weight.shape) for n in convs}
    masks = masks or [{}] + nested_masks(shapes, [rate**k for k in range(1, n_states)])
    written = {"state_dicts": [], "masks": masks, "init": init, "mask_entries": {}, "objs": []}
    for k in range(n_states):
        m = make()
        m.load_state_dict({n: v for n, v in base.state_dict().items()})
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * (k + 1) * torch.randn_like(p))  # "training"
        for name, mask in masks[k].items():
            prune.custom_from_mask(m.get_submodule(name.removesuffix(".weight")), "weight", mask)
        sd = {prefix + n: v for n, v in m.state_dict().items()}
        obj = {
            "state": k,
            "result": {"train_ta": [50.0 + k, 60.0], "test_ta": [40.0, 55.5 + k]},
            "epoch": 30 + k,
            "state_dict": sd,
            "best_sa": np.float64(90.0 - k),
            "init_weight": init,
        }
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        if momentum:  # an optimizer state with momentum buffers (tensors); else only its param_groups
            for p in m.parameters():
                p.grad = torch.zeros_like(p)
            opt.step()
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[91, 136], gamma=0.1)  # holds a Counter
        obj |= {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
        if k in mask_entry:  # extract_mask(model.state_dict()) of the variants that save the mask too
            obj["mask"] = {k2: v for k2, v in sd.items() if k2.endswith("weight_mask")}
            written["mask_entries"][k] = obj["mask"]
        torch.save(obj, d / f"{k}model_SA_best.pth.tar")
        if k in both_files:
            torch.save({**obj, "epoch": 999, "best_sa": 0.0}, d / f"{k}checkpoint.pth.tar")
        written["state_dicts"].append(sd)
        written["objs"].append(obj)
    return written


@pytest.fixture(scope="module")
def resnet18_tickets(tmp_path_factory):
    d = tmp_path_factory.mktemp("tickets") / "cifar10_resnet18_imp"
    return d, write_ticket_series(d, cifar_resnet18, 3, mask_entry=(2,))


def test_ticket_series_resnet18_is_a_recorded_flow(resnet18_tickets, tmp_path):
    d, w = resnet18_tickets
    pset = ingest(d)
    back = save_load(pset, tmp_path)
    assert back.attrs["adapter"] == "ticket-series"
    assert back.attrs["architecture"] == "resnet18" and back.attrs["stem"] == "3x3"
    assert back.n_rounds == 3 and back.flow_attrs["kind"] == "recorded"
    for k in range(3):  # the published keys (module. prefix, weight_orig/weight_mask pairs) come back
        assert_state_dicts_equal(back.to_state_dict(k), w["state_dicts"][k])
    assert "conv1.weight" not in back.masked_names() and "fc.weight" not in back.masked_names()
    check_densities(back, w["masks"])
    np.testing.assert_array_equal(back.metrics["best_sa"], [90.0, 89.0, 88.0])
    np.testing.assert_array_equal(back.metrics["epoch"], [30, 31, 32])
    assert_state_dicts_equal(rewind_state_dict(back), w["init"])
    assert_state_dicts_equal(mask_file_dict(back, 2), w["mask_entries"][2])
    with pytest.raises(InvalidParameterError):
        mask_file_dict(back, 1)  # state 1 was saved without a 'mask' entry
    assert json.loads(back.attrs["results"])["1"]["test_ta"] == [40.0, 56.5]
    module = back.to_module(2)
    sd = w["state_dicts"][2]
    name = "layer2.0.conv1.weight"
    assert torch.equal(module.state_dict()[name], sd[f"module.{name}_orig"] * sd[f"module.{name}_mask"])
    assert module(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_ticket_series_numeric_order_and_dense_series(tmp_path):
    d = tmp_path / "tiny"
    w = write_ticket_series(d, TinyCNN, 11, prefix="", rate=0.9, both_files=(1, 10), momentum=True)
    back = save_load(ingest(d), tmp_path)
    assert back.metrics["state"] == list(range(11))  # 10 after 9
    assert json.loads(back.attrs["files"])[9:] == ["9model_SA_best.pth.tar", "10model_SA_best.pth.tar"]
    assert json.loads(back.attrs["skipped_files"]) == ["1checkpoint.pth.tar", "10checkpoint.pth.tar"]
    assert back.metrics["epoch"] == [30.0 + k for k in range(11)]  # model_SA_best, not checkpoint
    assert back.metrics["best_sa"][10] == 80.0
    assert_state_dicts_equal(rewind_state_dict(back), w["init"])
    check_densities(back, w["masks"])
    assert_state_dicts_equal(back.to_state_dict(10), w["state_dicts"][10])

    dense = tmp_path / "dense"
    w = write_ticket_series(dense, TinyCNN, 3, masks=[{}, {}, {}])
    back = save_load(ingest(dense), tmp_path, "dense.h5")
    assert back.n_rounds == 3 and back.masked_names() == []
    np.testing.assert_array_equal(back.global_density().values, [1.0, 1.0, 1.0])
    for k in range(3):
        assert_state_dicts_equal(back.to_state_dict(k), w["state_dicts"][k])


def test_ticket_series_refusals(tmp_path):
    shapes = {"layer1.0.weight": (8, 8, 3, 3), "layer1.1.weight": (16, 8, 3, 3)}
    m1, m2 = nested_masks(shapes, [0.5, 0.25])
    m2_bad = {k: v.clone() for k, v in m2.items()}
    m2_bad["layer1.1.weight"].view(-1)[torch.nonzero(m1["layer1.1.weight"].view(-1) == 0)[0]] = 1.0
    write_ticket_series(tmp_path / "notnested", TinyCNN, 3, masks=[{}, m1, m2_bad])
    assert_refused(tmp_path, MasksNotNestedError, "not nested", tmp_path / "notnested")

    d = tmp_path / "mismatch"
    write_ticket_series(d, TinyCNN, 2, masks=[{}, m1], mask_entry=(1,))
    obj = load_checkpoint(d / "1model_SA_best.pth.tar")
    obj["mask"]["module.layer1.0.weight_mask"] = 1 - obj["mask"]["module.layer1.0.weight_mask"]
    torch.save(obj, d / "1model_SA_best.pth.tar")
    assert_refused(tmp_path, MaskMismatchError, "layer1.0.weight", d)

    d = tmp_path / "pickled"
    write_ticket_series(d, TinyCNN, 2, masks=[{}, m1])
    torch.save(TinyCNN(), d / "0model_SA_best.pth.tar")  # a whole-model pickle in the series
    assert_refused(tmp_path, PickleRefusedError, "--allow-pickle", d)


def test_bert_folder_with_mask_files_is_a_recorded_flow(bert_tickets, tmp_path):
    d, sd, masks, files = bert_tickets
    back = save_load(ingest(d, masks=files), tmp_path)
    assert (
        back.attrs["adapter"] == "hf-bert" and back.attrs["architecture"] == "BertForSequenceClassification"
    )
    assert back.n_rounds == 4 and back.flow_attrs["kind"] == "recorded"
    check_densities(back, [{}, *masks])
    np.testing.assert_allclose(back.global_density().values, [1.0, 0.9, 0.8, 0.7], atol=1e-4)
    b = back.scale_factors()
    assert not np.allclose(b, b[0])  # uneven steps: 10% of the original weights per round
    for r in range(4):  # the folder's weights in every round; the mask files bit-exactly
        assert_state_dicts_equal(back.to_state_dict(r), sd)
    for r, f in enumerate(files, 1):
        assert_state_dicts_equal(mask_file_dict(back, r), torch.load(f, weights_only=True))
    with pytest.raises(InvalidParameterError):
        mask_file_dict(back, 0)
    q = "bert.encoder.layer.1.attention.self.query.weight"
    assert torch.equal(back.to_state_dict(2, apply_masks=True)[q], sd[q] * masks[1][q])
    assert back.masked_names()[-1] == "bert.pooler.dense.weight"
    assert back.info["bert.embeddings.word_embeddings.weight"].kind == "embedding"


def test_bert_pretraining_folder_with_one_mask(tmp_path):
    sd = write_bert_dir(tmp_path / "pre", "BertForPreTraining", layers=3)
    (m,) = nested_masks(bert_mask_shapes(sd, 3), [0.9])
    torch.save({n + "_mask": v for n, v in m.items()}, tmp_path / "mask.pt")
    back = save_load(ingest(tmp_path / "pre", masks=[tmp_path / "mask.pt"]), tmp_path)
    assert back.attrs["architecture"] == "BertForPreTraining" and back.n_rounds == 2
    check_densities(back, [{}, m])
    assert_state_dicts_equal(back.to_state_dict(1), sd)


def test_bert_mask_refusals(bert_tickets, tmp_path):
    d, sd, masks, files = bert_tickets
    bad = dict(torch.load(files[0], weights_only=True))
    bad["bert.encoder.layer.7.attention.self.query.weight_mask"] = torch.ones(32, 32)
    torch.save(bad, tmp_path / "missing.pt")
    assert_refused(tmp_path, MissingTensorError, "layer.7", d, masks=[tmp_path / "missing.pt"])

    bad = dict(torch.load(files[0], weights_only=True))
    bad["bert.pooler.dense.weight_mask"] = torch.ones(32, 16)
    torch.save(bad, tmp_path / "shape.pt")
    assert_refused(tmp_path, MaskShapeError, "pooler", d, masks=[tmp_path / "shape.pt"])

    assert_refused(tmp_path, MasksNotNestedError, "not nested", d, masks=[files[1], files[0]])
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")
    assert_refused(
        tmp_path, PickleRefusedError, "--allow-pickle", d, masks=[files[0], tmp_path / "pickled.pt"]
    )

    pickled_dir = tmp_path / "pickled_bert"  # a pytorch_model.bin that is a whole-model pickle
    pickled_dir.mkdir()
    shutil.copy(d / "config.json", pickled_dir / "config.json")
    torch.save(nn.Linear(2, 2), pickled_dir / "pytorch_model.bin")
    assert_refused(tmp_path, PickleRefusedError, "--allow-pickle", pickled_dir)


# ====================================================================== 3. open_lth runs
class OpenLTHBlock(nn.Module):
    """open_lth ``cifar_resnet.Model.Block``: conv1/bn1/conv2/bn2/shortcut."""

    def __init__(self, f_in: int, f_out: int, downsample: bool = False) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, 2, bias=False), nn.BatchNorm2d(f_out))
        else:
            self.shortcut = nn.Sequential()


class OpenLTHResNet20(nn.Module):
    """open_lth ``cifar_resnet_20`` with its exact names: conv, bn, blocks.{i}, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cur = [], 16
        for seg, filters in enumerate((16, 32, 64)):
            for i in range(3):
                blocks.append(OpenLTHBlock(cur, filters, seg > 0 and i == 0))
                cur = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    @property
    def prunable_layer_names(self) -> list[str]:
        return [n + ".weight" for n, m in self.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


class PrunedModel(nn.Module):
    """open_lth ``models.base.PrunedModel``: mask buffers ``mask_<name with ___>`` and the model under ``model.``."""

    def __init__(self, model: nn.Module, mask: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        for k, v in mask.items():
            self.register_buffer("mask_" + k.replace(".", "___"), v.float())
        with torch.no_grad():
            for k, v in mask.items():
                model.get_parameter(k).mul_(v.float())


def write_open_lth_run(run: Path, levels: int = 2) -> dict:
    """``level_{L}/main/{mask.pth, model_ep*_it*.pth, sparsity_report.json, logger, hparams.log}``: sparse
    global pruning of 20% per level, fc ignored (all ones); steps ep9_it50 and ep10_it0 (the last)."""
    torch.manual_seed(0)
    init = OpenLTHResNet20()
    names = init.prunable_layer_names
    shapes = {n: tuple(init.get_parameter(n).shape) for n in names}
    pruned = {n: s for n, s in shapes.items() if n != "fc.weight"}
    float_masks = [{n: torch.ones(s) for n, s in shapes.items()}] + [
        {**m, "fc.weight": torch.ones(shapes["fc.weight"])}
        for m in nested_masks(pruned, [0.8**L for L in range(1, levels + 1)])
    ]
    out = {"masks": [], "last": [], "init": None, "reports": []}
    for L in range(levels + 1):
        main = run / f"level_{L}" / "main"
        main.mkdir(parents=True)
        mask = {n: float_masks[L][n].int() for n in names}  # Mask.save: {k: v.cpu().int()}
        torch.save(mask, main / "mask.pth")
        total, unpruned = sum(v.numel() for v in mask.values()), sum(int(v.sum()) for v in mask.values())
        (main / "sparsity_report.json").write_text(
            json.dumps({"total": float(total), "unpruned": float(unpruned)}, indent=4)
        )
        (main / "hparams.log").write_text("Model Hyperparameters\n    * model_name => cifar_resnet_20\n")
        (main / "logger").write_text(
            f"test_accuracy,0,0.1\ntest_accuracy,3910,{0.9 - 0.01 * L}\ntest_loss,3910,0.3\n"
        )
        files = {}
        for ep, it in ((0, 0), (9, 50), (10, 0)):
            m = copy.deepcopy(init)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.01 * (ep + 1 + L) * torch.randn_like(p))
            if (ep, it) == (0, 0):
                m = copy.deepcopy(init)
            sd = m.state_dict() if L == 0 else PrunedModel(m, mask).state_dict()
            torch.save(sd, main / f"model_ep{ep}_it{it}.pth")
            files[(ep, it)] = dict(sd)
        out["masks"].append(mask)
        out["last"].append(files[(10, 0)])
        if L == 0:
            out["init"] = files[(0, 0)]
    return out


@pytest.fixture(scope="module")
def open_lth_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_lth") / "lottery_0123abcd"
    return root, write_open_lth_run(root / "replicate_1")


def test_open_lth_run_is_a_recorded_flow(open_lth_run, tmp_path):
    root, w = open_lth_run
    back = save_load(ingest(root / "replicate_1"), tmp_path)
    assert back.attrs["adapter"] == "open-lth" and back.attrs["architecture"] == "generic"
    assert back.attrs["open_lth_model"] == "cifar_resnet_20"
    assert back.n_rounds == 3
    for L in range(3):  # PrunedModel keys (model.*, float32 mask_* buffers) and mask.pth come back exactly
        assert_state_dicts_equal(back.to_state_dict(L), w["last"][L])
        assert_state_dicts_equal(mask_file_dict(back, L), w["masks"][L])
    assert (
        list(w["last"][1])[0].startswith("mask_")
        and back.to_state_dict(1)["mask_fc___weight"].dtype == torch.float32
    )
    assert_state_dicts_equal(rewind_state_dict(back), w["init"])
    check_densities(back, w["masks"])
    for L in range(3):
        report = json.loads(
            (root / "replicate_1" / f"level_{L}" / "main" / "sparsity_report.json").read_text()
        )
        assert back.global_density().values[L] == pytest.approx(
            report["unpruned"] / report["total"], rel=1e-12
        )
    np.testing.assert_allclose(back.metrics["test_accuracy"], [0.9, 0.89, 0.88])
    np.testing.assert_array_equal(back.metrics["epoch"], [10, 10, 10])  # ep10 is after ep9 (numerically)
    kinds = {n: back.info[n].kind for n in back.names}
    assert kinds["bn.weight"] == kinds["blocks.0.bn1.weight"] == kinds["blocks.3.shortcut.1.weight"] == "norm"
    assert kinds["blocks.3.shortcut.1.running_mean"] == kinds["blocks.3.shortcut.1.bias"] == "norm"
    assert (
        kinds["blocks.3.shortcut.0.weight"] == kinds["conv.weight"] == "conv"
        and kinds["fc.weight"] == "linear"
    )
    # a lottery folder with a single replicate is the same run
    assert ingest(root).n_rounds == 3


def test_open_lth_refusals(open_lth_run, tmp_path):
    root, w = open_lth_run
    run = tmp_path / "run"
    shutil.copytree(root / "replicate_1", run)
    report = run / "level_1" / "main" / "sparsity_report.json"
    good = report.read_text()
    r = json.loads(good)
    report.write_text(json.dumps({"total": r["total"], "unpruned": r["unpruned"] - 1}))
    assert_refused(tmp_path, SparsityReportMismatchError, "unpruned", run)
    report.write_text(good)

    model = run / "level_2" / "main" / "model_ep10_it0.pth"
    sd = torch.load(model, weights_only=True)
    sd["mask_blocks___1___conv1___weight"] = torch.ones_like(sd["mask_blocks___1___conv1___weight"])
    torch.save(sd, model)
    assert_refused(tmp_path, MaskMismatchError, "blocks.1.conv1.weight", run)
    torch.save(OpenLTHResNet20(), model)
    assert_refused(tmp_path, PickleRefusedError, "--allow-pickle", run)


# ====================================================================== 4. generic models
def test_generic_open_lth_state_dict_and_unknown_architecture(tmp_path):
    torch.manual_seed(0)
    sd = OpenLTHResNet20().state_dict()
    torch.save(sd, tmp_path / "resnet20.pth")
    back = save_load(ingest(tmp_path / "resnet20.pth"), tmp_path)
    assert back.attrs["adapter"] == "generic"
    assert_state_dicts_equal(back.to_state_dict(), sd)
    assert back.info["blocks.6.shortcut.1.weight"].kind == "norm"
    assert back.info["blocks.6.shortcut.0.weight"].kind == "conv"
    assert back.prunable_names()[0] == "conv.weight" and back.prunable_names()[-1] == "fc.weight"
    assert_refused(
        tmp_path,
        UnknownArchitectureError,
        "unknown architecture",
        tmp_path / "resnet20.pth",
        architecture="cifar_resnet_20",
    )


# ====================================================================== 5. self-supervised ResNets
def test_moco_resnet50_takes_the_query_encoder(tmp_path):
    import torchvision

    torch.manual_seed(0)
    q = torchvision.models.resnet50(weights=None, num_classes=128)
    q.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), q.fc)  # MoCo v2 --mlp
    k_sd = {n: v.clone() for n, v in q.state_dict().items()}
    k_sd["conv1.weight"] += 1.0  # the momentum encoder has drifted
    sd = {
        "module.queue": nn.functional.normalize(torch.randn(128, 512), dim=0),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    sd |= {f"module.encoder_q.{n}": v for n, v in q.state_dict().items()}
    sd |= {f"module.encoder_k.{n}": v for n, v in k_sd.items()}
    torch.save(
        {
            "epoch": 200,
            "arch": "resnet50",
            "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]},
        },
        tmp_path / "moco_v2_200ep.pth.tar",
    )
    with pytest.warns(UserWarning, match="module.encoder_k."):
        pset = ingest(tmp_path / "moco_v2_200ep.pth.tar")
    back = save_load(pset, tmp_path)
    assert back.attrs["adapter"] == "ssl-resnet" and back.attrs["architecture"] == "resnet50"
    assert back.attrs["key_prefix"] == "module.encoder_q."
    assert back.names == list(q.state_dict())
    assert back.info["fc.0.weight"].kind == back.info["fc.2.weight"].kind == "linear"
    assert "module.queue" in back.extra_keys() and "module.encoder_k.conv1.weight" in back.extra_keys()
    assert_state_dicts_equal(back.to_state_dict(), sd)  # the whole published state dict
    assert_state_dicts_equal(back.to_module(apply_masks=False).state_dict(), q.state_dict())
    assert json.loads(back.attrs["checkpoint_meta"]) == {"epoch": 200, "arch": "resnet50"}

    other = ingest(tmp_path / "moco_v2_200ep.pth.tar", prefix="module.encoder_k.")
    assert other.attrs["key_prefix"] == "module.encoder_k."
    assert torch.equal(other.tensor("conv1.weight"), k_sd["conv1.weight"])
    assert_refused(
        tmp_path,
        MissingTensorError,
        "no key starts with",
        tmp_path / "moco_v2_200ep.pth.tar",
        prefix="module.encoder_x.",
    )


@pytest.mark.parametrize("style", ["backbone", "encoder", "module"])
def test_simclr_style_backbones(tmp_path, style):
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None)
    if style == "backbone":  # solo-learn style: fc = Identity, projector beside the backbone
        m.fc = nn.Identity()
        head = {
            "projector.0.weight": torch.randn(64, 512),
            "projector.0.bias": torch.zeros(64),
            "projector.2.weight": torch.randn(32, 64),
        }
    elif style == "module":  # SimCLR with its MLP inside the backbone, DataParallel
        m.fc = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128))
        head = {}
    else:
        head = {}
    sd = {f"{style}.{n}": v for n, v in m.state_dict().items()} | head
    torch.save({"state_dict": sd, "epoch": 100}, tmp_path / "simclr.ckpt")
    back = save_load(ingest(tmp_path / "simclr.ckpt"), tmp_path)
    assert back.attrs["adapter"] == "ssl-resnet" and back.attrs["key_prefix"] == f"{style}."
    assert back.attrs["architecture"] == "resnet18"
    assert back.extra_keys() == sorted(head)
    assert_state_dicts_equal(back.to_state_dict(), sd)
    assert_state_dicts_equal(back.to_module(apply_masks=False).state_dict(), m.state_dict())


# ====================================================================== 6. whole-model pickles
def test_whole_model_pickle_needs_the_flag(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    torch.save(model, tmp_path / "whole.pth")
    assert_refused(tmp_path, PickleRefusedError, "--allow-pickle", tmp_path / "whole.pth")
    with pytest.warns(UserWarning, match="can run code"):
        pset = ingest(tmp_path / "whole.pth", allow_pickle=True)
    back = save_load(pset, tmp_path)
    assert back.attrs["adapter"] == "torchvision-resnet"
    assert_state_dicts_equal(back.to_state_dict(), model.state_dict())


def test_safetensors_keys_are_put_in_forward_order(tmp_path):
    """A .safetensors file lists its keys alphabetically (classifier before features, features.10 before
    features.2); the generic adapter puts them back in forward order, warns, and still round-trips."""
    from safetensors.torch import save_file

    net = nn.Sequential()
    net.add_module("features", nn.Sequential(*[nn.Conv2d(4, 4, 3) for _ in range(11)]))
    net.add_module("classifier", nn.Linear(4, 3))
    sd = net.state_dict()
    torch.save(sd, tmp_path / "net.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "net.safetensors")
    a = ingest(tmp_path / "net.pth")
    with pytest.warns(UserWarning, match="alphabetical order"):
        b = ingest(tmp_path / "net.safetensors")
    assert list(b.names) == list(a.names) == list(sd)
    assert [b.info[n].depth for n in b.names] == [a.info[n].depth for n in a.names]
    assert b.attrs["depth_order"].startswith("inferred")
    assert list(b.to_state_dict()) == sorted(sd)  # the file's own order, bit for bit
    assert all(torch.equal(b.to_state_dict()[k], sd[k]) for k in sd)


def test_layers_named_otherwise_get_their_kind(tmp_path):
    """Embedding tables that do not say "embed" (GPT-2's wte/wpe) are embeddings, not prunable; the packed
    q/k/v of nn.MultiheadAttention and the matrices of an LSTM are linear maps, prunable."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(50, 8)
            self.attn = nn.MultiheadAttention(8, 2)
            self.lstm = nn.LSTM(8, 6)
            self.head = nn.Linear(6, 3)

    torch.save(Net().state_dict(), tmp_path / "net.pth")
    p = ingest(tmp_path / "net.pth")
    kinds = {n: (p.info[n].kind, p.info[n].prunable) for n in p.names}
    assert kinds["wte.weight"] == ("embedding", False)
    assert kinds["attn.in_proj_weight"] == ("linear", True)
    assert kinds["attn.in_proj_bias"] == ("bias", False)
    assert kinds["lstm.weight_ih_l0"] == kinds["lstm.weight_hh_l0"] == ("linear", True)
    assert kinds["lstm.bias_ih_l0"] == ("bias", False)
    assert kinds["head.weight"] == ("linear", True)


def test_embedding_names_and_maps_out_of_them():
    from rganalysis.store.layers import classify

    assert classify("albert.encoder.embedding_hidden_mapping_in.weight", (64, 32)) == "linear"
    assert classify("model.embed_tokens.weight", (1000, 64)) == "embedding"
    assert classify("bert.embeddings.word_embeddings.weight", (1000, 64)) == "embedding"
    # T5's relative position buckets are an nn.Embedding (buckets x heads), not a linear map
    t5 = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    assert classify(t5, (32, 4)) == "embedding"
    assert classify("encoder.block.0.layer.0.SelfAttention.q.weight", (128, 128)) == "linear"


def test_a_set_no_adapter_can_build_says_so(tmp_path):
    from rganalysis.errors import CannotBuildModuleError

    torch.save({"fc.weight": torch.ones(3, 4)}, tmp_path / "x.pth")
    with pytest.raises(CannotBuildModuleError, match="generic"):
        ingest(tmp_path / "x.pth").to_module()


def test_bert_layout_family_and_sharded_folders(tmp_path):
    """RoBERTa has BERT's layout under another prefix (read by hf-bert, layers in forward order), and a
    sharded save_pretrained folder (*.index.json) reads as the same state dict as the unsharded one."""
    import transformers as T

    small = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    torch.manual_seed(0)
    T.RobertaModel(T.RobertaConfig(max_position_embeddings=40, **small)).save_pretrained(tmp_path / "rob")
    p = ingest(tmp_path / "rob")
    assert p.attrs["adapter"] == "hf-bert" and p.attrs["architecture"] == "RobertaModel"
    prunable = [n for n in p.names if p.info[n].prunable]
    assert prunable[0] == "encoder.layer.0.attention.self.query.weight"
    assert [n.split(".")[2] for n in prunable[:-1]] == sorted(
        [n.split(".")[2] for n in prunable[:-1]], key=int
    )
    bert = T.BertModel(T.BertConfig(max_position_embeddings=40, **small))
    bert.save_pretrained(tmp_path / "one")
    bert.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert len(list((tmp_path / "shards").glob("model-*.safetensors"))) > 1
    a, b = ingest(tmp_path / "one").to_state_dict(), ingest(tmp_path / "shards").to_state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_other_huggingface_folders_are_read_with_their_config(tmp_path):
    """GPT-2, DistilBERT and T5 save_pretrained folders (no BERT layout): read by hf-transformers, every
    tensor the model has, kinds from names (GPT-2's wte/wpe and T5's position buckets are embeddings), the
    config kept, and build_module makes the model, whose state dict the store gives back bit for bit."""
    import transformers as T

    torch.manual_seed(0)
    models = {
        "gpt2": T.GPT2Model(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=16)),
        "distilbert": T.DistilBertModel(
            T.DistilBertConfig(
                vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=16
            )
        ),
        "t5": T.T5EncoderModel(
            T.T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)
        ),
    }
    for kind, model in models.items():
        model.save_pretrained(tmp_path / kind)
        p = ingest(tmp_path / kind)
        assert p.attrs["adapter"] == "hf-transformers" and p.attrs["architecture"] == type(model).__name__
        # depth order: the model's module order, not the sorted keys of the safetensors file
        assert p.attrs["depth_order"] == f"the module order of transformers' {type(model).__name__}"
        assert list(p.names) == [k for k in model.state_dict() if k in p.names], kind
        assert json.loads(p.attrs["config"])["model_type"] == kind
        saved = {k: v for k, v in model.state_dict().items() if k in p.names}
        assert sum(v.numel() for v in saved.values()) == sum(p.info[n].numel for n in p.names)
        linear = {n for n, m in model.named_modules() if isinstance(m, nn.Linear | T.pytorch_utils.Conv1D)}
        prunable = {n for n in p.names if p.info[n].prunable}
        assert prunable == {f"{n}.weight" for n in linear} & set(p.names), kind
        sd = p.to_state_dict()
        assert all(torch.equal(sd[k], v) for k, v in saved.items())
        rebuilt = rganalysis.adapters.ADAPTERS["hf-transformers"].build_module(p)
        assert type(rebuilt) is type(model)
    t5 = ingest(tmp_path / "t5")
    assert t5.info["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].kind == "embedding"
    attn = [n for n in t5.prunable_names() if ".SelfAttention." in n][:4]
    assert [n.split(".")[-2] for n in attn] == ["q", "k", "v", "o"]  # sorted keys had k, o, q, v
    # a model type transformers cannot build: the inferred order, with its warning
    (tmp_path / "odd").mkdir()
    for f in (tmp_path / "gpt2").iterdir():
        (tmp_path / "odd" / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((tmp_path / "odd" / "config.json").read_text())
    (tmp_path / "odd" / "config.json").write_text(json.dumps({**cfg, "model_type": "no-such-type"}))
    with pytest.warns(UserWarning, match="layer depth is inferred"):
        assert "inferred" in ingest(tmp_path / "odd").attrs["depth_order"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(rganalysis.errors.AdapterNotFoundError, match="none of"):
        ingest(tmp_path / "bad")  # a config without weights: each adapter says why it declined


def test_wrapper_metadata_is_kept_and_other_state_dicts_named(tmp_path, resnet18_sd):
    ckpt = {
        "state_dict": resnet18_sd,
        "ema_state_dict": resnet18_sd,
        "epoch": 3,
        "best_acc1": 71.5,
        "arch": "resnet18",
    }
    torch.save(ckpt, tmp_path / "c.pth")
    with pytest.warns(UserWarning, match="'ema_state_dict', which are not read"):
        p = ingest(tmp_path / "c.pth")
    assert json.loads(p.attrs["checkpoint_meta"]) == {"epoch": 3, "best_acc1": 71.5, "arch": "resnet18"}
    assert p.attrs["state_dict_key"] == "state_dict"
