"""Shared fixtures and helpers: small real models and stores built here, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.adapters import ingest
from rganalysis.cli import main
from rganalysis.rg.flow import compute_flow
from rganalysis.store.checkpoint import make_parameter_set, single_round
from rganalysis.train.bert import BERT_LINEAR

matplotlib.use("Agg")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    """Same keys in the same order, same dtypes and shapes, same bits."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A HuggingFace BERT folder (BertModel, 2 layers, hidden 32) written with save_pretrained."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    d = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def resnet18_sd():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


# ------------------------------------------------------------------------------------------------
# Gaussian layers: the analytic case of the data-free density flow (rganalysis.fit.theory)
# ------------------------------------------------------------------------------------------------
SIGMAS = (0.5, 1.0, 2.0)
SIZES = (100_000, 300_000, 600_000)
P = 0.2


def gaussian_layers(seed: int):
    """A dense State of three 1-d layers of i.i.d. Gaussian weights, stds ``SIGMAS``, sizes ``SIZES``."""
    from rganalysis.store.state import State

    g = torch.Generator().manual_seed(seed)
    return State.dense(
        {f"l{i}": torch.randn(n, generator=g) * s for i, (s, n) in enumerate(zip(SIGMAS, SIZES, strict=True))}
    )


@pytest.fixture(scope="session")
def gaussian_state():
    """``gaussian_layers(1234)``."""
    return gaussian_layers(1234)


@pytest.fixture(scope="session")
def gaussian_flow():
    """``gaussian_layers(0)`` and two rounds of global IMP at rate ``P`` (the last two are on the IMP manifold)."""
    from rganalysis.rg.coarse_graining import coarse_grain

    states = [gaussian_layers(0)]
    for _ in range(2):
        states.append(coarse_grain(states[-1], P))
    return states


def pytest_sessionfinish(session, exitstatus):
    """A run that collects no test is a failure, never a silent pass (pytest's exit status 5)."""
    if exitstatus == 5:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def gaussian_model(tmp_path_factory):
    """Three linear layers of i.i.d. Gaussian weights with different sigmas, as a store."""
    d = tmp_path_factory.mktemp("gauss")
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": torch.randn(300, 200, generator=g) * 1.0,
        "a.bias": torch.zeros(300),
        "b.weight": torch.randn(200, 300, generator=g) * 0.5,
        "c.weight": torch.randn(50, 200, generator=g) * 2.0,
    }
    torch.save(sd, d / "gauss.pt")
    assert main(["ingest", str(d / "gauss.pt"), "-o", str(d / "gauss.h5"), "-q"]) == 0
    return d


# ------------------------------------------------------------------------------------------------
# the known linear map over ResNet-18, as a published IMP ticket series
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def series(tmp_path_factory, resnet18_sd):
    """T = 7 states ``{k}model_SA_best.pth.tar`` of ResNet-18: every conv / linear weight follows
    theta_n = sum_k c[n, k] v_k with v_0 = the initial weights; states k >= 1 hold
    ``weight_orig`` + all-ones ``weight_mask`` for every conv but the stem (the published layout)."""

    d = tmp_path_factory.mktemp("ticket_series")
    sd = resnet18_sd
    coef = torch.from_numpy(coefficients(T_SERIES))  # float64: float32 powers would not be a power law
    g = torch.Generator().manual_seed(1)
    lin = [k for k, v in sd.items() if k.endswith(".weight") and v.dim() in (2, 4)]
    masked = [k for k in lin if v_is_conv(k, sd) and k != "conv1.weight"]
    comps: dict[str, torch.Tensor] = {}
    states: list[dict[str, torch.Tensor]] = [{} for _ in range(T_SERIES)]
    for key, v in sd.items():
        if key not in lin:
            for st in states:
                st["module." + key] = v
            continue
        s = float(v.std())
        c = torch.stack([v] + [torch.randn(v.shape, generator=g) * s for _ in range(4)])  # (5, *shape)
        comps[key] = c
        c64 = c.reshape(5, -1).double()
        for k in range(T_SERIES):
            x = (coef[k] @ c64).float().reshape(v.shape)
            if k > 0 and key in masked:
                base = "module." + key.removesuffix("weight")
                states[k][base + "weight_orig"] = x
                states[k][base + "weight_mask"] = torch.ones_like(v)
            else:
                states[k]["module." + key] = x
    init = {"module." + k: v for k, v in sd.items()}
    for k in range(T_SERIES):
        torch.save(
            {
                "state": k,
                "state_dict": states[k],
                "init_weight": init,
                "epoch": 30 + k,
                "best_sa": 90.0 - k,
                "result": {"test_ta": [40.0 + k]},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]},
                "scheduler": {"milestones": {"91": 1}, "last_epoch": 30 + k},
            },
            d / f"{k}model_SA_best.pth.tar",
        )
    pset = ingest(d)
    path = d / "series.h5"
    pset.save(path, progress=False)
    del states
    return {"path": path, "pset": pset, "comps": comps, "masked": masked, "lin": lin}


