"""Reading what was synced: ``sessions --remote`` and ``show ID --remote``.

Teams read sessions from the database, often on another machine than the one that
wrote them, after the spool is long gone. These read the remote schema (the same
tables the replicas have) through ``sync.database``, page by page: sqld caps a
response at 10 MB, so a transcript is fetched in pages of at most ``PAGE_BYTES``
of text, sized by a cheap first query.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentspool.worker.reports.session_ids import resolve_prefix
from agentspool.worker.reports.transcript import SessionNotFound, Transcript
from agentspool.worker.sync.database import Database

PAGE_BYTES = 4 << 20  # text per page of transcript rows: well under sqld's 10 MB cap
SIZE_ROWS = 5000  # rows per sizing query (a few dozen bytes each on the wire)


@dataclass(frozen=True)
class RemoteSession:
    session_id: str
    agent: str
    status: str
    started_at: str
    ended_at: str | None
    message_count: int
    tool_count: int
    event_count: int
    error: str | None
    host: str | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None while it runs (or a time is unreadable)."""
        if not self.ended_at:
            return None
        try:
            start = datetime.fromisoformat(self.started_at.replace("Z", "+00:00"))
            end = datetime.fromisoformat(self.ended_at.replace("Z", "+00:00"))
        except ValueError:
            return None
        return round(max(0.0, (end - start).total_seconds()), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "agent": self.agent,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "message_count": self.message_count,
            "tool_count": self.tool_count,
            "event_count": self.event_count,
            "error": self.error,
            "host": self.host,
        }


def list_remote_sessions(
    db: Database,
    *,
    status: str | None = None,
    agent: str | None = None,
    since: str | None = None,
    limit: int | None = None,
) -> list[RemoteSession]:
    """Sessions in the database, most recently started first. ``since`` is ISO text:
    sessions still running, or that ended at or after it."""
    # One fixed statement: a filter given as NULL matches every row.
    params = (status, status, agent, agent, since, since, -1 if limit is None else limit)
    rows = db.query(_LIST_SQL, params)
    return [
        RemoteSession(
            session_id=r["id"],
            agent=r["agent"],
            status=r["status"],
            started_at=r["started_at"],
            ended_at=r["ended_at"],
            message_count=r["message_count"] or 0,
            tool_count=r["tool_count"] or 0,
            event_count=r["event_count"] or 0,
            error=r["error"],
            host=r["host"],
        )
        for r in rows
    ]


_LIST_SQL = (
    "SELECT id, agent, status, started_at, ended_at, message_count, tool_count, event_count,"
    " error, host FROM sessions"
    " WHERE (? IS NULL OR status = ?) AND (? IS NULL OR agent = ?)"
    " AND (? IS NULL OR ended_at IS NULL OR ended_at >= ?)"
    " ORDER BY started_at DESC, id LIMIT ?"
)


def resolve_remote(db: Database, prefix: str) -> str | None:
    """The session id in the database that is ``prefix`` or starts with it (None:
    none does; ``AmbiguousSessionId``: several do)."""

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(row.values()) for row in db.query(sql, params)]

    return resolve_prefix(prefix, query, "sessions") if prefix else None


_SESSION_SQL = (
    "SELECT id, agent, status, started_at, ended_at, error, metadata, host, pid,"
    " producer_id, event_count, message_count, tool_count FROM sessions WHERE id = ?"
)
_MESSAGE_SIZES_SQL = (
    "SELECT seq AS k, coalesce(length(CAST(content AS BLOB)), 0)"
    " + coalesce(length(CAST(metadata AS BLOB)), 0) + length(CAST(role AS BLOB)) AS n"
    " FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_MESSAGES_SQL = (
    "SELECT session_id, seq, role, content, created_at, metadata FROM messages"
    " WHERE session_id = ? AND seq >= ? AND seq <= ? ORDER BY seq"
)
_TOOL_SIZES_SQL = (
    "SELECT call_id AS k, coalesce(length(CAST(input AS BLOB)), 0)"
    " + coalesce(length(CAST(output AS BLOB)), 0) + coalesce(length(CAST(error AS BLOB)), 0)"
    " + length(CAST(name AS BLOB)) AS n"
    " FROM tool_executions WHERE session_id = ? AND call_id > ? ORDER BY call_id LIMIT ?"
)
_TOOLS_SQL = (
    "SELECT session_id, call_id, name, input, output, status, error, started_at, ended_at,"
    " duration_ms FROM tool_executions"
    " WHERE session_id = ? AND call_id >= ? AND call_id <= ? ORDER BY call_id"
)


def load_remote_transcript(db: Database, session_id: str) -> Transcript:
    """The transcript of ``session_id`` (an exact id) as the database holds it."""
    found = db.query(_SESSION_SQL, (session_id,))
    if not found:
        raise SessionNotFound(session_id)
    messages = list(_paged(db, session_id, _MESSAGE_SIZES_SQL, _MESSAGES_SQL, first_key=-1))
    tools = list(_paged(db, session_id, _TOOL_SIZES_SQL, _TOOLS_SQL, first_key=""))
    tools.sort(key=lambda t: (t["started_at"] or "", t["call_id"]))
    return Transcript(
        session=found[0],
        messages=[_without_session_id(m) for m in messages],
        tool_executions=[_without_session_id(t) for t in tools],
        sync_state=None,
        replica=None,
        database=db.url,
    )


def _paged(
    db: Database, session_id: str, sizes_sql: str, rows_sql: str, *, first_key: Any
) -> Iterator[dict[str, Any]]:
    after = first_key
    while True:
        sizes = db.query(sizes_sql, (session_id, after, SIZE_ROWS))
        for low, high in _pages([(r["k"], r["n"] or 0) for r in sizes]):
            yield from db.query(rows_sql, (session_id, low, high))
        if len(sizes) < SIZE_ROWS:
            return
        after = sizes[-1]["k"]


def _pages(sizes: list[tuple[Any, int]]) -> Iterator[tuple[Any, Any]]:
    """Key ranges (first, last) of consecutive rows holding at most ``PAGE_BYTES``
    (a single row over it is a page of its own)."""
    start: Any = None
    last: Any = None
    total = 0
    for key, n in sizes:
        if start is not None and total + n > PAGE_BYTES:
            yield start, last
            start, total = None, 0
        if start is None:
            start = key
        last, total = key, total + n
    if start is not None:
        yield start, last


def _without_session_id(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "session_id"}
