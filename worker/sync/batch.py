"""The batch builder: rows streamed out of replicas into atomic batches of many sessions.

A batch is a list of multi-row statements (``INSERT OR IGNORE`` for messages, upserts
keyed by natural ids for tool executions and session rows) that the transport sends
as one atomic Hrana batch in one HTTP request. It holds what changed in many
sessions since each one's watermark (the last replica change that landed remotely,
see intake/replica.py's change log), up to a bound on bytes: a session that does not
fit goes on in the next batch, and only the part that reaches the end of an ended
session writes its final status and counts. So the database never shows a final
status with rows missing, and ``running`` rows only grow.

Rows are read page by page in one snapshot per session; a batch's rows are the only
ones held in memory, whatever the size of a session. Open sessions are built the same
way (checkpoints), which is why everything is keyed on the change log, not on "the
whole session".
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentspool.producer.transaction import transaction
from agentspool.producer.usage import TOKEN_COLUMNS
from agentspool.worker.intake.replica import (
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    TOOL_COLUMNS,
    upgrade,
)
from agentspool.worker.sync.hrana import Statement

MAX_BATCH_BYTES = 4 << 20  # Turso gives a transaction 5 s; sqld answers a 4 MiB batch in ~0.2 s
MAX_STATEMENT_VARIABLES = 30_000  # below SQLite's 32,766 host-parameter limit
PAGE_ROWS = 1000  # rows read from a replica per query
VALUE_OVERHEAD = 24  # bytes a value costs on the wire beyond its own ({"type":"text",...})

_FINAL_STATUSES = ("completed", "error", "abandoned")

# Statuses and end fields only move forward: a part that says `running` never
# overwrites a final status (a resend after a lost watermark, say); counts only grow.
# A replica recreated for late events after retention pruned the first one starts
# from a placeholder row (no agent, no metadata, the late event's time): it never
# overwrites what the database knows.
_SESSION_UPSERT_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET"
    " agent = CASE WHEN excluded.agent = '' THEN sessions.agent ELSE excluded.agent END,"
    " started_at = min(sessions.started_at, excluded.started_at),"
    " metadata = coalesce(excluded.metadata, sessions.metadata),"
    " host = coalesce(excluded.host, sessions.host), pid = coalesce(excluded.pid, sessions.pid),"
    " producer_id = coalesce(excluded.producer_id, sessions.producer_id),"
    " status = CASE WHEN excluded.status = 'running' THEN sessions.status ELSE excluded.status END,"
    " ended_at = CASE WHEN excluded.status = 'running' THEN sessions.ended_at ELSE excluded.ended_at END,"
    " error = CASE WHEN excluded.status = 'running' THEN sessions.error ELSE excluded.error END,"
    " event_count = max(sessions.event_count, excluded.event_count),"
    " message_count = max(sessions.message_count, excluded.message_count),"
    " tool_count = max(sessions.tool_count, excluded.tool_count),"
    " parent_id = coalesce(excluded.parent_id, sessions.parent_id),"
    " model = coalesce(excluded.model, sessions.model),"
    # Sums only grow in a replica: the larger one is the later (NULL: not known yet).
    + ",".join(
        f" {c} = CASE WHEN excluded.{c} IS NULL THEN sessions.{c}"
        f" WHEN sessions.{c} IS NULL THEN excluded.{c} ELSE max(sessions.{c}, excluded.{c}) END"
        for c in (*TOKEN_COLUMNS, "cost_usd")
    )
)
_TOOL_UPSERT_TAIL = (
    " ON CONFLICT (session_id, call_id) DO UPDATE SET name = excluded.name,"
    " input = excluded.input, started_at = excluded.started_at,"
    " status = CASE WHEN excluded.status = 'running' THEN tool_executions.status"
    "   ELSE excluded.status END,"
    " output = CASE WHEN excluded.status = 'running' THEN tool_executions.output"
    "   ELSE excluded.output END,"
    " error = CASE WHEN excluded.status = 'running' THEN tool_executions.error"
    "   ELSE excluded.error END,"
    " ended_at = CASE WHEN excluded.status = 'running' THEN tool_executions.ended_at"
    "   ELSE excluded.ended_at END,"
    " duration_ms = CASE WHEN excluded.status = 'running' THEN tool_executions.duration_ms"
    "   ELSE excluded.duration_ms END"
)


@dataclass(frozen=True)
class SessionCursor:
    """Where a session's sync stands: what to build from."""

    session_id: str
    replica: Path
    after: int  # the watermark: every change up to it has landed remotely
    log_id: str | None  # the change log ``after`` refers to
    ended: bool  # the worker saw its end (pending): send at least the session row


