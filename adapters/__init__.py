"""Adapters: one module per checkpoint family, found by a small registry.

An adapter is a class with a ``name``, a ``priority`` (lower is tried first), and

* ``detect(source, **options)``: return None if it reads ``source``, else raise
  :class:`~rganalysis.errors.AdapterDeclined` saying why;
* ``load(source, **options) -> ParameterSet``;
* optionally ``build_module(pset) -> torch.nn.Module`` (the architecture, random init).

Register with :func:`register`.  Every module of this package whose name does not start with an
underscore is imported on first use, so a new family is one new module.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from typing import Any, Protocol

import torch

from rganalysis.errors import AdapterDeclined, AdapterNotFoundError, RGAnalysisError
from rganalysis.store.parameter_set import ParameterSet


class Adapter(Protocol):
    name: str
    priority: int

    def detect(self, source: Path, **options: Any) -> None: ...

    def load(self, source: Path, **options: Any) -> ParameterSet: ...


ADAPTERS: dict[str, Adapter] = {}
_discovered = False


def register(cls: type) -> type:
    """Class decorator: add an adapter to the registry under ``cls.name``."""
    ADAPTERS[cls.name] = cls()
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for m in pkgutil.iter_modules(__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")


def available() -> list[str]:
    """Adapter names in the order detection tries them."""
    _discover()
    return [a.name for a in sorted(ADAPTERS.values(), key=lambda a: (a.priority, a.name))]


def get(name: str) -> Adapter:
    _discover()
    try:
        return ADAPTERS[name]
    except KeyError:
        raise AdapterNotFoundError(name, {n: "not this name" for n in available()}) from None


def detect(source: str | os.PathLike, **options: Any) -> Adapter:
    """The first adapter that accepts ``source``; otherwise one error listing each adapter and why it declined."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(source)
    reasons: dict[str, str] = {}
    for name in available():
        try:
            ADAPTERS[name].detect(source, **options)
            return ADAPTERS[name]
        except AdapterDeclined as e:
            reasons[name] = str(e)
        except RGAnalysisError:
            raise
    raise AdapterNotFoundError(source, reasons)


def ingest(source: str | os.PathLike, adapter: str | None = None, **options: Any) -> ParameterSet:
    """Read ``source`` with the named adapter, or the detected one."""
    source = Path(source)
    a = get(adapter) if adapter else detect(source, **options)
    if adapter:
        if not source.exists():
            raise FileNotFoundError(source)
        a.detect(source, **options)
    return a.load(source, **options)


def build_module(pset: ParameterSet) -> torch.nn.Module:
    """The architecture of ``pset`` (random init), built by the adapter that read it."""
    a = get(str(pset.attrs.get("adapter")))
    build = getattr(a, "build_module", None)
    if build is None:
        raise NotImplementedError(
            f"adapter {a.name!r} cannot build a module for {pset.attrs.get('architecture')!r}"
        )
    return build(pset)
