"""Benchmark: Koopman / exact DMD of a 20-snapshot IMP flow of ResNet-50 and of BERT-base, from the store.

For each model (random init, no downloads) the benchmark *builds* a flow (not timed): the state dict
is ingested (``rganalysis.adapters.ingest``: ResNet-50 from a ``.pt`` state dict, BERT-base from a
``save_pretrained`` folder), ``compute_flow(pset, 19, 0.2)`` runs 19 data-free global IMP rounds
(20 snapshots) and the flow is saved as an HDF5 store in a temporary folder.

Then it *times* ``KoopmanDMD(rank=10, n_bags=100, device="cpu").fit(flow.h5)`` -- opening the store,
the streaming Gram pass that reads every tensor and its ``(round, ...)`` mask dataset from HDF5,
the DMD, and the 100 bags -- with both Gram passes (``--grams``): ``shortcut`` (the default of
``KoopmanDMD.fit``: a data-free flow's weights never change and its masks are nested, so each
tensor's Gram is a weighted histogram of how many rounds each weight survives, O(T N) byte
operations) and ``dense`` (``shortcut=False``: every tensor's (T, numel) float64 block is built and
multiplied out, O(T^2 N) flops -- what a flow whose weights change between rounds costs per
tensor), in a fresh child process per run (so that nothing is cached in
Python between runs; the file is in the OS page cache after the first run, and every run reads it
through HDF5 all the same).  ``--repeats`` runs per configuration; the median wall time is reported.

Peak extra memory (in the same child): after the imports and a warm-up fit on a tiny in-memory flow,
``malloc_trim(0)``, reset the kernel's peak-RSS counter (write ``5`` to ``/proc/self/clear_refs``),
note ``VmRSS``, run the fit, read the peak ``VmHWM``; the difference is the peak extra resident
memory of the call (tracemalloc would not see torch's allocations; page cache is not RSS).  The
maximum over the repeats is reported.

Snapshot subsets: ``prunable`` (the default of ``rganalysis koopman``: the tensors the flow prunes --
ResNet-50's 54 conv/linear weights, 25,502,912 parameters; BERT-base's 73 encoder/pooler linear
weights, 85,524,480) and ``all`` (every floating-point tensor: ResNet-50 25,610,152 incl. batch-norm
buffers; BERT-base 109,482,240 -- the "110M", embeddings included).

Targets (issue): under 60 s each on 2 CPU cores, peak extra memory under 2 GB for BERT-base.

Usage::

    python benchmarks/koopman.py [--models resnet50 bert-base] [--subsets prunable all] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TARGET_S = 60.0
TARGET_BYTES = 2 * 10**9


def build_flow(name: str, workdir: Path, rounds: int = 19, rate: float = 0.2) -> Path:
    """Ingest ``name`` (random init) and record ``rounds`` data-free IMP rounds; the flow's path."""
    from rganalysis.adapters import ingest
    from rganalysis.rg.flow import compute_flow

    out = workdir / f"{name}-flow.h5"
    if out.exists():
        return out
    torch.manual_seed(0)
    if name == "resnet50":
        import torchvision

        src = workdir / "resnet50.pt"
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), src)
    elif name == "bert-base":
        import transformers

        transformers.logging.set_verbosity_error()
        src = workdir / "bert-base"
        transformers.BertModel(transformers.BertConfig()).save_pretrained(src)
    else:
        raise SystemExit(f"unknown model {name!r}")
    t = time.perf_counter()
    pset = ingest(src)
    flow = compute_flow(pset, rounds, rate, device="cpu", progress=False)
    flow.save(out, progress=False)
    print(f"# built {out.name} in {time.perf_counter() - t:.1f} s (not timed)", file=sys.stderr, flush=True)
    if src.is_dir():
        shutil.rmtree(src)
    else:
        src.unlink()
    return out


