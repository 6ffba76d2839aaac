"""Checks of a store's content that the analyses rely on (nested masks)."""

from __future__ import annotations

from rganalysis.errors import MasksNotNestedError
from rganalysis.store.parameter_set import ParameterSet

__all__ = ["check_nested"]


def check_nested(pset: ParameterSet) -> None:
    """Raise :class:`MasksNotNestedError` unless every round's masks are subsets of the previous round's.

    Stores record whether their masks are nested when they are written (``masks_nested``); only a
    store that does not know is checked mask by mask.
    """
    if pset.masks_nested is True:
        return
    for name in pset.masked_names():
        prev = pset.mask(name, 0)
        for r in range(1, pset.n_rounds):
            m = pset.mask(name, r)
            revived = int((m & ~prev).sum())
            if revived:
                raise MasksNotNestedError(
                    f"the masks of this flow are not nested: {name!r} revives {revived} weights at round {r}"
                )
            prev = m
    if pset.masks_nested is False:
        raise MasksNotNestedError(
            "the masks of this flow are not nested (recorded when the store was written)"
        )
