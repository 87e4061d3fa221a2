"""``Session``: one agent session, as the producer API gives it to the agent.

Each method builds one event and hands it to its ``Spool`` (``Spool._emit``); like
everything on the agent's thread, none of them raises into the agent.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

from . import events
from .toolcall import ToolCall, error_text

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing more of typing
if TYPE_CHECKING:
    from .spool import Spool

DEFAULT_FLUSH_TIMEOUT_S = 5.0


class Session:
    """One agent session. Use as a context manager to end it automatically."""

    def __init__(
        self,
        spool: Spool,
        agent: str,
        session_id: str | None,
        metadata: dict[str, Any] | None,
        *,
        parent_id: str | None = None,
        model: str | None = None,
        resume: bool = False,
    ) -> None:
        self.spool = spool
        self.id = str(session_id) if session_id else uuid.uuid4().hex
        # An id no worker can store (not UTF-8 text, too long) is refused here, where
        # it can be counted: each of the session's events is dropped (Spool.stats()),
        # rather than written for the worker to dead-letter one by one.
        self._refused = events.session_id_problem(self.id) is not None
        self.agent = str(agent)
        # call_id -> (perf_counter, time.time() at the start, the caller's started_at)
        self._tool_starts: dict[str, tuple[float, float, float | None]] = {}
        self._ended = False
        if resume:
            # Going on with a session whose earlier events (seq 0, 1, 2, ...) another
            # process wrote: this one cannot know their count, so its events take seqs
            # from a range of their own, above any earlier one's (see resume_seq_base).
            self._seq = itertools.count(resume_seq_base())
            return
        self._seq = itertools.count()
        known = {"parent_id": parent_id, "model": model}
        self._emit(
            events.SESSION_START,
            agent=self.agent,
            metadata=metadata,
            host=socket.gethostname(),
            pid=os.getpid(),
            **{name: str(value) for name, value in known.items() if value is not None},
        )

    def _emit(self, kind: str, **fields: Any) -> None:
        try:
            if self._refused:
                self.spool._count_drop()
                return
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
        usage: Any = None,
        cost_usd: float | None = None,
    ) -> None:
        """Record a message (``content`` is any JSON value: text or structured parts).

        ``model``, ``usage`` (the provider's usage object as it came, e.g. Anthropic's
        or OpenAI's ``usage``: the worker maps its keys, agentspool.producer.usage) and
        ``cost_usd`` go into the message's metadata; the worker fills the message's
        model and token columns from them and sums them into the session's."""
        meta = _dict_or_none(metadata)
        if model is not None or usage is not None or cost_usd is not None:
            meta = _with_model_and_usage(meta, model, usage, cost_usd)
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
        return self.spool.flush(timeout) and not self._refused

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
        return await asyncio.to_thread(self.spool.flush, timeout) and not self._refused

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

    def __exit__(self, *exc_info: Any) -> None:
        self.end(*_end_of(exc_info))

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aend(*_end_of(exc_info))


def _end_of(exc_info: tuple[Any, ...]) -> tuple[str, str | None]:
    """(status, error) for leaving a ``with`` block: completed, or error with its text."""
    exc_type, exc, _ = exc_info
    return ("completed", None) if exc is None else ("error", error_text(exc_type, exc))


def _with_model_and_usage(
    metadata: dict[str, Any] | None, model: Any, usage: Any, cost_usd: Any = None
) -> dict[str, Any]:
    meta = dict(metadata or {})
    try:
        if model is not None:
            meta["model"] = str(model)
        if usage is not None:
            meta["usage"] = _plain_usage(usage)
        if cost_usd is not None:
            meta["cost_usd"] = float(cost_usd)
    except Exception:
        pass  # never into the agent: the message is kept without them
    return meta


def _plain_usage(usage: Any) -> Any:
    """A usage object as plain JSON: a dict as it is, an SDK's object (pydantic) dumped."""
    if isinstance(usage, Mapping):
        return dict(usage)
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_none=True)
    return usage


# Seqs of a resumed session's events: milliseconds since the epoch shifted past 2**19
# events, so a later resume starts above every earlier one (unless one resume wrote
# more than 524,288 events within a millisecond of the next) and stays below MAX_SEQ
# until the year 2248. The worker allows gaps; it orders a session's rows by seq.
RESUME_SEQ_SHIFT = 19


def resume_seq_base() -> int:
    return int(time.time() * 1000) << RESUME_SEQ_SHIFT


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
