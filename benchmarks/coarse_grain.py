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

Peak extra memory is measured in a fresh subprocess per method: build the model (and, for ours, the
input State), ``malloc_trim(0)``, reset the kernel's peak-RSS counter (write ``5`` to
``/proc/self/clear_refs``), note ``VmRSS``, run one round, read the peak ``VmHWM``.  The difference
is the peak extra resident memory of the call, outputs included (for ours: the new bool masks, one
byte per weight = 0.25x a float32 model), reported as a fraction of the prunable weights' bytes.
(tracemalloc does not see torch's allocations, hence RSS.)

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
from rganalysis.store.state import State

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


def run_ours(weights: dict[str, torch.Tensor], rate: float) -> tuple[float, float, State]:
    """(seconds for State.dense + coarse_grain, seconds for coarse_grain alone, the result)."""
    t0 = time.perf_counter()
    state = State.dense(weights)
    t1 = time.perf_counter()
    out = coarse_grain(state, rate)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1, out


def run_baseline(model: torch.nn.Module, name: str, rate: float, embeddings: bool) -> tuple[float, dict]:
    model = copy.deepcopy(model)
    mods = [m for n, m in build_mods(model, name, embeddings)]
    gc.collect()
    t = time.perf_counter()
    prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured, amount=rate)
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


# --- main ----------------------------------------------------------------------------------------
def bench(name: str, rate: float, repeats: int, embeddings: bool) -> dict:
    model, mods = build(name, embeddings)
    weights = weights_of(mods)
    n = sum(w.numel() for w in weights.values())
    run_ours(weights, rate)  # warm-up (imports, thread pool)
    base_t, ours_t, ours_cg_t = [], [], []
    for _ in range(repeats):
        dt, base_masks = run_baseline(model, name, rate, embeddings)
        base_t.append(dt)
        gc.collect()
        for _ in range(OURS_PER_REPEAT):
            dt, dt_cg, ours = run_ours(weights, rate)
            ours_t.append(dt)
            ours_cg_t.append(dt_cg)
    second_t = []  # ours on a pruned state (round 1 -> 2): the masking code paths
    for _ in range(repeats):
        t = time.perf_counter()
        coarse_grain(ours, rate)
        second_t.append(time.perf_counter() - t)
    mismatch = sum(int((ours.masks[f"{k}.weight"] != base_masks[k].bool()).sum()) for k in base_masks)
    removed = n - sum(int(torch.count_nonzero(m)) for m in ours.masks.values())
    res = {
        "model": name,
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
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--memory-child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.memory_child:
        print(json.dumps(memory_child(*a.memory_child, a.rate, a.embeddings)))
        return
    load = os.getloadavg()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average at start {load[0]:.2f}"
    )
    results = []
    for name in a.models:
        r = bench(name, a.rate, a.repeats, a.embeddings)
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
            f"counting State.dense too: {r['speedup_with_state_dense']:.1f}x on medians"
        )
        print(
            f"  peak extra memory: ours {r['ours_peak_extra_MiB']:.1f} MiB = {r['ours_peak_extra_fraction']:.3f}x "
            f"the {r['model_MiB']:.1f} MiB of prunable weights (baseline {r['baseline_peak_extra_MiB']:.1f} MiB "
            f"= {r['baseline_peak_extra_fraction']:.2f}x)"
        )
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
