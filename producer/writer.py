"""The background writer: the only thread of a producer process that touches disk.

Agents hand it serialized events through an in-memory ``SimpleQueue`` (a C-level
append, well under a microsecond); the writer drains whatever has accumulated and
commits it to the producer's queue file in one transaction. Nothing here ever
raises into the agent: a failed write is kept and retried with backoff, and the
agent keeps emitting into the bounded buffer until it is full, after which new
events are dropped and counted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty, SimpleQueue

from . import queuefile

log = logging.getLogger("agentspool.producer")

MAX_BATCH = 5000  # events per transaction: large enough to amortize the commit
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
SIZE_CHECK_INTERVAL_S = 1.0


class Barrier:
    """Put in the hand-off queue by ``flush``; set once everything before it is durable."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Stop:
    """Tells the writer thread to exit after writing everything before it."""


Handoff = SimpleQueue[bytes | Barrier | _Stop]


class Writer:
    def __init__(
        self,
        queue_dir: Path,
        info_factory: Callable[[], queuefile.ProducerInfo],
        dropped_counter: Callable[[], int],
        count_drops: Callable[[int], None] = lambda n: None,
        max_queue_bytes: int = 0,
    ) -> None:
        self.queue_dir = queue_dir
        self.handoff: Handoff = SimpleQueue()
        self.written = 0
        self.held = 0  # events taken from the hand-off but not yet written
        # Held while the thread is inside SQLite; a fork waits for it (see spool.py).
        self.disk_lock = threading.Lock()
        self.write_errors = 0
        self.last_error: str | None = None
        self._info_factory = info_factory
        self._dropped_counter = dropped_counter
        self._count_drops = count_drops
        self.max_queue_bytes = max_queue_bytes
        self._next_size_check = 0.0
        self._over_budget = False
        self._dropped_recorded = 0
        self._conn: sqlite3.Connection | None = None
        self._unsynced = False  # commits made without an fsync since the last one with
        self._thread = threading.Thread(target=self._run, name="agentspool-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Write everything handed off so far, then end the thread (bounded wait)."""
        self.handoff.put(_Stop())
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abandon_after_fork(self) -> None:
        """In a forked child: never touch the parent's connection (not even to close it:
        closing the last connection of a WAL database checkpoints and may delete the
        WAL under the parent). Keep a reference so garbage collection cannot close it."""
        if self._conn is not None:
            _INHERITED_CONNECTIONS.append(self._conn)
            self._conn = None

    # ---- writer thread -------------------------------------------------------

    def _run(self) -> None:
        pending: list[bytes] = []
        barriers: list[Barrier] = []
        stopping = False
        delay = RETRY_MIN_S
        while True:
            if not pending and not barriers and not stopping:
                stopping = self._collect(self.handoff.get(), pending, barriers)
            stopping = self._collect_available(pending, barriers) or stopping
            self.held = len(pending)
            if pending and self._queue_full():
                # Over the size bound: new events are dropped and counted; the agent
                # is never blocked, and writing resumes once the worker drains.
                self._count_drops(len(pending))
                pending = []
                self.held = 0
            if self._write(pending, durable=bool(barriers)):
                pending = []
                self.held = 0
                for barrier in barriers:
                    barrier.done.set()
                barriers = []
                delay = RETRY_MIN_S
                if stopping:
                    self._close(mark_closed=True)
                    return
            else:
                if stopping:
                    return  # a bounded stop must not retry forever
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _collect(
        self, item: bytes | Barrier | _Stop, pending: list[bytes], barriers: list[Barrier]
    ) -> bool:
        if isinstance(item, bytes):
            pending.append(item)
        elif isinstance(item, Barrier):
            barriers.append(item)
        else:
            return True
        return False

    def _collect_available(self, pending: list[bytes], barriers: list[Barrier]) -> bool:
        stop = False
        while len(pending) < MAX_BATCH:
            try:
                item = self.handoff.get_nowait()
            except Empty:
                break
            stop = self._collect(item, pending, barriers) or stop
        return stop

    def _write(self, items: list[bytes], *, durable: bool) -> bool:
        if not items and self._conn is None and self._dropped_counter() == self._dropped_recorded:
            return True  # nothing to say: do not create a file for it
        try:
            with self.disk_lock:
                conn = self._connection()
                if items:
                    queuefile.append_batch(conn, items, fsync=durable)
                elif durable and self._unsynced:
                    # A flush with nothing new: earlier batches were committed without
                    # an fsync; make them durable now.
                    queuefile.sync_to_disk(conn)
                self._unsynced = not durable and (self._unsynced or bool(items))
                self._record_drops(conn)
        except Exception as exc:  # disk full, permissions, a damaged file, ...
            self.write_errors += 1
            if self.write_errors == 1:  # once: an agent's log must not fill with these
                log.warning(
                    "agentspool: cannot write to the spool %s: %s; events wait in memory and"
                    " are retried, end() and flush() return False until they are on disk"
                    " (Spool.stats() counts the errors)",
                    self.queue_dir.parent.parent,
                    exc,
                )
            self.last_error = str(exc)
            self._close(mark_closed=False)
            return False
        self.written += len(items)
        return True

    def _queue_full(self) -> bool:
        """Is the live data in this producer's queue file over ``max_queue_bytes``?
        Checked at most once a second (freed pages of drained items count as free)."""
        if self.max_queue_bytes <= 0 or self._conn is None:
            return False
        now = time.monotonic()
        if now >= self._next_size_check:
            self._next_size_check = now + SIZE_CHECK_INTERVAL_S
            try:
                with self.disk_lock:
                    self._over_budget = queuefile.live_bytes(self._conn) > self.max_queue_bytes
            except Exception:
                self._over_budget = False  # a write error will tell
        return self._over_budget

    def _record_drops(self, conn: sqlite3.Connection) -> None:
        dropped = self._dropped_counter()
        if dropped != self._dropped_recorded:
            queuefile.set_counter(conn, "dropped", dropped)
            self._dropped_recorded = dropped

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if not queuefile.queue_db_path(self.queue_dir).exists():
                queuefile.create_queue_file(self.queue_dir, self._info_factory())
            self._conn = queuefile.connect(self.queue_dir)
        return self._conn

    def _close(self, *, mark_closed: bool) -> None:
        if self._conn is not None:
            if mark_closed:  # tells the worker this producer will write no more
                try:
                    queuefile.set_counter(self._conn, "closed_at", time.time())
                except Exception:
                    pass
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []
