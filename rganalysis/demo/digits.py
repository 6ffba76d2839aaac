"""Real IMP with rewinding on scikit-learn's bundled digits, small enough for the demo: a few tasks
(class subsets and an input transform), winning tickets found by :func:`rganalysis.compute_flow`, and
every ticket transferred to every task.  (``examples/transfer_benchmark.py`` is the full experiment.)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rganalysis.errors import RGAnalysisError

__all__ = ["DEMO_TASKS", "DigitsTask", "TicketTransfers", "digits_tasks", "run_transfers"]

#: The demo's tasks: name -> (classes, input transform).
DEMO_TASKS: dict[str, tuple[tuple[int, ...], str]] = {
    "digits 0-4": ((0, 1, 2, 3, 4), "identity"),
    "digits 2-6": ((2, 3, 4, 5, 6), "identity"),
    "digits 5-9": ((5, 6, 7, 8, 9), "identity"),
    "all digits": (tuple(range(10)), "identity"),
    "all digits, flipped": (tuple(range(10)), "hflip"),
}


class DemoDependencyError(RGAnalysisError):
    """A package the demo's digits experiment needs (scikit-learn) is not installed."""


@dataclass
class DigitsTask:
    """One task: inputs (n, 64) float32 in [0, 1], labels (n,) int64 (the digit itself)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def digits_tasks(names: Sequence[str] = tuple(DEMO_TASKS), seed: int = 0) -> dict[str, DigitsTask]:
    """The tasks ``names`` of :data:`DEMO_TASKS`, on one stratified 70/30 split of the digits."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DemoDependencyError(
            "the digits experiment needs scikit-learn: pip install 'rganalysis[demo]'"
        ) from None
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=seed, stratify=y)
    out = {}
    for n in names:
        classes, transform = DEMO_TASKS[n]
        Xt = (X[:, :, ::-1] if transform == "hflip" else X).reshape(-1, 64)
        keep = np.isin(y, classes)
        a, b = tr[keep[tr]], te[keep[te]]
        t = torch.from_numpy
        out[n] = DigitsTask(
            n,
            t(np.ascontiguousarray(Xt[a])),
            t(y[a].astype(np.int64)),
            t(np.ascontiguousarray(Xt[b])),
            t(y[b].astype(np.int64)),
        )
    return out


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def _train(
    model: nn.Module,
    init: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    task: DigitsTask,
    epochs: int,
    seed: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """Adam (lr 5e-3, batch 128) from ``init`` with pruned weights held at zero; (state dict, test accuracy)."""
    from rganalysis.train.masked import accuracy, train_masked

    sd = train_masked(model, init, masks, task.x_train, task.y_train, epochs=epochs, seed=seed)
    return sd, accuracy(model, task.x_test, task.y_test)


@dataclass
class TicketTransfers:
    """Winning tickets of several tasks and how they transfer.

    ``labels``: the flows' model names (one per task); ``tasks``: task names; ``accuracy`` (n, n): test
    accuracy of the ticket of task i (row) trained on task j (column) from the shared rewind point
    (the diagonal is each task's own ticket); ``random_mask_accuracy`` (n,): a random mask with the
    ticket's per-layer densities, on its own task; ``flows``: the stores.
    """

    labels: list[str]
    tasks: list[str]
    accuracy: np.ndarray
    random_mask_accuracy: list[float]
    flows: list[Path]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> np.ndarray:
        """(n, n) accuracy of source i's ticket on target j minus target j's own ticket (0 on the diagonal)."""
        return self.accuracy - np.diag(self.accuracy)[None, :]

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "tasks": self.tasks,
            "accuracy": self.accuracy.tolist(),
            "gap": self.gap.tolist(),
            "random_mask_accuracy": self.random_mask_accuracy,
            "flows": [str(p) for p in self.flows],
            "settings": self.settings,
        }


def run_transfers(
    out: Path,
    tasks: Sequence[str] = tuple(DEMO_TASKS),
    *,
    rounds: int = 4,
    rate: float = 0.6,
    epochs: int = 20,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> TicketTransfers:
    """IMP with rewinding of an MLP (64-128-128-10, one random initialisation shared by every task, the
    rewind point) on each task, ``rounds`` rounds at ``rate`` (default 4 at 0.6: 2.6 % density), the flows
    saved as ``out/digits-TASK.h5``; then every ticket trained on every task.  One thread, seeded:
    the same numbers on every run."""
    import rganalysis
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = digits_tasks(tasks, seed)
        torch.manual_seed(_seed("init", seed))
        model = _mlp()
        theta0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
        weights = [k for k in theta0 if k.endswith("weight")]
        tickets, paths, labels = {}, [], []
        for name in tasks:
            task, tseed = data[name], _seed("train", seed, name)
            dense, _ = _train(model, theta0, {}, task, epochs, tseed)

            def train(w: dict[str, torch.Tensor], m: dict[str, torch.Tensor], task=task, tseed=tseed):
                sd, _ = _train(model, {**theta0, **{k: w[k] * m[k] for k in w}}, m, task, epochs, tseed)
                return {k: sd[k] for k in w}

            label = f"digits-{name.replace(' ', '').replace(',', '-')}"
            base = make_parameter_set(
                [single_round(dense)],
                adapter="generic",
                architecture="mlp-64-128-128-10",
                sources=[],
                name=label,
                rewind=dict(theta0),
                extra_attrs={"labels": [str(d) for d in range(10)], "task": name},
            )
            flow = rganalysis.compute_flow(
                base, rounds, rate, rescaling="rewind", train=train, device="cpu", progress=False
            )
            path = flow.save(Path(out) / f"{label}.h5", force=True, progress=False)
            tickets[name] = {k: flow.mask(k, rounds).clone() for k in weights}
            paths.append(path)
            labels.append(label)
            if log:
                log(f"digits: IMP on {name}: {rounds} rounds at rate {rate}")
        n = len(tasks)
        acc = np.zeros((n, n))
        for j, tgt in enumerate(tasks):
            for i, src in enumerate(tasks):
                acc[i, j] = _train(model, theta0, tickets[src], data[tgt], epochs, _seed("train", seed, tgt))[
                    1
                ]
        g = torch.Generator().manual_seed(_seed("random", seed))
        rand = []
        for name in tasks:
            m = {k: torch.zeros(v.numel(), dtype=torch.bool) for k, v in tickets[name].items()}
            for k, v in tickets[name].items():
                m[k][torch.randperm(v.numel(), generator=g)[: int(v.sum())]] = True
                m[k] = m[k].reshape(v.shape)
            rand.append(_train(model, theta0, m, data[name], epochs, _seed("train", seed, name))[1])
        return TicketTransfers(
            labels,
            list(tasks),
            acc,
            rand,
            paths,
            {
                "rounds": rounds,
                "rate": rate,
                "epochs": epochs,
                "seed": seed,
                "model": "MLP 64-128-128-10",
                "density": (1 - rate) ** rounds,
            },
        )
    finally:
        torch.set_num_threads(threads)
