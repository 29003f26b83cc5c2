"""The page's background jobs are admitted a few at a time: real job processes through Dash's own job wrapper."""

from __future__ import annotations

import time
from pathlib import Path

import diskcache
import multiprocess
import pytest

from explorer.ui.background_jobs import BoundedJobManager


def sleep_then_write(progress, seconds, path):
    """A job: says it started, sleeps, then writes a file and returns its name."""
    progress("started")
    time.sleep(seconds)
    Path(path).write_text("done")
    return Path(path).name


@pytest.fixture()
def manager(tmp_path):
    multiprocess.set_start_method("spawn", force=True)  # as the app does
    jobs = BoundedJobManager(diskcache.Cache(str(tmp_path / "cache")), max_running=1, max_waiting=1)
    yield jobs
    jobs.terminate_all()
    assert jobs.counts() == (0, 0)


def submit(manager, key: str, seconds: float, path: Path) -> int:
    job_fn = manager.make_job_fn(sleep_then_write, progress=True)
    return manager.call_job_fn(key, job_fn, [seconds, str(path)], {})


def wait_for(condition, timeout: float = 60.0) -> None:
    start = time.perf_counter()
    while not condition():
        assert time.perf_counter() - start < timeout, "timed out"
        time.sleep(0.05)


def test_one_runs_the_next_waits_with_its_place_and_a_third_is_refused_in_words(manager, tmp_path):
    first = submit(manager, "first", 2.0, tmp_path / "first")
    second = submit(manager, "second", 0.0, tmp_path / "second")
    third = submit(manager, "third", 0.0, tmp_path / "third")
    assert manager.counts() == (1, 1)
    assert manager.job_running(first) and manager.job_running(second) and not manager.job_running(third)
    assert manager.get_progress("second") == ["waiting for a free slot: 1 job ahead (this server runs 1 at once)…"]
    refused = manager.get_result("third", third)
    assert "server is busy" in refused["background_callback_error"]["msg"]
    assert not (tmp_path / "third").exists()

    wait_for(lambda: manager.result_ready("first"))
    assert manager.get_result("first", first) == "first"
    wait_for(lambda: manager.result_ready("second"))  # started by the manager once the first had finished
    assert manager.get_result("second", second) == "second"
    wait_for(lambda: manager.counts() == (0, 0))
    assert (tmp_path / "first").exists() and (tmp_path / "second").exists()


def test_a_cancelled_job_frees_its_slot_and_a_cancelled_waiting_job_never_runs(manager, tmp_path):
    running = submit(manager, "running", 60.0, tmp_path / "running")
    waiting = submit(manager, "waiting", 0.0, tmp_path / "waiting")
    wait_for(lambda: manager.get_progress("running") == ["started"])
    manager.terminate_job(waiting)  # the page was closed or the user pressed cancel
    assert not manager.job_running(waiting) and manager.counts() == (1, 0)
    manager.terminate_job(running)
    assert not manager.job_running(running) and manager.counts() == (0, 0)
    again = submit(manager, "again", 0.0, tmp_path / "again")  # the slot is free again
    wait_for(lambda: manager.result_ready("again"))
    assert manager.get_result("again", again) == "again"
    time.sleep(1.0)
    assert not (tmp_path / "waiting").exists() and not (tmp_path / "running").exists()


def test_server_processes_that_share_the_cache_share_the_limit_and_each_can_answer_and_cancel_any_job(tmp_path):
    """Two managers on one cache stand for two server processes (e.g. gunicorn workers): a page's polls may reach
    either, so each must see and cancel the other's jobs, and the limit counts both."""
    multiprocess.set_start_method("spawn", force=True)
    one, two = (BoundedJobManager(diskcache.Cache(str(tmp_path / "cache")), max_running=1, max_waiting=1)
                for _ in range(2))
    try:
        running = submit(one, "running", 60.0, tmp_path / "running")
        waiting = submit(two, "waiting", 0.0, tmp_path / "waiting")  # the other process's slot is taken
        refused = submit(one, "refused", 0.0, tmp_path / "refused")
        assert one.counts() == two.counts() == (1, 1)
        assert two.job_running(running) and one.job_running(waiting) and not two.job_running(refused)
        assert "server is busy" in two.get_result("refused", refused)["background_callback_error"]["msg"]
        wait_for(lambda: two.get_progress("running") == ["started"])
        two.terminate_job(running)  # cancelled through the process that did not start it
        assert not one.job_running(running)
        wait_for(lambda: one.result_ready("waiting"))  # then started by the process that holds its callback
        assert one.get_result("waiting", waiting) == "waiting"
        wait_for(lambda: one.counts() == (0, 0))
    finally:
        one.terminate_all()
        two.terminate_all()
    assert not (tmp_path / "running").exists() and not (tmp_path / "refused").exists()


def test_a_job_whose_process_was_killed_is_answered_in_words(manager, tmp_path):
    """A job process killed from outside (the system's out-of-memory killer, an operator) writes no answer: Dash would
    stop polling in silence; the page is told what happened instead."""
    import os
    import signal

    from explorer.ui.background_jobs import LOST_RUNNING, STATE_KEY

    job = submit(manager, "killed", 60.0, tmp_path / "killed")
    wait_for(lambda: manager.get_progress("killed") == ["started"])
    os.kill(manager.handle.get(STATE_KEY)[job]["pid"][0], signal.SIGKILL)
    wait_for(lambda: manager.counts() == (0, 0))
    assert manager.get_result("killed", job) == {"background_callback_error": {"msg": LOST_RUNNING, "tb": ""}}
    assert not manager.job_running(job)
    done = submit(manager, "done", 0.0, tmp_path / "done")  # an answer that is there is never taken for a lost one
    wait_for(lambda: manager.result_ready("done"))
    assert manager.get_result("done", done) == "done" and not manager.result_ready("done")


def test_a_waiting_job_of_a_server_process_that_has_gone_is_answered_in_words(manager, tmp_path):
    """A waiting job can only be started by the server process that holds its callback: after that process has gone
    (a restart), a poll that reaches another process hears so in words."""
    import subprocess
    import sys

    from explorer.ui.background_jobs import LOST_WAITING

    running = submit(manager, "running", 60.0, tmp_path / "running")
    script = ("import sys, time, diskcache; from explorer.ui.background_jobs import BoundedJobManager\n"
              "m = BoundedJobManager(diskcache.Cache(sys.argv[1]), max_running=1, max_waiting=1)\n"
              "print(m.call_job_fn('orphan', m.make_job_fn(time.sleep, progress=False), [0.0], {}))\n")
    orphan = int(subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")], capture_output=True,
                                text=True, check=True, cwd=Path(__file__).parents[2]).stdout)
    assert manager.counts() == (1, 0) and not manager.job_running(orphan)
    assert manager.get_result("orphan", orphan) == {"background_callback_error": {"msg": LOST_WAITING, "tb": ""}}
    assert manager.job_running(running)


@pytest.mark.parametrize("job", [None, "x", "-5", 123456789, [1]])
def test_ids_it_never_handed_out_name_no_job(manager, job):
    assert not manager.job_running(job) and not manager.terminate_unhealthy_job(job)
    manager.terminate_job(job)  # and kill nothing


def test_limits_must_make_sense(tmp_path):
    with pytest.raises(ValueError, match="max_running"):
        BoundedJobManager(diskcache.Cache(str(tmp_path / "c")), max_running=0, max_waiting=1)


def test_a_pid_given_to_another_process_since_is_neither_a_job_nor_killed():
    """A job is stored as [pid, start time]: after a restart, a stale record whose pid the system has reused (here:
    this test's own pid, with another start time) counts as ended, and cancelling it kills nothing."""
    import os

    from explorer.ui.background_jobs import _alive, _identity, _kill_tree

    assert _alive(_identity(os.getpid()))
    stale = [os.getpid(), _identity(os.getpid())[1] - 1000.0]
    assert not _alive(stale)
    _kill_tree(stale)  # this process lives on
    assert not _alive([2**30, 0.0]) and not _alive(None)


def test_the_page_says_a_refusal_a_lost_job_or_a_bad_value_and_nothing_else_of_a_job():
    from dash.exceptions import BackgroundCallbackError

    from explorer.ui.background_jobs import BUSY, LOST_RUNNING, LOST_WAITING, expected_problem

    def raised(message: str, trace: str = "") -> BackgroundCallbackError:  # as Dash words it
        return BackgroundCallbackError(f"An error occurred inside a background callback: {message}\n{trace}")

    for words in (f"{BUSY} 2 jobs are running", LOST_RUNNING, LOST_WAITING):
        assert expected_problem(raised(words)) == words
    bad = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nValueError: unknown dataset 'x'\n"
    assert expected_problem(raised("unknown dataset 'x'", bad)) == "unknown dataset 'x'"
    assert expected_problem(raised("boom", bad.replace("ValueError", "KeyError"))) is None
    assert expected_problem(ValueError("not from a job")) is None
