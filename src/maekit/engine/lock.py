"""One run per ``--output_dir``: a lock file with the owner's PID and host, and the fresh-run check.

Two runs writing into one folder interleave their log lines and overwrite each other's
checkpoints, and a new run started without ``--resume`` into a used folder silently replaces
``checkpoint-last.pth``. Rank 0 therefore takes ``output_dir/.maekit.lock`` (created with
O_EXCL, so two starts cannot both win) before writing anything, and releases it on exit. A lock
left by a dead process on this host (SIGKILL, a node crash...) is taken over with a message; one
held by a live process, or by another host (whose processes cannot be checked), refuses the run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import RunFolderError, write_failure
from .checkpoint import CHECKPOINT_RE, remove_orphan_temps
from .distributed import sum_over_ranks

logger = logging.getLogger("maekit.engine")

LOCK_NAME = ".maekit.lock"


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks (Linux), to tell a PID reused by another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    now = _process_start(pid)
    return start is None or now is None or now == start


class RunLock:
    """``with RunLock(output_dir):`` holds the folder for this process (a no-op for None)."""

    def __init__(self, output_dir: str | os.PathLike | None):
        self.path = Path(output_dir) / LOCK_NAME if output_dir else None
        self.held = False

    def acquire(self) -> RunLock:
        if self.path is None:
            return self
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_failure(self.path, e) from e
        for _ in range(3):  # a take-over races with another starter at most a couple of times
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_or_refuse()
                continue
            except OSError as e:
                raise write_failure(self.path, e) from e
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise RunFolderError(f"could not take the lock {self.path}: another run keeps creating it")

    def owner(self) -> tuple[dict, int, str] | None:
        """(lock record, PID, host) of the current holder, None when the folder is not locked."""
        if self.path is None:
            return None
        try:
            owner = json.loads(self.path.read_text())
            return owner, int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return {}, -1, "?"

    def check_not_held_elsewhere(self) -> tuple[dict, int, str] | None:
        """Raise :class:`RunFolderError` when a live process (or one on another host) holds the lock;
        else return :meth:`owner` (None: not locked)."""
        held = self.owner()
        if held is None:
            return None
        owner, pid, host = held
        here = host == socket.gethostname()
        if here and pid > 0 and pid != os.getpid() and _alive(pid, owner.get("start")):
            raise RunFolderError(
                f"--output_dir {self.path.parent} is in use by a running maekit process (PID {pid} on this "
                f"host, since {owner.get('since', '?')}); wait for it, stop it, or choose another --output_dir")
        if not here and pid > 0:
            raise RunFolderError(
                f"--output_dir {self.path.parent} is locked by PID {pid} on host {host} "
                f"(since {owner.get('since', '?')}), which cannot be checked from here; if that run has "
                f"ended, delete {self.path} and start again")
        return held

    def _take_over_or_refuse(self) -> None:
        held = self.check_not_held_elsewhere()
        if held is None:
            return  # released meanwhile: try again
        if held[1] != os.getpid():  # this process's own leftover (an earlier fit that raised) needs no message
            logger.warning("taking over the stale lock %s of PID %s (no longer running)", self.path, held[1])
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held and self.path is not None:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_fresh_run(output_dir: str | os.PathLike | None, *, resume: object, overwrite: bool,
                    remove: bool) -> None:
    """Refuse a run without ``--resume`` into a folder holding checkpoints, unless ``overwrite``.

    With ``overwrite`` the earlier run's checkpoints and ``log.txt`` are deleted (``remove``: rank 0
    only), so ``--resume auto`` later cannot mix the two runs.
    """
    d = Path(output_dir) if output_dir else None
    if resume or d is None or not d.is_dir():
        return
    found = sorted(p.name for p in d.iterdir() if CHECKPOINT_RE.fullmatch(p.name))
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
        raise RunFolderError(
            f"--output_dir {output_dir} already holds checkpoints of an earlier run ({shown}); pass "
            "--resume auto to continue it, --overwrite to start again and replace them, or choose "
            "another --output_dir")
    if remove:
        for name in [*found, "log.txt"]:
            (d / name).unlink(missing_ok=True)
        logger.warning("--overwrite: removed %s from %s", ", ".join(found + ["log.txt"]), output_dir)


def check_output_dir(output_dir: str | os.PathLike | None, *, resume: object, overwrite: bool) -> None:
    """The run-folder checks a task makes when it starts, before building data that may take minutes
    to scan: no live run holds the folder, and it holds no earlier run's checkpoints unless resumed
    or overwritten. Nothing is taken or deleted here; the Runner takes the lock when it starts."""
    RunLock(output_dir).check_not_held_elsewhere()
    check_fresh_run(output_dir, resume=resume, overwrite=overwrite, remove=False)


def take_output_dir(output_dir: str | os.PathLike | None, *, resume: Any, overwrite: bool,
                    is_main: bool) -> RunLock:
    """Lock ``output_dir`` (rank 0), refuse to clobber an earlier run, drop orphan temporary files.
    Returns the lock (held on rank 0; the caller releases it).

    Collective: every rank calls it and all raise together, so no rank waits for a failed one.
    """
    lock = RunLock(output_dir if is_main else None)
    error: Exception | None = None
    try:
        lock.acquire()
        check_fresh_run(output_dir, resume=resume, overwrite=overwrite, remove=is_main)
        if is_main and output_dir:
            for p in remove_orphan_temps(output_dir):
                logger.warning("removed %s, left by a save that was interrupted", p.name)
    except Exception as e:  # raised below, after the other ranks heard of it
        error = e
    if sum_over_ranks([float(error is not None)])[0]:
        lock.release()
        raise error if error is not None else RunFolderError(f"another rank could not use --output_dir {output_dir}")
    return lock
