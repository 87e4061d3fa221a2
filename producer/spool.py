"""The producer API agents use: ``Spool`` (and ``Session``, in session.py).

Costs on the agent's thread: building a small dict, ``json.dumps`` and a
``SimpleQueue.put``. Everything else (disk, errors, retries) happens on the
writer thread. No method here raises into the agent; failures are counted in
``Spool.stats()``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layout, queuefile
from .session import DEFAULT_FLUSH_TIMEOUT_S, Session
from .writer import Barrier, Writer

log = logging.getLogger("agentspool.producer")

DEFAULT_MAX_BUFFERED = 250_000  # events waiting for the writer before new ones are dropped
DEFAULT_MAX_QUEUE_BYTES = 1 << 30  # live data in one producer's queue file
EXIT_FLUSH_TIMEOUT_S = 5.0


def default_spool_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``AGENTSPOOL_DIR``, else ``$XDG_STATE_HOME/agentspool`` (``~/.local/state/agentspool``)."""
    return Path(layout.spool_path(environ))


def _encode_fallback(value: Any) -> Any:
    """Serialize what JSON cannot (datetimes, sets, objects) as text instead of failing."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    try:
        return str(value)
    except Exception:
        return f"<unserializable {type(value).__name__}>"


_encode_fast = json.JSONEncoder(default=_encode_fallback, separators=(",", ":")).encode
_ENVELOPE = frozenset({"v", "type", "session_id", "seq", "producer_id", "pseq", "ts"})


def _encode(event: dict[str, Any]) -> str:
    """JSON for an event. A field JSON cannot hold at all (a cycle, a 5,000-digit int,
    an object whose ``str`` fails) is replaced by a marker, so the event and its place
    in the session's order survive."""
    try:
        return _encode_fast(event)
    except Exception:
        cleaned = {}
        for key, value in event.items():
            try:
                _encode_fast(value)
                cleaned[key] = value
            except Exception:
                if key in _ENVELOPE:
                    raise
                cleaned[key] = f"<unserializable {type(value).__name__}>"
        return _encode_fast(cleaned)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default  # never raise into the agent over a setting


@dataclass(frozen=True)
class SpoolStats:
    producer_id: str
    emitted: int  # events accepted from the agent (including dropped ones)
    written: int  # events committed to the queue file
    dropped: int  # events lost because the buffer was full or the spool closed
    buffered: int  # events waiting for the writer thread
    write_errors: int  # failed write attempts (each retried)
    last_error: str | None


