"""One worker per spool: an exclusive ``flock`` on ``<spool>/worker.lock``.

The kernel releases the lock when the holder dies (even by ``kill -9``), so a stale
lock file never blocks a new worker.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILENAME = "worker.lock"


class WorkerAlreadyRunning(RuntimeError):
    pass


class SpoolLock:
    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / LOCK_FILENAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkerAlreadyRunning(
                f"another agentspool worker (pid {holder}) is already running on {self.path.parent};"
                " stop it first, or point this one at another spool with --spool"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_holder(spool_dir: Path) -> int | None:
    """The pid of the running worker, or None if no worker holds the lock."""
    path = spool_dir / LOCK_FILENAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
