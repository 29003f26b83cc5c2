"""Jobs split into partitions, run in this process, on a ``LocalCluster`` of worker processes, or on an existing
Dask cluster (``dask scheduler`` / ``dask worker``, dask-jobqueue on Slurm, Kubernetes): where is configuration
alone (``Where``), the code is the same.

A job is a module-level function and a sequence of partitions (small picklable arguments: latents, table rows).
The function runs on a worker; its result comes back to the process that started the job, which alone writes it
(``PartStore``: one Parquet file per partition, renamed into place). So a partition whose worker dies is computed
again by the scheduler and written once, and a stopped job goes on from the partitions already written when its
command is run again. Each worker loads the model once (``services.model`` caches it per process).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from explorer.storage import atomic_file

MAX_WORKERS = 256
_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx)://[\w.\-\[\]:]+$|^[\w.\-]+:\d{1,5}$")


@dataclass(frozen=True)
class Where:
    """Where a job runs: ``workers`` processes of a ``LocalCluster`` on this machine (``threads`` each), an
    existing cluster's ``scheduler`` address, or neither: in this process (no cluster start-up)."""

    workers: int | None = None
    scheduler: str | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.workers is not None and self.scheduler is not None:
            raise ValueError("give --workers (a cluster on this machine) or --scheduler (an existing cluster), "
                             "not both")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or not 1 <= self.workers <= MAX_WORKERS):
            raise ValueError(f"--workers must be a whole number from 1 to {MAX_WORKERS}, got {self.workers!r}")
        if self.scheduler is not None and not _ADDRESS.match(str(self.scheduler)):
            raise ValueError(f"--scheduler {self.scheduler!r} is not a scheduler address such as "
                             "tcp://10.0.0.5:8786 (what `dask scheduler` prints)")
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 64:
            raise ValueError(f"threads per worker must be from 1 to 64, got {self.threads!r}")

    @property
    def in_process(self) -> bool:
        return self.workers is None and self.scheduler is None

    def describe(self) -> str:
        if self.scheduler:
            return f"the Dask cluster at {self.scheduler}"
        if self.workers:
            return f"a local Dask cluster of {self.workers} worker process(es), {self.threads} thread(s) each"
        return "this process"


@contextlib.contextmanager
def client_for(where: Where) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for ``where`` (None in process); the local cluster, when one was started
    here, is shut down on leaving, Ctrl-C included."""
    if where.in_process:
        yield None
        return
    import dask
    from dask.distributed import Client, LocalCluster

    cluster = None
    if where.workers is not None:
        # not daemons: a worker that parses untrusted files starts limited parser processes of its own
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(n_workers=where.workers, threads_per_worker=where.threads, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        try:  # Dask's connect timeout (distributed.comm.timeouts.connect, 30 s unless configured)
            client = Client(where.scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
        except OSError as exc:
            raise RuntimeError(f"could not reach the Dask scheduler at {where.scheduler}: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def n_workers(client: Any) -> int:
    """Workers of the cluster (1 in process)."""
    return 1 if client is None else max(1, len(client.scheduler_info().get("workers", {})))


def run(function: Callable, partitions: Iterable[tuple[int, int, tuple]], *, client: Any,
        on_result: Callable[[int, Any], None], on_progress: Callable[[int], None] | None = None,
        in_flight: int | None = None) -> None:
    """``function(*args)`` for every ``(index, items, args)`` of ``partitions``, in this process when ``client`` is
    None, else as Dask tasks (at most ``in_flight`` at a time, so the arguments of a million items are never all
    in memory). Each result is handed to ``on_result(index, result)`` here, as it completes; ``on_progress(items)``
    then gets the partition's item count (a progress bar that counts crystals across the cluster). A task that
    fails raises here; on any exception (Ctrl-C too) the tasks still queued are cancelled."""
    if client is None:
        for index, items, args in partitions:
            on_result(index, function(*args))
            if on_progress is not None:
                on_progress(items)
        return
    from dask.distributed import as_completed

    limit = in_flight or 2 * n_workers(client) + 2
    pending = iter(partitions)
    meta: dict[Any, tuple[int, int]] = {}
    active: dict[Any, Any] = {}
    completed = as_completed()

    def submit_next() -> bool:
        job = next(pending, None)
        if job is None:
            return False
        index, items, args = job
        future = client.submit(function, *args, pure=False, key=f"{function.__name__}-{index}-{id(meta)}")
        meta[future.key], active[future.key] = (index, items), future
        completed.add(future)
        return True

    try:
        for _ in range(limit):
            if not submit_next():
                break
        for future in completed:
            index, items = meta.pop(future.key)
            active.pop(future.key)
            result = future.result()
            future.release()
            on_result(index, result)
            if on_progress is not None:
                on_progress(items)
            submit_next()
    except BaseException:
        client.cancel(list(active.values()))
        raise


class PartStore:
    """A partitioned Parquet dataset: ``folder/part-00000.parquet``, … Each partition is written once, atomically,
    by the process that runs the job (never by a worker); ``done()`` says which are there, so a stopped job can go
    on where it was."""

    PATTERN = re.compile(r"^part-(\d{5,})\.parquet$")

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, index: int) -> Path:
        return self.folder / f"part-{int(index):05d}.parquet"

    def done(self) -> set[int]:
        if not self.folder.is_dir():
            return set()
        return {int(m.group(1)) for f in self.folder.iterdir() if (m := self.PATTERN.match(f.name))}

    def write(self, index: int, frame: pd.DataFrame) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_file(self.path(index), lambda tmp: frame.to_parquet(tmp, index=False))

    def read(self, columns: list[str] | None = None, *, ids: set[str] | None = None) -> pd.DataFrame:
        """Every partition in order of its index, as one frame; with ``ids``, only the rows whose "id" is in it (each
        partition is filtered as it is read, so the other rows never sit in memory together)."""
        if ids is not None and columns is not None and "id" not in columns:
            raise ValueError(f"rows are chosen by their id: read the column 'id' too, not only {columns}")
        parts = []
        for k in sorted(self.done()):
            part = pd.read_parquet(self.path(k), columns=columns)
            parts.append(part if ids is None else part[part["id"].isin(ids)])
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
