"""Untrusted structure files are parsed in worker processes with a time and a memory limit.

A file can be a bomb (a CIF whose symmetry makes a million atoms, a lattice that makes a parser allocate
exabytes): parsing one in the server's own process could hang a core or take the app down with it.
Here each record runs in a pebble ``ProcessPool`` worker (forked from a clean forkserver, so never from
a process that holds torch or numba threads) whose address space is capped with ``RLIMIT_AS``; a record
that runs past its time limit has its worker killed and replaced, and becomes a ``Rejected('timeout')``
while every other record goes on. Pools are made once per process and limits, and stopped at exit.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from explorer.datasets.rejections import Rejected

_POOLS: dict[tuple[int, int], Any] = {}
_LOCK = threading.Lock()
_PRELOAD = ["explorer.datasets.records", "pymatgen.symmetry.groups", "pymatgen.io.cif", "pymatgen.io.vasp",
            "pymatgen.io.ase", "ase.io"]


def _cap_memory(megabytes: int) -> None:
    """Worker initializer: cap the address space so a huge allocation fails with MemoryError."""
    if megabytes > 0:
        import resource

        limit = megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _pool(workers: int, memory_mb: int):
    from pebble import ProcessPool

    key = (workers, memory_mb)
    with _LOCK:
        pool = _POOLS.get(key)
        if pool is None or not pool.active:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            pool = ProcessPool(max_workers=workers, initializer=_cap_memory, initargs=(memory_mb,), context=context)
            _POOLS[key] = pool
        return pool


@atexit.register
def shutdown() -> None:
    """Stop every worker pool (at exit, or when a test wants a clean slate)."""
    with _LOCK:
        for pool in _POOLS.values():
            pool.stop()
            pool.join(timeout=5)
        _POOLS.clear()


def _verdict(future, *, key: str, seconds: float, memory_mb: int) -> Any:
    """The result of a finished future; a timeout or a dead worker becomes a Rejected naming ``key``."""
    from pebble import ProcessExpired

    try:
        return future.result()
    except FutureTimeout:
        return Rejected("timeout", f"{key}: reading took longer than {seconds:g} s and was stopped")
    except ProcessExpired as exc:
        return Rejected("out_of_memory", f"{key}: the reader was stopped (exit code {exc.exitcode}); the file "
                                         f"probably needs more than {memory_mb} MB")
    except MemoryError:
        return Rejected("out_of_memory", f"{key}: reading needs more than {memory_mb} MB of memory")
    except Rejected as rejection:
        return rejection


def run_limited(function: Callable, *args: Any, key: str, seconds: float, memory_mb: int, workers: int = 1) -> Any:
    """``function(*args)`` in a limited worker; returns its result, or raises Rejected (timeout, memory, or the
    Rejected the function raised). ``function`` must be importable (a module-level function)."""
    result = _verdict(_pool(max(workers, 1), memory_mb).schedule(function, args=args, timeout=seconds),
                      key=key, seconds=seconds, memory_mb=memory_mb)
    if isinstance(result, Rejected):
        raise result
    return result


def map_limited(function: Callable, jobs: Iterable[tuple[str, tuple]], *, seconds: float, memory_mb: int,
                workers: int = 0) -> Iterator[Any]:
    """``function(*args)`` for every ``(key, args)`` job, in order, each in a limited worker.

    Yields each result, or a Rejected for a job that timed out or whose worker died (the other jobs go
    on). At most a few jobs per worker are in flight, so a long iterable is not held in memory.
    """
    workers = workers or os.cpu_count() or 1
    pool = _pool(workers, memory_mb)
    window: deque = deque()

    def oldest() -> Any:
        key, future = window.popleft()
        return _verdict(future, key=key, seconds=seconds, memory_mb=memory_mb)

    for key, args in jobs:
        window.append((key, pool.schedule(function, args=args, timeout=seconds)))
        if len(window) >= 8 * workers:
            yield oldest()
    while window:
        yield oldest()
