"""Scale-out: a picklable function over many items (flow stores) on local dask processes or a
``dask.distributed`` cluster, results in input order and equal to the serial run; and the one way every
process-parallel path of the toolkit starts its local workers (:func:`process_pool`).

How local workers start
-----------------------
Every local pool (:func:`map_flows` with ``"processes"``, hence ``response_jacobian`` and
``UniversalityAnalysis``; ``ingest_many`` and a ticket series read with ``workers``; the retrains of
``examples/transfer_benchmark.py``) comes from :func:`process_pool`, whose start method is
:func:`start_method`:

* **fork** where it is safe: on Linux (and other POSIX systems but macOS) while this process has not
  initialised CUDA.  A forked worker starts as a copy of this process, so it never re-runs the user's
  script (a plain top-level script, with no ``if __name__ == "__main__":`` guard, works), functions
  defined in a notebook, a test module or a closure reach it as they are, and it does not import torch
  again (seconds and hundreds of MB per worker with spawn).  Each worker uses one torch thread (as
  torch's DataLoader workers do: the parent's OpenMP pool is not usable after a fork).
* **spawn** otherwise: where there is no fork (Windows), on macOS (forking a process that has used
  system frameworks can crash: Python's own default there is spawn), and once CUDA is initialised (a
  forked child cannot use the parent's CUDA context).  ``RGANALYSIS_START_METHOD`` (``fork``,
  ``spawn``, ``forkserver``) overrides the choice.

A spawned worker imports the main script again (as ``__mp_main__``): from an unguarded script each
worker would run the script's top-level calls again and the pool breaks (``BrokenProcessPool``).  So
with spawn, :func:`check_start` looks, before any work starts, for the statement of the main script
that made the call; when it is not under the ``__main__`` guard it raises :class:`ProcessStartError`
with the fix in one line.  A notebook has no script to re-run, so spawn works there (tasks go through
cloudpickle, which carries lambdas and closures by value).
"""

from __future__ import annotations

import ast
import inspect
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from rganalysis.errors import InvalidParameterError, ProcessStartError

__all__ = [
    "START_METHOD_VARIABLE",
    "check_start",
    "map_flows",
    "process_pool",
    "resolve_scheduler",
    "start_method",
]

#: Environment variable that overrides :func:`start_method` (``fork``, ``spawn`` or ``forkserver``).
START_METHOD_VARIABLE = "RGANALYSIS_START_METHOD"


# ====================================================================================================
# local worker processes
# ====================================================================================================
def start_method() -> tuple[str, str]:
    """``(method, why)``: how :func:`process_pool` starts workers here (see the module's docstring)."""
    available = multiprocessing.get_all_start_methods()
    forced = os.environ.get(START_METHOD_VARIABLE, "").strip()
    if forced:
        if forced not in available:
            raise InvalidParameterError(
                f"{START_METHOD_VARIABLE}={forced!r}: this platform starts processes by one of {available}"
            )
        return forced, f"{START_METHOD_VARIABLE}={forced}"
    if "fork" not in available:
        return "spawn", "this platform cannot fork"
    if sys.platform == "darwin":
        return "spawn", "forking is unsafe on macOS"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "spawn", "this process has initialised CUDA, which a forked worker cannot use"
    return "fork", "fork is safe here"


def _guarded(path: str, line: int) -> bool:
    """Whether ``line`` of the script ``path`` lies under a top-level ``if __name__ == "__main__":``."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return True  # not readable as a script (e.g. a zipapp): nothing to say
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
                return False
            t = node.test
            sides = [t.left, *t.comparators]
            return (
                len(t.ops) == 1
                and isinstance(t.ops[0], ast.Eq)
                and any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides)
                and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides)
                and line > node.lineno  # in the body, not the test
            )
    return True


def _unguarded_call() -> tuple[str, int] | None:
    """``(script, line)`` of the top-level statement of the main script that led here, when a spawned
    worker would run it again (it is not under the ``__main__`` guard); None otherwise (no script: an
    interactive session or a notebook)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if name.endswith(
        ".__main__"
    ):  # `python -m package`: spawned workers do not re-run it (multiprocessing.spawn)
        return None
    f = inspect.currentframe()
    found = None
    while f is not None:
        if f.f_globals is vars(main) and f.f_code.co_name == "<module>":
            found = f
        f = f.f_back
    if found is None or os.path.abspath(found.f_code.co_filename) != os.path.abspath(path):
        return None
    return None if _guarded(path, found.f_lineno) else (path, found.f_lineno)


def check_start(what: str, serial: str = "run it serially") -> str:
    """The start method :func:`process_pool` will use; raises :class:`ProcessStartError` now, before any
    work, where it cannot work: spawned workers and an unguarded main script.

    ``what`` names the caller in the message, ``serial`` how to run it without processes (e.g.
    ``'scheduler="sync"'``)."""
    method, why = start_method()
    if method != "fork":
        where = _unguarded_call()
        if where is not None:
            raise ProcessStartError(
                f"{what}: worker processes start by {method} here ({why}), and each would re-run the script "
                f'{where[0]} from the top, whose line {where[1]} is not under `if __name__ == "__main__":`. '
                f'Fix: put the script\'s top-level calls under `if __name__ == "__main__":`, or {serial}.'
            )
    return method


def process_pool(
    workers: int, *, what: str = "process pool", serial: str = "run it serially"
) -> ProcessPoolExecutor:
    """A pool of ``workers`` local processes started by :func:`start_method` (checked by
    :func:`check_start`); each worker uses one torch thread."""
    if int(workers) < 1:
        raise InvalidParameterError(f"workers must be >= 1, got {workers}")
    method = check_start(what, serial)
    return ProcessPoolExecutor(
        int(workers), mp_context=multiprocessing.get_context(method), initializer=_worker_init
    )


