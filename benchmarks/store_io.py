"""Benchmark: store I/O against torch's own checkpoint I/O, measured in the same run.

For each model (random init, no downloads; its state dict saved once with ``torch.save`` as the
checkpoint) the script times, interleaved (baseline, ours, baseline, ours, ...), in this process after
one warm-up of each:

* write: ``ingest(ckpt)`` + ``ParameterSet.save(store)`` (ours) against
  ``torch.load(ckpt, weights_only=True)`` + ``torch.save(state_dict, file)`` (baseline);
* read: ``load(store)`` + reading every tensor back (``to_state_dict()``: every tensor read and checked
  on its first read: CRC-32, finite values) against ``torch.load(ckpt, weights_only=True)``.

and reports medians (and minima) and the ratios ours / baseline.  Files live in ``--dir`` (page cache
warm after the warm-up, for both).  Then, each in fresh processes:

* CLI peak memory: ``rganalysis ingest CKPT -o STORE`` against ``torch.load(CKPT, weights_only=True)``; each
  child first imports ``rganalysis`` and ``torch``, then ``malloc_trim(0)``, resets the kernel's peak-RSS counter
  (writes ``5`` to ``/proc/self/clear_refs``) and notes ``VmRSS``; the peak ``VmHWM`` after the work
  minus that is its peak extra memory; the CLI's extra above the baseline's, as a fraction of the
  checkpoint's size, is the figure of merit (target <= 1);
* ``rganalysis info`` wall time (``python -m rganalysis info``, median of ``--repeats``) on the
  ResNet-50 store and on a ``--rounds``-round data-free flow of it (computed here), and the time of
  ``import rganalysis.cli``;
* masks of that flow: bytes on disk per weight per round (survival rounds, and the same flow written
  with the round-by-round fallback encoding), and the time to read one round's masks of every pruned
  tensor, per round (median over rounds), and all rounds at once (``read_masks``);
* parallel ingest: a sweep of ``--sweep`` ResNet-18 checkpoints and a ResNet-18 IMP ticket series of
  ``--series`` states, ``rganalysis ingest`` serially and with ``--workers 2`` (wall time of the command),
  the stores compared dataset by dataset.

Models
------
``resnet50``   torchvision ResNet-50, ``weights=None`` (320 tensors, 102.5 MB checkpoint).
``bert-base``  transformers ``BertModel(BertConfig())`` (base size), random init (199 tensors, 438 MB).

Usage::

    PYTHONPATH=. python benchmarks/store_io.py [--models resnet50 bert-base] [--repeats 5] [--rounds 20]
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

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    if name == "resnet50":
        import torchvision

        return torchvision.models.resnet50(weights=None).state_dict()
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18(weights=None).state_dict()
    if name == "bert-base":
        import transformers

        transformers.logging.set_verbosity_error()
        return transformers.BertModel(transformers.BertConfig()).state_dict()
    raise SystemExit(f"unknown model {name!r}")


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


# --- write and read, in this process -----------------------------------------------------------------
def bench_io(name: str, d: Path, repeats: int) -> dict:
    import rganalysis
    from rganalysis.adapters import ingest

    ckpt = d / f"{name}.pth"
    torch.save(build(name), ckpt)
    store, copy = d / f"{name}.h5", d / f"{name}-copy.pt"

    def base_write() -> float:
        t = time.perf_counter()
        sd = torch.load(ckpt, weights_only=True)
        torch.save(sd, copy)
        return time.perf_counter() - t

    def ours_write() -> float:
        t = time.perf_counter()
        ingest(ckpt).save(store, force=True, progress=False)
        return time.perf_counter() - t

    def base_read() -> float:
        t = time.perf_counter()
        torch.load(ckpt, weights_only=True)
        return time.perf_counter() - t

    def ours_read() -> float:
        t = time.perf_counter()
        with rganalysis.load(store) as p:
            p.to_state_dict()
        return time.perf_counter() - t

    fns = {"base_write": base_write, "ours_write": ours_write, "base_read": base_read, "ours_read": ours_read}
    for f in fns.values():  # warm-up: imports, page cache
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            gc.collect()
            times[k].append(f())
    with rganalysis.load(store) as p:  # bit-exact round trip
        got = p.to_state_dict()
    want = torch.load(ckpt, weights_only=True)
    exact = list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    res = {
        "model": name,
        "checkpoint_bytes": ckpt.stat().st_size,
        "store_bytes": store.stat().st_size,
        "tensors": len(want),
        "bit_exact": exact,
        "times_s": times,
    }
    for k in fns:
        res[f"{k}_median_s"] = _med(times[k])
    res["write_ratio"] = res["ours_write_median_s"] / res["base_write_median_s"]
    res["read_ratio"] = res["ours_read_median_s"] / res["base_read_median_s"]
    res["write_ratio_min"] = min(times["ours_write"]) / min(times["base_write"])
    res["read_ratio_min"] = min(times["ours_read"]) / min(times["base_read"])
    return res


# --- peak memory of the CLI, in fresh processes --------------------------------------------------------
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(method: str, ckpt: str, out: str) -> dict:
    import rganalysis  # noqa: F401 - the baseline's imports, for both

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    if method == "cli":
        from rganalysis.cli import main

        rc = main(["ingest", ckpt, "-o", out, "-q", "--force"])
        assert rc == 0
    else:
        sd = torch.load(ckpt, weights_only=True)
        del sd
    return {"extra_bytes": _status("VmHWM") - before}


def memory(method: str, ckpt: Path, out: Path) -> int:
    cmd = [sys.executable, __file__, "--memory-child", method, str(ckpt), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["extra_bytes"]


# --- info, masks ----------------------------------------------------------------------------------------
def wall(cmd: list[str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - t)
    return out


def bench_masks(model_store: Path, d: Path, rounds: int, repeats: int) -> dict:
    import h5py

    import rganalysis
    import rganalysis.store.parameter_set as ps
    from rganalysis.rg.flow import compute_flow

    flow_path = d / f"flow{rounds}.h5"
    fallback_path = d / f"flow{rounds}-per-round.h5"
    t = time.perf_counter()
    with rganalysis.load(model_store) as p:
        flow = compute_flow(p, rounds, 0.2, device="cpu", progress=False)
        t_flow = time.perf_counter() - t
        t = time.perf_counter()
        flow.save(flow_path, force=True, progress=False)
        t_save = time.perf_counter() - t
        real = ps.ParameterSet.survival_array
        ps.ParameterSet.survival_array = lambda self, name: None  # the fallback: masks round by round
        try:
            t = time.perf_counter()
            flow.save(fallback_path, force=True, progress=False)
            t_save_fallback = time.perf_counter() - t
        finally:
            ps.ParameterSet.survival_array = real
    res = {
        "rounds": rounds + 1,
        "flow_compute_s": t_flow,
        "save_s": t_save,
        "save_fallback_s": t_save_fallback,
    }
    for label, path in (("survival", flow_path), ("per_round", fallback_path)):
        with h5py.File(path) as f:
            names = [n for n in f["masks"] if n != "round"]
            stored = sum(f["masks"][n].id.get_storage_size() for n in names)
        with rganalysis.load(path) as p:
            n_weights = sum(p.info[n].numel for n in p.masked_names())
            R = p.n_rounds
            p.densities()  # first read: checksums, values, densities checked once
            per_round = []
            for r in range(R):
                t = time.perf_counter()
                for n in p.masked_names():
                    p.mask(n, r)
                per_round.append(time.perf_counter() - t)
            all_rounds = []
            for _ in range(repeats):
                t = time.perf_counter()
                for n in p.masked_names():
                    p.read_masks(n)
                all_rounds.append(time.perf_counter() - t)
        res[label] = {
            "bytes": stored,
            "file_bytes": path.stat().st_size,
            "weights": n_weights,
            "bytes_per_weight_per_round": stored / (n_weights * R),
            "round_read_median_s": _med(per_round),
            "round_read_first_last_s": [per_round[0], per_round[-1]],
            "all_rounds_read_median_s": _med(all_rounds),
        }
    res["flow_path"] = str(flow_path)
    return res


# --- parallel ingest --------------------------------------------------------------------------------------
def _contents(path: Path) -> dict:
    """Every attribute and dataset of a store but the time it was written (and that time's CRC-32)."""
    import h5py

    from rganalysis.store.index import ATTRS_CRC_ATTR

    out = {}
    with h5py.File(path) as f:

        def visit(name, obj):
            a = {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}
            a = {k: v for k, v in a.items() if k not in ("DIMENSION_LIST", "REFERENCE_LIST")}
            data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) and obj.dtype.kind != "O" else None
            out[name] = (a, data)

        f.visititems(visit)
        root = {k: v for k, v in f.attrs.items() if k != "created"}
        if ATTRS_CRC_ATTR in root:  # less the CRC of the time of writing
            crcs = json.loads(root[ATTRS_CRC_ATTR])
            crcs.get("/", {}).pop("created", None)
            root[ATTRS_CRC_ATTR] = json.dumps(crcs, sort_keys=True)
        out["/"] = root
    return out


