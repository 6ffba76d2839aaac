"""Scale-out: a picklable function over many items (flow stores) on local dask processes or a
``dask.distributed`` cluster, results in input order and equal to the serial run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from rganalysis.errors import InvalidParameterError

__all__ = ["map_flows", "resolve_scheduler"]


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
        of CPUs); ``"sync"``: serially in this process (what the other two are compared with); an
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
            with _Ticker(bar, {t.key for t in tasks}):
                return list(dask.compute(*tasks, scheduler="processes", num_workers=min(n, len(items))))
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
