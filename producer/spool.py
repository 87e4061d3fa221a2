"""The producer API agents use: ``Spool`` and ``Session``.

Costs on the agent's thread: building a small dict, ``json.dumps`` and a
``SimpleQueue.put``. Everything else (disk, errors, retries) happens on the
writer thread. No method here raises into the agent; failures are counted in
``Spool.stats()``.
"""

from __future__ import annotations

import atexit
import itertools
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
from types import TracebackType
from typing import Any

from . import events, layout, queuefile
from .toolcall import ToolCall
from .writer import Barrier, Writer

log = logging.getLogger("agentspool.producer")

DEFAULT_MAX_BUFFERED = 250_000  # events waiting for the writer before new ones are dropped
DEFAULT_FLUSH_TIMEOUT_S = 5.0
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
    ) -> Session:
        """Start a session: emits its ``session_start`` event and returns it."""
        return Session(self, agent, session_id, metadata)

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


class Session:
    """One agent session. Use as a context manager to end it automatically."""

    def __init__(
        self,
        spool: Spool,
        agent: str,
        session_id: str | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        self.spool = spool
        self.id = str(session_id) if session_id else uuid.uuid4().hex
        self.agent = str(agent)
        self._seq = itertools.count()
        # call_id -> (perf_counter, time.time() at the start, the caller's started_at)
        self._tool_starts: dict[str, tuple[float, float, float | None]] = {}
        self._ended = False
        self._emit(
            events.SESSION_START,
            agent=self.agent,
            metadata=metadata,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

    def _emit(self, kind: str, **fields: Any) -> None:
        try:
            fields["v"] = events.FORMAT_VERSION
            fields["type"] = kind
            fields["session_id"] = self.id
            fields["seq"] = next(self._seq)
            fields["ts"] = time.time()
            self.spool._emit(fields)
        except Exception:
            self.spool._count_drop()

    def message(
        self,
        role: str,
        content: Any,
        metadata: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a message (``content`` is any JSON value: text or structured parts).

        ``model`` and ``usage`` (token counts such as ``{"input_tokens": 812,
        "output_tokens": 64}``) go into the message's metadata; the worker sums every
        message's usage into the session's metadata when the session ends."""
        meta = _dict_or_none(metadata)
        if model is not None or usage is not None:
            meta = _with_model_and_usage(meta, model, usage)
        self._emit(events.MESSAGE, role=str(role), content=content, metadata=meta)

    def tool_started(
        self,
        name: str,
        input: Any = None,
        call_id: str | None = None,
        *,
        started_at: float | None = None,
    ) -> str:
        """Record the start of a tool call; returns its ``call_id`` for ``tool_finished``.

        ``started_at`` (seconds since the epoch) says when the call really started, for
        a caller that learns of it later (an integration fed finished spans)."""
        try:
            call_id = str(call_id) if call_id is not None else uuid.uuid4().hex[:16]
            started_at = _time_or_none(started_at)
            self._tool_starts[call_id] = (time.perf_counter(), time.time(), started_at)
        except Exception:
            call_id = str(id(input))
        times = {} if started_at is None else {"started_at": started_at}
        self._emit(events.TOOL_STARTED, call_id=call_id, name=str(name), input=input, **times)
        return call_id

    def tool(self, name: str, input: Any = None, call_id: str | None = None) -> ToolCall:
        """A tool call as a block: ``with session.tool("grep", {"q": q}) as call:
        call.output = run(q)``. A clean exit records it completed with the output and
        its duration; an exception records it failed with the exception's text (and
        propagates). ``tool_started`` / ``tool_finished`` do the same by hand."""
        return ToolCall(self, name, input, call_id)

    def tool_finished(
        self,
        call_id: str,
        output: Any = None,
        error: str | None = None,
        *,
        ended_at: float | None = None,
    ) -> None:
        """Record the end of a tool call; a non-empty ``error`` marks it failed.

        ``ended_at`` (seconds since the epoch) says when it really ended; the duration is
        then taken from the given times instead of the time between the two calls."""
        duration_ms = None
        try:
            ended_at = _time_or_none(ended_at)
            started = self._tool_starts.pop(str(call_id), None)
            if started is not None:
                perf_start, wall_start, given_start = started
                if given_start is None and ended_at is None:
                    # A monotonic clock: durations stay right when the wall clock steps.
                    duration_ms = (time.perf_counter() - perf_start) * 1000.0
                else:
                    start = wall_start if given_start is None else given_start
                    end = time.time() if ended_at is None else ended_at
                    duration_ms = max(0.0, end - start) * 1000.0
        except Exception:
            ended_at = None
        times = {} if ended_at is None else {"ended_at": ended_at}
        self._emit(
            events.TOOL_FINISHED,
            call_id=str(call_id),
            output=output,
            error=None if error is None else str(error),
            duration_ms=duration_ms,
            **times,
        )

    def tool_call(
        self,
        name: str,
        input: Any = None,
        output: Any = None,
        error: str | None = None,
        *,
        started_at: float | None = None,
        ended_at: float | None = None,
        call_id: str | None = None,
    ) -> str:
        """Record a whole tool call at once (its start and its end), with the times it
        really started and ended (seconds since the epoch; default: now)."""
        call_id = self.tool_started(name, input, call_id, started_at=started_at)
        self.tool_finished(call_id, output, error, ended_at=ended_at)
        return call_id

    def end(
        self,
        status: str = "completed",
        error: str | None = None,
        timeout: float = DEFAULT_FLUSH_TIMEOUT_S,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """End the session and wait (bounded) until all of it is on disk.

        ``metadata`` is merged into the session's metadata (what is only known at the
        end, such as summed token usage); its keys replace those given at the start.

        Returns ``True`` once every event of this session (and every earlier event of
        this process) is fsynced to the spool: from then on a crash of this process
        loses nothing of it. A second call only flushes."""
        self._emit_end(status, error, metadata)
        return self.spool.flush(timeout)

    async def aend(
        self,
        status: str = "completed",
        error: str | None = None,
        timeout: float = DEFAULT_FLUSH_TIMEOUT_S,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """``end()`` for asyncio code: the bounded wait for the disk runs in a worker
        thread, so the event loop keeps running while it waits."""
        import asyncio  # only agents that use asyncio pay for importing it

        self._emit_end(status, error, metadata)
        return await asyncio.to_thread(self.spool.flush, timeout)

    def _emit_end(
        self, status: str, error: str | None, metadata: dict[str, Any] | None = None
    ) -> None:
        if not self._ended:
            self._ended = True
            if status not in events.END_STATUSES:
                error = error or f"invalid end status {status!r}"
                status = "error"
            self._emit(
                events.SESSION_END,
                status=status,
                error=None if error is None else str(error),
                **({} if metadata is None else {"metadata": _dict_or_none(metadata)}),
            )

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.end("completed")
        else:
            self.end("error", error=_error_text(exc_type, exc))

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.aend("completed")
        else:
            await self.aend("error", error=_error_text(exc_type, exc))


def _error_text(exc_type: type[BaseException] | None, exc: BaseException) -> str:
    return f"{exc_type.__name__ if exc_type else 'Error'}: {exc}"


def _with_model_and_usage(
    metadata: dict[str, Any] | None, model: Any, usage: Any
) -> dict[str, Any]:
    meta = dict(metadata or {})
    try:
        if model is not None:
            meta["model"] = str(model)
        if usage is not None:
            meta["usage"] = dict(usage) if isinstance(usage, Mapping) else usage
    except Exception:
        pass  # never into the agent: the message is kept without them
    return meta


def _time_or_none(value: Any) -> float | None:
    """A caller's time (seconds since the epoch) if usable, else ``None`` (the emit's
    own time is used): a bad value must not cost the event."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if 0.0 <= value < events.MAX_TS else None


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    return {"value": value}


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
