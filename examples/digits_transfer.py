"""Do winning tickets transfer within a universality class?  A real check on scikit-learn's digits.

For each architecture (an MLP and a small CNN, trained here on CPU) and each task derived from
scikit-learn's bundled 8x8 digits (no download):

1. train the dense network from a shared initialisation ``theta_0`` (the rewind point);
2. run real IMP with rganalysis (:func:`rganalysis.compute_flow`, global magnitude pruning,
   ``rescaling="rewind"`` to ``theta_0`` and a ``train`` callback that retrains the masked network),
   recording the flow as a store;
3. fit every flow with :class:`rganalysis.universality.UniversalityAnalysis` (the defaults of
   ``rganalysis compare``: density couplings on 8 normalised depths, automatic rank) and take the
   distance between every pair of tasks;
4. transfer the last-round ticket (mask) of each task to every other task of the same architecture:
   train ``theta_0 * mask`` on the target task and measure its test accuracy; the *transfer gap* is
   that accuracy minus the target's own ticket's accuracy;
5. report how well the universality distance ranks the transfers: the Spearman correlation between
   the distance and the gap over all ordered (source, target) pairs, with its p-value (a good distance
   gives a negative correlation: farther flows, worse transfers).  Beside it, the same for each
   distance component and for a trivial predictor, 1 - Jaccard overlap of the two masks.

Run::

    python examples/digits_transfer.py [--quick] [--out DIR]

``--quick`` (4 tasks, 5 rounds, 10 epochs) takes about a minute on 2 CPU cores, the full run
(6 tasks, 6 rounds at rate 0.5 down to 1.6 % density, 20 epochs) about four minutes.  Results go to ``DIR/results.json`` (default
``digits-transfer/``), flows to ``DIR/flows/``.  The numbers of a full run are in
docs/universality.md.  Everything is deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


# ====================================================================================================
# tasks
# ====================================================================================================
@dataclass
class Task:
    """One classification task: inputs in [0, 1] (plus noise), shape (n, 64); labels in 0..9."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    description: str


def make_tasks(seed: int = 0, quick: bool = False) -> dict[str, Task]:
    """Tasks derived from scikit-learn's digits (1797 images of 8x8 pixels, 10 classes).

    ``digits``: the original 10-class task.  ``permuted``: the labels relabelled by a fixed
    permutation of the 10 classes.  ``low``: only the digits 0-4.  ``high``: only the digits 5-9.
    ``noisy``: Gaussian pixel noise of standard deviation 0.5 (pixels in [0, 1]), train and test.
    ``labelnoise``: 40 % of the training labels replaced by random ones (test labels clean).
    The split is one stratified 70/30 split of the images, shared by all tasks.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed + 1)

    def task(name: str, xtr, ytr, xte, yte, desc: str) -> Task:
        t = torch.from_numpy
        return Task(
            name,
            t(np.ascontiguousarray(xtr)),
            t(np.asarray(ytr, dtype=np.int64)),
            t(np.ascontiguousarray(xte)),
            t(np.asarray(yte, dtype=np.int64)),
            desc,
        )

    xtr, ytr, xte, yte = X[idx_tr], y[idx_tr], X[idx_te], y[idx_te]
    perm = rng.permutation(10)
    noise_tr = rng.normal(0.0, 0.5, xtr.shape).astype(np.float32)
    noise_te = rng.normal(0.0, 0.5, xte.shape).astype(np.float32)
    flip = rng.random(len(ytr)) < 0.4
    ynoisy = np.where(flip, rng.integers(0, 10, len(ytr)), ytr)
    lo_tr, lo_te = ytr < 5, yte < 5
    tasks = {
        "digits": task("digits", xtr, ytr, xte, yte, "all 10 digits"),
        "permuted": task(
            "permuted", xtr, perm[ytr], xte, perm[yte], "labels relabelled by a fixed permutation"
        ),
        "low": task("low", xtr[lo_tr], ytr[lo_tr], xte[lo_te], yte[lo_te], "digits 0-4 only"),
        "noisy": task("noisy", xtr + noise_tr, ytr, xte + noise_te, yte, "Gaussian pixel noise, sigma 0.5"),
        "high": task("high", xtr[~lo_tr], ytr[~lo_tr], xte[~lo_te], yte[~lo_te], "digits 5-9 only"),
        "labelnoise": task("labelnoise", xtr, ynoisy, xte, yte, "40% random training labels"),
    }
    if quick:
        tasks = {k: tasks[k] for k in ("digits", "low", "noisy", "high")}
    return tasks


# ====================================================================================================
# models and masked training
# ====================================================================================================
def make_mlp() -> nn.Module:
    """64 -> 128 -> 128 -> 10, ReLU."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


