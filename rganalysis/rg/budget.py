"""What an IMP flow will cost before it runs: memory and disk (refused up front when they are not
available) and the rounds that will prune nothing (flagged).

A round removes ``round(rate * survivors)`` weights (per layer with ``scope="layer"``), whatever the
weights are, so the survivor counts of every round follow from those of the start alone; once a
round removes nothing, no later round does.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rganalysis.errors import InsufficientResourcesError

__all__ = ["FlowBudget", "available_disk", "available_memory", "flow_budget", "survivor_counts"]

#: bytes per pruned weight that one coarse-graining round uses besides the weights, masks and
#: survival counts: the new masks (1) and the radix-select keys and indices (about 8)
ROUND_SCRATCH = 9


def available_memory() -> int:
    """Bytes of memory available to a new computation (``MemAvailable`` of /proc/meminfo; else physical)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def available_disk(folder: str | os.PathLike) -> int:
    """Free bytes on the file system of ``folder`` (its nearest existing parent)."""
    p = Path(folder).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def survivor_counts(start: np.ndarray, rounds: int, rate: float, scope: str = "global") -> np.ndarray:
    """Survivors per round, ``(rounds + 1,)`` (summed over layers), of a flow whose start has ``start``
    survivors per layer; the counts stop changing at the first round that removes nothing."""
    layers = [int(x) for x in np.asarray(start).reshape(-1)] if scope == "layer" else [int(np.sum(start))]
    out = [sum(layers)]
    for _ in range(rounds):
        removed = [int(round(rate * x)) for x in layers]
        if not any(removed):
            break
        layers = [x - k for x, k in zip(layers, removed, strict=True)]
        out.append(sum(layers))
    out += [out[-1]] * (rounds + 1 - len(out))
    return np.array(out, dtype=np.int64)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@dataclass(frozen=True)
class FlowBudget:
    """Estimates for ``rounds`` rounds of IMP: peak ``memory`` and ``disk`` (bytes, with what is
    ``memory_available`` / ``disk_available``), the survivors of each round, and ``empty_from``: the first
    round that prunes nothing (None when every round prunes)."""

    rounds: int
    rate: float
    rescaling: str
    memory: int
    disk: int
    memory_available: int
    disk_available: int
    survivors: np.ndarray
    empty_from: int | None

    def check(self) -> None:
        """Raise :class:`~rganalysis.errors.InsufficientResourcesError` (with the estimate) when the flow
        would not fit in the memory or on the disk available."""
        short = []
        if self.memory > self.memory_available:
            short.append(f"about {_gb(self.memory)} of memory ({_gb(self.memory_available)} available)")
        if self.disk > self.disk_available:
            short.append(f"about {_gb(self.disk)} of disk ({_gb(self.disk_available)} free)")
        if short:
            why = (
                "the weights of every round are kept and written"
                if self.rescaling != "none"
                else "weights, masks and survival counts"
            )
            raise InsufficientResourcesError(
                f"--rounds {self.rounds} would need "
                + " and ".join(short)
                + f" ({why}); refused before starting"
            )


def flow_budget(
    sizes: dict[str, tuple[int, int]],
    survivors: np.ndarray,
    rounds: int,
    rate: float,
    *,
    scope: str = "global",
    rescaling: str = "none",
    model_bytes: int = 0,
    rewind_bytes: int = 0,
    output_dir: str | os.PathLike = ".",
) -> FlowBudget:
    """Estimate a flow (:func:`rganalysis.rg.compute_flow` and writing its store).

    Parameters
    ----------
    sizes : pruned tensor name -> (number of weights, bytes per weight)
    survivors : surviving weights per pruned tensor at the start, in the order of ``sizes``
    rounds, rate, scope, rescaling : as for ``compute_flow``
    model_bytes : bytes of the whole model (written once, in ``/parameters``)
    rewind_bytes : bytes of the rewind point (written once)
    output_dir : where the store will be written (for the free disk space)
    """
    from rganalysis.store.index import survival_dtype

    n = sum(c for c, _ in sizes.values())
    wbytes = sum(c * b for c, b in sizes.values())
    sbytes = survival_dtype(rounds + 1).itemsize
    kept = rounds * wbytes if rescaling != "none" else 0  # every round's weights, until written
    memory = wbytes + n * (1 + max(2, sbytes) + ROUND_SCRATCH) + kept
    disk = model_bytes + n * sbytes + kept + rewind_bytes + 64 * (rounds + 1) * (len(sizes) + 2)
    counts = survivor_counts(np.asarray(survivors), rounds, rate, scope)
    steps = np.flatnonzero(np.diff(counts) == 0)
    return FlowBudget(
        rounds=rounds,
        rate=rate,
        rescaling=rescaling,
        memory=int(memory),
        disk=int(disk),
        memory_available=available_memory(),
        disk_available=available_disk(output_dir),
        survivors=counts,
        empty_from=None if steps.size == 0 else int(steps[0]) + 1,
    )