# ------------------------------------------------------------------------------------------------
# small stores
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def imp_flow(tmp_path_factory) -> dict:
    """A data-free global IMP flow (9 rounds at rate 0.2) of three Gaussian layers, as a store."""
    d = tmp_path_factory.mktemp("imp_flow")
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": torch.randn(60, 40, generator=g),
        "a.bias": torch.zeros(60),
        "b.weight": torch.randn(30, 60, generator=g) * 0.5,
        "c.weight": torch.randn(10, 30, generator=g) * 2.0,
    }
    torch.save(sd, d / "gauss.pt")
    assert main(["ingest", str(d / "gauss.pt"), "-o", str(d / "gauss.h5"), "-q"]) == 0
    with rganalysis.load(d / "gauss.h5") as p:
        compute_flow(p, 9, 0.2, device="cpu", progress=False).save(d / "flow.h5", progress=False)
    return {"dir": d, "path": d / "flow.h5", "model": d / "gauss.h5"}


@pytest.fixture(scope="session")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("univ")
    out = {}
    for kind, seed in [("mlp", 0), ("mlp", 1), ("cnn", 0)]:
        name = f"{kind}{seed}"
        compute_flow(toy_pset(toy_model(kind, seed), name), 8, 0.2, progress=False, device="cpu").save(
            d / f"{name}.h5", progress=False
        )
        out[name] = d / f"{name}.h5"
    toy_pset(toy_model("mlp", 2), "model-only").save(d / "model.h5", progress=False)
    out["model"] = d / "model.h5"
    return out


@pytest.fixture(scope="session")
def flows(tmp_path_factory):
    """Two small flows (3 and 4 layers of Gaussian weights, 7 rounds each) written by the CLI."""
    d = tmp_path_factory.mktemp("report_flows")
    g = torch.Generator().manual_seed(0)
    models = {
        "alpha": {
            "a.weight": torch.randn(120, 80, generator=g),
            "a.bias": torch.zeros(120),
            "b.weight": torch.randn(60, 120, generator=g) * 0.5,
            "c.weight": torch.randn(10, 60, generator=g) * 2,
        },
        "beta": {
            "a.weight": torch.randn(100, 80, generator=g),
            "b.weight": torch.randn(80, 100, generator=g) * 0.7,
            "c.weight": torch.randn(40, 80, generator=g) * 1.5,
            "d.weight": torch.randn(10, 40, generator=g),
        },
    }
    out = {}
    for name, sd in models.items():
        torch.save(sd, d / f"{name}.pt")
        assert main(["ingest", str(d / f"{name}.pt"), "-o", str(d / f"{name}.h5"), "-q"]) == 0
        assert (
            main(
                [
                    "flow",
                    str(d / f"{name}.h5"),
                    "-o",
                    str(d / f"{name}_flow.h5"),
                    "--rounds",
                    "6",
                    "--rate",
                    "0.25",
                    "-q",
                ]
            )
            == 0
        )
        out[name] = d / f"{name}_flow.h5"
    out["model_only"] = d / "alpha.h5"
    return out


