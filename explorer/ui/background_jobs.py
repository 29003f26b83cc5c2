"""The page's background jobs (a relaxation, ChemEnv's labels, a map build), a few at a time.

Dash's ``DiskcacheManager`` starts a process for every job the moment it is asked, with no limit. A relaxation's
process holds about 0.6 GB (torch, pymatgen, CHGNet): eight requests at once took 4.9 GB on top of the server, and
a client that repeats the request (or forty users pressing "Relax") would take the machine's memory and its
cores. ``BoundedJobManager`` keeps Dash's protocol (results and progress in the diskcache, one process per job,
the browser polling) and admits the jobs:

- at most ``max_running`` processes run at once;
- the next ``max_waiting`` requests wait in order of arrival, without a process, and their progress line says how
  many jobs are ahead; each starts when one finishes or is cancelled;
- a request beyond that is refused at once, in words, in the page's error line (nothing the user had is lost).

A job is known to the browser by an id of this manager, not by a process id, so a waiting job has one too; the ids
live in the server process (the app serves from one process with many threads, ``python app.py``).
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import OrderedDict

from dash import DiskcacheManager

BUSY = "The server is busy:"
"""How a refusal starts (Dash hands it to the page's error handler inside a ``BackgroundCallbackError``)."""

WAIT_POLL_SECONDS = 0.25
"""How often the starter thread looks for a free slot while jobs wait."""


class BoundedJobManager(DiskcacheManager):
    """``DiskcacheManager`` with at most ``max_running`` job processes and ``max_waiting`` jobs waiting for one."""

    def __init__(self, cache, *, max_running: int, max_waiting: int) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError(f"need max_running >= 1 and max_waiting >= 0, got {max_running!r}, {max_waiting!r}")
        super().__init__(cache)
        self.max_running, self.max_waiting = int(max_running), int(max_waiting)
        self._lock = threading.Lock()
        self._running: dict[int, object] = {}  # job id -> multiprocess.Process
        self._waiting: OrderedDict[int, tuple] = OrderedDict()  # job id -> (key, job_fn, args, context)
        self._starting = False  # a starter thread runs (set and cleared with the lock held)
        # ids start at a random offset: a page still polling a job of an earlier server never names a job of this one
        self._ids = itertools.count(secrets.randbits(40) + 1)

    # -- what Dash calls -------------------------------------------------------------------------------------------
    def call_job_fn(self, key, job_fn, args, context) -> int:
        job = next(self._ids)
        with self._lock:
            self._reap()
            if len(self._running) < self.max_running and not self._waiting:
                self._running[job] = self._start(key, job_fn, args, context)
            elif len(self._waiting) < self.max_waiting:
                self._waiting[job] = (key, job_fn, args, context)
                self._say_places()
                if not self._starting:
                    self._starting = True
                    threading.Thread(target=self._start_waiting, name="background-jobs", daemon=True).start()
            else:
                self.handle.set(key, {"background_callback_error": {"msg": self.busy_message(), "tb": ""}})
        return job

    def job_running(self, job) -> bool:
        job = _job_id(job)
        with self._lock:
            if job in self._waiting:
                return True
            process = self._running.get(job)
            return process is not None and process.is_alive()

    def terminate_job(self, job) -> None:
        job = _job_id(job)
        with self._lock:
            self._waiting.pop(job, None)
            process = self._running.pop(job, None)
        if process is not None:
            _kill_tree(process)

    def terminate_unhealthy_job(self, job) -> bool:
        job = _job_id(job)
        with self._lock:
            process = self._running.get(job)
            dead = process is not None and not process.is_alive()
        if dead:
            self.terminate_job(job)
        return dead

    def terminate_all(self) -> None:
        """End every job, running or waiting (a server that stops, or a test that is done)."""
        with self._lock:
            jobs = [*self._running, *self._waiting]
        for job in jobs:
            self.terminate_job(job)

    # -- the admission ---------------------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(running, waiting) jobs now."""
        with self._lock:
            self._reap()
            return len(self._running), len(self._waiting)

    def busy_message(self) -> str:
        running = f"{self.max_running} background job{' is' if self.max_running == 1 else 's are'} running"
        waiting = f"{self.max_waiting} more {'is' if self.max_waiting == 1 else 'are'} waiting"
        return (f"{BUSY} {running} (relaxations, map builds, ChemEnv labels) and {waiting}, the most it takes at "
                "once. Nothing you had is lost; try again when one of them has finished.")

    def _start(self, key, job_fn, args, context):
        from multiprocess import Process  # Dash's choice: it pickles the callback (a closure) with dill

        process = Process(target=job_fn, args=(key, self._make_progress_key(key), args, context))
        process.start()
        return process

    def _reap(self) -> None:
        """Forget (and join) the processes that have ended. Call with the lock held."""
        for job, process in list(self._running.items()):
            if not process.is_alive():
                process.join(0)
                del self._running[job]

    def _say_places(self) -> None:
        """Each waiting job's progress line: how many jobs are ahead of it. Call with the lock held."""
        for place, (key, *_rest) in enumerate(self._waiting.values()):
            ahead = len(self._running) + place
            self.handle.set(self._make_progress_key(key),
                            [f"waiting for a free slot: {ahead} job{'s' if ahead != 1 else ''} ahead "
                             f"(this server runs {self.max_running} at once)…"])

    def _start_waiting(self) -> None:
        """Start waiting jobs, oldest first, as slots free; end when none waits."""
        stop = threading.Event()
        while not stop.wait(WAIT_POLL_SECONDS):
            with self._lock:
                self._reap()
                started = False
                while self._waiting and len(self._running) < self.max_running:
                    job, (key, job_fn, args, context) = self._waiting.popitem(last=False)
                    self.handle.delete(self._make_progress_key(key))
                    self._running[job] = self._start(key, job_fn, args, context)
                    started = True
                if started:
                    self._say_places()
                if not self._waiting:
                    self._starting = False
                    return


def _job_id(job) -> int:
    """A job id from Dash (signed by Dash, so it is one this server handed out, but read it as any value)."""
    try:
        return int(job)
    except (TypeError, ValueError):
        return -1


def expected_problem(error: Exception) -> str | None:
    """The words for the page when ``error`` is an expected problem of a background job: this manager's refusal, or
    a ``ValueError`` / ``FileNotFoundError`` the job raised (a bad value from the browser). Dash hands both to the
    error handler as a ``BackgroundCallbackError`` whose text is "An error occurred inside a background callback:
    <message>" and the job's traceback (empty for a refusal). None for anything else."""
    from dash.exceptions import BackgroundCallbackError

    if not isinstance(error, BackgroundCallbackError):
        return None
    text = str(error).removeprefix("An error occurred inside a background callback: ")
    message, _, trace = text.partition("\nTraceback (most recent call last):")
    if message.startswith(BUSY):
        return message.strip()
    raised = [line for line in trace.splitlines() if line and not line[0].isspace()]
    if raised and raised[-1].startswith(("ValueError: ", "FileNotFoundError: ")):
        return message.strip()
    return None


def _kill_tree(process) -> None:
    """Kill a job's process and whatever it started, and reap it."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.kill()
    process.join(1)
