"""The response Jacobian of real IMP on the transfer benchmark's flows (examples/transfer_benchmark.py).

For every flow of the chosen (seed, architecture, task), :func:`rganalysis.response_jacobian` perturbs the
ticket's mask (the last round by default) along the leading directions of the flow's unit couplings,
applies one full IMP step to every perturbed state -- rewind to the benchmark's ``theta_0``, retrain with
the benchmark's own ``train_masked`` (Adam, same epochs, batch size and learning rate) with each seed,
prune globally at the flow's rate -- and regresses the couplings after the step on those before.  Seed 0
is the flow's own mini-batch order (so the unperturbed state retrains to the flow's ticket bit for bit);
seeds 1, 2, ... are new orders.

The benchmark's flows are read from ``--src`` and *copied* to ``--out`` (with their generation records)
before the ``/response`` group is written into the copies: the source folder is never written.  Then
``examples/transfer_benchmark.py score --out OUT ...`` scores distances on the copies, including the
registered ``response_spectrum`` distance.

Run::

    python examples/response_jacobian.py --src bench-out-heldout --out bench-response --seeds 2,3,4 \\
        --archs mlp,cnn --workers 2

Each flow's timing goes to ``OUT/response_timing.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import transfer_benchmark as tb  # noqa: E402

import rganalysis  # noqa: E402
from rganalysis.errors import RGAnalysisError  # noqa: E402
from rganalysis.fit.response_store import read_response  # noqa: E402

_CACHE: dict[tuple, Any] = {}


def bench_train(
    weights: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    seed: int,
    *,
    arch: str,
    bench_seed: int,
    task: str,
    config: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """The benchmark's retraining of one IMP round, with a training seed: ``train(weights, masks, seed=s)``.

    ``weights``: the rewind point's pruned tensors, ``masks``: their masks.  Rebuilds the task's data and
    ``theta_0`` once per process (cached), trains with :func:`transfer_benchmark.train_masked` from
    ``theta_0`` with the masked weights, mini-batch order of seed 0 = the flow's own, of seed s > 0 a new one.
    """
    tb.set_determinism(1)
    cfg = tb.BenchConfig.from_json(config)
    key = (arch, bench_seed, task, cfg.key())
    if key not in _CACHE:
        data = tb.make_tasks([task], bench_seed, cfg.noise_sigma, cfg.blur_sigma, cfg.test_size)[task]
        _CACHE[key] = (data, tb.rewind_point(arch, bench_seed), tb.ARCHS[arch]())
    data, theta0, model = _CACHE[key]
    init = dict(theta0)  # biases rewound too, as in the benchmark's IMP
    init.update({k: (w * masks[k]).cpu() for k, w in weights.items()})
    cpu_masks = {k: m.cpu() for k, m in masks.items()}
    tseed = (
        tb.stable_seed("train", bench_seed, task)
        if int(seed) == 0
        else tb.stable_seed("response", bench_seed, task, seed)
    )
    sd, _ = tb.train_masked(model, init, cpu_masks, data, seed=tseed, **cfg.train_kw())
    return {k: sd[k] for k in weights}


def copy_generation(src: Path, out: Path, arch: str, seed: int) -> dict[str, Any]:
    """Copy ``SRC/seed_S/ARCH`` (generation.json and flows) to ``OUT`` unless already there; the record."""
    s, d = tb.generation_dir(src, arch, seed), tb.generation_dir(out, arch, seed)
    rec = json.loads((s / "generation.json").read_text())
    (d / "flows").mkdir(parents=True, exist_ok=True)
    for t in rec["tasks"]:
        if not (d / "flows" / f"{t}.h5").exists():
            shutil.copy2(s / "flows" / f"{t}.h5", d / "flows" / f"{t}.h5")
    if not (d / "generation.json").exists():
        shutil.copy2(s / "generation.json", d / "generation.json")
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, required=True, help="the benchmark's output folder (read only)")
    p.add_argument("--out", type=Path, required=True, help="where the flows are copied and written")
    p.add_argument("--seeds", default="2,3,4")
    p.add_argument("--archs", default="mlp")
    p.add_argument("--tasks", default=None, help="comma-separated subset (default: all of the generation)")
    p.add_argument("--directions", type=int, default=10)
    p.add_argument("--train-seeds", type=int, default=3)
    p.add_argument("--epsilon", type=float, default=0.05)
    p.add_argument("--couplings", default="unit")
    p.add_argument("--round", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="local processes (1: serially in this process)")
    p.add_argument("--force", action="store_true", help="measure again where a /response group exists")
    a = p.parse_args(argv)
    seeds = [int(x) for x in a.seeds.split(",")]
    archs = [x.strip() for x in a.archs.split(",") if x.strip()]
    timing_path = a.out / "response_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    t_all = time.perf_counter()
    for seed in seeds:
        for arch in archs:
            rec = copy_generation(a.src, a.out, arch, seed)
            asked = None if a.tasks is None else [t.strip() for t in a.tasks.split(",") if t.strip()]
            missing = sorted(set(asked or ()) - set(rec["tasks"]))
            if missing:
                p.error(
                    f"tasks {missing} are not in the {arch} seed {seed} generation; it has {rec['tasks']}"
                )
            tasks = [t for t in rec["tasks"] if asked is None or t in asked]
            for task in tasks:
                path = tb.generation_dir(a.out, arch, seed) / "flows" / f"{task}.h5"
                if not a.force and read_response(path) is not None:
                    print(f"[{arch} seed {seed}] {task}: response found, skipped", flush=True)
                    continue
                train = partial(bench_train, arch=arch, bench_seed=seed, task=task, config=rec["config"])
                t0 = time.perf_counter()
                try:
                    est = rganalysis.response_jacobian(
                        str(path),
                        train,
                        round=a.round,
                        couplings=tuple(a.couplings.split(",")),
                        directions=a.directions,
                        epsilon=a.epsilon,
                        seeds=a.train_seeds,
                        scheduler="sync" if a.workers <= 1 else "processes",
                        n_workers=a.workers,
                        device="cpu",
                        progress=False,
                    )
                except RGAnalysisError as e:  # reported and recorded; the other flows go on
                    print(f"[{arch} seed {seed}] {task}: FAILED: {e}", flush=True)
                    timing[f"{arch}/seed_{seed}/{task}"] = {"failed": str(e)}
                    timing_path.write_text(json.dumps(timing, indent=1))
                    continue
                wall = time.perf_counter() - t0
                lam = ", ".join(f"{abs(z):.3f}" for z in est.eigenvalues_[:4])
                print(
                    f"[{arch} seed {seed}] {task:<10} {est.n_retrains_} retrains in {wall:.0f} s "
                    f"(retrain sum {est.retrain_seconds_:.0f} s); |lambda| {lam} ...; floor "
                    f"{est.noise_floor_:.3f}; classes {est.classes_[:4]}",
                    flush=True,
                )
                timing[f"{arch}/seed_{seed}/{task}"] = {
                    "wall_s": wall,
                    "retrain_s": est.retrain_seconds_,
                    "n_retrains": est.n_retrains_,
                    "directions": int(est.directions_.shape[0]),
                    "seeds": a.train_seeds,
                    "workers": a.workers,
                }
                timing_path.write_text(json.dumps(timing, indent=1))
    print(f"done in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