@dataclass(frozen=True)
class Part:
    """What a batch carries of one session."""

    session_id: str
    log_id: str
    up_to: int  # the watermark once this part landed
    final: bool  # it writes the final status: the session is complete remotely
    rows: int
    complete: bool = True  # it reaches the last change of the snapshot (else: more follows)


@dataclass
class Batch:
    statements: list[Statement] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    size: int = 0  # estimated bytes on the wire
    built_at: float = 0.0  # worker clock (time.time): events seen after it are not in it

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)


class BrokenSession(Exception):
    """A session whose replica cannot be synced as it is (no session row, unreadable)."""

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(reason)
        self.session_id = session_id


@dataclass
class _Rows:
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    tools: list[tuple[Any, ...]] = field(default_factory=list)
    size: int = 0


def row_size(row: Sequence[Any]) -> int:
    return sum((len(v) if isinstance(v, str | bytes) else 8) + VALUE_OVERHEAD for v in row)


# How each session fared in a build (the ``visited`` map of build_batch).
EMPTY = "empty"  # nothing new to send
SENT_ALL = "all"  # everything new is in the batch
SENT_PART = "part"  # a first part is in the batch; the rest follows
DEFERRED = "deferred"  # no room left: not in the batch at all
BROKEN = "broken"  # its replica cannot be read (see ``broken``)


def build_batch(
    cursors: Iterable[SessionCursor],
    *,
    max_bytes: int = MAX_BATCH_BYTES,
    broken: list[BrokenSession] | None = None,
    visited: dict[str, str] | None = None,
    now: float | None = None,
) -> Batch | None:
    """Fill one batch from the sessions in order until ``max_bytes``; None if none of
    them has anything to send. A session that cannot be read is appended to
    ``broken`` (when given) and skipped, so it never holds up the others; ``visited``
    (when given) records how each session the build looked at fared."""
    built_at = time.time() if now is None else now
    rows = _Rows()
    parts: list[Part] = []
    seen: dict[str, str] = {} if visited is None else visited
    for cursor in cursors:
        if parts and rows.size >= max_bytes:
            break
        try:
            part, how = _add_session(cursor, rows, max_bytes, first=not parts)
        except (sqlite3.Error, OSError, LookupError) as exc:
            if broken is None:
                raise
            broken.append(BrokenSession(cursor.session_id, f"cannot read its replica: {exc}"))
            seen[cursor.session_id] = BROKEN
            continue
        seen[cursor.session_id] = how
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    batch = Batch(parts=parts, size=rows.size, built_at=built_at)
    batch.statements = [
        *multi_row("INSERT OR IGNORE INTO messages", MESSAGE_COLUMNS, rows.messages, ""),
        *multi_row("INSERT INTO tool_executions", TOOL_COLUMNS, rows.tools, _TOOL_UPSERT_TAIL),
        *multi_row("INSERT INTO sessions", SESSION_COLUMNS, rows.sessions, _SESSION_UPSERT_TAIL),
    ]
    return batch


def _add_session(
    cursor: SessionCursor, rows: _Rows, max_bytes: int, *, first: bool
) -> tuple[Part | None, str]:
    if not cursor.replica.exists():
        raise LookupError(f"{cursor.replica.name} does not exist")
    conn = sqlite3.connect(cursor.replica, isolation_level=None, timeout=10)
    try:
        upgrade(conn)  # a replica an older worker left waiting: migrated in place
        with transaction(conn, begin="BEGIN"):  # one snapshot for the whole part
            return _read_part(conn, cursor, rows, max_bytes, first=first)
    finally:
        conn.close()