# --- one timed fit, in a fresh process -----------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(path: str, subset: str, rank: int, bags: int, gram: str = "shortcut") -> dict:
    """Time KoopmanDMD.fit on ``path`` and measure its peak extra RSS (this process must be fresh)."""
    import numpy as np

    import rganalysis
    from rganalysis.koopman.dmd import KoopmanDMD

    torch.set_num_threads(torch.get_num_threads())
    # warm-up: imports, thread pool, LAPACK on a tiny problem
    KoopmanDMD(rank=2, n_bags=5, device="cpu").fit(np.random.default_rng(0).standard_normal((6, 50)))
    with rganalysis.load(path) as p:
        n_rounds = p.n_rounds
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS")
    t = time.perf_counter()
    dmd = KoopmanDMD(rank=rank, subset=subset, n_bags=bags, device="cpu", shortcut=gram == "shortcut").fit(
        path
    )
    dt = time.perf_counter() - t
    peak = _status("VmHWM")
    return {
        "seconds": dt,
        "extra_bytes": peak - before,
        "snapshots": n_rounds,
        "features": dmd.n_features_,
        "tensors": len(dmd.tensor_names_),
        "rank": dmd.rank_,
        "n_bags_used": dmd.n_bags_used_,
        "eigenvalues_abs": [float(abs(x)) for x in dmd.eigenvalues_],
        "b": dmd.b_,
    }


def run_child(path: Path, subset: str, rank: int, bags: int, gram: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(path),
        subset,
        "--rank",
        str(rank),
        "--bags",
        str(bags),
        "--grams",
        gram,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if res.returncode != 0:
        raise SystemExit(f"child failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "bert-base"])
    p.add_argument("--subsets", nargs="+", default=["prunable", "all"])
    p.add_argument(
        "--grams",
        nargs="+",
        default=["shortcut", "dense"],
        choices=("shortcut", "dense"),
        help="Gram pass: the exact O(T N) shortcut of data-free blocks (default of koopman_fit) "
        "and/or the dense O(T^2 N) path that flows whose weights change take",
    )
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--bags", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep the flows here (default: a temp folder, removed)"
    )
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--child", nargs=2, metavar=("FLOW", "SUBSET"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.rank, a.bags, a.grams[0])))
        return

    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rga-koopman-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = a.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}",
        flush=True,
    )
    results = []
    try:
        for model in a.models:
            path = build_flow(model, workdir)
            size = path.stat().st_size
            for subset in a.subsets:
                for gram in a.grams:
                    runs = []
                    for _ in range(a.repeats):
                        load_before = loadavg()
                        runs.append(run_child(path, subset, a.rank, a.bags, gram))
                        runs[-1]["loadavg_before"] = load_before
                    secs = [r["seconds"] for r in runs]
                    peak = max(r["extra_bytes"] for r in runs)
                    res = {
                        "model": model,
                        "subset": subset,
                        "gram": gram,
                        "store_MiB": size / 2**20,
                        "snapshots": runs[0]["snapshots"],
                        "features": runs[0]["features"],
                        "tensors": runs[0]["tensors"],
                        "rank": runs[0]["rank"],
                        "bags_used": runs[0]["n_bags_used"],
                        "seconds": secs,
                        "median_s": statistics.median(secs),
                        "peak_extra_MiB": peak / 2**20,
                        "time_vs_target": statistics.median(secs) / TARGET_S,
                        "memory_vs_target": peak / TARGET_BYTES,
                        "loadavg": [r["loadavg_before"] for r in runs],
                        "leading_abs_eigenvalues": runs[0]["eigenvalues_abs"][:4],
                        "b": runs[0]["b"],
                    }
                    results.append(res)
                    print(
                        f"{model:<10} {subset:<9} {gram:<8} T={res['snapshots']} N={res['features']:>11,} "
                        f"rank {res['rank']}: median {res['median_s']:6.2f} s "
                        f"({', '.join(f'{s:.2f}' for s in secs)}; {res['time_vs_target']:.2f} x 60 s), "
                        f"peak extra {res['peak_extra_MiB']:7.1f} MiB ({res['memory_vs_target']:.2f} x 2 GB); "
                        f"load avg before runs {res['loadavg']}",
                        flush=True,
                    )
    finally:
        if tmp is not None:
            tmp.cleanup()
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
