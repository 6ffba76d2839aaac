"""Adapters: one module per checkpoint family, found by a small registry.

An adapter is a class with a ``name``, a ``priority`` (lower is tried first), and

* ``detect(source, **options)``: return None if it reads ``source``, else raise
  :class:`~rganalysis.errors.AdapterDeclined` saying why;
* ``load(source, **options) -> ParameterSet``;
* optionally ``build_module(pset) -> torch.nn.Module`` (the architecture, random init);
* optionally ``reads_masks = True``: its ``load`` applies mask files given as ``masks`` (``--mask``);
  :func:`ingest` refuses them for any other adapter, rather than drop them.

Register with :func:`register`.  Every module of this package whose name does not start with an
underscore is imported on first use, so a new family is one new module.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rganalysis.errors import (
    AdapterDeclined,
    AdapterNotFoundError,
    ArchitectureMismatchError,
    CannotBuildModuleError,
    InvalidParameterError,
    RGAnalysisError,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

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


def names() -> list[str]:
    """The adapter names, sorted, without importing an adapter (nor torch): each module of this package
    registers its adapter under the module's name with ``-`` for ``_`` (a test holds them to it).  The
    command line's ``--adapter`` choices are these, so ``rganalysis ingest --help`` stays fast."""
    return sorted(
        m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")
    )


def available() -> list[str]:
    """Adapter names in the order detection tries them."""
    _discover()
    return [a.name for a in sorted(ADAPTERS.values(), key=lambda a: (a.priority, a.name))]


def get(name: str) -> Adapter:
    _discover()
    try:
        return ADAPTERS[name]
    except KeyError:
        raise InvalidParameterError(f"unknown adapter {name!r}; known: {', '.join(available())}") from None


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
    """Read ``source`` with the named adapter, or the detected one.

    ``masks`` (mask files, ``--mask``) are applied or refused, never dropped: each must exist
    (``FileNotFoundError``) before anything is read; an adapter that records them (``reads_masks``, e.g.
    ``hf-bert``) checks them against the weights; for any other adapter each file is still read safely
    (:class:`~rganalysis.errors.CorruptCheckpointError`, :class:`~rganalysis.errors.PickleRefusedError`)
    and then refused with :class:`~rganalysis.errors.InvalidParameterError`.
    """
    source = Path(source)
    mask_paths = _mask_paths(options.get("masks"))
    a = get(adapter) if adapter else detect(source, **options)
    if adapter:
        if not source.exists():
            raise FileNotFoundError(source)
        a.detect(source, **options)
    if mask_paths and not getattr(a, "reads_masks", False):
        from rganalysis.store.checkpoint import load_checkpoint

        for p in mask_paths:
            load_checkpoint(p, allow_pickle=bool(options.get("allow_pickle")))  # unreadable or hostile: named
        readers = [n for n in available() if getattr(ADAPTERS[n], "reads_masks", False)]
        raise InvalidParameterError(
            f"--mask {mask_paths[0]}: the {a.name!r} adapter reading {source} does not apply mask files "
            f"(only {', '.join(readers)} do), so the masks would be dropped; nothing was written. Drop --mask, "
            "or save the masks in the checkpoint as weight_orig/weight_mask pairs (the 'pruned' adapter)"
        )
    pset = a.load(source, **options)
    want, got = options.get("architecture"), pset.attrs.get("architecture")
    if want is not None and want != got:
        raise ArchitectureMismatchError(
            f"--architecture {want!r}: {source} reads as {got!r} (adapter {a.name!r}); drop --architecture "
            "to take what is detected"
        )
    return pset


def _mask_paths(masks: Any) -> list[Path]:
    """The mask files of the ``masks`` option, each an existing file (``FileNotFoundError`` otherwise)."""
    if masks is None:
        return []
    paths = [Path(masks)] if isinstance(masks, str | os.PathLike) else [Path(m) for m in masks]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(2, "no such mask file", str(p))
    return paths


def _ingest_job(job: tuple[str, str, str | None, dict[str, Any], bool, bool]) -> dict[str, Any]:
    """One source into one store (a worker of :func:`ingest_many`): a summary, or the error as data
    (errors with their own constructor arguments do not unpickle)."""
    source, output, adapter, options, force, compress = job
    try:
        pset = ingest(source, adapter=adapter, **options)
        pset.save(output, force=force, compress=compress, progress=False, inputs=[source])
        return {
            "source": source,
            "output": output,
            "architecture": pset.attrs.get("architecture"),
            "adapter": pset.attrs.get("adapter"),
            "tensors": len(pset.names),
            "parameters": sum(i.numel for i in pset.info.values()),
            "rounds": pset.n_rounds,
        }
    except (RGAnalysisError, FileNotFoundError) as e:
        msg = str(e) if Path(source).name in str(e) else f"{source}: {e}"  # which of the sweep's files
        return {"source": source, "output": output, "error": type(e).__name__, "message": msg}


def raise_from(result: dict[str, Any]) -> None:
    """Raise the error a worker of :func:`ingest_many` returned as data (its named class when it has one)."""
    from rganalysis import errors

    if "error" not in result:
        return
    if result["error"] == "FileNotFoundError":
        raise FileNotFoundError(2, "no such file", result["source"])
    cls = getattr(errors, result["error"], RGAnalysisError)
    e = cls.__new__(cls)
    Exception.__init__(e, result["message"])
    raise e


def ingest_many(
    sources: list[str | os.PathLike],
    outputs: list[str | os.PathLike],
    *,
    workers: int = 1,
    adapter: str | None = None,
    force: bool = False,
    compress: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Ingest a sweep: ``sources[i]`` into the store ``outputs[i]``, in ``workers`` processes at once.

    Each store is the one a serial :func:`ingest` + ``save`` writes (processes share nothing; each writes
    its own file, atomically).  Returns one summary per source, in order: ``source``, ``output``,
    ``architecture``, ``adapter``, ``tensors``, ``parameters``, ``rounds``, or ``error`` (the name of
    the error) and ``message`` for a source that failed (the others are still written); re-raise one
    with :func:`raise_from`.  Workers come from :func:`rganalysis.parallel.process_pool`: forked where safe
    (no script re-run, no torch import per worker), spawned after CUDA is initialised.
    """
    jobs = [
        (str(s), str(o), adapter, dict(options), force, compress)
        for s, o in zip(sources, outputs, strict=True)
    ]
    if workers <= 1 or len(jobs) <= 1:
        return [_ingest_job(j) for j in jobs]
    with process_pool(min(workers, len(jobs))) as ex:
        return list(ex.map(_ingest_job, jobs))


def process_pool(workers: int):
    """The toolkit's pool of ``workers`` local processes (:func:`rganalysis.parallel.process_pool`: forked
    where safe, refused up front where spawned workers would re-run an unguarded script)."""
    from rganalysis.parallel import process_pool

    return process_pool(workers, what="ingest", serial="use workers=1")


def build_module(pset: ParameterSet) -> torch.nn.Module:
    """The architecture of ``pset`` (random init), built by the adapter that read it."""
    a = get(str(pset.attrs.get("adapter")))
    build = getattr(a, "build_module", None)
    if build is None:
        raise CannotBuildModuleError(
            f"adapter {a.name!r} cannot build a module for {pset.attrs.get('architecture')!r} (only the adapters of "
            "known architectures can; the weights are in to_state_dict())"
        )
    return build(pset)