@pytest.fixture(scope="session")
def bert_tickets(tmp_path_factory):
    """A BertForSequenceClassification folder and three mask.pt files removing 10% of the original
    weights per round (BERT-tickets' schedule); the second file's names lack the ``bert.`` prefix."""
    root = tmp_path_factory.mktemp("bert_tickets")
    sd = write_bert_dir(root / "bert")
    masks = nested_masks(bert_mask_shapes(sd, 2), [0.9, 0.8, 0.7], seed=3)
    files = []
    for r, m in enumerate(masks, 1):
        f = root / f"mask_round{r}.pt"
        strip = (lambda n: n.removeprefix("bert.")) if r == 2 else (lambda n: n)
        torch.save({strip(n) + "_mask": v for n, v in m.items()}, f)
        files.append(f)
    return root / "bert", sd, masks, files


# theta_n = sum_k lambda_k^n v_k: three real eigenvalues and a complex pair
REAL = (0.9, 0.7, 0.5)


PAIR = 0.8 * np.exp(0.6j)


TRUE = np.array([0.9, PAIR, np.conj(PAIR), 0.7, 0.5])


T_SERIES = 7


def coefficients(T: int) -> np.ndarray:
    """(T, 5): x_n = sum_k c[n, k] v_k with v_0..v_2 real modes and v_3 + i v_4 the complex one."""
    n = np.arange(T)
    p = PAIR**n
    return np.stack([REAL[0] ** n, REAL[1] ** n, REAL[2] ** n, 2 * p.real, -2 * p.imag], axis=1)


def v_is_conv(key: str, sd: dict) -> bool:
    return sd[key].dim() == 4


# --- real flows ---------------------------------------------------------------------------------------------
def toy_model(kind: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    nn = torch.nn
    if kind == "mlp":
        m = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 10))
    else:
        m = nn.Sequential(
            nn.Conv2d(1, 8, 3),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3),
            nn.Flatten(),
            nn.Linear(16 * 4, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )
    return m.state_dict()


def toy_pset(sd, name):
    return make_parameter_set(
        [single_round(sd)], adapter="generic", architecture="generic", sources=[], name=name
    )


def nested_masks(
    shapes: dict[str, tuple], densities: list[float], seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Float 0/1 masks, one dict per density, nested, global over ``shapes`` (random scores)."""
    sizes = [int(np.prod(s)) for s in shapes.values()]
    order = torch.argsort(
        torch.rand(sum(sizes), generator=torch.Generator().manual_seed(seed)), descending=True
    )
    out = []
    for d in densities:
        flat = torch.zeros(sum(sizes))
        flat[order[: round(d * sum(sizes))]] = 1.0
        out.append(
            {n: c.reshape(s).clone() for (n, s), c in zip(shapes.items(), flat.split(sizes), strict=True)}
        )
    return out


def check_densities(back: rganalysis.ParameterSet, masks_per_round: list[dict[str, torch.Tensor]]) -> None:
    """The store's per-round densities (per layer, global, scale factors) are those of the masks written."""
    names = list(back.densities().layer.values)
    assert set(names) == {n for m in masks_per_round for n in m}
    want = mask_densities(masks_per_round, names)
    np.testing.assert_allclose(back.densities().values, want, rtol=0, atol=1e-12)
    sizes = np.array([back.info[n].numel for n in names])
    g = (
        np.array(
            [
                sum(float(m[n].sum()) if n in m else s for n, s in zip(names, sizes, strict=True))
                for m in masks_per_round
            ]
        )
        / sizes.sum()
    )
    np.testing.assert_allclose(back.global_density().values, g, rtol=1e-12)
    np.testing.assert_allclose(back.scale_factors(), g[:-1] / g[1:], rtol=1e-12)


def write_bert_dir(d: Path, cls_name: str = "BertForSequenceClassification", layers: int = 2) -> dict:
    import transformers
    from safetensors.torch import load_file

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        num_labels=3,
    )
    getattr(transformers, cls_name)(cfg).save_pretrained(d)
    return load_file(d / "model.safetensors")


