"""Labels of models in one comparison: each model's name, and where names repeat, the file stems that tell
the models apart (``resnet18-seed0``, ``resnet18-seed1`` rather than ``resnet18``, ``resnet18#2``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rganalysis.errors import InvalidParameterError

__all__ = ["unique_labels"]


def unique_labels(names: Sequence[str], sources: Sequence[str | None] | None = None) -> list[str]:
    """One label per model, all different.  A name that several models share is replaced by their file
    stems (``sources``: paths, or None / "" for models not read from a file) where those stems are
    different from each other and from every other label; otherwise ``name``, ``name#2``, ``name#3``, ...
    in order."""
    names = [str(n) for n in names]
    if sources is not None and len(sources) != len(names):
        raise InvalidParameterError(f"{len(sources)} sources for {len(names)} names")
    stems = [Path(s).stem if s else "" for s in (sources or [None] * len(names))]
    count = Counter(names)
    out = list(names)
    for name in (n for n, c in count.items() if c > 1):
        idx = [i for i, n in enumerate(names) if n == name]
        cand = [stems[i] for i in idx]
        others = {out[i] for i in range(len(out)) if i not in idx}
        if all(cand) and len(set(cand)) == len(cand) and not set(cand) & others:
            for i, c in zip(idx, cand, strict=True):
                out[i] = c
    taken: set[str] = set()
    for i, lab in enumerate(out):
        k, new = 1, lab
        while new in taken or (k > 1 and new in out[i + 1 :]):
            k += 1
            new = f"{lab}#{k}"
        out[i] = new
        taken.add(new)
    return out
