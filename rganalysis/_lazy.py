"""Lazy public names for a package (PEP 562): each is imported from its module on first use, so importing
the package stays cheap and ``--help`` imports neither torch nor numpy."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any


def lazy_exports(
    namespace: MutableMapping[str, Any],
    names: Mapping[str, str],
    modules: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``: ``names`` maps a public name to the module defining it,
    ``modules`` a public name to a submodule (any other subpackage is found by its name); a value is cached
    in ``namespace`` (the package's ``globals()``) once loaded.  ``__dir__`` lists ``namespace["__all__"]`` (and any public name already loaded)."""
    package = namespace["__name__"]
    modules = dict(modules or {})

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
        elif name in modules:
            value = importlib.import_module(modules[name])
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")  # a subpackage: rganalysis.fit, .adapters
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        listed: Sequence[str] = namespace.get("__all__", [])
        return sorted(set(listed) | (set(namespace) & (set(names) | set(modules))))

    return __getattr__, __dir__
