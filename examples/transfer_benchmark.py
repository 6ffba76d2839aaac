"""A pre-registered ticket-transfer benchmark on scikit-learn's digits: does a distance between IMP
flows predict how well a winning ticket found on one task transfers to another?

Design (everything below is fixed before any held-out seed is run)
-----------------------------------------------------------------
Data: scikit-learn's bundled 8x8 digits (1797 images, no download), pixels scaled to [0, 1], one
stratified 70/30 train/test split per seed.  18 tasks in three families (the calibration seeds: the first
two, 14 tasks; ``--quick``: 6, three of each of the first two):

``class_subsets`` (5 classes each; labels keep their digit, so logit ``d`` is digit ``d``)
    ``cls01234`` (the reference), ``cls12345``, ``cls23456``, ``cls34567``, ``cls45678``,
    ``cls56789``: windows of 5 consecutive digits, sharing 80, 60, 40, 20, 0 % of their classes with
    the reference (and ``(5 - |i - j|) / 5`` with each other), plus ``cls01234r``, the reference's
    classes again in a replicate run (another mini-batch order), the 100 % overlap pair.  Across the
    ordered pairs of the family the class overlap spans 0, 20, 40, 60, 80 and 100 %.
``input_transforms`` (all 10 classes)
    ``orig`` (identity), ``hflip`` (horizontal flip), ``transpose`` (the 8x8 image transposed),
    ``invert`` (``1 - x``), ``noise`` (additive Gaussian noise, sigma 0.4, drawn once per image,
    train and test), ``permute`` (one fixed random permutation of the 64 pixels), ``blur``
    (Gaussian blur, sigma 0.8 pixel, zero padding).
``training_regimes`` (all 10 classes, inputs unchanged; only the training set differs; test set as ``orig``)
    ``labelnoise20``, ``labelnoise40`` (20 / 40 % of the training labels replaced by a uniformly drawn
    other class), ``few20`` (20 % of each digit's training samples), ``imbalanced`` (digits 5-9 keep 15 % of
    their training samples).  Added with the held-out seeds 5-7 and *held out as a family*: it is never generated or
    scored on the calibration seeds (:data:`HELD_OUT_FAMILIES`), so no choice was tuned on it.

Architectures (10 logits always, so all tasks of one architecture share shapes; absent classes never
appear as labels): ``mlp`` 64-128-128-10 (ReLU) and ``cnn`` conv3x3(1->16)-conv3x3(16->32)-maxpool2-
linear(512->64)-linear(64->10) (ReLU).

Rewind point: ``theta_0`` is the random initialisation (PyTorch's default init, seeded by
(seed, arch)), shared by all tasks of one architecture and seed.  No warm-up: a warm-up would need a
task, and whichever task it used would be favoured.

Tickets: the dense network is trained from ``theta_0`` on each task (Adam, lr 5e-3, batch 128, 20
epochs; ``--quick``: 8), then ``rounds`` rounds of IMP (global magnitude pruning of all conv/linear
weights, ``rate`` of the survivors per round, rewinding to ``theta_0`` and retraining each round)
by :func:`rganalysis.compute_flow`; full mode 8 rounds at rate 0.4 (final density 0.6**8 =
1.7 %), ``--quick`` 4 rounds at rate 0.6 (2.6 %).  Every flow is saved as a store
(``OUT/seed_S/ARCH/flows/TASK.h5``).  The last round's mask is the task's ticket.

Transfers: every ticket (mask) is trained on every task of the same architecture from ``theta_0``
with the target task's mini-batch order, so source and target tickets differ only in the mask;
``acc[source, target]`` is the test accuracy.  The diagonal is the target's own ticket (it equals
the last IMP round, bit for bit).  Gap: ``acc[source, target] - acc[target, target]``.  A random
mask with exactly the target ticket's per-layer counts of surviving weights is trained the same way.

Scoring (``score``): a *distance function* (registered in :data:`DISTANCES`) maps the flows of one
(arch, seed) to an (n, n) matrix.  For a group of tasks (a family: source and target both in it; or
``all``) and each target, Spearman's rho between ``D[source, target]`` and ``gap[source, target]``
over its sources in the group (a good distance gives rho < 0: farther, worse); the mean of these
within-target rhos, the number of targets with rho < 0, the pooled rho over all pairs, and a
task-permutation p-value of the mean (the tasks of the distance matrix relabelled within the group).
Aggregates over seeds (and over both architectures) apply the permutation independently per
(arch, seed).

Directed scores: a distance may be directed (``D[s, t] != D[t, s]``, e.g. ``directed_units``,
:func:`rganalysis.transfer_scores`); every distance is also scored within each source (Spearman rho over
the targets of one ticket), and by the antisymmetric check (:func:`antisymmetry_agreement`).

Seeds 0 and 1 are calibration seeds.  Seeds 2-10 were held out before (2-4: universality version 2;
5-7: the first directed registration; 8-10: the second) and are spent (refused), as is any seed a
committed ledger (``docs/transfer-registration*-ledger.json``) lists.  Seeds 11, 12, 13 are held out:
refused unless ``--held-out`` is given *and* a registration (``register``: candidates, choice, goal,
baselines, the run's settings, git SHA, sha256 of the scoring code: this script and the whole
``rganalysis`` package) exists in docs/transfer-registration.json, is committed, was written on an
ancestor of the checkout, and matches the code and the run's settings.  A held-out seed is spent when its
run starts (the ledger beside the registration, written under a lock before any generation), so a run
that fails or runs twice at once never scores it twice.  The distance to be evaluated on them is chosen on
the calibration seeds only.

Run::

    python examples/transfer_benchmark.py --quick --out /tmp/tb             # everything, 1 seed, < 2 min
    python examples/transfer_benchmark.py generate --seeds 0,1 --out bench-out [--jobs 2]
    python examples/transfer_benchmark.py score --seeds 0,1 --out bench-out [--distances a,b]
    python examples/transfer_benchmark.py register --choice coverage+1   # then commit docs/transfer-registration.json
    python examples/transfer_benchmark.py run --seeds 11,12,13 --held-out --out bench-out   # later, once

Outputs: ``OUT/seed_S/ARCH/generation.json`` (accuracies, written atomically last; a complete one is
not regenerated), ``OUT/results.json`` (settings, accuracies, per-pair gaps and distances, all
scores), ``OUT/distance_vs_gap.png`` and a table on stdout.

Reproducibility: one thread (``--threads``, default 1), ``torch.use_deterministic_algorithms``,
every random draw from a generator seeded by a CRC32 of (purpose, seed, arch, task); nothing depends
on timing (wall times are recorded under ``timing`` keys only).  Numbers are defined at one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import rganalysis
from rganalysis.errors import RGAnalysisError
from rganalysis.store.checkpoint import make_parameter_set, single_round

#: Bump when a change alters generated numbers: cached generations of another version are refused.
BENCH_VERSION = "1"
CALIBRATION_SEEDS: tuple[int, ...] = (0, 1)
#: Fresh held-out seeds, scored once under a committed registration (:func:`register`).
HELD_OUT_SEEDS: tuple[int, ...] = (11, 12, 13)
#: Held-out seeds scored once before, never run again: 2-4 (universality version 2, docs/universality.md
#: section 10), 5-7 (the first directed registration, docs/transfer-registration-v1.json, section 11) and
#: 8-10 (the second, docs/transfer-registration.json).  Any seed of a committed ledger is spent as well
#: (:func:`spent_seeds`).
SPENT_SEEDS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)
_ROOT = Path(__file__).resolve().parent.parent
#: The registration that binds the held-out run (written by ``register``, committed before generating).
REGISTRATION = _ROOT / "docs" / "transfer-registration.json"
#: The code whose numbers the registration fixes: this script and every module of the package (defaults,
#: training, stores and scores alike; a folder stands for its ``*.py`` files, sorted).
SCORING_CODE: tuple[str, ...] = ("examples/transfer_benchmark.py", "rganalysis")
FAMILIES: tuple[str, ...] = ("class_subsets", "input_transforms", "training_regimes")
#: Families no part of the code was tuned on: never generated or scored on the calibration seeds.
HELD_OUT_FAMILIES: tuple[str, ...] = ("training_regimes",)
GROUPS: tuple[str, ...] = (*FAMILIES, "all")
ARCH_NAMES: tuple[str, ...] = ("mlp", "cnn")


# ====================================================================================================
# determinism helpers
# ====================================================================================================
def stable_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts`` (CRC32 of their ``/``-joined text): the same on every machine."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def set_determinism(threads: int = 1) -> None:
    """``threads`` intra-op threads and deterministic algorithms for everything that follows."""
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ====================================================================================================
# tasks
# ====================================================================================================
@dataclass(frozen=True)
class TaskSpec:
    """A task: a class subset (``classes``) of the digits with an input ``transform`` applied."""

    name: str
    family: str
    classes: tuple[int, ...]
    transform: str
    description: str
    #: Fraction of the training labels replaced by a uniformly drawn other class (test labels stay clean).
    label_noise: float = 0.0
    #: Per-digit fraction of its training samples kept (10 entries; empty: all); the test set is untouched.
    train_keep: tuple[float, ...] = ()


def _window(k: int) -> tuple[int, ...]:
    return tuple(range(k, k + 5))


TASK_SPECS: dict[str, TaskSpec] = {
    s.name: s
    for s in [
        *[
            TaskSpec(
                "cls" + "".join(map(str, _window(k))),
                "class_subsets",
                _window(k),
                "identity",
                f"digits {k}-{k + 4} only ({(5 - k) * 20} % class overlap with cls01234)",
            )
            for k in range(6)
        ],
        TaskSpec(
            "cls01234r",
            "class_subsets",
            _window(0),
            "identity",
            "digits 0-4 again, a replicate run (another mini-batch order): 100 % class overlap",
        ),
        TaskSpec("orig", "input_transforms", tuple(range(10)), "identity", "all 10 digits, unchanged"),
        TaskSpec("hflip", "input_transforms", tuple(range(10)), "hflip", "image flipped left-right"),
        TaskSpec("transpose", "input_transforms", tuple(range(10)), "transpose", "8x8 image transposed"),
        TaskSpec("invert", "input_transforms", tuple(range(10)), "invert", "pixels inverted, 1 - x"),
        TaskSpec(
            "noise",
            "input_transforms",
            tuple(range(10)),
            "noise",
            "additive Gaussian noise (sigma noise_sigma), fixed per image",
        ),
        TaskSpec(
            "permute",
            "input_transforms",
            tuple(range(10)),
            "permute",
            "a fixed random permutation of the 64 pixels",
        ),
        TaskSpec(
            "blur", "input_transforms", tuple(range(10)), "blur", "Gaussian blur (sigma blur_sigma pixel)"
        ),
        *[
            TaskSpec(
                f"labelnoise{round(100 * q)}",
                "training_regimes",
                tuple(range(10)),
                "identity",
                f"all 10 digits, {round(100 * q)} % of the training labels replaced by another class",
                label_noise=q,
            )
            for q in (0.2, 0.4)
        ],
        TaskSpec(
            "few20",
            "training_regimes",
            tuple(range(10)),
            "identity",
            "all 10 digits, 20 % of each digit's training samples",
            train_keep=(0.2,) * 10,
        ),
        TaskSpec(
            "imbalanced",
            "training_regimes",
            tuple(range(10)),
            "identity",
            "all 10 digits, digits 5-9 with 15 % of their training samples (0-4 with all)",
            train_keep=(1.0,) * 5 + (0.15,) * 5,
        ),
    ]
}
FULL_TASKS: tuple[str, ...] = tuple(TASK_SPECS)
#: The tasks of the calibration seeds: every family but :data:`HELD_OUT_FAMILIES`.
CALIBRATION_TASKS: tuple[str, ...] = tuple(
    t for t, s in TASK_SPECS.items() if s.family not in HELD_OUT_FAMILIES
)
QUICK_TASKS: tuple[str, ...] = ("cls01234", "cls23456", "cls56789", "orig", "hflip", "permute")


@dataclass
class Task:
    """Data of one task: inputs (n, 64) float32 (pixels in [0, 1] before transforms), labels (n,) int64."""

    spec: TaskSpec
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def class_overlap(a: TaskSpec, b: TaskSpec) -> float:
    """|classes(a) & classes(b)| / |classes(b)| (the fraction of the target's classes the source saw)."""
    return len(set(a.classes) & set(b.classes)) / len(b.classes)


def make_tasks(
    names: Sequence[str], seed: int, noise_sigma: float = 0.4, blur_sigma: float = 0.8, test_size: float = 0.3
) -> dict[str, Task]:
    """The tasks ``names`` for ``seed``: split, noise and pixel permutation are drawn from ``seed``."""
    from scipy.ndimage import gaussian_filter
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8)
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed, stratify=y)
    rng = np.random.default_rng(stable_seed("data", seed))
    noise = rng.normal(0.0, noise_sigma, X.shape).astype(np.float32)  # one draw per image, train and test
    perm = rng.permutation(64)
    transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "identity": lambda x: x,
        "hflip": lambda x: x[:, :, ::-1],
        "transpose": lambda x: x.transpose(0, 2, 1),
        "invert": lambda x: 1.0 - x,
        "noise": lambda x: x + noise,
        "permute": lambda x: x.reshape(-1, 64)[:, perm].reshape(-1, 8, 8),
        "blur": lambda x: gaussian_filter(x, sigma=(0, blur_sigma, blur_sigma), mode="constant"),
    }
    out = {}
    for n in names:
        s = TASK_SPECS[n]
        Xt = np.ascontiguousarray(transforms[s.transform](X), dtype=np.float32).reshape(-1, 64)
        keep = np.isin(y, s.classes)
        tr, te = idx_tr[keep[idx_tr]], idx_te[keep[idx_te]]
        y_tr = y[tr].astype(np.int64)
        if s.train_keep or s.label_noise:
            r = np.random.default_rng(stable_seed("regime", seed, n))
            if s.train_keep:
                sel = np.concatenate(
                    [
                        np.sort(r.permutation(np.flatnonzero(y_tr == c))[: round(f * np.sum(y_tr == c))])
                        for c, f in enumerate(s.train_keep)
                    ]
                )
                tr, y_tr = tr[np.sort(sel)], y_tr[np.sort(sel)]
            if s.label_noise:  # regime tasks have all 10 classes: a shift of 1..9 is another class
                flip = r.permutation(len(y_tr))[: round(s.label_noise * len(y_tr))]
                y_tr = y_tr.copy()
                y_tr[flip] = (y_tr[flip] + r.integers(1, 10, len(flip))) % 10
        t = torch.from_numpy
        out[n] = Task(s, t(Xt[tr].copy()), t(y_tr), t(Xt[te].copy()), t(y[te].astype(np.int64)))
    return out


