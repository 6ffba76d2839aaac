"""Benchmark: the cost of the directed transfer scores against today's ``rganalysis compare`` on the same flows.

Builds ``--n`` data-free IMP flows (``--rounds`` rounds at rate 0.2) of a torchvision architecture with
``weights=None`` (not timed): with ``--init shared`` every flow starts from one initialisation and is
pruned at its own rate in 0.15..0.25 (aligned flows: the units correspond, the exact fingerprint match); with ``--init own`` each flow has its own
initialisation (unit matching by the Hungarian algorithm, the expensive path).  Then it times, in this
process, ``UniversalityAnalysis().fit(paths)`` (what ``rganalysis compare`` runs), ``transfer_scores`` on the
signatures that fit already holds (what ``compare --directed`` adds), and ``transfer_scores(paths)`` alone
(reading the stores again), and prints the ratios to the compare time.  Target (issue 23): compare
--directed within 2x of compare on 30 flows of a ResNet-50-sized model.

Usage::

    python benchmarks/transfer_scores.py [--arch resnet50] [--n 30] [--rounds 4] [--init shared|own]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch


def build_flows(arch: str, n: int, rounds: int, init: str, folder: Path) -> list[str]:
    import torchvision

    from rganalysis.rg import compute_flow
    from rganalysis.store.checkpoint import make_parameter_set, single_round

    paths = []
    for i in range(n):
        torch.manual_seed(0 if init == "shared" else i)
        sd = getattr(torchvision.models, arch)(weights=None).state_dict()
        pset = make_parameter_set([single_round(sd)], adapter="generic", architecture=arch, sources=[])
        rate = 0.15 + 0.1 * i / max(1, n - 1)
        path = folder / f"flow{i:02d}.h5"
        compute_flow(pset, rounds, rate, progress=False, device="cpu").save(path, progress=False)
        paths.append(str(path))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--init", choices=("shared", "own"), default="shared")
    a = ap.parse_args()

    from rganalysis.universality.analysis import UniversalityAnalysis
    from rganalysis.universality.transfer import transfer_scores

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        paths = build_flows(a.arch, a.n, a.rounds, a.init, Path(tmp))
        print(
            f"built {a.n} {a.arch} flows ({a.rounds} rounds, init {a.init}) in {time.perf_counter() - t:.1f} s"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            ua = UniversalityAnalysis(device="cpu").fit(paths)
            t_compare = time.perf_counter() - t
            t = time.perf_counter()
            D = transfer_scores(ua.signatures_, names=list(ua.names_))
            t_added = time.perf_counter() - t
            t = time.perf_counter()
            transfer_scores(paths)
            t_alone = time.perf_counter() - t
        matching = {m for row in D.attrs["matching"] for m in row} - {"self"}
        print(f"load average {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; device cpu")
        print(f"compare (UniversalityAnalysis.fit)          {t_compare:8.2f} s")
        print(f"directed scores on compare's signatures     {t_added:8.2f} s   matching {sorted(matching)}")
        print(
            f"compare --directed / compare                {(t_compare + t_added) / t_compare:8.2f} x  (target <= 2)"
        )
        print(f"transfer_scores(paths) alone / compare      {t_alone / t_compare:8.2f} x")


if __name__ == "__main__":
    main()
