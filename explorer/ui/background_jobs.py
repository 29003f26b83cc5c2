"""The page's background jobs (a relaxation, ChemEnv's labels, a map build), a few at a time.

Dash's ``DiskcacheManager`` starts a process for every job the moment it is asked, with no limit. A relaxation's
process holds about 0.6 GB (torch, pymatgen, CHGNet): eight requests at once took 4.9 GB on top of the server, and
a client that repeats the request (or forty users pressing "Relax") would take the machine's memory and its
cores. ``BoundedJobManager`` keeps Dash's protocol (results and progress in the diskcache, one process per job,
the browser polling) and admits the jobs:

- at most ``max_running`` job processes run at once;
- the next ``max_waiting`` requests wait in order of arrival, without a process, and their progress line says how
  many jobs are ahead; each starts when one finishes or is cancelled;
- a request beyond that is refused at once, in words, in the page's error line (nothing the user had is lost).

The jobs' states live in the diskcache, changed in its transactions, so that several server processes on one machine
(e.g. gunicorn workers, whose page polls may reach any of them) share one limit and can each answer and cancel any
job, as with Dash's own manager. A waiting job can only be started by the process that holds its callback; when that
process has gone (a restart), its waiting jobs cannot run. Such a job, and a running one whose process ended without an
answer (killed, e.g. for memory), is answered with a message in words (``LOST_WAITING``, ``LOST_RUNNING``) instead of
Dash's silence, so the page says what happened.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

from dash import DiskcacheManager

BUSY = "The server is busy:"
"""How a refusal starts (Dash hands it to the page's error handler inside a ``BackgroundCallbackError``)."""

LOST_WAITING = ("The job was waiting for a free slot in a server process that has since stopped (a restart), so it "
                "never ran. Nothing you had is lost: press the button again.")
LOST_RUNNING = ("The job's process ended without an answer (it was stopped, or ran out of memory). Nothing you had is "
                "lost: press the button again.")
LOST_SECONDS = 3600
"""How long such a message waits for its page's next poll."""

WAIT_POLL_SECONDS = 0.25
"""How often a process with waiting jobs looks for a free slot."""

STATE_KEY = "explorer-background-jobs"
"""The diskcache entry of the jobs' states: {job id: {"state": "waiting" | "running", "pid": the job's process (when
running), "owner": the manager that holds its callback, "owner_pid": that manager's process, "since": time.time_ns()
of the request, "key": Dash's cache key of its answer}}. A process is stored as [pid, start time], so that a pid the
system has given to another process since is never taken for it (nor killed)."""


class BoundedJobManager(DiskcacheManager):
    """``DiskcacheManager`` with at most ``max_running`` job processes and ``max_waiting`` jobs waiting for one."""

    def __init__(self, cache, *, max_running: int, max_waiting: int) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError(f"need max_running >= 1 and max_waiting >= 0, got {max_running!r}, {max_waiting!r}")
        super().__init__(cache)
        self.max_running, self.max_waiting = int(max_running), int(max_waiting)
        self._lock = threading.Lock()  # this process's own records below
        self._processes: dict[int, object] = {}  # job id -> multiprocess.Process this process started
        self._callbacks: dict[int, tuple] = {}  # job id -> (key, job_fn, args, context) of its waiting jobs
        self._starting = False  # a starter thread runs (set and cleared with the lock held)
        self._said: dict[int, str] = {}  # job id -> the place last written to its progress line
        self._token = secrets.token_hex(8)  # this manager, among the server processes that share the cache
        self._me = _identity(os.getpid())

    # -- what Dash calls -------------------------------------------------------------------------------------------
    def build_cache_key(self, fn, args, cache_args_to_ignore, triggered) -> str:
        """Dash's key (a hash of the callback and its arguments) made unique per request. The key carries a job's
        result, progress and refusal to the page that asked; this manager memoises nothing (``cache_by`` is None).
        With Dash's key, two pages that asked the same at once (one material, one button) shared it: the first to
        poll took the other's answer, or its refusal, and Dash then ended the poller's own job."""
        return f"{super().build_cache_key(fn, args, cache_args_to_ignore, triggered)}-{secrets.token_hex(8)}"

    def call_job_fn(self, key, job_fn, args, context) -> int:
        job = secrets.randbits(52) + 1  # Dash signs it for the page; never a process id
        with self._lock, self.handle.transact():
            jobs = self._live(self.handle.get(STATE_KEY, {}))
            running = _running(jobs)
            waiting = len(jobs) - running
            record = {"owner": self._token, "owner_pid": self._me, "since": time.time_ns(), "key": key}
            if running < self.max_running and not waiting:
                jobs[job] = {**record, "state": "running", "pid": self._start(job, key, job_fn, args, context)}
            elif waiting < self.max_waiting:
                jobs[job] = {**record, "state": "waiting", "pid": None}
                self._callbacks[job] = (key, job_fn, args, context)
                if not self._starting:
                    self._starting = True
                    threading.Thread(target=self._start_waiting, name="background-jobs", daemon=True).start()
            else:
                self.handle.set(key, {"background_callback_error": {"msg": self.busy_message(), "tb": ""}})
            self.handle.set(STATE_KEY, jobs)
            self._say_places(jobs)
        return job

    def get_result(self, key, job):
        if job and self.handle.get(key, self.UNDEFINED) is not self.UNDEFINED:
            self.terminate_job(job)  # the record goes before the answer, which is then never taken for a lost one
        return super().get_result(key, job)

    def job_running(self, job) -> bool:
        return _job_id(job) in self._jobs()  # only live jobs are listed (``_live``)

    def terminate_job(self, job) -> None:
        job = _job_id(job)
        with self._lock, self.handle.transact():
            jobs = self.handle.get(STATE_KEY, {})
            record = jobs.pop(job, None)
            self.handle.set(STATE_KEY, jobs)
            self._callbacks.pop(job, None)
            self._said.pop(job, None)
            process = self._processes.pop(job, None)
        if record is not None and record["state"] == "running":
            _kill_tree(record["pid"])
        if process is not None:
            process.join(1)

    def terminate_unhealthy_job(self, job) -> bool:
        with self._lock, self.handle.transact():
            record = self.handle.get(STATE_KEY, {}).get(_job_id(job))
        dead = record is not None and record["state"] == "running" and not _alive(record["pid"])
        if dead:
            self.terminate_job(job)
        return dead

    # -- the admission ---------------------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(running, waiting) jobs now, over every server process that shares the cache."""
        jobs = self._jobs()
        running = _running(jobs)
        return running, len(jobs) - running

    def terminate_all(self) -> None:
        """End every job, running or waiting (a server that stops, or a test that is done)."""
        for job in list(self._jobs()):
            self.terminate_job(job)

    def busy_message(self) -> str:
        running = f"{self.max_running} background job{' is' if self.max_running == 1 else 's are'} running"
        waiting = f"{self.max_waiting} more {'is' if self.max_waiting == 1 else 'are'} waiting"
        return (f"{BUSY} {running} (relaxations, map builds, ChemEnv labels) and {waiting}, the most it takes at "
                "once. Nothing you had is lost; try again when one of them has finished.")

    def _jobs(self) -> dict:
        with self._lock, self.handle.transact():
            stored = self.handle.get(STATE_KEY, {})
            jobs = self._live(stored)
            if len(jobs) != len(stored):
                self.handle.set(STATE_KEY, jobs)
        return jobs

    def _live(self, jobs: dict) -> dict:
        """``jobs`` without the finished ones: a running job whose process has ended (this manager's own are joined),
        a waiting job whose manager has gone (or, this manager's own, was cancelled). Call with the lock held."""
        for job, process in list(self._processes.items()):
            if not process.is_alive():
                process.join(0)
                del self._processes[job]
        live = {job: record for job, record in jobs.items()
                if (record["state"] == "running" and _alive(record["pid"]))
                or (record["state"] == "waiting" and (job in self._callbacks if record["owner"] == self._token
                                                      else _alive(record["owner_pid"])))}
        for job, record in jobs.items():
            key = record.get("key")
            if job not in live and isinstance(key, str) and key not in self.handle:  # ended with no answer
                lost = LOST_RUNNING if record["state"] == "running" else LOST_WAITING
                self.handle.set(key, {"background_callback_error": {"msg": lost, "tb": ""}}, expire=LOST_SECONDS)
        return live

    def _start(self, job: int, key, job_fn, args, context) -> list:
        from multiprocess import Process  # Dash's choice: it pickles the callback (a closure) with dill

        process = Process(target=job_fn, args=(key, self._make_progress_key(key), args, context))
        process.start()
        self._processes[job] = process
        return _identity(process.pid)

    def _say_places(self, jobs: dict) -> None:
        """This process's waiting jobs' progress lines: how many jobs are ahead of each."""
        running = _running(jobs)
        waiting = sorted((record["since"], job) for job, record in jobs.items() if record["state"] == "waiting")
        for place, (_since, job) in enumerate(waiting):
            ahead = running + place
            line = (f"waiting for a free slot: {ahead} job{'s' if ahead != 1 else ''} ahead (this server runs "
                    f"{self.max_running} at once)…")
            if job in self._callbacks and self._said.get(job) != line:  # the page keeps showing the last line
                self.handle.set(self._make_progress_key(self._callbacks[job][0]), [line])
                self._said[job] = line

    def _start_waiting(self) -> None:
        """Start this process's waiting jobs as slots free, the oldest waiting job of any process first; end when
        this process has none waiting."""
        stop = threading.Event()
        while not stop.wait(WAIT_POLL_SECONDS):
            with self._lock, self.handle.transact():
                stored = self.handle.get(STATE_KEY, {})
                jobs = self._live(stored)
                for job in [job for job in self._callbacks if job not in jobs]:  # cancelled
                    del self._callbacks[job]
                    self._said.pop(job, None)
                running = _running(jobs)
                queue = sorted((record["since"], job) for job, record in jobs.items() if record["state"] == "waiting")
                for _since, job in queue[:max(0, self.max_running - running)]:
                    if job not in self._callbacks:
                        break  # the oldest is another process's to start
                    key, job_fn, args, context = self._callbacks.pop(job)
                    self._said.pop(job, None)
                    self.handle.delete(self._make_progress_key(key))
                    jobs[job] = {**jobs[job], "state": "running", "pid": self._start(job, key, job_fn, args, context)}
                if jobs != stored:
                    self.handle.set(STATE_KEY, jobs)
                self._say_places(jobs)
                if not self._callbacks:
                    self._starting = False
                    return


def _running(jobs: dict) -> int:
    """How many of the stored ``jobs`` run (the others wait)."""
    return sum(record["state"] == "running" for record in jobs.values())


def _job_id(job) -> int:
    """A job id from Dash (signed by Dash, so it is one this server handed out, but read it as any value)."""
    try:
        return int(job)
    except (TypeError, ValueError):
        return -1


def _identity(pid: int) -> list:
    """[pid, start time] of a process ([pid, None] when it has already gone: it then counts as ended)."""
    import psutil

    try:
        return [pid, psutil.Process(pid).create_time()]
    except psutil.NoSuchProcess:
        return [pid, None]


def _process(identity) -> object | None:
    """The psutil process of an ``_identity``, if that very process still exists."""
    import psutil

    try:
        process = psutil.Process(int(identity[0]))
        return process if process.create_time() == identity[1] else None
    except (psutil.NoSuchProcess, TypeError, ValueError, IndexError):
        return None


def _alive(identity) -> bool:
    import psutil

    process = _process(identity)
    try:
        return process is not None and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


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
    if message.startswith((BUSY, LOST_WAITING, LOST_RUNNING)):
        return message.strip()
    raised = [line for line in trace.splitlines() if line and not line[0].isspace()]
    if raised and raised[-1].startswith(("ValueError: ", "FileNotFoundError: ")):
        return message.strip()
    return None


def _kill_tree(identity) -> None:
    """Kill a job's process (an ``_identity``) and whatever it started."""
    import psutil

    process = _process(identity)
    if process is None:
        return
    try:
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for victim in [*children, process]:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass
