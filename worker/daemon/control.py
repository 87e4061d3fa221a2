"""Tell a running worker what to do from another process.

The worker's pid is in its lock file. ``SIGUSR1`` (``agentspool drain``) asks it to
finish the way ``--burst`` does: drain everything, seal sessions whose producers are
gone, sync, then exit; the caller waits (bounded) for the lock to be released, then
reads the spool's status itself (reports.status). ``SIGUSR2`` (``agentspool retry``)
asks it to drop its sync backoff and try now.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentspool.worker.config import Settings
from agentspool.worker.daemon.lock import lock_holder
from agentspool.worker.daemon.service import FINISH_SIGNAL, RETRY_SIGNAL, Worker


@dataclass(frozen=True)
class FinishOutcome:
    worker_pid: int | None  # the worker that was asked; None: no worker, ran a burst here
    finished: bool  # the worker exited within the timeout


def finish_worker(
    settings: Settings, timeout: float, sleep: Callable[[float], None] = time.sleep
) -> FinishOutcome:
    pid = lock_holder(settings.spool_dir)
    if pid is None or pid <= 0:
        # No worker (it died, or never started): do its final work here.
        Worker(settings, burst=True).run()
        return FinishOutcome(None, True)
    os.kill(pid, FINISH_SIGNAL)
    deadline = time.monotonic() + timeout
    while lock_holder(settings.spool_dir) is not None and time.monotonic() < deadline:
        sleep(0.1)
    finished = lock_holder(settings.spool_dir) is None
    return FinishOutcome(pid, finished)


def retry_now(spool_dir: Path) -> bool:
    """Ask the running worker (if any) to sync at once; return whether one was asked."""
    pid = lock_holder(spool_dir)
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, RETRY_SIGNAL)
    except OSError:
        return False  # it just exited: the next one starts without a backoff
    return True
