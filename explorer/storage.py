"""Files written so that a crash never leaves a half-written one, and the leftovers of a crash are cleaned.

Every table and map is written to a hidden temporary next to its target (``.NAME.PID.random``) and renamed
over it in one step. A process killed mid-write (kill -9, power cut) leaves its temporary behind: the
temporaries of processes that no longer run are removed when a build or the server starts.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+$")


def _prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def atomic_file(target: Path, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` into a temporary beside ``target``, then rename it over ``target`` (readable by all)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=_prefix(target))
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_folder(target: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp_folder)`` into a temporary folder beside ``target``, then put it in ``target``'s place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target)))
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writing process is gone; returns what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if not match or process_alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def exclusive(lock_file: Path, *, wait: bool = False):
    """An open file that holds an exclusive lock on ``lock_file`` (created when missing) until it is closed, or None
    when another process holds that lock now: of the server's processes, one runs a job and the others leave it
    (``wait``: the others wait for it, then take the lock in turn). The lock goes with the process that holds it, even
    when it is killed. Where there is no ``fcntl`` (Windows: one server process), always the file."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")  # noqa: SIM115 - the caller closes it when its job is done
    try:
        import fcntl
    except ImportError:
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle
