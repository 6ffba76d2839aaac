"""Benchmark: one global coarse-graining round, rganalysis vs ``torch.nn.utils.prune``.

For each model (random init, no downloads) the prunable weights are pruned once at ``--rate``,
globally by magnitude, by

* ours: ``coarse_grain(state, rate)`` on ``state = State.dense(weights)`` (radix select,
  :mod:`rganalysis.rg.coarse_graining`).  The speed-up is given for the ``coarse_grain`` call (the round)
  and, more conservatively, for ``State.dense`` (allocating the all-True input masks) plus the
  call, since the baseline's time includes making its masks; and
* the baseline: ``prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
  amount=rate)`` on a fresh deep copy of the model (the copy is not timed),

interleaved (baseline, ours x3, baseline, ours x3, ...) so that load on the machine hits both alike;
the median (and minimum) over ``--repeats`` baseline runs and ``3 * --repeats`` runs of ours is
reported, with the ratio baseline / ours.  (Ours is short, so a burst of load from other processes
hits one of its runs much harder than one of the baseline's: three samples per repeat.)  Both must
prune the same weights (magnitudes of random-init weights are distinct); the script counts the
masks' differences.  Ours is also timed on the second round (a pruned input), alone.

The floor: one read pass over the same prunable weights, ``sum(w.abs().sum() for w in weights)``,
timed in the same interleaved loop (once per run of ours); each round is printed as a multiple of
it, on wall time and, on CPU, on the process's CPU time (``time.process_time``: what the round
costs whatever else the machine runs; wall time on a loaded machine also counts waiting for a core).
``--device auto`` (the default) runs everything on CUDA when present (times synchronised), else CPU.

Peak extra memory is measured in a fresh subprocess per method: build the model (and, for ours, the
input State), ``malloc_trim(0)``, reset the kernel's peak-RSS counter (write ``5`` to
``/proc/self/clear_refs``), note ``VmRSS``, run one round, read the peak ``VmHWM``.  The difference
is the peak extra resident memory of the call, outputs included (for ours: the new bool masks, one
byte per weight = 0.25x a float32 model), reported as a fraction of the prunable weights' bytes.
(tracemalloc does not see torch's allocations, hence RSS.)

With ``--flow ROUNDS`` (ResNet-50 only) the script also times ``rganalysis flow STORE --rounds ROUNDS``
end to end (a fresh ``python -m rganalysis`` process, best and median of ``--repeats``) on a store
ingested from the model's checkpoint, against its floor, measured in the same run: ``ROUNDS`` read passes
over the prunable weights plus writing the flow's masks (one ``uint8`` survival count per weight, with
h5py, to a new file).  The command's start-up (``python -c "import torch, rganalysis.cli"``) is timed
too and the ratio given with and without it; and ``compute_flow`` + ``save`` in this process.

Models
------
``resnet50``   torchvision ResNet-50, ``weights=None``; prunable = every Conv2d and Linear weight
               (25,502,912 weights, float32).
``bert-base``  transformers ``BertModel(BertConfig())`` (base size), random init; prunable = the
               nn.Linear weights of the encoder and the pooler (85,524,480 weights); the embeddings
               are *not* included unless ``--embeddings`` (then + word, position and token-type
               embeddings: 109,360,128 weights).

Usage::

    PYTHONPATH=. python benchmarks/coarse_grain.py [--models resnet50 bert-base] [--repeats 7] [--threads N]
        [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch.nn.utils import prune

from rganalysis.rg.coarse_graining import coarse_grain
from rganalysis.store.state import State, resolve_device

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


OURS_PER_REPEAT = 3  # ours is short: sample it 3 times per baseline run


def build(name: str, embeddings: bool = False) -> tuple[torch.nn.Module, list[tuple[str, torch.nn.Module]]]:
    """The model and its prunable (qualified name, module) pairs, each pruned at ``.weight``."""
    torch.manual_seed(0)
    if name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None)
    elif name == "bert-base":
        import transformers

        transformers.logging.set_verbosity_error()
        model = transformers.BertModel(transformers.BertConfig())
    else:
        raise SystemExit(f"unknown model {name!r}")
    model.eval()
    return model, build_mods(model, name, embeddings)


def weights_of(mods: list[tuple[str, torch.nn.Module]]) -> dict[str, torch.Tensor]:
    return {f"{n}.weight": m.weight.detach() for n, m in mods}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(weights: dict[str, torch.Tensor], rate: float) -> tuple[float, float, float, State]:
    """(seconds for State.dense + coarse_grain, seconds for coarse_grain alone, CPU seconds of the
    process for coarse_grain alone, the result)."""
    dev = next(iter(weights.values())).device
    _sync(dev)
    t0 = time.perf_counter()
    state = State.dense(weights)
    _sync(dev)
    t1, c1 = time.perf_counter(), time.process_time()
    out = coarse_grain(state, rate)
    _sync(dev)
    t2, c2 = time.perf_counter(), time.process_time()
    return t2 - t0, t2 - t1, c2 - c1, out


def run_floor(weights: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one read pass over the weights: ``sum(|w|.sum())``."""
    dev = next(iter(weights.values())).device
    _sync(dev)
    t, c = time.perf_counter(), time.process_time()
    total = sum(w.abs().sum() for w in weights.values())
    float(total)  # waits for the device
    return time.perf_counter() - t, time.process_time() - c


def run_baseline(model: torch.nn.Module, name: str, rate: float, embeddings: bool) -> tuple[float, dict]:
    model = copy.deepcopy(model)
    mods = [m for n, m in build_mods(model, name, embeddings)]
    gc.collect()
    dev = mods[0].weight.device
    _sync(dev)
    t = time.perf_counter()
    prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured, amount=rate)
    _sync(dev)
    dt = time.perf_counter() - t
    return dt, {n: m.weight_mask for n, m in build_mods(model, name, embeddings)}


def build_mods(model: torch.nn.Module, name: str, embeddings: bool) -> list[tuple[str, torch.nn.Module]]:
    """The prunable modules of an existing model (same selection as :func:`build`)."""
    if name == "resnet50":
        return [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    mods = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith(("encoder.", "pooler."))
    ]
    if embeddings:
        mods = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)] + mods
    return mods


# --- memory, in a fresh process ------------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(name: str, method: str, rate: float, embeddings: bool) -> dict:
    """Peak extra RSS (bytes) of one round, measured in this (fresh) process."""
    model, mods = build(name, embeddings)
    weights = weights_of(mods)
    model_bytes = sum(w.numel() * w.element_size() for w in weights.values())
    state = State.dense(weights) if method == "ours" else None
    if method == "ours":  # warm the code paths (imports, thread pool) on a tiny input
        coarse_grain(State.dense({"w": torch.randn(1000)}), rate)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    if method == "ours":
        out = coarse_grain(state, rate)
    else:
        prune.global_unstructured(
            [(m, "weight") for _, m in mods], pruning_method=prune.L1Unstructured, amount=rate
        )
        out = None
    peak = _status("VmHWM")
    del out
    return {"extra_bytes": peak - before, "model_bytes": model_bytes}


def memory(name: str, method: str, rate: float, embeddings: bool) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", name, method, "--rate", str(rate)]
    cmd += ["--threads", str(torch.get_num_threads())]
    if embeddings:
        cmd.append("--embeddings")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- a whole flow, end to end ----------------------------------------------------------------------
def bench_flow(rounds: int, rate: float, repeats: int, device: torch.device) -> dict:
    """``rganalysis flow`` of ``rounds`` rounds on ResNet-50 against ``rounds`` floor passes plus
    writing the masks (see the module docstring)."""
    import tempfile

    import h5py
    import numpy as np

    from rganalysis.rg.flow import compute_flow
    from rganalysis.store import load

    load_start = os.getloadavg()
    model, mods = build("resnet50")
    weights = {k: w.to(device) for k, w in weights_of(mods).items()}
    with tempfile.TemporaryDirectory() as d:
        ckpt, store = os.path.join(d, "r50.pth"), os.path.join(d, "r50.h5")
        torch.save(model.state_dict(), ckpt)
        py = [sys.executable, "-m", "rganalysis"]
        subprocess.run([*py, "ingest", ckpt, "-o", store, "-q"], check=True, capture_output=True)
        cmd = [*py, "flow", store, "--rounds", str(rounds), "--rate", str(rate), "-q", "--force"]
        cmd += ["--device", str(device), "-o", os.path.join(d, "flow.h5")]
        survival = {k: np.zeros(w.shape, dtype=np.uint8) for k, w in weights.items()}
        cli_t, start_t, floor_t, inproc_t = [], [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            cli_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch, rganalysis.cli"], check=True)
            start_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(rounds):
                run_floor(weights)
            with h5py.File(os.path.join(d, "floor.h5"), "w") as f:
                for k, v in survival.items():
                    f.create_dataset(k, data=v)
            floor_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            compute_flow(load(store), rounds, rate, device=device, progress=False).save(
                os.path.join(d, "inproc.h5"), force=True, progress=False
            )
            inproc_t.append(time.perf_counter() - t)
    med = statistics.median
    return {
        "rounds": rounds,
        "device": str(device),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "cli_s": cli_t,
        "startup_s": start_t,
        "floor_s": floor_t,
        "in_process_s": inproc_t,
        "cli_over_floor": med(cli_t) / med(floor_t),
        "cli_minus_startup_over_floor": (med(cli_t) - med(start_t)) / med(floor_t),
        "in_process_over_floor": med(inproc_t) / med(floor_t),
    }


# --- main ----------------------------------------------------------------------------------------
def bench(name: str, rate: float, repeats: int, embeddings: bool, device: torch.device) -> dict:
    load_start = os.getloadavg()
    model, mods = build(name, embeddings)
    model.to(device)
    weights = weights_of(mods)
    n = sum(w.numel() for w in weights.values())
    run_ours(weights, rate)  # warm-up (imports, thread pool)
    run_floor(weights)
    base_t, ours_t, ours_cg_t, ours_cpu, floor_t, floor_cpu = [], [], [], [], [], []
    for _ in range(repeats):
        dt, base_masks = run_baseline(model, name, rate, embeddings)
        base_t.append(dt)
        gc.collect()
        for _ in range(OURS_PER_REPEAT):
            ft, fc = run_floor(weights)
            floor_t.append(ft)
            floor_cpu.append(fc)
            dt, dt_cg, dc, ours = run_ours(weights, rate)
            ours_t.append(dt)
            ours_cg_t.append(dt_cg)
            ours_cpu.append(dc)
    second_t, second_cpu = [], []  # ours on a pruned state (round 1 -> 2): the masking code paths
    for _ in range(repeats * OURS_PER_REPEAT):
        ft, fc = run_floor(weights)
        floor_t.append(ft)
        floor_cpu.append(fc)
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        coarse_grain(ours, rate)
        _sync(device)
        second_t.append(time.perf_counter() - t)
        second_cpu.append(time.process_time() - c)
    mismatch = sum(int((ours.masks[f"{k}.weight"] != base_masks[k].bool()).sum()) for k in base_masks)
    removed = n - sum(int(torch.count_nonzero(m)) for m in ours.masks.values())
    med = statistics.median
    res = {
        "model": name,
        "device": str(device),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "floor_s": floor_t,
        "floor_median_s": med(floor_t),
        "floor_cpu_median_s": med(floor_cpu),
        "first_round_over_floor": med(ours_cg_t) / med(floor_t),
        "second_round_over_floor": med(second_t) / med(floor_t),
        "first_round_over_floor_cpu": med(ours_cpu) / med(floor_cpu),
        "second_round_over_floor_cpu": med(second_cpu) / med(floor_cpu),
        "prunable_weights": n,
        "layers": len(weights),
        "removed": removed,
        "expected_removed": round(rate * n),
        "mask_mismatches_vs_baseline": mismatch,
        "baseline_s": base_t,
        "ours_s": ours_t,
        "baseline_median_s": statistics.median(base_t),
        "ours_median_s": statistics.median(ours_t),
        "ours_coarse_grain_only_s": ours_cg_t,
        "ours_coarse_grain_only_median_s": statistics.median(ours_cg_t),
        "ours_second_round_s": second_t,
        "ours_second_round_median_s": statistics.median(second_t),
    }
    res["speedup"] = res["baseline_median_s"] / res["ours_coarse_grain_only_median_s"]
    res["speedup_with_state_dense"] = res["baseline_median_s"] / res["ours_median_s"]
    for method in ("ours", "baseline"):
        if device.type != "cpu":  # peak RSS says nothing about device memory
            continue
        mem = memory(name, method, rate, embeddings)
        res[f"{method}_peak_extra_MiB"] = mem["extra_bytes"] / 2**20
        res[f"{method}_peak_extra_fraction"] = mem["extra_bytes"] / mem["model_bytes"]
        res["model_MiB"] = mem["model_bytes"] / 2**20
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "bert-base"])
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--embeddings", action="store_true", help="BERT: prune the embeddings too")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for both methods (default: torch's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, ...")
    p.add_argument("--flow", type=int, metavar="ROUNDS", help="also time `rganalysis flow` of ROUNDS rounds")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--memory-child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.memory_child:
        print(json.dumps(memory_child(*a.memory_child, a.rate, a.embeddings)))
        return
    load = os.getloadavg()
    device = resolve_device(a.device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"# device {device}{gpu}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    results = []
    for name in a.models:
        r = bench(name, a.rate, a.repeats, a.embeddings, device)
        results.append(r)
        print(
            f"{name}: {r['prunable_weights']:,} weights in {r['layers']} layers, removed {r['removed']:,} "
            f"(round(rate*N) = {r['expected_removed']:,}), masks differing from baseline: "
            f"{r['mask_mismatches_vs_baseline']}"
        )
        print(
            f"  baseline global_unstructured: median {r['baseline_median_s'] * 1e3:.0f} ms  "
            f"({', '.join(f'{t * 1e3:.0f}' for t in r['baseline_s'])})"
        )
        print(
            f"  ours State.dense+coarse_grain: median {r['ours_median_s'] * 1e3:.1f} ms  "
            f"({', '.join(f'{t * 1e3:.1f}' for t in r['ours_s'])})"
        )
        print(f"    of which coarse_grain alone: median {r['ours_coarse_grain_only_median_s'] * 1e3:.1f} ms")
        print(
            f"  ours, second round (masked input, not timed against the baseline): median "
            f"{r['ours_second_round_median_s'] * 1e3:.1f} ms"
        )
        print(
            f"  speed-up (baseline / coarse_grain): {r['speedup']:.1f}x on medians, "
            f"{min(r['baseline_s']) / min(r['ours_coarse_grain_only_s']):.1f}x on minima; "
            f"counting State.dense too: {r['speedup_with_state_dense']:.1f}x on medians (target >= 25x)"
        )
        print(
            f"  floor (one read pass, sum |w|): median {r['floor_median_s'] * 1e3:.1f} ms; round / floor: "
            f"first {r['first_round_over_floor']:.2f}x, second {r['second_round_over_floor']:.2f}x (target <= 3x)"
            + (
                f"; on CPU time: first {r['first_round_over_floor_cpu']:.2f}x, "
                f"second {r['second_round_over_floor_cpu']:.2f}x"
                if device.type == "cpu"
                else ""
            )
        )
        print(
            f"  load average {r['load_average_start'][0]:.2f} -> {r['load_average_end'][0]:.2f} during {name}"
        )
        if device.type != "cpu":
            continue
        print(
            f"  peak extra memory: ours {r['ours_peak_extra_MiB']:.1f} MiB = {r['ours_peak_extra_fraction']:.3f}x "
            f"the {r['model_MiB']:.1f} MiB of prunable weights (baseline {r['baseline_peak_extra_MiB']:.1f} MiB "
            f"= {r['baseline_peak_extra_fraction']:.2f}x)"
        )
    if a.flow:
        r = bench_flow(a.flow, a.rate, a.repeats, device)
        results.append({"flow": r})
        ms = lambda xs: f"median {statistics.median(xs):.2f} s (best {min(xs):.2f})"  # noqa: E731
        print(f"rganalysis flow, ResNet-50, {a.flow} rounds, device {r['device']}:")
        print(
            f"  command end to end {ms(r['cli_s'])}; its start-up (import torch, rganalysis.cli) {ms(r['startup_s'])}"
        )
        print(f"  floor ({a.flow} read passes + writing the survival masks) {ms(r['floor_s'])}")
        print(f"  compute_flow + save in this process {ms(r['in_process_s'])}")
        print(
            f"  flow / floor: {r['cli_over_floor']:.2f}x end to end, {r['cli_minus_startup_over_floor']:.2f}x "
            f"without the start-up, {r['in_process_over_floor']:.2f}x in process (target <= 3x); load average "
            f"{r['load_average_start'][0]:.2f} -> {r['load_average_end'][0]:.2f}"
        )
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