def write_series(d: Path, states: int) -> Path:
    """A ResNet-18 ticket series: ``{k}model_SA_best.pth.tar``, conv weights as weight_orig + nested
    weight_mask from state 1 on, the init as rewind point."""
    from rganalysis.rg.coarse_graining import coarse_grain
    from rganalysis.store.state import State

    sd = build("resnet18")
    convs = [k for k, v in sd.items() if k.endswith(".weight") and v.dim() == 4 and k != "conv1.weight"]
    state = State.dense({k: sd[k] for k in convs})
    folder = d / "series"
    folder.mkdir(exist_ok=True)
    for k in range(states):
        out = {}
        for key, v in sd.items():
            if key in convs and k > 0:
                out[key.removesuffix("weight") + "weight_orig"] = v
                out[key.removesuffix("weight") + "weight_mask"] = state.masks[key].float()
            else:
                out[key] = v
        torch.save(
            {"state": k, "state_dict": out, "init_weight": sd, "epoch": k, "best_sa": 90.0 - k},
            folder / f"{k}model_SA_best.pth.tar",
        )
        state = coarse_grain(state, 0.2)
    return folder


def bench_parallel(d: Path, n_sweep: int, n_series: int) -> dict:
    cli = [sys.executable, "-m", "rganalysis", "ingest"]
    sweep = []
    for i in range(n_sweep):
        torch.manual_seed(i)
        import torchvision

        torch.save(torchvision.models.resnet18(weights=None).state_dict(), d / f"sweep{i}.pth")
        sweep.append(str(d / f"sweep{i}.pth"))
    series = write_series(d, n_series)
    res = {}
    for label, sources in (("sweep", sweep), ("series", [str(series)])):
        times = {}
        outs = {}
        for workers in (1, 2, 1, 2):  # interleaved
            o = d / f"{label}-w{workers}" / ("series.h5" if label == "series" else "")
            if o.exists():
                shutil.rmtree(o) if o.is_dir() else o.unlink()
            o.parent.mkdir(exist_ok=True)
            t = time.perf_counter()
            subprocess.run(
                [*cli, *sources, "-o", str(o), "-q", "--workers", str(workers), "--force"], check=True
            )
            times.setdefault(workers, []).append(time.perf_counter() - t)
            outs[workers] = o
        files = (
            [(outs[1], outs[2])]
            if label == "series"
            else [(outs[1] / f"sweep{i}.h5", outs[2] / f"sweep{i}.h5") for i in range(n_sweep)]
        )
        same = all(_contents(a) == _contents(b) for a, b in files)
        res[label] = {
            "sources": len(sources) if label == "sweep" else n_series,
            "serial_s": min(times[1]),
            "workers2_s": min(times[2]),
            "speedup": min(times[1]) / min(times[2]),
            "same_stores": same,
        }
    return res