class Spool:
    """A producer's handle on the spool directory. One per process is typical; it is
    thread-safe and fork-safe (a child process gets its own writer and queue file)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_queue_bytes: int | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_spool_dir()
        self.max_buffered = max_buffered
        # Bound on this producer's queue file (AGENTSPOOL_MAX_QUEUE_BYTES; 0 = none).
        self.max_queue_bytes = (
            max_queue_bytes
            if max_queue_bytes is not None
            else _env_int("AGENTSPOOL_MAX_QUEUE_BYTES", DEFAULT_MAX_QUEUE_BYTES)
        )
        self._closed = False
        self._start_writer()
        _LIVE_SPOOLS.add(self)

    def _start_writer(self) -> None:
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"
        self._pid = os.getpid()
        self.producer_id = f"{host}-{self._pid}-{uuid.uuid4().hex[:8]}"
        self._emitted = 0  # events handed over so far; the next event's pseq
        self._pseq_lock = threading.Lock()
        self._dropped = 0
        self._drop_lock = threading.Lock()
        self._writer = Writer(
            self.path / queuefile.QUEUES_DIRNAME / self.producer_id,
            info_factory=self._producer_info,
            dropped_counter=lambda: self._dropped,
            count_drops=self._count_drops,
            max_queue_bytes=self.max_queue_bytes,
        )

    def _producer_info(self) -> queuefile.ProducerInfo:
        return queuefile.ProducerInfo(
            producer_id=self.producer_id,
            pid=self._pid,
            host=socket.gethostname(),
            process_start=queuefile.process_start_time(self._pid),
            started_at=time.time(),
        )

    # ---- emitting ----------------------------------------------------------

    def session(
        self,
        agent: str,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        parent_id: str | None = None,
        model: str | None = None,
        resume: bool = False,
    ) -> Session:
        """Start a session: emits its ``session_start`` event and returns it.

        ``parent_id`` names the session that started this one (a subagent's parent);
        ``model`` the model it runs, when known at the start. ``resume=True`` goes on
        with an existing session (``session_id``) that may have ended already: no new
        start is emitted, and the next ``end()`` moves its end (docs/EVENTS.md)."""
        return Session(
            self, agent, session_id, metadata, parent_id=parent_id, model=model, resume=resume
        )

    def _emit(self, event: dict[str, Any]) -> None:
        """Hand one event to the writer. Never blocks, never raises."""
        try:
            event["producer_id"] = self.producer_id
            with self._pseq_lock:
                event["pseq"] = self._emitted
                self._emitted += 1
            data = _encode(event).encode("utf-8", "surrogatepass")
            writer = self._writer
            if self._closed or writer.handoff.qsize() + writer.held >= self.max_buffered:
                self._count_drop()
                return
            writer.handoff.put(data)
        except Exception:  # never into the agent
            self._count_drop()

    def _count_drop(self) -> None:
        self._count_drops(1)

    def _count_drops(self, n: int) -> None:
        with self._drop_lock:
            self._dropped += n

    # ---- waiting -----------------------------------------------------------

    def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> bool:
        """Wait until every event emitted before this call is on disk (fsynced).

        Returns ``True`` once it is, ``False`` if ``timeout`` passed first or events
        were dropped; never raises."""
        if self._closed:
            return False  # no writer is left to confirm anything
        try:
            barrier = Barrier()
            dropped_before = self._dropped
            self._writer.handoff.put(barrier)
            return barrier.done.wait(timeout) and self._dropped == dropped_before
        except Exception:
            return False

    def close(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> bool:
        """Flush and stop the writer. Later emits are dropped (and counted)."""
        if self._closed:
            return True
        self._closed = True
        try:
            return self._writer.stop(timeout) and self._writer.last_error is None
        except Exception:
            return False

    def stats(self) -> SpoolStats:
        return SpoolStats(
            producer_id=self.producer_id,
            emitted=self._emitted,
            written=self._writer.written,
            dropped=self._dropped,
            buffered=self._writer.handoff.qsize() + self._writer.held,
            write_errors=self._writer.write_errors,
            last_error=self._writer.last_error,
        )

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- fork --------------------------------------------------------------

    def _reinit_after_fork(self) -> None:
        """In a forked child: the parent's writer thread does not exist here and its
        buffered events are the parent's to write. Start afresh with a new identity."""
        self._writer.abandon_after_fork()
        if not self._closed:
            self._start_writer()


# Every live Spool, so exit and fork can reach them without keeping them alive.
_LIVE_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT_S
    for spool in list(_LIVE_SPOOLS):
        spool.close(timeout=max(0.0, deadline - time.monotonic()))


# Forking while a writer thread is inside SQLite could leave SQLite's locks held in
# the child; so a fork waits (bounded) for the current write to finish.
_FORK_WAIT_S = 1.0
_held_for_fork: list[threading.Lock] = []


def _before_fork() -> None:
    for spool in list(_LIVE_SPOOLS):
        lock = spool._writer.disk_lock
        if lock.acquire(timeout=_FORK_WAIT_S):
            _held_for_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_for_fork.clear()  # the child's writers get new locks
    for spool in list(_LIVE_SPOOLS):
        try:
            spool._reinit_after_fork()
        except Exception:
            pass


atexit.register(_flush_all_at_exit)
os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