def _read_part(
    conn: sqlite3.Connection, cursor: SessionCursor, rows: _Rows, max_bytes: int, *, first: bool
) -> tuple[Part | None, str]:
    log_id = conn.execute("SELECT log_id FROM change_log").fetchone()[0]
    after = cursor.after if cursor.log_id == log_id else 0
    latest = conn.execute("SELECT coalesce(max(change_no), 0) FROM changes").fetchone()[0]
    if latest <= after and not cursor.ended:
        return None, EMPTY  # an open session with nothing new: a checkpoint costs nothing
    session = conn.execute(
        f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE id = ?", (cursor.session_id,)
    ).fetchone()
    if session is None:
        raise LookupError(f"session {cursor.session_id} has no session row in its replica")
    up_to, added = after, 0
    complete = True
    message_cols = ", ".join(f"m.{c}" for c in MESSAGE_COLUMNS)
    tool_cols = ", ".join(f"t.{c}" for c in TOOL_COLUMNS)
    while complete:
        page = conn.execute(
            f"SELECT c.change_no, c.kind, {message_cols}, {tool_cols} FROM changes c"
            " LEFT JOIN messages m ON c.kind = 'm' AND m.session_id = ?"
            "   AND m.seq = CAST(c.ref AS INTEGER)"
            " LEFT JOIN tool_executions t ON c.kind = 't' AND t.session_id = ? AND t.call_id = c.ref"
            " WHERE c.change_no > ? AND c.change_no <= ? ORDER BY c.change_no LIMIT ?",
            (cursor.session_id, cursor.session_id, up_to, latest, PAGE_ROWS),
        ).fetchall()
        if not page:
            break
        for change_no, kind, *values in page:
            row: tuple[Any, ...] | None = None
            target = None
            if kind == "m" and values[0] is not None:
                row, target = tuple(values[: len(MESSAGE_COLUMNS)]), rows.messages
            elif kind == "t" and values[len(MESSAGE_COLUMNS)] is not None:
                row, target = tuple(values[len(MESSAGE_COLUMNS) :]), rows.tools
            if row is not None and target is not None:
                size = row_size(row)
                if rows.size + size > max_bytes and not (first and added == 0 and not rows.size):
                    complete = False  # the rest goes in the next batch
                    break
                target.append(row)
                rows.size += size
                added += 1
            up_to = change_no
        else:
            if len(page) < PAGE_ROWS:
                break
    if not complete and added == 0 and up_to == after:
        return None, DEFERRED  # not even one row fits next to the others: next batch
    status = session[SESSION_COLUMNS.index("status")]
    final = complete and status in _FINAL_STATUSES
    rows.sessions.append(_session_row(conn, session, up_to, final))
    rows.size += row_size(rows.sessions[-1])
    part = Part(cursor.session_id, log_id, up_to, final, added + 1, complete)
    return part, SENT_ALL if complete else SENT_PART


def _session_row(
    conn: sqlite3.Connection, session: tuple[Any, ...], up_to: int, final: bool
) -> tuple[Any, ...]:
    values = dict(zip(SESSION_COLUMNS, session, strict=True))
    values["event_count"] = conn.execute("SELECT count(*) FROM applied_events").fetchone()[0]
    if final:
        values["message_count"] = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        values["tool_count"] = conn.execute("SELECT count(*) FROM tool_executions").fetchone()[0]
    else:
        # A checkpoint or a part of a large session: what has landed once this part has.
        for column, kind in (("message_count", "m"), ("tool_count", "t")):
            values[column] = conn.execute(
                "SELECT count(*) FROM changes WHERE kind = ? AND change_no <= ?", (kind, up_to)
            ).fetchone()[0]
        values["status"] = "running"
        values["ended_at"] = values["error"] = None
    return tuple(values[c] for c in SESSION_COLUMNS)


def multi_row(
    head: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], tail: str
) -> list[Statement]:
    """Multi-row INSERT statements for ``rows``, each within SQLite's host-parameter
    limit. Values only ever travel as parameters."""
    if not rows:
        return []
    per_statement = max(1, MAX_STATEMENT_VARIABLES // len(columns))
    placeholder = "(" + ", ".join("?" * len(columns)) + ")"
    statements: list[Statement] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = f"{head} ({', '.join(columns)}) VALUES {', '.join([placeholder] * len(chunk))}{tail}"
        statements.append((sql, [v for row in chunk for v in row]))
    return statements
