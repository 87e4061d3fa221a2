"""Tell a running worker what to do from another process.

The worker's pid is in its lock file. ``SIGUSR1`` (``agentspool drain``) asks it to
finish the way ``--burst`` does: drain everything, seal sessions whose producers are
gone, sync, then exit; the caller waits (bounded) for the lock to be released, then
reads the spool's status itself (reports.status). ``SIGUSR2`` (``agentspool retry``)
asks it to drop its sync backoff and try now; ``agentspool delete`` sends it too, as
the worker removes deleted sessions at the start of every pass.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentspool.worker import state as st
from agentspool.worker.config import Settings
from agentspool.worker.daemon.deletion import apply_tombstones
from agentspool.worker.daemon.lock import SpoolLock, WorkerAlreadyRunning, lock_holder
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


@dataclass(frozen=True)
class LocalDeletion:
    worker_pid: int | None  # the worker that removed them; None: removed here
    done: bool  # every local copy is gone (False: the worker did not get to it in time)


def delete_locally(
    spool_dir: Path,
    session_ids: list[str],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> LocalDeletion:
    """Tombstone the sessions, then remove their local copies: here, holding the
    worker's lock (so that no worker starts in between), or, while a worker holds it,
    through that worker (woken with RETRY_SIGNAL, waited for up to ``timeout``)."""
    with st.created_state(spool_dir) as store:
        store.add_tombstones(session_ids, time.time())
    if threading.current_thread() is threading.main_thread():
        # Whoever holds the lock is signalled as the worker (`retry`, `drain`, another
        # `delete`): while this process holds it, such a signal must not end it.
        for signum in (FINISH_SIGNAL, RETRY_SIGNAL):
            signal.signal(signum, signal.SIG_IGN)
    deadline = time.monotonic() + timeout
    asked: int | None = None
    while True:
        lock = SpoolLock(spool_dir)
        try:
            lock.acquire()
        except WorkerAlreadyRunning:
            holder = lock_holder(spool_dir)
            if holder is not None and holder != asked and retry_now(spool_dir):
                asked = holder  # its loop removes tombstoned sessions first thing
        else:
            try:
                with st.created_state(spool_dir) as store:
                    apply_tombstones(spool_dir, store, now=time.time())
            finally:
                lock.release()
            return LocalDeletion(None, True)
        with st.existing_state(spool_dir) as store:
            left = store is None or bool(set(store.tombstones_to_apply()) & set(session_ids))
        if not left or time.monotonic() >= deadline:
            return LocalDeletion(asked, not left)
        sleep(0.05)
