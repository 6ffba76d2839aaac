"""Regenerate docs/api.md from the docstrings: `python docs/gen_api_reference.py` (CI checks it is current).

One section per module, in package order; in each, every name of the module's ``__all__`` with its
signature and its docstring as written.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

from generated_file import write_or_check  # docs/, beside this script

import rganalysis

PACKAGES = [
    "rganalysis",
    "rganalysis.store",
    "rganalysis.rg",
    "rganalysis.fit",
    "rganalysis.koopman",
    "rganalysis.universality",
    "rganalysis.report",
    "rganalysis.adapters",
    "rganalysis.train",
]
SKIP = {"rganalysis.cli", "rganalysis.__main__"}


def _stable_repr(obj: object) -> str:
    """repr, with set elements sorted: a set's order follows string hashing, which changes per process."""
    if isinstance(obj, (set, frozenset)):
        inner = ", ".join(sorted(repr(x) for x in obj))
        return f"{type(obj).__name__}({{{inner}}})" if obj else f"{type(obj).__name__}()"
    return repr(obj)


def _modules() -> list[str]:
    out: list[str] = []
    for pkg in PACKAGES:
        out.append(pkg)
        mod = importlib.import_module(pkg)
        for m in sorted(pkgutil.iter_modules(mod.__path__), key=lambda m: m.name):
            name = f"{pkg}.{m.name}"
            if m.ispkg or m.name.startswith("_") or name in SKIP or name in PACKAGES:
                continue
            out.append(name)
    return out


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _entry(modname: str, name: str, obj: object) -> list[str]:
    kind = "class" if inspect.isclass(obj) else ("function" if inspect.isroutine(obj) else "data")
    head = f"### `{name}{_signature(obj) if kind != 'data' else ''}`"
    doc = inspect.getdoc(obj) if kind != "data" else None
    if kind == "data":
        if isinstance(obj, dict) and any(callable(v) for v in obj.values()):  # a registry
            doc = f"`{name}`: registry of {', '.join(repr(k) for k in obj)}"
        else:
            text = _stable_repr(obj)
            doc = f"`{name} = {text}`" if len(text) < 200 else f"`{name}`: {type(obj).__name__}"
    lines = [
        head,
        "",
        f"*{kind}* in `{getattr(obj, '__module__', modname) if kind != 'data' else modname}`",
        "",
    ]
    lines += [doc or "(no docstring)", ""]
    if inspect.isclass(obj):
        for mname, meth in inspect.getmembers(obj, inspect.isfunction):
            if mname.startswith("_") or meth.__qualname__.split(".")[0] != obj.__name__:
                continue
            lines += [
                f"#### `{name}.{mname}{_signature(meth)}`",
                "",
                inspect.getdoc(meth) or "(no docstring)",
                "",
            ]
    return lines


def render() -> str:
    out = [
        "# API reference",
        "",
        f"Generated from the docstrings of rganalysis {rganalysis.__version__} by `python docs/gen_api_reference.py`;",
        "do not edit by hand.  The public verbs are importable from `rganalysis` itself: "
        + ", ".join(f"`{n}`" for n in rganalysis.__all__ if n != "__version__")
        + ".",
        "",
    ]
    for modname in _modules():
        mod = importlib.import_module(modname)
        names = [n for n in getattr(mod, "__all__", []) if not n.startswith("__")]
        if modname in PACKAGES and modname != "rganalysis":
            out += [
                f"## Package `{modname}`",
                "",
                inspect.getdoc(mod) or "",
                "",
                "Re-exports: " + ", ".join(f"`{n}`" for n in names) + ".",
                "",
            ]
            continue
        if modname == "rganalysis":
            continue
        out += [f"## Module `{modname}`", "", inspect.getdoc(mod) or "(no module docstring)", ""]
        for n in names:
            out += _entry(modname, n, getattr(mod, n))
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write docs/api.md; with ``--check``, only say whether it is current (exit status 1 when stale)."""
    return write_or_check(Path(__file__).with_name("api.md"), render(), Path(__file__).name, argv)


if __name__ == "__main__":
    sys.exit(main())