# --- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "bert-base"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20, help="rounds of the data-free flow for info and masks")
    p.add_argument(
        "--sweep", type=int, default=4, help="ResNet-18 checkpoints in the parallel sweep (0: skip)"
    )
    p.add_argument("--series", type=int, default=6, help="states of the ResNet-18 ticket series")
    p.add_argument("--dir", default=None, help="working folder (default: a temporary one, removed)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--memory-child", nargs=3, metavar=("METHOD", "CKPT", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.memory_child:
        print(json.dumps(memory_child(*a.memory_child)))
        return
    d = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="rganalysis-store-io-"))
    d.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average at start {load[0]:.2f}"
    )
    results: dict = {"io": [], "memory": []}
    try:
        for name in a.models:
            r = bench_io(name, d, a.repeats)
            results["io"].append(r)
            mb = r["checkpoint_bytes"] / 1e6
            print(
                f"{name}: {r['tensors']} tensors, checkpoint {mb:.1f} MB, store {r['store_bytes'] / 1e6:.1f} MB, bit-exact: {r['bit_exact']}"
            )
            print(
                f"  write  ingest+save {r['ours_write_median_s'] * 1e3:6.0f} ms  vs torch.load+torch.save "
                f"{r['base_write_median_s'] * 1e3:6.0f} ms  ratio {r['write_ratio']:.2f}x (minima {r['write_ratio_min']:.2f}x)"
            )
            print(
                f"  read   load+every tensor {r['ours_read_median_s'] * 1e3:6.0f} ms  vs torch.load "
                f"{r['base_read_median_s'] * 1e3:6.0f} ms  ratio {r['read_ratio']:.2f}x (minima {r['read_ratio_min']:.2f}x)"
            )
            ckpt = d / f"{name}.pth"
            extra = {m: memory(m, ckpt, d / f"{name}-cli.h5") for m in ("baseline", "cli")}
            frac = (extra["cli"] - extra["baseline"]) / r["checkpoint_bytes"]
            results["memory"].append({"model": name, **extra, "cli_above_baseline_fraction": frac})
            print(
                f"  memory rganalysis ingest peak extra {extra['cli'] / 2**20:.0f} MiB, torch.load {extra['baseline'] / 2**20:.0f} MiB: "
                f"CLI above baseline = {frac:.2f}x the checkpoint"
            )
        if "resnet50" in a.models:
            m = bench_masks(d / "resnet50.h5", d, a.rounds, a.repeats)
            results["masks"] = m
            py = [sys.executable, "-m", "rganalysis", "info"]
            info_model = wall([*py, str(d / "resnet50.h5")], a.repeats)
            info_flow = wall([*py, m["flow_path"]], a.repeats)
            imp = wall([sys.executable, "-c", "import rganalysis.cli"], a.repeats)
            bare = wall([sys.executable, "-c", "pass"], a.repeats)
            results["info"] = {
                "model_s": info_model,
                "flow_s": info_flow,
                "import_cli_s": imp,
                "python_s": bare,
            }
            print(
                f"info: ResNet-50 store {_med(info_model):.3f} s, {m['rounds']}-round flow {_med(info_flow):.3f} s "
                f"(medians of {a.repeats}); import rganalysis.cli {_med(imp):.3f} s; bare python {_med(bare):.3f} s"
            )
            print(
                f"flow: {a.rounds} rounds computed in {m['flow_compute_s']:.1f} s, saved in {m['save_s']:.2f} s (fallback encoding {m['save_fallback_s']:.2f} s)"
            )
            for label in ("survival", "per_round"):
                s = m[label]
                print(
                    f"  masks {label:9s}: {s['bytes'] / 1e6:6.1f} MB for {s['weights']:,} weights x {m['rounds']} rounds = "
                    f"{s['bytes_per_weight_per_round']:.4f} bytes/weight/round; one round of every mask read in "
                    f"{s['round_read_median_s'] * 1e3:.1f} ms (median over rounds); all rounds {s['all_rounds_read_median_s'] * 1e3:.0f} ms"
                )
        if a.sweep:
            par = bench_parallel(d, a.sweep, a.series)
            results["parallel"] = par
            for label, s in par.items():
                print(
                    f"parallel ingest, {label} of {s['sources']}: serial {s['serial_s']:.2f} s, --workers 2 "
                    f"{s['workers2_s']:.2f} s ({s['speedup']:.2f}x); same stores: {s['same_stores']}"
                )
    finally:
        if not a.dir:
            shutil.rmtree(d, ignore_errors=True)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