def bert_mask_shapes(sd: dict, layers: int) -> dict[str, tuple]:
    names = [f"bert.encoder.layer.{i}.{m}.weight" for i in range(layers) for m in BERT_MASKED]
    return {n: tuple(sd[n].shape) for n in [*names, "bert.pooler.dense.weight"]}


def no_output(tmp_path):
    assert not (tmp_path / "out.h5").exists()
    assert not list(tmp_path.glob(".out.h5*")), "a temporary file was left behind"


def mask_densities(masks_per_round: list[dict[str, torch.Tensor]], names: list[str]) -> np.ndarray:
    return np.array(
        [[float(m[n].sum()) / m[n].numel() if n in m else 1.0 for n in names] for m in masks_per_round]
    )


# ====================================================================== 2. BERT-tickets: HF folder + mask.pt
BERT_MASKED = BERT_LINEAR  # the linear maps of one encoder layer that BERT tickets mask


# ------------------------------------------------------------------------------------------------
# trained IMP flows on digits (real training, seconds): the unit-resolved symmetry tests
# ------------------------------------------------------------------------------------------------
_DIGITS_FLOWS: dict = {}


def digits_mlp_flow(init_seed: int, classes: tuple[int, ...], rounds: int = 4, rate: float = 0.5):
    """A real IMP flow with rewinding: MLP 64-32-32-10 initialised with ``init_seed`` (the rewind
    point), trained (SGD, 3 epochs) on the digits of ``classes`` before every round.  Cached."""
    key = (init_seed, tuple(classes), rounds, rate)
    if key in _DIGITS_FLOWS:
        return _DIGITS_FLOWS[key]
    from sklearn.datasets import load_digits

    from rganalysis.store.checkpoint import make_parameter_set, single_round

    X, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes)
    x, y = torch.from_numpy((X[keep] / 16).astype(np.float32)), torch.from_numpy(y[keep])
    torch.manual_seed(init_seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    )
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    names = [k for k in theta0 if k.endswith("weight")]

    def train(weights, masks):
        model.load_state_dict({**theta0, **{k: w * masks[k] for k, w in weights.items()}})
        params = dict(model.named_parameters())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            for b in torch.randperm(len(y), generator=g).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[b]), y[b]).backward()
                for k, m in masks.items():
                    params[k].grad.mul_(m)
                opt.step()
        return {k: model.state_dict()[k].clone() for k in weights}

    dense = train(
        {k: theta0[k] for k in names}, {k: torch.ones_like(theta0[k], dtype=torch.bool) for k in names}
    )
    base = make_parameter_set(
        [single_round({**theta0, **dense})],
        adapter="generic",
        architecture="mlp",
        sources=[],
        name=f"mlp{init_seed}-{''.join(map(str, classes))}",
        rewind=theta0,
    )
    flow = compute_flow(base, rounds, rate, rescaling="rewind", train=train, device="cpu", progress=False)
    _DIGITS_FLOWS[key] = flow
    return flow


def transform_flow(flow, fn, name: str):
    """A copy of ``flow`` with every stored tensor (every round, the rewind point) and mask mapped by
    ``fn(tensor_name, tensor) -> tensor`` (masks as bool tensors)."""
    from rganalysis.store.parameter_set import ParameterSet

    R = flow.n_rounds
    weights = {r: {n: fn(n, flow.tensor(n, r)) for n in flow.changed_names(r)} for r in range(R)}
    masks = {n: [fn(n, flow.mask(n, r)) for r in range(R)] for n in flow.masked_names()}
    rewind = {n: fn(n, t) for n, t in (flow.rewind_state() or {}).items()}
    attrs = {**flow.attrs, "name": name}
    return ParameterSet(
        flow.info,
        weights,
        masks,
        n_rounds=R,
        layouts=[[]] * R,
        rewind=rewind or None,
        attrs=attrs,
        flow_attrs=flow.flow_attrs,
    )