# ====================================================================================================
# models and masked training
# ====================================================================================================
def make_mlp() -> nn.Module:
    """64 -> 128 -> 128 -> 10, ReLU."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


class Reshape(nn.Module):
    """(n, 64) -> (n, 1, 8, 8)."""

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


def rewind_point(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """theta_0 of (arch, seed): PyTorch's default initialisation under a seed derived from both."""
    torch.manual_seed(stable_seed("init", arch, seed))
    return {k: v.detach().clone() for k, v in ARCHS[arch]().state_dict().items()}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` (n, 64) whose argmax logit is ``y`` (n,)."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_masked(
    model: nn.Module,
    init: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    task: Task,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """Train ``model`` from the state dict ``init`` on ``task`` with pruned weights held at exactly zero.

    ``masks``: parameter name -> bool mask (absent: dense).  Adam, mini-batches in an order drawn from
    a generator seeded by ``seed``.  Returns (trained state dict, test accuracy in [0, 1]).
    """
    model.load_state_dict(dict(init))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(task.y_train)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            b = order[i : i + batch_size]
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
# configuration
# ====================================================================================================
@dataclass(frozen=True)
class BenchConfig:
    """Everything that determines the generated numbers of one (arch, seed), apart from arch and seed."""

    tasks: tuple[str, ...] = FULL_TASKS
    rounds: int = 8
    rate: float = 0.4
    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-3
    noise_sigma: float = 0.4
    blur_sigma: float = 0.8
    test_size: float = 0.3

    @classmethod
    def quick(cls) -> BenchConfig:
        """6 tasks (3 class subsets, 3 transforms: the fewest that score each family), 4 rounds at
        rate 0.6, 8 epochs."""
        return cls(tasks=QUICK_TASKS, rounds=4, rate=0.6, epochs=8)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tasks": list(self.tasks), "bench_version": BENCH_VERSION}

    def key(self) -> str:
        """Hash of the settings (16 hex digits): a cached generation is reused only under the same key."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BenchConfig:
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls)}
        kw["tasks"] = tuple(kw["tasks"])
        return cls(**kw)

    def train_kw(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}


# ====================================================================================================
# stage 1: generate
# ====================================================================================================
def generation_dir(out: Path, arch: str, seed: int) -> Path:
    """``OUT/seed_S/ARCH``."""
    return Path(out) / f"seed_{seed}" / arch


def _flow_path(out: Path, arch: str, seed: int, task: str) -> Path:
    return generation_dir(out, arch, seed) / "flows" / f"{task}.h5"


def _imp(
    arch: str, seed: int, theta0: Mapping[str, torch.Tensor], task: Task, cfg: BenchConfig, path: Path
) -> dict[str, Any]:
    """The IMP flow of one task (dense training, then ``cfg.rounds`` rounds with rewinding to
    ``theta0``), saved to ``path``; reused when ``path`` holds a flow of the same settings."""
    train_seed = stable_seed("train", seed, task.spec.name)
    if path.exists():
        with rganalysis.load(path) as f:
            if str(f.attrs.get("benchmark_key")) == cfg.key() and f.n_rounds == cfg.rounds + 1:
                last = f.n_rounds - 1
                return {
                    "accuracy": [float(a) for a in f.metrics["test_accuracy"]],
                    "global_density": [float(x) for x in f.global_density().values],
                    "masks": {k: f.mask(k, last).clone() for k in f.pruned_names()},
                    "reused": True,
                }
    model = ARCHS[arch]()
    dense, acc0 = train_masked(model, theta0, {}, task, seed=train_seed, **cfg.train_kw())
    accs = [acc0]

    def train(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        init = dict(theta0)  # biases rewound too
        init.update({k: w * masks[k] for k, w in weights.items()})
        sd, acc = train_masked(model, init, masks, task, seed=train_seed, **cfg.train_kw())
        accs.append(acc)
        return {k: sd[k] for k in weights}

    base = make_parameter_set(
        [single_round(dense)],
        adapter="generic",
        architecture=arch,
        sources=[],
        name=f"{arch}-{task.spec.name}-seed{seed}",
        rewind=dict(theta0),
        extra_attrs={
            "benchmark_key": cfg.key(),
            "task": task.spec.name,
            "family": task.spec.family,
            "seed": int(seed),
        },
    )
    flow = rganalysis.compute_flow(
        base, cfg.rounds, cfg.rate, rescaling="rewind", train=train, device="cpu", progress=False
    )
    flow.metrics["test_accuracy"] = list(accs)
    last = flow.n_rounds - 1
    res = {
        "accuracy": accs,
        "global_density": [float(x) for x in flow.global_density().values],
        "masks": {k: flow.mask(k, last).clone() for k in flow.pruned_names()},
        "reused": False,
    }
    flow.save(path, force=True, progress=False)
    return res


def random_mask(ticket: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A uniformly random mask with exactly the per-layer counts of surviving weights of ``ticket``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, m in ticket.items():
        r = torch.zeros(m.numel(), dtype=torch.bool)
        r[torch.randperm(m.numel(), generator=g)[: int(m.sum())]] = True
        out[k] = r.reshape(m.shape)
    return out


def load_generation_record(
    out: Path, arch: str, seed: int, cfg: BenchConfig | None = None
) -> dict[str, Any] | None:
    """The generation record of (arch, seed) if it is complete (its JSON and every flow present) and,
    when ``cfg`` is given, made with the same settings; else None."""
    p = generation_dir(out, arch, seed) / "generation.json"
    if not p.exists():
        return None
    rec = json.loads(p.read_text())
    if cfg is not None and rec.get("config_key") != cfg.key():
        return None
    if not all(_flow_path(out, arch, seed, t).exists() for t in rec["tasks"]):
        return None
    return rec


def generate_one(
    out: Path,
    arch: str,
    seed: int,
    cfg: BenchConfig,
    *,
    force: bool = False,
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Flows, transfer, native and random-mask accuracies of one (arch, seed), cached in
    ``OUT/seed_S/ARCH/`` (``generation.json`` written atomically last).  A complete record of the
    same settings is returned as is (unless ``force``); one of other settings is an error.

    The record: ``tasks`` (n names), ``families``, ``transfer_accuracy`` (n x n, rows source,
    columns target, test accuracy in [0, 1]), ``native_accuracy`` (its diagonal),
    ``random_mask_accuracy``, ``dense_accuracy``, ``imp_accuracy`` (per task, rounds + 1),
    ``global_density`` (per task, rounds + 1), ``layer_density`` (per task and layer, last round),
    ``flows`` (store paths relative to OUT), ``timing`` (wall seconds; not part of the results).
    """
    set_determinism(threads)
    d = generation_dir(out, arch, seed)
    rec_path = d / "generation.json"
    if rec_path.exists() and not force:
        rec = load_generation_record(out, arch, seed, cfg)
        if rec is not None:
            log(f"[{arch} seed {seed}] complete generation found in {d}, skipped")
            return rec
        old = json.loads(rec_path.read_text())
        if old.get("config_key") != cfg.key():
            raise RuntimeError(
                f"{rec_path} was generated with other settings ({old.get('config')}); "
                "use another --out or --force"
            )
    t0 = time.perf_counter()
    tasks = make_tasks(cfg.tasks, seed, cfg.noise_sigma, cfg.blur_sigma, cfg.test_size)
    theta0 = rewind_point(arch, seed)
    names = list(cfg.tasks)
    flows: dict[str, dict[str, Any]] = {}
    for name in names:
        t = time.perf_counter()
        flows[name] = _imp(arch, seed, theta0, tasks[name], cfg, _flow_path(out, arch, seed, name))
        a = flows[name]["accuracy"]
        log(
            f"[{arch} seed {seed}] IMP {name:<10} dense {a[0]:.3f} -> ticket {a[-1]:.3f} at density "
            f"{flows[name]['global_density'][-1]:.4f} ({'reused' if flows[name]['reused'] else f'{time.perf_counter() - t:.1f} s'})"
        )
    t_flows = time.perf_counter() - t0

    model = ARCHS[arch]()
    n = len(names)
    acc = np.zeros((n, n))
    for j, tgt in enumerate(names):
        tseed = stable_seed("train", seed, tgt)  # the target's own mini-batch order for every source
        for i, src in enumerate(names):
            acc[i, j] = train_masked(
                model, theta0, flows[src]["masks"], tasks[tgt], seed=tseed, **cfg.train_kw()
            )[1]
    rand = []
    for tgt in names:
        m = random_mask(flows[tgt]["masks"], stable_seed("random-mask", arch, seed, tgt))
        rand.append(
            train_masked(
                model, theta0, m, tasks[tgt], seed=stable_seed("train", seed, tgt), **cfg.train_kw()
            )[1]
        )
    native = [float(acc[j, j]) for j in range(n)]
    mismatch = [t for j, t in enumerate(names) if native[j] != flows[t]["accuracy"][-1]]
    if mismatch:
        log(
            f"[{arch} seed {seed}] WARNING: retrained native ticket differs from the IMP round for {mismatch}"
        )
    rec = {
        "arch": arch,
        "seed": int(seed),
        "config_key": cfg.key(),
        "config": cfg.to_json(),
        "tasks": names,
        "families": [TASK_SPECS[t].family for t in names],
        "descriptions": [TASK_SPECS[t].description for t in names],
        "flows": {t: str(_flow_path(Path("."), arch, seed, t)) for t in names},
        "transfer_accuracy": acc.tolist(),
        "native_accuracy": native,
        "random_mask_accuracy": rand,
        "dense_accuracy": [flows[t]["accuracy"][0] for t in names],
        "imp_accuracy": {t: flows[t]["accuracy"] for t in names},
        "global_density": {t: flows[t]["global_density"] for t in names},
        "layer_density": {
            t: {k: float(m.float().mean()) for k, m in flows[t]["masks"].items()} for t in names
        },
        "native_equals_imp_last_round": not mismatch,
        "timing": {
            "flows_s": t_flows,
            "total_s": time.perf_counter() - t0,
            "flows_reused": [t for t in names if flows[t]["reused"]],
        },
    }
    _write_json_atomic(rec_path, rec)
    log(
        f"[{arch} seed {seed}] generation done in {rec['timing']['total_s']:.1f} s "
        f"(flows {t_flows:.1f} s); ticket - random mask accuracy, mean over tasks: "
        f"{np.mean(native) - np.mean(rand):+.3f}"
    )
    return rec


def _generate_job(args: tuple[str, str, int, dict[str, Any], bool, int]) -> dict[str, Any]:
    out, arch, seed, cfg_json, force, threads = args
    return generate_one(Path(out), arch, seed, BenchConfig.from_json(cfg_json), force=force, threads=threads)


def generate(
    out: Path,
    seeds: Sequence[int],
    archs: Sequence[str],
    cfg: BenchConfig,
    *,
    jobs: int = 1,
    force: bool = False,
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> dict[tuple[str, int], dict]:
    """:func:`generate_one` for every (arch, seed), in ``jobs`` processes (the numbers do not depend on it)."""
    units = [(a, s) for s in seeds for a in archs]
    if jobs <= 1 or len(units) == 1:
        return {(a, s): generate_one(out, a, s, cfg, force=force, threads=threads, log=log) for a, s in units}
    from rganalysis.parallel import process_pool, worker_threads  # forked where safe: no script re-run

    threads = worker_threads(threads, "transfer benchmark")
    with process_pool(jobs, what="transfer benchmark", serial="use --jobs 1") as ex:
        recs = ex.map(_generate_job, [(str(out), a, s, cfg.to_json(), force, threads) for a, s in units])
        return dict(zip(units, recs, strict=True))


# ====================================================================================================
# stage 2: distances
# ====================================================================================================
@dataclass
class Generation:
    """The cached generation of one (arch, seed), as handed to distance functions."""

    out: Path
    arch: str
    seed: int
    record: dict[str, Any]
    _masks: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def tasks(self) -> list[str]:
        return list(self.record["tasks"])

    @property
    def families(self) -> list[str]:
        return list(self.record["families"])

    @property
    def paths(self) -> list[Path]:
        """Flow store of each task, in task order."""
        return [self.out / self.record["flows"][t] for t in self.tasks]

    @property
    def accuracy(self) -> np.ndarray:
        """(n, n) test accuracy of source ticket (row) trained on target task (column)."""
        return np.asarray(self.record["transfer_accuracy"], dtype=np.float64)

    @property
    def gap(self) -> np.ndarray:
        """(n, n) ``acc[source, target] - acc[target, target]`` (accuracy points in [-1, 1]; diagonal 0)."""
        a = self.accuracy
        return a - np.diag(a)[None, :]

    def last_masks(self, task: str) -> dict[str, torch.Tensor]:
        """The ticket of ``task``: pruned tensor name -> bool mask of the last IMP round (cached)."""
        if task not in self._masks:
            with rganalysis.load(self.out / self.record["flows"][task]) as f:
                last = f.n_rounds - 1
                self._masks[task] = {k: f.mask(k, last).clone() for k in f.pruned_names()}
        return self._masks[task]


#: ``fn(flow paths, task names, arch, seed, generation) -> (n, n) distance matrix`` (float, finite;
#: ``D[source, target]``, need not be symmetric).  A candidate distance must be computable from the
#: flows alone: it may use the masks and weights in the stores (``generation.last_masks``, the
#: paths), never the transfer accuracies in ``generation.record`` (those are the outcome; only test
#: oracles such as ``-gap`` read them).
DistanceFn = Callable[[list[Path], list[str], str, int, Generation], np.ndarray]
#: Registered distance functions, by name (scored by default).
DISTANCES: dict[str, DistanceFn] = {}
#: Registered distances that need more than a generation (e.g. a response Jacobian stored in every flow by
#: examples/response_jacobian.py): scored only when named (``--distances``).
EXTRA_DISTANCES: dict[str, DistanceFn] = {}


def register_distance(name: str, *, default: bool = True) -> Callable[[DistanceFn], DistanceFn]:
    """Decorator registering a :data:`DistanceFn` under ``name`` (in :data:`EXTRA_DISTANCES` when not
    ``default``)."""

    def deco(fn: DistanceFn) -> DistanceFn:
        (DISTANCES if default else EXTRA_DISTANCES)[name] = fn
        return fn

    return deco


def jaccard_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """1 - |a & b| / |a | b| over all weights of all masked tensors (0 if both are empty)."""
    inter = sum(int((a[k] & b[k]).sum()) for k in a)
    union = sum(int((a[k] | b[k]).sum()) for k in a)
    return 1.0 - inter / union if union else 0.0


@register_distance("mask_jaccard")
def mask_jaccard(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
    """1 - Jaccard overlap of the last-round masks over all pruned weights.  (n, n), in [0, 1]."""
    m = [data.last_masks(t) for t in names]
    n = len(names)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            D[i, j] = D[j, i] = jaccard_distance(m[i], m[j])
    return D


def unit_degree_vector(masks: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Per-unit degree fractions of a mask, concatenated over layers (in the masks' order).

    For each pruned tensor (linear weight (out, in), conv weight (out, in, kh, kw)) with ``E``
    surviving weights: the in-degree of each output unit (row of a linear layer / output channel of
    a conv: surviving weights summed over all other axes, kernel positions included) divided by
    ``E``, then the out-degree of each input unit (column of a linear layer / input channel of a
    conv, summed likewise) divided by ``E``.  Each of the two blocks of a layer sums to 1 (0 for an
    empty layer): how the layer's surviving weights are distributed over its units.  Length:
    sum over layers of (out + in) units; dimensionless.
    """
    parts = []
    for m in masks.values():
        m = m.to(torch.float64)
        e = float(m.sum())
        dims_in = tuple(d for d in range(m.ndim) if d != 0)
        dims_out = tuple(d for d in range(m.ndim) if d != 1)
        for deg in (m.sum(dims_in), m.sum(dims_out)):
            parts.append((deg / e if e else deg).numpy())
    return np.concatenate(parts)


@register_distance("unit_degree_cosine")
def unit_degree_cosine(
    paths: list[Path], names: list[str], arch: str, seed: int, data: Generation
) -> np.ndarray:
    """Cosine distance 1 - <u, v> / (|u| |v|) of the :func:`unit_degree_vector` of the last-round
    masks.  (n, n), in [0, 1] (degrees are non-negative)."""
    V = np.stack([unit_degree_vector(data.last_masks(t)) for t in names])
    norm = np.linalg.norm(V, axis=1)
    C = (V @ V.T) / np.outer(norm, norm)
    D = np.clip(1.0 - C, 0.0, None)
    np.fill_diagonal(D, 0.0)
    return D


def _ticket_recall_distance(masks: Sequence[Mapping[str, torch.Tensor]]) -> np.ndarray:
    """``D[s, t] = 1 -`` the mean over the target's tensors that keep any weight of the fraction of them the
    source's mask keeps too.  Per tensor, not pooled: two tickets of one global density hold the same number
    of weights, so the pooled recall ``|s & t| / |t|`` would be symmetric (and rank like the Jaccard index);
    per tensor it is directed wherever IMP spreads the density over the layers differently."""
    n = len(masks)
    D = np.zeros((n, n))
    for t in range(n):
        kept = {k: int(m.sum()) for k, m in masks[t].items()}
        for s in range(n):
            if s == t:
                continue
            rec = [int((masks[s][k] & masks[t][k]).sum()) / c for k, c in kept.items() if c]
            D[s, t] = 1.0 - float(np.mean(rec)) if rec else 0.0
    return D


@register_distance("target_recall")
def target_recall(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
    """Directed baseline: ``D[s, t] = 1 - mean over pruned tensors of |ticket_s & ticket_t| / |ticket_t|``,
    the fraction of the target's ticket the source's ticket lacks, layer by layer (last-round masks).
    (n, n), in [0, 1]."""
    return _ticket_recall_distance([data.last_masks(t) for t in names])


@register_distance("directed_units")
def directed_units(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
    """rganalysis's unit divergence (:func:`rganalysis.transfer_scores` with ``score="divergence"``):
    ``D[s, t]``, the mean over unit groups of KL(p_T || p_S) of the units' survival-weighted mass shares,
    each normalised by ln n_g.  (n, n), not symmetric."""
    from rganalysis.universality.transfer import transfer_scores

    D = transfer_scores([str(p) for p in paths], names=list(names), score="divergence")
    return np.asarray(D.values, dtype=np.float64)


_UNIT_SIGNATURES: dict[str, Any] = {}


def _unit_signatures(paths: Sequence[Path], names: Sequence[str]) -> list:
    """The flows' :class:`~rganalysis.universality.units.UnitSignature`, cached per path in this process."""
    from rganalysis.universality.units import UnitSignature

    out = []
    for p, n in zip(paths, names, strict=True):
        if str(p) not in _UNIT_SIGNATURES:
            with rganalysis.load(p) as f:
                _UNIT_SIGNATURES[str(p)] = UnitSignature.from_flow(f, n)
        out.append(_UNIT_SIGNATURES[str(p)])
    return out


@register_distance("coverage_units", default=False)
def coverage_units(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
    """The coverage deficit (``rganalysis.transfer_scores(..., score="coverage")``): ``D[s, t]``, the mean over
    unit groups of the share of the target's survival-weighted unit mass the source's flow lacks (mass-aware:
    how much of each layer IMP keeps counts).  (n, n), in [0, 1], not symmetric."""
    from rganalysis.universality.transfer import transfer_scores

    sigs = _unit_signatures(paths, names)
    return np.asarray(transfer_scores(sigs, names=list(names), score="coverage").values, dtype=np.float64)


@register_distance("basin_units", default=False)
def basin_units(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
    """Basin distance: how far the source's ticket sits from the target's IMP trajectory, ``D[s, t] = min_n``
    RMS over all units of ``degree_s(u, R-1) - degree_t(u, n)`` (units matched as in
    ``rganalysis.transfer_scores``; every group weighs by its units).  (n, n), in [0, 1], not symmetric."""
    from rganalysis.universality.transfer import match_units

    sigs = _unit_signatures(paths, names)
    n = len(sigs)
    D = np.zeros((n, n))
    for s in range(n):
        for t in range(n):
            if s == t:
                continue
            perms, _ = match_units(sigs[t], sigs[s])
            sq = sum(
                ((ds[-1, p][None, :] - dt) ** 2).sum(axis=1)
                for dt, ds, p in zip(sigs[t].degree, sigs[s].degree, perms, strict=True)
            )
            units = sum(dt.shape[1] for dt in sigs[t].degree)
            D[s, t] = float(np.sqrt(np.min(sq) / units))
    return D


@register_distance("output_rows")
def output_rows(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
    """Directed baseline on the classifier's output units alone: :func:`target_recall` over the weights of the
    last pruned tensor (the output layer) only, i.e. how much of the target's surviving output-layer
    connections the source's ticket lacks.  How much of a result is just which output rows survive.
    (n, n), in [0, 1]."""
    masks = [data.last_masks(t) for t in names]
    last = list(masks[0])[-1]
    return _ticket_recall_distance([{last: m[last]} for m in masks])


@register_distance("class_overlap_oracle")
def class_overlap_oracle(
    paths: list[Path], names: list[str], arch: str, seed: int, data: Generation
) -> np.ndarray:
    """Oracle from the task design, not the flows: ``D[s, t] = 1 - |classes(s) & classes(t)| / |classes(t)|``,
    the fraction of the target's classes the source's task never showed.  Directed; constant (0) between
    tasks of all 10 classes.  (n, n), in [0, 1]."""
    return np.array([[1.0 - class_overlap(TASK_SPECS[s], TASK_SPECS[t]) for t in names] for s in names])


@register_distance("oracle_directed")
def oracle_directed(
    paths: list[Path], names: list[str], arch: str, seed: int, data: Generation
) -> np.ndarray:
    """Ceiling, reads the outcome: ``-gap[s, t]``.  Its rhos are 1 up to ties; listed so that the table shows
    what a perfect score reads."""
    return -data.gap


@register_distance("oracle_symmetric")
def oracle_symmetric(
    paths: list[Path], names: list[str], arch: str, seed: int, data: Generation
) -> np.ndarray:
    """Ceiling of every symmetric distance, reads the outcome: ``-(gap[s, t] + gap[t, s]) / 2``, the symmetric
    matrix that best fits the transfer orderings (the symmetric part of the outcome).  What it misses is what
    direction alone can add."""
    return -(data.gap + data.gap.T) / 2


def _combination(weight: float, part: DistanceFn, what: str, kind: str) -> DistanceFn:
    """``compare_default + weight * part``, documented as ``what`` (the directed ``part``, a ``kind`` score)."""

    def fn(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
        return compare_default(paths, names, arch, seed, data) + weight * part(paths, names, arch, seed, data)

    fn.__doc__ = (
        f"rganalysis compare's default distance + {weight:g} x {what}: the symmetric part ranks the sources "
        f"for one target, the {kind} part the targets for one ticket."
    )
    return fn


#: Directed candidates of the first directed calibration (version 1 of the registration, held-out seeds 5-7).
DIRECTED_CANDIDATES_V1: tuple[str, ...] = (
    "directed_units",
    "directed+3",
    "directed+10",
    "directed+30",
    "directed+100",
)
for _w in (3, 10, 30, 100):
    register_distance(f"directed+{_w}", default=False)(
        _combination(float(_w), directed_units, "the directed transfer score (directed_units)", "directed")
    )
#: Directed candidates of the second calibration (registration version 2; docs/universality.md §11): the
#: mass-aware coverage deficit (candidate (a) of the issue) alone and added to compare's default, and the basin
#: distance (candidate (b)).
DIRECTED_CANDIDATES: tuple[str, ...] = (
    "coverage_units",
    "coverage+1",
    "coverage+3",
    "coverage+10",
    "basin_units",
)
for _w in (1, 3, 10):
    register_distance(f"coverage+{_w}", default=False)(
        _combination(
            float(_w), coverage_units, "the coverage deficit (coverage_units)", "mass-aware directed"
        )
    )


@register_distance("random")
def random_distance(
    paths: list[Path], names: list[str], arch: str, seed: int, data: Generation
) -> np.ndarray:
    """A random symmetric matrix, uniform in [0, 1), zero diagonal, seeded by (arch, seed, names)."""
    rng = np.random.default_rng(stable_seed("random-distance", arch, seed, ",".join(names)))
    A = rng.random((len(names), len(names)))
    D = (A + A.T) / 2
    np.fill_diagonal(D, 0.0)
    return D


@register_distance("compare_default")
def compare_default(
    paths: list[Path], names: list[str], arch: str, seed: int, data: Generation
) -> np.ndarray:
    """rganalysis's default universality distance (``rganalysis compare`` defaults), fitted on the
    n flows of this (arch, seed) together (cached per flows in this process: the combinations reuse it)."""
    key = (tuple(map(str, paths)), tuple(names))
    if key not in _COMPARE_DEFAULT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ua = rganalysis.UniversalityAnalysis().fit([str(p) for p in paths], names=list(names))
        _COMPARE_DEFAULT[key] = np.asarray(ua.distance_.values, dtype=np.float64)
    return _COMPARE_DEFAULT[key].copy()


_COMPARE_DEFAULT: dict[tuple[tuple[str, ...], tuple[str, ...]], np.ndarray] = {}


_SIGNATURES: dict[tuple[str, tuple[str, ...]], Any] = {}


def flow_signatures(
    paths: Sequence[Path], names: Sequence[str], couplings: tuple[str, ...] = ("density",)
) -> list:
    """rganalysis flow signatures of the stores (the defaults of ``rganalysis compare``), cached per
    (path, couplings) in this process."""
    from rganalysis.universality.signature import flow_signature

    out = []
    for p, n in zip(paths, names, strict=True):
        key = (str(p), tuple(couplings))
        if key not in _SIGNATURES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SIGNATURES[key] = flow_signature(str(p), name=n, couplings=couplings, device="cpu")
        out.append(_SIGNATURES[key])
    return out


def rganalysis_distance(
    weights: Mapping[str, float] | None = None,
    alignment: str = "auto",
    couplings: tuple[str, ...] = ("density",),
) -> DistanceFn:
    """A :data:`DistanceFn`: rganalysis's universality distance with these ``weights`` (None: its
    defaults) and ``alignment``, on flow signatures fitted in the ``couplings`` space."""

    def fn(paths: list[Path], names: list[str], arch: str, seed: int, data: Generation) -> np.ndarray:
        from rganalysis.universality.distances import distance_matrix

        dm = distance_matrix(flow_signatures(paths, names, couplings), weights, alignment=alignment)
        return np.asarray(dm.total.values, dtype=np.float64)

    fn.__doc__ = (
        f"rganalysis's universality distance (weights {dict(weights) if weights else 'default'}, alignment "
        f"{alignment!r}) on flow signatures in the couplings {list(couplings)}."
    )
    return fn


register_distance("rganalysis")(rganalysis_distance())  # the default of rganalysis compare (aligned here)
register_distance("rganalysis_invariant")(rganalysis_distance(alignment="invariant"))
# the spectra of the two linearisations, side by side: the response Jacobian of the real IMP step (stored
# in each flow by examples/response_jacobian.py) and the trajectory fit of the flow on the same unit couplings
register_distance("response_spectrum", default=False)(
    rganalysis_distance({"response_spectrum": 1.0}, "invariant", ("density",))
)
register_distance("trajectory_spectrum", default=False)(
    rganalysis_distance({"spectrum": 1.0}, "invariant", ("unit",))
)

#: The candidates compared on the calibration seeds (``calibrate``), fixed before that run: name ->
#: (weights, alignment, couplings of the fits).  The default of ``rganalysis compare`` is the best
#: aligned and the best invariant candidate by :func:`calibration_criterion`.
_FIT = {"spectrum": 1.0, "fixed_point": 1.0, "subspace": 1.0}
CANDIDATES: dict[str, tuple[dict[str, float], str, tuple[str, ...]]] = {
    "A1 survival": ({"survival": 1.0}, "aligned", ("density",)),
    "A2 units": ({"units": 1.0}, "aligned", ("density",)),
    "A3 survival+units": ({"survival": 1.0, "units": 1.0}, "aligned", ("density",)),
    "A4 survival+3units": ({"survival": 1.0, "units": 3.0}, "aligned", ("density",)),
    "A5 survival+10units": ({"survival": 1.0, "units": 10.0}, "aligned", ("density",)),
    "A6 survival+30units": ({"survival": 1.0, "units": 30.0}, "aligned", ("density",)),
    "A7 survival+units+fit": ({"survival": 1.0, "units": 1.0, **_FIT}, "aligned", ("density",)),
    "A8 survival+10units+profile": (
        {"survival": 1.0, "units": 10.0, "unit_profile": 1.0},
        "aligned",
        ("density",),
    ),
    "I1 profile": ({"unit_profile": 1.0}, "invariant", ("density",)),
    "I2 fit (v1 default)": (dict(_FIT), "invariant", ("density",)),
    "I3 profile+fit": ({"unit_profile": 1.0, **_FIT}, "invariant", ("density",)),
    "I4 fit on density,unit": (dict(_FIT), "invariant", ("density", "unit")),
    "I5 profile+fit on density,unit": ({"unit_profile": 1.0, **_FIT}, "invariant", ("density", "unit")),
}


def directed_criterion(scores: Mapping[str, Any]) -> float:
    """The selection criterion of the directed calibration: over the groups (class subsets, input transforms,
    all), the mean of the within-target and the within-source mean rho, both architectures and all scored
    seeds (lower is better): a researcher asks both "which ticket for my task" and "which tasks for my
    ticket"."""
    return float(
        np.mean(
            [
                (scores["both"][g]["combined"]["mean_rho"] + scores["both"][g]["combined"]["mean_rho_source"])
                / 2
                for g in GROUPS
                if g in scores["both"]
            ]
        )
    )


def calibration_criterion(scores: Mapping[str, Any]) -> float:
    """The pre-registered selection criterion: the mean over the groups (class subsets, input transforms,
    all) of the mean within-target rho over both architectures and all scored seeds (lower is better)."""
    return float(np.mean([scores["both"][g]["combined"]["mean_rho"] for g in GROUPS if g in scores["both"]]))


#: A pair of tasks "transfers" when both of its tickets lose at most this much accuracy on the other task.
TRANSFER_OK = 0.05


def class_threshold(gens: Mapping[tuple[str, int], Generation], fn: DistanceFn) -> tuple[float, float]:
    """The class threshold of a distance: the cut ``D <= t`` that best separates the pairs of tasks that
    transfer both ways (both gaps >= -:data:`TRANSFER_OK`) from the others, by balanced accuracy over all
    pairs of all (arch, seed).  Returns (t, balanced accuracy); t is the midpoint between consecutive
    distances."""
    d, ok = [], []
    for (arch, seed), g in gens.items():
        D = fn(g.paths, g.tasks, arch, seed, g)
        G = g.gap
        for i in range(len(g.tasks)):
            for j in range(i + 1, len(g.tasks)):
                d.append(D[i, j])
                ok.append(min(G[i, j], G[j, i]) >= -TRANSFER_OK)
    d, ok = np.asarray(d), np.asarray(ok)
    cuts = np.unique(d)
    cands = np.concatenate([[cuts[0] - 1e-9], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1e-9]])
    best = (-1.0, 0.0)
    for t in cands:
        pred = d <= t
        tpr = (pred & ok).sum() / max(1, ok.sum())
        tnr = (~pred & ~ok).sum() / max(1, (~ok).sum())
        best = max(best, ((tpr + tnr) / 2, float(t)))
    return best[1], best[0]


def calibrate(
    out: Path,
    seeds: Sequence[int] = CALIBRATION_SEEDS,
    archs: Sequence[str] = ARCH_NAMES,
    *,
    n_perm: int = 2000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score every :data:`CANDIDATES` distance on the calibration seeds; print the table and the choice
    (best aligned, best invariant by :func:`calibration_criterion`); write ``OUT/calibration.json``."""
    if set(seeds) & set(HELD_OUT_SEEDS):
        raise ValueError("calibration uses the calibration seeds only")
    dists = {n: rganalysis_distance(w, a, c) for n, (w, a, c) in CANDIDATES.items()}
    dists.update({k: DISTANCES[k] for k in ("mask_jaccard", "unit_degree_cosine")})
    res = score(out, seeds, archs, dists, n_perm=n_perm, figure=False, write=False, log=log)
    crit = {n: calibration_criterion(res["scores"][n]) for n in dists}
    best = {
        mode: min((n for n in CANDIDATES if CANDIDATES[n][1] == mode), key=crit.__getitem__)
        for mode in ("aligned", "invariant")
    }
    log(
        "\ncalibration criterion (mean over groups of the both-architectures mean within-target rho; lower is "
        "better):"
    )
    for n, c in sorted(crit.items(), key=lambda kv: kv[1]):
        log(f"  {c:+.3f}  {n}" + ("   <- chosen" if n in best.values() else ""))
    gens = load_generations(out, seeds, archs)
    thresholds = {}
    for mode, n in best.items():
        w, a, c = CANDIDATES[n]
        t, acc = class_threshold(gens, rganalysis_distance(w, a, c))
        thresholds[mode] = {"threshold": t, "balanced_accuracy": acc}
        log(
            f"class threshold ({mode}, {n}): {t:.4g} (balanced accuracy {acc:.3f} for 'both tickets transfer "
            f"within {TRANSFER_OK:g}')"
        )
    cal = {
        "seeds": list(seeds),
        "criterion": crit,
        "chosen": best,
        "thresholds": thresholds,
        "candidates": {
            n: {"weights": w, "alignment": a, "couplings": list(c)} for n, (w, a, c) in CANDIDATES.items()
        },
        "scores": res["scores"],
    }
    _write_json_atomic(Path(out) / "calibration.json", cal)
    return cal


# ====================================================================================================
# stage 2: scores
# ====================================================================================================
def rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis of ``x`` and ``y`` (broadcast; average ranks for ties).

    Returns the broadcast leading shape.  A row where either side is constant has no ranking
    information and gets rho = 0.
    """
    from scipy.stats import rankdata

    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    num = (rx * ry).sum(-1)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den > 1e-12)
    return out


def target_rhos(D: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Within-target Spearman rho of ``D[source, target]`` and ``gap[source, target]`` over the
    sources ``!= target``.  ``D``: (..., k, k) (leading axes: e.g. permutations), ``gap``: (k, k).
    Returns (..., k), one rho per target."""
    k = gap.shape[-1]
    tgt = np.arange(k)[:, None]
    src = np.array([[i for i in range(k) if i != j] for j in range(k)], dtype=np.intp).reshape(k, k - 1)
    return rowwise_spearman(D[..., src, tgt], gap[src, tgt])


def permutations(k: int, n_perm: int, seed: int) -> np.ndarray:
    """(n_perm, k) random permutations of range(k) from a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return (
        np.stack([rng.permutation(k) for _ in range(n_perm)]) if n_perm else np.zeros((0, k), dtype=np.intp)
    )


def family_permutations(families: Sequence[str], n_perm: int, seed: int) -> np.ndarray:
    """(n_perm, k) permutations of range(k) that move each task only within its family (``families``, k
    labels): the null of a score that knows nothing but which family a task is in."""
    rng = np.random.default_rng(seed)
    fam = np.asarray(families)
    out = np.tile(np.arange(len(fam)), (n_perm, 1))
    for f in dict.fromkeys(families):
        idx = np.flatnonzero(fam == f)
        for row in out:
            row[idx] = rng.permutation(idx)
    return out


def permuted_target_rhos(D: np.ndarray, gap: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Within-target rhos after relabelling the tasks of ``D`` (k, k) by each permutation:
    ``D'[s, t] = D[p[s], p[t]]``, gaps fixed.  ``perms``: (n_perm, k).  Returns (n_perm, k)."""
    return target_rhos(D[perms[:, :, None], perms[:, None, :]], gap)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided p of a small ``observed`` statistic: (1 + #{null <= observed}) / (1 + len(null))."""
    return float((1 + np.sum(null <= observed + 1e-12)) / (1 + len(null)))


def _pooled(D: np.ndarray, gap: np.ndarray) -> dict[str, float | None]:
    from scipy.stats import spearmanr

    off = ~np.eye(len(gap), dtype=bool)
    x, y = D[off], gap[off]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None}
    r = spearmanr(x, y)
    return {"rho": float(r.statistic), "p": float(r.pvalue)}


def score_group(
    D: np.ndarray,
    gap: np.ndarray,
    names: Sequence[str],
    perms: np.ndarray,
    family_perms: np.ndarray | None = None,
) -> dict[str, Any]:
    """Scores of one group of k tasks: ``D`` and ``gap`` (k, k) restricted to the group, ``perms``
    (n_perm, k).  Keys: ``rho_per_target`` (name -> rho), ``mean_rho``, ``n_negative``,
    ``n_targets``, ``n_constant_gap`` (targets whose gaps are all equal: no ranking information, rho = 0;
    so is a target whose distances are all equal), ``pooled_rho``,
    ``pooled_p``, ``perm_p``, ``n_perm``; ``_null`` (n_perm, k) per-target rhos under permutation,
    for the aggregates (dropped from the JSON).  With ``family_perms`` (:func:`family_permutations`, for the
    groups that span families) also ``perm_p_family`` and ``perm_p_family_source``: p under relabelling
    within families only, so a distance that only tells the families apart does not pass."""
    fam = {}
    if family_perms is not None:
        fnull = permuted_target_rhos(D, gap, family_perms)
        fsrc = permuted_target_rhos(D.T, gap.T, family_perms)
        fam = {"_null_f": fnull, "_src_null_f": fsrc}
    rhos = target_rhos(D, gap)
    null = permuted_target_rhos(D, gap, perms)
    src_rhos = target_rhos(D.T, gap.T)  # within-source: the targets of one ticket
    src_null = permuted_target_rhos(D.T, gap.T, perms)
    k = len(names)
    tgt_gap = (
        np.array([[gap[i, j] for i in range(k) if i != j] for j in range(k)]) if k > 1 else np.zeros((0, 0))
    )
    pooled = _pooled(D, gap)
    return {
        "rho_per_target": {n: float(r) for n, r in zip(names, rhos, strict=True)},
        "mean_rho": float(rhos.mean()),
        "n_negative": int((rhos < 0).sum()),
        "n_targets": k,
        "n_constant_gap": int(sum(np.ptp(g) == 0 for g in tgt_gap)) if k > 1 else 0,
        "pooled_rho": pooled["rho"],
        "pooled_p": pooled["p"],
        "perm_p": permutation_p(float(rhos.mean()), null.mean(1)),
        "rho_per_source": {n: float(r) for n, r in zip(names, src_rhos, strict=True)},
        "mean_rho_source": float(src_rhos.mean()),
        "n_negative_source": int((src_rhos < 0).sum()),
        "perm_p_source": permutation_p(float(src_rhos.mean()), src_null.mean(1)),
        "antisymmetry": antisymmetry_agreement(D, gap),
        "n_perm": len(perms),
        **(
            {
                "perm_p_family": permutation_p(float(rhos.mean()), fam["_null_f"].mean(1)),
                "perm_p_family_source": permutation_p(float(src_rhos.mean()), fam["_src_null_f"].mean(1)),
            }
            if fam
            else {}
        ),
        "_rhos": rhos,
        "_null": null,
        "_src_rhos": src_rhos,
        "_src_null": src_null,
        **fam,
    }


def antisymmetry_agreement(D: np.ndarray, gap: np.ndarray) -> float | None:
    """Of the unordered pairs whose two transfers differ (``gap[s, t] != gap[t, s]``) and whose scores differ,
    the fraction where the direction with the lower score is the one that loses less:
    ``sign(gap[s, t] - gap[t, s]) == -sign(D[s, t] - D[t, s])``.  0.5 is chance; None for a symmetric ``D``
    (no pair to judge)."""
    iu = np.triu_indices(len(gap), 1)
    dg = (gap - gap.T)[iu]
    dd = (D - D.T)[iu]
    ok = (dg != 0) & (np.abs(dd) > 1e-12 * max(1.0, float(np.abs(D).max(initial=0.0))))
    return float(np.mean(np.sign(dg[ok]) == -np.sign(dd[ok]))) if ok.any() else None


def combine(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate of several :func:`score_group` results (independent permutations per part): the mean
    within-target rho over all their targets, total targets with rho < 0, and the permutation p of
    that mean (the k-th draws of all parts taken together)."""
    rhos = np.concatenate([p["_rhos"] for p in parts])
    null = np.concatenate([p["_null"] for p in parts], axis=1).mean(1)
    src = np.concatenate([p["_src_rhos"] for p in parts])
    src_null = np.concatenate([p["_src_null"] for p in parts], axis=1).mean(1)
    return {
        "mean_rho": float(rhos.mean()),
        "n_negative": int((rhos < 0).sum()),
        "n_targets": len(rhos),
        "perm_p": permutation_p(float(rhos.mean()), null),
        "mean_rho_source": float(src.mean()),
        "n_negative_source": int((src < 0).sum()),
        "perm_p_source": permutation_p(float(src.mean()), src_null),
        "n_perm": len(null),
        "n_parts": len(parts),
        **(
            {
                "perm_p_family": permutation_p(
                    float(rhos.mean()), np.concatenate([p["_null_f"] for p in parts], axis=1).mean(1)
                ),
                "perm_p_family_source": permutation_p(
                    float(src.mean()), np.concatenate([p["_src_null_f"] for p in parts], axis=1).mean(1)
                ),
            }
            if all("_null_f" in p for p in parts)
            else {}
        ),
    }


def group_indices(families: Sequence[str], group: str) -> list[int]:
    """Indices of the tasks of ``group`` (a family, or ``all``)."""
    return [i for i, f in enumerate(families) if group in ("all", f)]


def compute_distances(
    gens: Mapping[tuple[str, int], Generation],
    distances: Mapping[str, DistanceFn],
    log: Callable[[str], None] = print,
) -> tuple[dict[str, dict[tuple[str, int], np.ndarray]], dict[str, dict[str, float]]]:
    """Every distance on every (arch, seed): ``{name: {(arch, seed): (n, n)}}`` and wall seconds."""
    mats: dict[str, dict[tuple[str, int], np.ndarray]] = {}
    timing: dict[str, dict[str, float]] = {}
    for name, fn in distances.items():
        mats[name], timing[name] = {}, {}
        for (arch, seed), g in gens.items():
            t = time.perf_counter()
            D = np.asarray(fn(g.paths, g.tasks, arch, seed, g), dtype=np.float64)
            n = len(g.tasks)
            if D.shape != (n, n) or not np.isfinite(D).all():
                raise ValueError(
                    f"distance {name!r} on {arch} seed {seed}: need a finite ({n}, {n}) matrix, "
                    f"got shape {D.shape}" + ("" if D.shape != (n, n) else " with non-finite entries")
                )
            mats[name][arch, seed] = D
            timing[name][f"{arch}/seed_{seed}"] = time.perf_counter() - (t)
            log(f"distance {name:<20} {arch} seed {seed}: {time.perf_counter() - t:.1f} s")
    return mats, timing


def score_all(
    gens: Mapping[tuple[str, int], Generation],
    mats: Mapping[str, Mapping[tuple[str, int], np.ndarray]],
    n_perm: int = 2000,
    perm_seed: int = 0,
) -> dict[str, Any]:
    """Scores of every distance: ``{distance: {arch or "both": {group: {"seeds": {seed: scores},
    "combined": aggregate}}}}``.  The permutations of (arch, seed, group) are drawn from a generator
    seeded by (perm_seed, arch, seed, group), the same for every distance."""
    archs = list(dict.fromkeys(a for a, _ in gens))
    scores: dict[str, Any] = {}
    for name in mats:
        s_name: dict[str, Any] = {}
        for arch in [*archs, "both"]:
            s_arch: dict[str, Any] = {}
            for group in GROUPS:
                per_seed: dict[str, Any] = {}
                parts = []
                for (a, seed), g in gens.items():
                    if arch not in ("both", a):
                        continue
                    idx = group_indices(g.families, group)
                    if len(idx) < 3:
                        continue
                    ix = np.ix_(idx, idx)
                    perms = permutations(len(idx), n_perm, stable_seed("perm", perm_seed, a, seed, group))
                    fams = [g.families[i] for i in idx]
                    fperms = (
                        family_permutations(
                            fams, n_perm, stable_seed("perm-family", perm_seed, a, seed, group)
                        )
                        if len(set(fams)) > 1
                        else None
                    )
                    r = score_group(
                        mats[name][a, seed][ix], g.gap[ix], [g.tasks[i] for i in idx], perms, fperms
                    )
                    parts.append(r)
                    if arch != "both":
                        per_seed[str(seed)] = {k: v for k, v in r.items() if not k.startswith("_")}
                if parts:
                    s_arch[group] = {"seeds": per_seed, "combined": combine(parts)}
            s_name[arch] = s_arch
        scores[name] = s_name
    return scores


# ====================================================================================================
# stage 2: the score command (JSON, table, figure)
# ====================================================================================================
def load_generations(
    out: Path, seeds: Sequence[int], archs: Sequence[str]
) -> dict[tuple[str, int], Generation]:
    """The complete generation records of every (arch, seed), all of one setting; an error otherwise."""
    gens = {}
    for seed in seeds:
        for arch in archs:
            rec = load_generation_record(out, arch, seed)
            if rec is None:
                raise FileNotFoundError(
                    f"no complete generation for {arch} seed {seed} in {out}: run `generate` first"
                )
            gens[arch, seed] = Generation(Path(out), arch, seed, rec)
    keys = {g.record["config_key"] for g in gens.values()}
    if len(keys) > 1:
        raise RuntimeError(f"generations in {out} were made with different settings: {sorted(keys)}")
    return gens


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def format_accuracy_table(gens: Mapping[tuple[str, int], Generation]) -> str:
    """Per (arch, seed) and task: dense, ticket and random-mask test accuracy and ticket density."""
    lines = [
        f"{'arch':<4} {'seed':>4} {'task':<10} {'family':<16} {'dense':>6} {'ticket':>6} {'random':>6} "
        f"{'t - r':>6} {'density':>8}"
    ]
    for (arch, seed), g in gens.items():
        r = g.record
        for j, t in enumerate(g.tasks):
            nat, rnd = r["native_accuracy"][j], r["random_mask_accuracy"][j]
            lines.append(
                f"{arch:<4} {seed:>4} {t:<10} {g.families[j]:<16} {r['dense_accuracy'][j]:>6.3f} "
                f"{nat:>6.3f} {rnd:>6.3f} {nat - rnd:>+6.3f} {r['global_density'][t][-1]:>8.4f}"
            )
    return "\n".join(lines)


def format_score_table(scores: Mapping[str, Any], seeds: Sequence[int]) -> str:
    """One row per (distance, arch, group): per seed mean within-target rho, #rho<0/#targets and
    permutation p; then the aggregate over seeds, the same within sources, and the pooled rho of each seed."""
    head = (
        f"{'distance':<20} {'arch':<4} {'group':<16} "
        + " ".join(f"{'seed ' + str(s) + ': rho  neg/n      p':>27}" for s in seeds)
        + f" {'seeds: rho  neg/n      p':>27} {'within source: rho neg/n p':>27}  pooled rho"
    )
    lines = [head, "-" * len(head)]
    for name, by_arch in scores.items():
        for arch, by_group in by_arch.items():
            for group, sc in by_group.items():
                cells = []
                for s in seeds:
                    r = sc["seeds"].get(str(s))
                    cells.append(
                        f"{'':>27}"
                        if r is None
                        else f"{r['mean_rho']:+.3f} {r['n_negative']:>3}/{r['n_targets']:<3} {r['perm_p']:.4f}".rjust(
                            27
                        )
                    )
                c = sc["combined"]
                pooled = ",".join(
                    _fmt(sc["seeds"][str(s)]["pooled_rho"], "+.2f") for s in seeds if str(s) in sc["seeds"]
                )
                cells.append(
                    f"{c['mean_rho']:+.3f} {c['n_negative']:>3}/{c['n_targets']:<3} {c['perm_p']:.4f}".rjust(
                        27
                    )
                )
                cells.append(
                    f"{c['mean_rho_source']:+.3f} {c['n_negative_source']:>3}/{c['n_targets']:<3} "
                    f"{c['perm_p_source']:.4f}".rjust(27)
                )
                lines.append(f"{name:<20} {arch:<4} {group:<16} " + " ".join(cells) + f"  {pooled}")
    return "\n".join(lines)


def plot_distance_vs_gap(
    path: Path,
    gens: Mapping[tuple[str, int], Generation],
    mats: Mapping[str, Mapping[tuple[str, int], np.ndarray]],
    scores: Mapping[str, Any],
) -> Path:
    """Scatter of distance (x) vs gap (y, accuracy points): one row per distance, one column per
    (arch, group); colour = target task, marker = seed (o, s, ^, ... in seed order).  Panels are titled with the aggregate score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(a for a, _ in gens))
    cols = [(a, grp) for a in archs for grp in GROUPS]
    rows = list(mats)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 2.8 * len(rows)), squeeze=False)
    markers = "os^vD<>ph"
    seed_order = list(dict.fromkeys(s for _, s in gens))
    all_tasks = list(dict.fromkeys(t for g in gens.values() for t in g.tasks))
    cmap = plt.get_cmap("tab20")  # dark shades first, then the light ones
    colour = {t: cmap((2 * i) % 20 + (i // 10) % 2) for i, t in enumerate(all_tasks)}
    for r, name in enumerate(rows):
        for c, (arch, grp) in enumerate(cols):
            ax = axes[r, c]
            for (a, seed), g in gens.items():
                if a != arch:
                    continue
                si = seed_order.index(seed)
                idx = group_indices(g.families, grp)
                D, G = mats[name][a, seed], g.gap
                for j in idx:
                    src = [i for i in idx if i != j]
                    ax.scatter(
                        D[src, j],
                        G[src, j],
                        s=10,
                        color=colour[g.tasks[j]],
                        marker=markers[si % len(markers)],
                        label=g.tasks[j] if si == 0 else None,
                    )
            sc = scores[name].get(arch, {}).get(grp)
            t = f"{name}\n{arch} {grp}"
            if sc:
                cb = sc["combined"]
                t += f"\nrho {cb['mean_rho']:+.2f}, {cb['n_negative']}/{cb['n_targets']} <0, p {cb['perm_p']:.3g}"
            ax.set_title(t, fontsize=7)
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel("gap (accuracy)", fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("distance(source, target)", fontsize=7)
    handles, labels = axes[0, len(GROUPS) - 1].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(len(labels), 8),
            fontsize=7,
            title="target (marker: seed "
            + ", ".join(f"{s} {markers[i]}" for i, s in enumerate(seed_order))
            + ")",
        )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def score(
    out: Path,
    seeds: Sequence[int],
    archs: Sequence[str],
    distances: Mapping[str, DistanceFn] | None = None,
    *,
    n_perm: int = 2000,
    perm_seed: int = 0,
    figure: bool = True,
    write: bool = True,
    choice: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The scoring stage: read the generations, compute every distance, score, print the tables and
    write ``OUT/results.json`` and ``OUT/distance_vs_gap.png`` (unless ``write``/``figure`` is False).
    With ``choice`` (a scored distance) the :data:`GOAL` is checked for it (:func:`goal_check`)."""
    distances = dict(DISTANCES if distances is None else distances)
    gens = load_generations(out, seeds, archs)
    mats, dist_timing = compute_distances(gens, distances, log)
    scores = score_all(gens, mats, n_perm, perm_seed)
    cfg_json = next(iter(gens.values())).record["config"]
    pairs = []
    for (arch, seed), g in gens.items():
        acc, gap = g.accuracy, g.gap
        for j, tgt in enumerate(g.tasks):
            for i, src in enumerate(g.tasks):
                if i == j:
                    continue
                pairs.append(
                    {
                        "arch": arch,
                        "seed": seed,
                        "source": src,
                        "target": tgt,
                        "source_family": g.families[i],
                        "target_family": g.families[j],
                        "class_overlap": class_overlap(TASK_SPECS[src], TASK_SPECS[tgt]),
                        "transfer_accuracy": float(acc[i, j]),
                        "native_accuracy": float(acc[j, j]),
                        "gap": float(gap[i, j]),
                        "distance": {n: float(mats[n][arch, seed][i, j]) for n in mats},
                    }
                )
    res = {
        "settings": {
            "config": cfg_json,
            "config_key": next(iter(gens.values())).record["config_key"],
            "seeds": list(seeds),
            "archs": list(archs),
            "distances": list(distances),
            "n_perm": n_perm,
            "perm_seed": perm_seed,
            "calibration_seeds": list(CALIBRATION_SEEDS),
            "held_out_seeds": list(HELD_OUT_SEEDS),
            "git_sha": git_sha(),
            "scoring_sha256": scoring_sha256(),
            "groups": list(GROUPS),
            "tasks": {
                t: {
                    "family": TASK_SPECS[t].family,
                    "classes": list(TASK_SPECS[t].classes),
                    "description": TASK_SPECS[t].description,
                }
                for t in cfg_json["tasks"]
            },
            "archs_doc": {a: ARCHS[a].__doc__ for a in archs},
        },
        "generation": {
            f"{a}/seed_{s}": {k: v for k, v in g.record.items() if k not in ("timing", "config")}
            for (a, s), g in gens.items()
        },
        "pairs": pairs,
        "distances": {n: {f"{a}/seed_{s}": m.tolist() for (a, s), m in by.items()} for n, by in mats.items()},
        "scores": scores,
        "timing": {
            "distances_s": dist_timing,
            "generation_s": {f"{a}/seed_{s}": g.record["timing"]["total_s"] for (a, s), g in gens.items()},
        },
    }
    log("\nTest accuracy: dense, own ticket, random mask of the ticket's per-layer densities")
    log(format_accuracy_table(gens))
    log(
        "\nWithin-target Spearman rho of distance(source, target) vs gap over sources (negative = farther "
        f"transfers are worse); mean, #targets rho<0 / #targets, task-permutation p ({n_perm} draws)"
    )
    log(format_score_table(scores, seeds))
    if choice is not None:
        res["goal"] = {"choice": choice, "cells": goal_check(scores, choice)}
        log("\n" + format_goal(res["goal"]["cells"], choice))
    if write:
        _write_json_atomic(Path(out) / "results.json", res)
        log(f"\nresults in {Path(out) / 'results.json'}")
    if figure:
        p = plot_distance_vs_gap(Path(out) / "distance_vs_gap.png", gens, mats, scores)
        log(f"figure in {p}")
    return res


# ====================================================================================================
# pre-registration that binds
# ====================================================================================================
class RegistrationError(RuntimeError):
    """A held-out run without a matching, committed registration, or held-out seeds scored before."""


#: What the held-out run must show (fixed with the registration; docs/universality.md section 11).
GOAL = {
    "per": "family (class_subsets, input_transforms, training_regimes) and 'all' (every pair, cross-family "
    "ones included), each architecture and both",
    "mean_within_target_rho": "<= -0.5",
    "mean_within_source_rho": "<= -0.5",
    "fraction_negative": ">= 0.8",
    "permutation_p": "< 0.01",
    "margin_over_best_baseline": ">= 0.1 (rho), directed baselines included",
}
BASELINES: tuple[str, ...] = ("mask_jaccard", "unit_degree_cosine", "target_recall", "output_rows", "random")
#: Read the task design or the outcome: reported beside, never a baseline to beat or a candidate.
CEILINGS: tuple[str, ...] = ("class_overlap_oracle", "oracle_symmetric", "oracle_directed")


def goal_check(scores: Mapping[str, Any], choice: str) -> dict[str, dict[str, dict[str, Any]]]:
    """:data:`GOAL` checked for ``choice``: ``{arch or "both": {group: {criterion: {"value", "met"}}}}``.
    The margin is over the best of the :data:`BASELINES` in the same cell (rho, lower is better); for the
    groups that span families the permutation p is the family-preserving one as well."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for arch, by_group in scores[choice].items():
        out[arch] = {}
        for group, sc in by_group.items():
            c = sc["combined"]
            base = [scores[b][arch][group]["combined"] for b in BASELINES if b in scores]
            row: dict[str, Any] = {}
            for side, key, neg, pkey in (
                ("target", "mean_rho", "n_negative", "perm_p"),
                ("source", "mean_rho_source", "n_negative_source", "perm_p_source"),
            ):
                best = min((b[key] for b in base), default=float("nan"))
                p_all = [c[pkey]] + (
                    [c[pkey.replace("perm_p", "perm_p_family")]] if "perm_p_family" in c else []
                )
                row[f"rho_{side} <= -0.5"] = {"value": c[key], "met": c[key] <= -0.5}
                row[f"negative_{side} >= 0.8"] = {
                    "value": c[neg] / c["n_targets"],
                    "met": c[neg] / c["n_targets"] >= 0.8,
                }
                row[f"p_{side} < 0.01"] = {"value": max(p_all), "met": max(p_all) < 0.01}
                row[f"margin_{side} >= 0.1"] = {"value": best - c[key], "met": best - c[key] >= 0.1}
            out[arch][group] = row
    return out


def format_goal(goal: Mapping[str, Any], choice: str) -> str:
    """One line per (arch, group): each criterion's value and whether it is met."""
    lines = [f"goal for {choice} (value, + met / - not met):"]
    for arch, by_group in goal.items():
        for group, row in by_group.items():
            cells = "  ".join(
                f"{k.split()[0]} {v['value']:+.3f}{'+' if v['met'] else '-'}" for k, v in row.items()
            )
            ok = all(v["met"] for v in row.values())
            lines.append(f"  {arch:<4} {group:<16} {'MET    ' if ok else 'not met'}  {cells}")
    return "\n".join(lines)


def scoring_files(root: Path | None = None) -> list[str]:
    """The files of :data:`SCORING_CODE`, relative to the checkout (a folder: its ``*.py``, sorted)."""
    root = _ROOT if root is None else Path(root)
    out: list[str] = []
    for rel in SCORING_CODE:
        path = root / rel
        if path.is_dir():
            out += sorted(p.relative_to(root).as_posix() for p in path.rglob("*.py"))
        else:
            out.append(rel)
    return out


def scoring_sha256(root: Path | None = None) -> str:
    """sha256 over the files of :func:`scoring_files` (path and bytes of each, in that order)."""
    root = _ROOT if root is None else Path(root)
    h = hashlib.sha256()
    for rel in scoring_files(root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _git(*args: str, root: Path | None = None) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=_ROOT if root is None else root, capture_output=True, text=True
        )
    except OSError:
        return None


def registration_committed(path: Path) -> bool:
    """Whether ``path`` is tracked by this checkout's git and its committed bytes are the file's (a
    registration binds only once it is in the history: written before the run, and not edited since)."""
    path = Path(path).resolve()
    tracked = _git("ls-files", "--error-unmatch", str(path))
    if tracked is None or tracked.returncode != 0:
        return False
    same = _git("diff", "--quiet", "HEAD", "--", str(path))
    return same is not None and same.returncode == 0


def _in_docs(path: Path) -> bool:
    """A registration lives in this checkout's docs/ as ``transfer-registration*.json``, so that its ledger is
    one of those every run reads (:func:`spent_seeds`)."""
    path = Path(path).resolve()
    return path.parent == (_ROOT / "docs").resolve() and path.name.startswith("transfer-registration")


def _is_ancestor(sha: str) -> bool:
    """Whether commit ``sha`` (a registration's ``git_sha``, ``+dirty`` stripped) is HEAD or an ancestor."""
    res = _git("merge-base", "--is-ancestor", sha.split("+")[0], "HEAD")
    return res is not None and res.returncode == 0


def spent_seeds(registration: Path | None = None) -> set[int]:
    """:data:`SPENT_SEEDS`, every seed of a ledger in docs/ (``transfer-registration*-ledger.json``; committed
    or not, the strict side) and those of the ledger beside ``registration``."""
    ledgers = set((_ROOT / "docs").glob("transfer-registration*-ledger.json"))
    if registration is not None:
        ledgers.add(_ledger_path(registration))
    out = set(SPENT_SEEDS)
    for led in ledgers:
        if led.exists():
            out |= {int(x) for x in json.loads(led.read_text())["scored_seeds"]}
    return out


def git_sha(root: Path | None = None) -> str | None:
    """The checkout's HEAD commit (``+dirty`` when tracked files differ from it), or None outside git."""
    head = _git("rev-parse", "HEAD", root=root)
    if head is None or head.returncode != 0:
        return None
    dirty = _git("diff", "--quiet", "HEAD", root=root)
    if dirty is None:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode else "")


def register(
    choice: str,
    *,
    candidates: Sequence[str],
    path: Path = REGISTRATION,
    seeds: Sequence[int] = HELD_OUT_SEEDS,
    config: BenchConfig | None = None,
    run: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the registration: the candidates, the choice, the goal, the baselines, the held-out seeds, the
    settings (``config``: what generates; ``run``: what scores, :func:`run_settings`) and the code version
    (git SHA, :func:`scoring_sha256`).  Commit it before generating any held-out seed; an existing
    registration is kept unless ``force``; seeds already spent are refused."""
    from rganalysis.universality.transfer import COVERAGE_FORMULA, TRANSFER_FORMULA

    known = {**DISTANCES, **EXTRA_DISTANCES}
    for name in (choice, *candidates, *BASELINES):
        if name not in known:
            raise RegistrationError(f"unknown distance {name!r}; registered: {list(known)}")
    if not _in_docs(Path(path)):
        raise RegistrationError(
            f"{path}: a registration lives in {_ROOT / 'docs'} as transfer-registration*.json (where every "
            "held-out run finds its ledger)"
        )
    if Path(path).exists() and not force:
        raise RegistrationError(f"{path} exists: a registration is written once (--force replaces it)")
    again = sorted(set(map(int, seeds)) & spent_seeds(path))
    if again:
        raise RegistrationError(f"seeds {again} were held out and scored before: register fresh seeds")
    reg = {
        "benchmark_version": BENCH_VERSION,
        "choice": choice,
        "formula": TRANSFER_FORMULA
        if choice == "directed_units"
        else " ".join((known[choice].__doc__ or "").split())
        + (f" directed_units: {TRANSFER_FORMULA}" if choice.startswith("directed+") else "")
        + (f" coverage_units: {COVERAGE_FORMULA}" if choice.startswith("coverage") else ""),
        "candidates": {n: (known[n].__doc__ or "").strip() for n in candidates},
        "baselines": list(BASELINES),
        "ceilings": list(CEILINGS),
        "reported_beside": [n for n in DISTANCES if n not in (choice, *candidates)],
        "goal": GOAL,
        "calibration_seeds": list(CALIBRATION_SEEDS),
        "held_out_seeds": [int(x) for x in seeds],
        "config": (config or BenchConfig()).to_json(),
        "run": dict(run_settings() if run is None else run),
        "git_sha": git_sha(),
        "scoring_code": list(SCORING_CODE),
        "scoring_files": len(scoring_files()),
        "scoring_sha256": scoring_sha256(),
    }
    _write_json_atomic(Path(path), reg)
    return reg


def run_settings(
    archs: Sequence[str] = ARCH_NAMES,
    distances: Sequence[str] | None = None,
    n_perm: int = 2000,
    perm_seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """The settings of a run that are not the generation's (:class:`BenchConfig`) but change what it reports:
    the architectures scored, the distances reported beside the choice (None: all), the permutations per
    p-value and their seed, torch's threads (the numbers are defined at 1)."""
    return {
        "archs": list(archs),
        "distances": None if distances is None else list(distances),
        "n_perm": int(n_perm),
        "perm_seed": int(perm_seed),
        "threads": int(threads),
    }


def check_registration(
    seeds: Sequence[int],
    path: Path = REGISTRATION,
    config: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The registration that allows a held-out run of ``seeds`` under the settings ``config``
    (:meth:`BenchConfig.to_json`) and ``run`` (:func:`run_settings`), or :class:`RegistrationError`: none
    written, not committed, written on a commit that is not an ancestor of the checkout, the scoring code
    changed since, seeds it does not name, other settings than the registered ones, or seeds spent
    (:func:`spent_seeds`)."""
    path = Path(path)
    if not path.exists():
        raise RegistrationError(
            f"no registration at {path}: run `register` and commit it before any held-out generation"
        )
    if not _in_docs(path):
        raise RegistrationError(
            f"{path}: a registration that binds lives in {_ROOT / 'docs'} as transfer-registration*.json "
            "(where every run finds its ledger)"
        )
    if not registration_committed(path):
        raise RegistrationError(
            f"{path} is not committed as it is: a registration binds once it is in the history (commit it, "
            "unedited, before any held-out generation)"
        )
    reg = json.loads(path.read_text())
    if reg.get("git_sha") and not _is_ancestor(reg["git_sha"]):
        raise RegistrationError(
            f"the registration was written on {reg['git_sha'][:12]}, which is not an ancestor of this checkout"
        )
    now = scoring_sha256()
    if reg.get("scoring_sha256") != now:
        raise RegistrationError(
            f"the scoring code changed since the registration ({reg.get('scoring_sha256', '?')[:12]} registered, "
            f"{now[:12]} now): a held-out run scores the registered code only"
        )
    unnamed = sorted(set(seeds) - set(reg.get("held_out_seeds", [])))
    if unnamed:
        raise RegistrationError(
            f"seeds {unnamed} are not the registered held-out seeds {reg['held_out_seeds']}"
        )
    for what, given, registered in (
        ("settings", config, reg.get("config")),
        ("run settings", run, reg.get("run")),
    ):
        if given is None:
            continue
        if registered is None:
            raise RegistrationError(f"the registration fixes no {what}: register again")
        if dict(given) != registered:
            other = sorted(k for k in {*given, *registered} if given.get(k) != registered.get(k))
            raise RegistrationError(
                f"a held-out run uses the registered {what} only; this one differs in "
                + ", ".join(f"{k} ({given.get(k)!r}, registered {registered.get(k)!r})" for k in other)
            )
    again = sorted(set(seeds) & spent_seeds(path))
    if again:
        raise RegistrationError(
            f"held-out seeds {again} were scored already ({_ledger_path(path)} or a committed ledger): "
            "they are scored once"
        )
    return reg


def _ledger_path(registration: Path) -> Path:
    return Path(registration).with_name(Path(registration).stem + "-ledger.json")


def claim_seeds(seeds: Sequence[int], path: Path = REGISTRATION) -> None:
    """Spend ``seeds`` before their run: under an exclusive lock, refuse any already in the ledger beside the
    registration, else add them (commit the ledger with the results).  A run that fails later has still
    spent them; two runs started at once cannot both claim a seed."""
    import fcntl

    ledger = _ledger_path(path)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger.with_name(ledger.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entry = json.loads(ledger.read_text()) if ledger.exists() else {"scored_seeds": []}
        again = sorted(set(map(int, seeds)) & set(entry["scored_seeds"]))
        if again:
            raise RegistrationError(f"held-out seeds {again} were claimed by another run ({ledger})")
        entry["scored_seeds"] = sorted({*entry["scored_seeds"], *map(int, seeds)})
        entry.setdefault("runs", []).append(
            {"seeds": sorted(map(int, seeds)), "git_sha": git_sha(), "started": _now(), "finished": None}
        )
        _write_json_atomic(ledger, entry)


def record_scored(seeds: Sequence[int], path: Path = REGISTRATION) -> None:
    """Mark the run of ``seeds`` in the ledger as finished (they were spent by :func:`claim_seeds`)."""
    ledger = _ledger_path(path)
    entry = json.loads(ledger.read_text()) if ledger.exists() else {"scored_seeds": []}
    entry["scored_seeds"] = sorted({*entry["scored_seeds"], *map(int, seeds)})
    for run in reversed(entry.setdefault("runs", [])):
        if run["seeds"] == sorted(map(int, seeds)) and run["finished"] is None:
            run["finished"] = _now()
            break
    entry["git_sha"] = git_sha()
    _write_json_atomic(ledger, entry)


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ====================================================================================================
# command line
# ====================================================================================================
def _int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _str_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["generate", "score", "run", "calibrate", "register"],
        help="generate (flows and accuracies), score (distances and scores), run (both; default) or calibrate "
        "(the candidate distances on the calibration seeds)",
    )
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder (default bench-out)")
    p.add_argument(
        "--seeds",
        type=_int_list,
        default=None,
        help="comma-separated seeds (default: the calibration seeds 0,1; --quick: 0)",
    )
    p.add_argument("--held-out", action="store_true", help=f"allow the held-out seeds {HELD_OUT_SEEDS}")
    p.add_argument(
        "--archs", type=_str_list, default=list(ARCH_NAMES), help="comma-separated (default mlp,cnn)"
    )
    p.add_argument(
        "--distances",
        type=_str_list,
        default=None,
        help=f"comma-separated distance names (default all registered: {','.join(DISTANCES)})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="6 tasks, 4 rounds at rate 0.6, 8 epochs, seed 0 (under 2 minutes on 2 cores)",
    )
    p.add_argument("--rounds", type=int, default=None, help="IMP rounds (default 8; --quick 4)")
    p.add_argument("--rate", type=float, default=None, help="IMP rate per round (default 0.4; --quick 0.6)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training (default 20; --quick 8)")
    p.add_argument(
        "--tasks", type=_str_list, default=None, help=f"task subset (default all: {','.join(FULL_TASKS)})"
    )
    p.add_argument("--n-perm", type=int, default=2000, help="task permutations per p-value (default 2000)")
    p.add_argument("--perm-seed", type=int, default=0)
    p.add_argument(
        "--jobs", type=int, default=1, help="processes for generate, one (arch, seed) each (default 1)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process (default 1; numbers are defined at 1)",
    )
    p.add_argument("--force", action="store_true", help="regenerate even if a complete generation exists")
    p.add_argument("--no-figure", action="store_true")
    p.add_argument("--choice", default="directed_units", help="register: the chosen distance")
    p.add_argument(
        "--goal-for",
        default=None,
        help="score: check the goal for this distance (held-out: the registered one)",
    )
    p.add_argument(
        "--registration", type=Path, default=REGISTRATION, help=f"registration file (default {REGISTRATION})"
    )
    a = p.parse_args(argv)

    run = run_settings(a.archs, a.distances, a.n_perm, a.perm_seed, a.threads)
    if a.command == "register":
        cands = a.distances or list(DIRECTED_CANDIDATES)
        run["distances"] = None  # the candidates are what --distances names here; a held-out run reports all
        try:
            reg = register(a.choice, candidates=cands, path=a.registration, run=run, force=a.force)
        except RegistrationError as e:
            p.exit(2, f"register: {e}\n")
        print(f"registered {reg['choice']} for seeds {reg['held_out_seeds']} in {a.registration}: commit it")
        return 0
    seeds = a.seeds if a.seeds is not None else ([0] if a.quick else list(CALIBRATION_SEEDS))
    spent = sorted(set(seeds) & spent_seeds())
    if spent:
        p.error(f"seeds {spent} were held out before and scored once: they are spent")
    held = sorted(set(seeds) & set(HELD_OUT_SEEDS))
    if held and not a.held_out:
        p.error(
            f"seeds {held} are held out: they are run once, with the pre-registered distance (--held-out)"
        )
    if held and a.command != "run":
        p.error(
            f"held-out seeds {held} are run once, end to end (`run`): a `{a.command}` would spend them "
            "without scoring them, or score what another command generated"
        )
    unknown = [x for x in a.archs if x not in ARCHS]
    if unknown:
        p.error(f"unknown architectures {unknown}; known: {list(ARCHS)}")
    base = BenchConfig.quick() if a.quick else BenchConfig()
    over = {
        k: v
        for k, v in {
            "rounds": a.rounds,
            "rate": a.rate,
            "epochs": a.epochs,
            "tasks": tuple(a.tasks) if a.tasks else None,
        }.items()
        if v is not None
    }
    if "tasks" in over and any(t not in TASK_SPECS for t in over["tasks"]):
        p.error(f"unknown tasks; known: {list(TASK_SPECS)}")
    cal = sorted(set(seeds) & set(CALIBRATION_SEEDS))
    if cal and not a.quick:
        if len(cal) < len(seeds):
            p.error(
                f"calibration seeds {cal} run alone: their tasks exclude the families {HELD_OUT_FAMILIES}"
            )
        tasks = over.setdefault("tasks", CALIBRATION_TASKS)
        if any(TASK_SPECS[t].family in HELD_OUT_FAMILIES for t in tasks):
            p.error(
                f"the families {HELD_OUT_FAMILIES} are kept out of the calibration seeds {CALIBRATION_SEEDS}"
            )
    cfg = dataclasses.replace(base, **over)
    if held:  # before any generation: the registered code, seeds and settings, each seed once
        try:
            check_registration(held, a.registration, config=cfg.to_json(), run=run)
            claim_seeds(held, a.registration)
        except RegistrationError as e:
            p.exit(2, f"held-out: {e}\n")
    names = a.distances or list(DISTANCES)
    known = {**DISTANCES, **EXTRA_DISTANCES}
    if held:  # the registered choice is scored whatever --distances says
        choice = json.loads(Path(a.registration).read_text())["choice"]
        names = [choice, *(n for n in names if n != choice)]
    if any(n not in known for n in names):
        p.error(f"unknown distances; registered: {list(known)}")
    set_determinism(a.threads)
    t0 = time.perf_counter()
    if a.command in ("generate", "run"):
        print(
            f"generate: {len(cfg.tasks)} tasks x {len(a.archs)} architectures x seeds {seeds}; IMP {cfg.rounds} "
            f"rounds at rate {cfg.rate} (final density {(1 - cfg.rate) ** cfg.rounds:.4f}), {cfg.epochs} epochs",
            flush=True,
        )
        generate(a.out, seeds, a.archs, cfg, jobs=a.jobs, force=a.force, threads=a.threads)
    try:
        if a.command == "calibrate":
            calibrate(a.out, seeds, a.archs, n_perm=a.n_perm)
        if a.command in ("score", "run"):
            score(
                a.out,
                seeds,
                a.archs,
                {n: known[n] for n in names},
                n_perm=a.n_perm,
                perm_seed=a.perm_seed,
                figure=not a.no_figure,
                choice=names[0] if held else a.goal_for,
            )
    except (FileNotFoundError, RGAnalysisError) as e:  # no generation yet, a distance the flows lack
        p.exit(2, f"{a.command}: {e}\n")
    if held and a.command in ("score", "run"):
        record_scored(held, a.registration)
    print(f"\n{a.command} took {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ARCHS",
    "BenchConfig",
    "CALIBRATION_SEEDS",
    "DIRECTED_CANDIDATES",
    "DISTANCES",
    "DistanceFn",
    "EXTRA_DISTANCES",
    "FAMILIES",
    "GROUPS",
    "Generation",
    "HELD_OUT_SEEDS",
    "RegistrationError",
    "SPENT_SEEDS",
    "check_registration",
    "register",
    "scoring_sha256",
    "TASK_SPECS",
    "Task",
    "TaskSpec",
    "class_overlap",
    "combine",
    "directed_criterion",
    "generate",
    "generate_one",
    "load_generations",
    "make_tasks",
    "permutation_p",
    "permutations",
    "permuted_target_rhos",
    "random_mask",
    "register_distance",
    "rowwise_spearman",
    "score",
    "score_all",
    "score_group",
    "stable_seed",
    "target_rhos",
    "train_masked",
    "unit_degree_vector",
]