def worker_threads(threads: int | None, what: str) -> int | None:
    """The torch threads a task may ask for in a worker of :func:`process_pool`: ``threads`` where workers
    spawn; at most 1 where they fork, with a warning: a forked child cannot start an OpenMP pool again
    once the parent has used one (its first parallel region hangs; seen with torch's GNU OpenMP), so each
    worker runs one thread and the processes use the cores (``RGANALYSIS_START_METHOD=spawn`` keeps
    ``threads``)."""
    if threads is None or int(threads) <= 1 or start_method()[0] != "fork":
        return threads
    import warnings

    warnings.warn(
        f"{what}: threads={threads} per task is run as 1 in forked worker processes (an OpenMP pool cannot "
        f"start again after a fork); set {START_METHOD_VARIABLE}=spawn to keep it",
        UserWarning,
        stacklevel=3,
    )
    return 1


def _worker_init() -> None:
    torch = sys.modules.get("torch")  # forked: the parent's; spawned: not imported yet (tasks set theirs)
    if torch is not None:
        torch.set_num_threads(1)  # (helper threads of the parent are forgotten by their modules' fork hooks)


# ====================================================================================================
# dask
# ====================================================================================================
def resolve_scheduler(scheduler: Any = None) -> str:
    """Describe where :func:`map_flows` runs: ``"processes"``, ``"sync"`` or ``"distributed <addr>"``."""
    if scheduler is None or scheduler == "processes":
        return "processes"
    if scheduler in ("sync", "synchronous", "serial", "single-threaded"):
        return "sync"
    if isinstance(scheduler, str):
        return f"distributed {scheduler}"
    addr = getattr(scheduler, "scheduler_address", None) or getattr(
        getattr(scheduler, "scheduler", None), "address", None
    )
    return f"distributed {addr}"


def map_flows(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    scheduler: Any = None,
    n_workers: int | None = None,
    progress: str | None = None,
) -> list[Any]:
    """``[fn(x) for x in items]`` on dask, in input order.

    Parameters
    ----------
    fn : callable
        A picklable (module-level) function of one item.  Items and results must pickle too, so
        pass store *paths*, not open :class:`~rganalysis.store.ParameterSet` objects.
    items : iterable
        The inputs (e.g. flow store paths).
    scheduler : None, "processes", "sync", an address ``"tcp://host:port"``, or a ``distributed.Client``
        ``None`` / ``"processes"``: local worker processes (``n_workers`` of them, default the number
        of CPUs, started by :func:`process_pool`: forked where safe, so ``fn`` may be a closure or a
        lambda and the calling script needs no ``__main__`` guard); ``"sync"``: serially in this process (what the other two are compared with); an
        address: the ``dask.distributed`` scheduler at that address (e.g. a ``LocalCluster``'s
        ``scheduler_address``, or ``dask scheduler`` started elsewhere; workers need rganalysis).
    n_workers : int, optional
        Worker processes of the local scheduler (ignored by the others).
    progress : str, optional
        Show a tqdm bar with this description that counts finished items (on every scheduler).

    Returns
    -------
    list, ``len(items)``, the results in input order.
    """
    items = list(items)
    if not items:
        return []
    from tqdm.auto import tqdm

    kind = resolve_scheduler(scheduler)
    with tqdm(total=len(items), desc=progress or "", unit="item", disable=not progress) as bar:
        if kind == "sync":
            out = []
            for x in items:
                out.append(fn(x))
                bar.update()
            return out
        import dask

        tasks = [dask.delayed(fn, pure=False)(x) for x in items]
        if kind == "processes":
            n = int(n_workers) if n_workers else (os.cpu_count() or 1)
            if n < 1:
                raise InvalidParameterError(f"n_workers must be >= 1, got {n_workers}")
            n = min(n, len(items))
            with process_pool(n, what="map_flows", serial='scheduler="sync"') as pool:
                with _Ticker(bar, {t.key for t in tasks}):
                    return list(dask.compute(*tasks, scheduler="processes", num_workers=n, pool=pool))
        from distributed import Client

        if isinstance(scheduler, str):
            with Client(scheduler, set_as_default=False) as client:
                return _gather(client, tasks, bar)
        if isinstance(scheduler, Client):
            return _gather(scheduler, tasks, bar)
        addr = getattr(scheduler, "scheduler_address", None)  # a LocalCluster / SpecCluster
        if addr is None:
            raise InvalidParameterError(
                f"unknown scheduler {scheduler!r}: give None, 'sync', an address or a Client"
            )
        with Client(addr, set_as_default=False) as client:
            return _gather(client, tasks, bar)


def _gather(client: Any, tasks: list[Any], bar: Any) -> list[Any]:
    """Compute ``tasks`` on a distributed client, ticking ``bar`` as each finishes; results in order."""
    futures = client.compute(tasks)
    for f in futures:
        f.add_done_callback(lambda _: bar.update())
    return list(client.gather(futures))


def _ticker_class():
    from dask.callbacks import Callback

    class Ticker(Callback):
        """Ticks a tqdm bar when one of the given task keys finishes (local schedulers)."""

        def __init__(self, bar: Any, keys: set):
            super().__init__()
            self._bar, self._keys = bar, keys

        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: D401 - dask's hook
            if key in self._keys:
                self._bar.update()

    return Ticker


def _Ticker(bar: Any, keys: set) -> Any:  # noqa: N802 - builds the dask Callback lazily (dask is optional)
    return _ticker_class()(bar, keys)