class Reshape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 1, 8, 8)


def make_cnn() -> nn.Module:
    """conv 3x3 (1->16) - conv 3x3 (16->32) - maxpool 2 - linear 512->64 - linear 64->10, ReLU."""
    return nn.Sequential(
        Reshape(),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(512, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


ARCHS: dict[str, Callable[[], nn.Module]] = {"mlp": make_mlp, "cnn": make_cnn}


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-3


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_masked(
    model: nn.Module,
    init: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    task: Task,
    cfg: TrainConfig,
    seed: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """Train ``model`` from the state dict ``init`` on ``task`` with pruned weights held at zero.

    ``masks`` maps parameter names to bool masks (missing: dense).  Adam, mini-batches in an order
    fixed by ``seed``; pruned entries are zeroed before training and their gradients after each
    backward pass, so they stay exactly zero.  Returns (trained state dict, test accuracy).
    """
    model.load_state_dict(init)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    n = len(task.y_train)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            b = order[i : i + cfg.batch_size]
            opt.zero_grad(set_to_none=False)
            loss_fn(model(task.x_train[b]), task.y_train[b]).backward()
            for k, m in masks.items():
                params[k].grad.mul_(m)
            opt.step()
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, accuracy(
        model, task.x_test, task.y_test
    )


# ====================================================================================================
# IMP flows with rganalysis
# ====================================================================================================
def imp_flow_store(
    arch: str,
    theta0: dict[str, torch.Tensor],
    task: Task,
    rounds: int,
    rate: float,
    cfg: TrainConfig,
    seed: int,
    path: Path,
) -> dict[str, Any]:
    """Dense training, then ``rounds`` rounds of IMP with rewinding to ``theta0`` and retraining,
    recorded by :func:`rganalysis.compute_flow` into the store ``path``.

    Returns the per-round test accuracies, global densities and the last round's masks.
    """
    from rganalysis.rg.flow import compute_flow
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    model = ARCHS[arch]()
    dense, acc0 = train_masked(model, theta0, {}, task, cfg, seed)
    accs = [acc0]

    def train(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # rewind every parameter (biases too) to theta0, then train the masked network
        init = dict(theta0)
        init.update({k: w * masks[k] for k, w in weights.items()})
        sd, acc = train_masked(model, init, masks, task, cfg, seed)
        accs.append(acc)
        return {k: sd[k] for k in weights}

    base = make_parameter_set(
        [single_round(dense)],
        adapter="generic",
        architecture=arch,
        sources=[],
        name=f"{arch}-{task.name}",
        rewind=dict(theta0),
    )
    flow = compute_flow(base, rounds, rate, rescaling="rewind", train=train, device="cpu", progress=False)
    flow.metrics["test_accuracy"] = list(accs)
    flow.save(path, force=True, progress=False)
    last = flow.n_rounds - 1
    masks = {k: flow.mask(k, last).clone() for k in flow.pruned_names()}
    return {
        "accuracy": accs,
        "global_density": [float(x) for x in flow.global_density().values],
        "masks": masks,
        "path": str(path),
    }


def jaccard_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """1 - |a & b| / |a | b| over all masked weights."""
    inter = sum(int((a[k] & b[k]).sum()) for k in a)
    union = sum(int((a[k] | b[k]).sum()) for k in a)
    return 1.0 - inter / union if union else 0.0


def spearman(x: list[float], y: list[float]) -> dict[str, float | int | None]:
    from scipy.stats import spearmanr

    x_a, y_a = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x_a) & np.isfinite(y_a)
    if ok.sum() < 3 or np.ptp(x_a[ok]) == 0 or np.ptp(y_a[ok]) == 0:
        return {"rho": None, "p": None, "n": int(ok.sum())}
    r = spearmanr(x_a[ok], y_a[ok])
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": int(ok.sum())}


# ====================================================================================================
# the experiment
# ====================================================================================================
def run(
    out: Path,
    quick: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = print,
    *,
    rounds: int | None = None,
    rate: float = 0.5,
    cfg: TrainConfig | None = None,
) -> dict[str, Any]:
    """Run the whole experiment; write ``out/results.json`` and return its content.

    Defaults: IMP rounds 6 (``quick``: 5) at rate 0.5, i.e. a final density of 1.6 % (3.1 %), where
    random masks of the tickets' layer densities clearly lose to the tickets; training
    :class:`TrainConfig` (``quick``: 10 epochs).
    """
    from rganalysis.universality.analysis import UniversalityAnalysis

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rounds = int(rounds if rounds is not None else (5 if quick else 6))
    cfg = cfg or (TrainConfig(epochs=10) if quick else TrainConfig())
    tasks = make_tasks(seed, quick)
    (out / "flows").mkdir(parents=True, exist_ok=True)
    log(
        f"digits transfer: {len(tasks)} tasks x {len(ARCHS)} architectures, IMP {rounds} rounds at rate {rate} "
        f"(final density {(1 - rate) ** rounds:.3f}), {cfg.epochs} epochs per training"
    )

    flows: dict[str, dict[str, dict[str, Any]]] = {}
    theta0s: dict[str, dict[str, torch.Tensor]] = {}
    for arch, make in ARCHS.items():
        torch.manual_seed(seed)
        theta0s[arch] = {k: v.clone() for k, v in make().state_dict().items()}
        flows[arch] = {}
        for name, task in tasks.items():
            t = time.perf_counter()
            flows[arch][name] = imp_flow_store(
                arch, theta0s[arch], task, rounds, rate, cfg, seed, out / "flows" / f"{arch}-{name}.h5"
            )
            a = flows[arch][name]["accuracy"]
            log(
                f"  IMP {arch:<4} {name:<11} test accuracy dense {a[0]:.3f} -> ticket {a[-1]:.3f} "
                f"({time.perf_counter() - t:.1f} s)"
            )

    # universality distances (the defaults of `rganalysis compare`), all flows in one analysis
    paths = [flows[a][t]["path"] for a in ARCHS for t in tasks]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ua = UniversalityAnalysis().fit(paths, names=[f"{a}-{t}" for a in ARCHS for t in tasks])
    comp = ua.to_json()
    log(
        f"universality classes (threshold {ua.threshold_:g}): "
        + " | ".join(", ".join(c) for c in ua.classes_)
    )

    # transfers
    results: dict[str, Any] = {
        "settings": {
            "quick": quick,
            "seed": seed,
            "rounds": rounds,
            "rate": rate,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "tasks": {k: v.description for k, v in tasks.items()},
            "archs": {"mlp": make_mlp.__doc__, "cnn": make_cnn.__doc__},
        },
        "compare": comp,
        "archs": {},
    }
    pairs: list[dict[str, Any]] = []
    names = list(tasks)
    idx = {n: i for i, n in enumerate(ua.names_)}
    for arch in ARCHS:
        model = ARCHS[arch]()
        acc = np.zeros((len(names), len(names)))
        for i, s in enumerate(names):
            for j, t in enumerate(names):
                _, acc[i, j] = train_masked(
                    model, theta0s[arch], flows[arch][s]["masks"], tasks[t], cfg, seed
                )
        rand = {}
        g = torch.Generator().manual_seed(seed + 7)
        for t in names:  # a random mask with the native ticket's per-layer densities
            m = {
                k: (torch.rand(v.shape, generator=g) < v.float().mean())
                for k, v in flows[arch][t]["masks"].items()
            }
            rand[t] = train_masked(model, theta0s[arch], m, tasks[t], cfg, seed)[1]
        arch_res = {
            "tasks": names,
            "transfer_accuracy": acc.tolist(),
            "native_accuracy": [float(acc[j, j]) for j in range(len(names))],
            "random_mask_accuracy": [rand[t] for t in names],
            "imp_accuracy": {t: flows[arch][t]["accuracy"] for t in names},
            "global_density": {t: flows[arch][t]["global_density"] for t in names},
        }
        results["archs"][arch] = arch_res
        log(f"\n{arch}: test accuracy of each source's ticket (rows) trained on each target task (columns)")
        log(" " * 12 + " ".join(f"{t:>10}" for t in names))
        for i, s in enumerate(names):
            log(f"{s:<12}" + " ".join(f"{acc[i, j]:>10.3f}" for j in range(len(names))))
        log(f"{'random mask':<12}" + " ".join(f"{rand[t]:>10.3f}" for t in names))
        for i, s in enumerate(names):
            for j, t in enumerate(names):
                if i == j:
                    continue
                a, b = idx[f"{arch}-{s}"], idx[f"{arch}-{t}"]
                pairs.append(
                    {
                        "arch": arch,
                        "source": s,
                        "target": t,
                        "gap": float(acc[i, j] - acc[j, j]),
                        "distance": float(ua.distance_.values[a, b]),
                        **{
                            f"component_{c}": float(ua.components_.sel(component=c).values[a, b])
                            for c in ua.components_["component"].values
                        },
                        "mask_jaccard_distance": jaccard_distance(
                            flows[arch][s]["masks"], flows[arch][t]["masks"]
                        ),
                    }
                )
    results["pairs"] = pairs

    def corr(key: str, sel: Callable[[dict[str, Any]], bool] = lambda p: True) -> dict[str, Any]:
        ps = [p for p in pairs if sel(p)]
        return spearman([p[key] for p in ps], [p["gap"] for p in ps])

    keys = [
        "distance",
        *[f"component_{c}" for c in ua.components_["component"].values],
        "mask_jaccard_distance",
    ]
    results["spearman"] = {
        "all": {k: corr(k) for k in keys},
        **{arch: {k: corr(k, lambda p, a=arch: p["arch"] == a) for k in keys} for arch in ARCHS},
    }
    results["runtime_s"] = time.perf_counter() - t0
    log(
        "\nSpearman correlation of each predictor with the transfer gap (acc(source ticket -> target) - "
        "acc(target ticket)); negative = larger distance, worse transfer"
    )
    log(f"{'predictor':<30} " + " ".join(f"{g:>22}" for g in ["all", *ARCHS]))
    for k in keys:
        cells = []
        for grp in ["all", *ARCHS]:
            r = results["spearman"][grp][k]
            cells.append(
                f"{'n/a':>22}"
                if r["rho"] is None
                else f"rho {r['rho']:+.3f} p {r['p']:.2g} n {r['n']}".rjust(22)
            )
        log(f"{k:<30} " + " ".join(cells))
    log(f"\nruntime {results['runtime_s']:.0f} s; results in {out / 'results.json'}")
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="4 tasks, 5 rounds, shorter training (about a minute)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("digits-transfer"), help="output folder (default digits-transfer)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=None, help="IMP rounds (default 6; --quick: 5)")
    p.add_argument("--rate", type=float, default=0.5, help="IMP pruning rate per round (default 0.5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training (default 20; --quick: 10)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    args = p.parse_args(argv)
    cfg = TrainConfig(
        epochs=args.epochs or (10 if args.quick else 20), batch_size=args.batch_size, lr=args.lr
    )
    run(args.out, args.quick, args.seed, rounds=args.rounds, rate=args.rate, cfg=cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ARCHS", "Task", "TrainConfig", "imp_flow_store", "make_tasks", "run", "spearman", "train_masked"]
