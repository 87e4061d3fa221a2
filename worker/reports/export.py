"""``agentspool export``: sessions as JSON Lines, for datasets, evaluations and archives.

One line per session. The ``jsonl`` shape (``"format": "agentspool.session/1"``,
docs/CLI.md) is the session row with its messages and tool executions nested, every
column as the database holds it. The ``openai`` shape is OpenAI's chat fine-tuning
format: ``{"messages": [...]}``, each tool execution an assistant ``tool_calls``
entry followed by a ``tool`` message with its result.

Sessions come from the replicas in the spool (read-only, readonly.py), or from the
database. Nothing holds a whole session: a line is written as it is read, the
session row first, then the messages and tool executions in pages of at most
``PAGE_BYTES`` of text (keyset pagination: each page starts after the last key of
the one before, so a page costs the same at any depth; sqld caps an answer at 10
MB). The listing of sessions is paged the same way.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agentspool.worker import state as st
from agentspool.worker.intake.accounting import ACCOUNTING_COLUMNS
from agentspool.worker.intake.replica import REPLICAS_DIRNAME, open_readonly
from agentspool.worker.sync.database import Database

FORMAT = "agentspool.session/1"
FORMATS = ("jsonl", "openai")
PAGE_BYTES = 4 << 20  # text per page of rows: well under sqld's 10 MB answer cap
SIZE_ROWS = 5000  # keys per sizing query
SESSIONS_PER_PAGE = 200
MAX_HELD_CALLS = 64  # tool calls joined to one assistant message, at most

SESSION_FIELDS = (
    "id", "agent", "status", "started_at", "ended_at", "error", "metadata", "host", "pid",
    "producer_id", "event_count", "message_count", "tool_count", "parent_id",
    *ACCOUNTING_COLUMNS,
)  # fmt: skip
MESSAGE_FIELDS = ("seq", "role", "content", "created_at", "metadata", *ACCOUNTING_COLUMNS)
TOOL_FIELDS = (
    "call_id", "name", "input", "output", "status", "error", "started_at", "ended_at",
    "duration_ms",
)  # fmt: skip
OPENAI_ROLES = ("system", "developer", "user", "assistant")

Query = Callable[[str, Sequence[Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Filters:
    agent: str | None = None
    status: str | None = None
    since: str | None = None  # ISO: sessions still running, or that ended at or after it


@dataclass
class ExportReport:
    sessions: int = 0
    messages: int = 0
    tool_executions: int = 0
    missing_replicas: int = 0  # sessions the spool knows whose replica was pruned
    empty: int = 0  # --format openai: sessions without a message to keep (no line)


# ---- where sessions come from ------------------------------------------------


class _Source:
    """A replica or the database: its queries, and its tables' select lists (asked
    once: each is a round trip to a remote database)."""

    def __init__(self, query: Query) -> None:
        self.query = query
        self._lists: dict[str, str] = {}

    def select_list(self, table: str, fields: tuple[str, ...]) -> str:
        """``fields`` as a select list, NULL for those an older schema lacks."""
        if table not in self._lists:
            sql = "SELECT name FROM pragma_table_info(?)"
            have = {r["name"] for r in self.query(sql, (table,))}
            self._lists[table] = ", ".join(f if f in have else f"NULL AS {f}" for f in fields)
        return self._lists[table]


def _sqlite_query(conn: sqlite3.Connection) -> Query:
    def query(sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cursor = conn.execute(sql, tuple(params))
        columns = [d[0] for d in cursor.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    return query


def _matches(session: dict[str, Any], filters: Filters) -> bool:
    if filters.agent is not None and session["agent"] != filters.agent:
        return False
    if filters.status is not None and session["status"] != filters.status:
        return False
    ended = session["ended_at"]
    return filters.since is None or ended is None or ended >= filters.since


def export_local(
    spool_dir: Path, out: IO[str], filters: Filters, fmt: str = "jsonl"
) -> ExportReport:
    """Every session whose replica is in the spool, oldest start first."""
    report = ExportReport()
    with st.existing_state(spool_dir) as store:
        index = [] if store is None else store.sessions()
    known = sorted(
        (s for s in index if filters.agent is None or s.agent == filters.agent),
        key=lambda s: s.session_id,
    )
    rows = []
    for s in known:  # the start time is in the replica: read the session rows first
        path = spool_dir / REPLICAS_DIRNAME / s.replica
        try:
            conn = open_readonly(path)
        except (FileNotFoundError, sqlite3.Error):
            report.missing_replicas += 1
            continue
        try:
            source = _Source(_sqlite_query(conn))
            found = source.query(
                f"SELECT {source.select_list('sessions', SESSION_FIELDS)} FROM sessions"
                " WHERE id = ?",
                (s.session_id,),
            )
        finally:
            conn.close()
        if found and _matches(found[0], filters):
            rows.append((found[0]["started_at"] or "", s.session_id, path))
    for _, session_id, path in sorted(rows):
        conn = open_readonly(path)
        try:
            _write_session(_Source(_sqlite_query(conn)), session_id, out, fmt, report, replica=True)
        finally:
            conn.close()
    return report


def export_remote(db: Database, out: IO[str], filters: Filters, fmt: str = "jsonl") -> ExportReport:
    """Every session in the database that matches, oldest start first."""
    report = ExportReport()
    source = _Source(db.query)
    after = ("", "")
    while True:
        page = db.query(
            "SELECT id, started_at FROM sessions"
            " WHERE (? IS NULL OR agent = ?) AND (? IS NULL OR status = ?)"
            " AND (? IS NULL OR ended_at IS NULL OR ended_at >= ?)"
            " AND (started_at, id) > (?, ?) ORDER BY started_at, id LIMIT ?",
            (filters.agent, filters.agent, filters.status, filters.status,
             filters.since, filters.since, *after, SESSIONS_PER_PAGE),
        )  # fmt: skip
        for row in page:
            _write_session(source, row["id"], out, fmt, report)
        if len(page) < SESSIONS_PER_PAGE:
            return report
        after = (page[-1]["started_at"], page[-1]["id"])


# ---- one session, streamed ---------------------------------------------------


def _write_session(
    source: _Source,
    session_id: str,
    out: IO[str],
    fmt: str,
    report: ExportReport,
    *,
    replica: bool = False,
) -> None:
    query = source.query
    found = query(
        f"SELECT {source.select_list('sessions', SESSION_FIELDS)} FROM sessions WHERE id = ?",
        (session_id,),
    )
    if not found:
        return  # deleted since it was listed
    if replica:  # a replica counts at sync time (sync/batch.py): the same counts here
        found[0].update(query(
            "SELECT (SELECT count(*) FROM applied_events) AS event_count,"
            " (SELECT count(*) FROM messages) AS message_count,"
            " (SELECT count(*) FROM tool_executions) AS tool_count", (),
        )[0])  # fmt: skip
    messages = _messages(source, session_id)
    tools = _tools(query, session_id)
    counted = _Counted(report)
    if fmt == "openai":
        if not _write_openai(out, counted.messages(messages), counted.tools(tools)):
            report.empty += 1
            return
    else:
        out.write(f'{{"format":{_dumps(FORMAT)},"session":{_dumps(found[0])},"messages":[')
        _write_items(out, counted.messages(messages))
        out.write('],"tool_executions":[')
        _write_items(out, counted.tools(tools))
        out.write("]}\n")
    report.sessions += 1


class _Counted:
    def __init__(self, report: ExportReport) -> None:
        self.report = report

    def messages(self, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            self.report.messages += 1
            yield row

    def tools(self, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            self.report.tool_executions += 1
            yield row


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _write_items(out: IO[str], items: Iterator[dict[str, Any]]) -> None:
    separator = ""
    for item in items:
        out.write(separator + _dumps(item))
        separator = ","


def _messages(source: _Source, session_id: str) -> Iterator[dict[str, Any]]:
    columns = source.select_list("messages", MESSAGE_FIELDS)
    yield from _paged(
        source.query,
        session_id,
        sizes_sql="SELECT seq AS k0, coalesce(length(CAST(content AS BLOB)), 0)"
        " + coalesce(length(CAST(metadata AS BLOB)), 0) + length(CAST(role AS BLOB)) AS n"
        " FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        rows_sql=f"SELECT {columns} FROM messages"
        " WHERE session_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
        first_key=(-1,),
    )


def _tools(query: Query, session_id: str) -> Iterator[dict[str, Any]]:
    """Tool executions in the order they started (then by call id)."""
    yield from _paged(
        query,
        session_id,
        sizes_sql="SELECT coalesce(started_at, '') AS k0, call_id AS k1,"
        " coalesce(length(CAST(input AS BLOB)), 0) + coalesce(length(CAST(output AS BLOB)), 0)"
        " + coalesce(length(CAST(error AS BLOB)), 0) + length(CAST(name AS BLOB)) AS n"
        " FROM tool_executions WHERE session_id = ? AND (coalesce(started_at, ''), call_id)"
        " > (?, ?) ORDER BY k0, k1 LIMIT ?",
        rows_sql=f"SELECT {', '.join(TOOL_FIELDS)} FROM tool_executions WHERE session_id = ?"
        " AND (coalesce(started_at, ''), call_id) BETWEEN (?, ?) AND (?, ?)"
        " ORDER BY coalesce(started_at, ''), call_id",
        first_key=("", ""),
    )


def _paged(
    query: Query, session_id: str, *, sizes_sql: str, rows_sql: str, first_key: tuple[Any, ...]
) -> Iterator[dict[str, Any]]:
    """Rows in key order, fetched in pages of at most PAGE_BYTES of text (a cheap query
    for the sizes of the next SIZE_ROWS keys first; a single larger row is a page)."""
    width = len(first_key)
    after = first_key
    while True:
        sizes = query(sizes_sql, (session_id, *after, SIZE_ROWS))
        keys = [(tuple(r[f"k{i}"] for i in range(width)), r["n"] or 0) for r in sizes]
        start: tuple[Any, ...] | None = None
        last: tuple[Any, ...] = after
        total = 0
        for key, n in keys:
            if start is not None and total + n > PAGE_BYTES:
                yield from query(rows_sql, (session_id, *start, *last))
                start, total = None, 0
            if start is None:
                start = key
            last, total = key, total + n
        if start is not None:
            yield from query(rows_sql, (session_id, *start, *last))
        if len(sizes) < SIZE_ROWS:
            return
        after = last


# ---- OpenAI's chat fine-tuning shape -------------------------------------------


def _write_openai(
    out: IO[str], messages: Iterator[dict[str, Any]], tools: Iterator[dict[str, Any]]
) -> bool:
    """``{"messages": [...]}``: messages and tool executions merged by time. A tool
    execution joins the assistant message before it as a ``tool_calls`` entry (or
    gets an assistant message of its own), and its result follows as a ``tool``
    message. Messages with other roles than OPENAI_ROLES are left out. One assistant
    message and its tool results (at most MAX_HELD_CALLS) are held at a time. A
    session with nothing to keep writes no line (an empty example is no example);
    returns whether it wrote one."""
    separator = '{"messages":['  # written with the first message
    held: dict[str, Any] | None = None  # the last assistant message, while tools may join it
    results: list[dict[str, Any]] = []

    def emit(item: dict[str, Any]) -> None:
        nonlocal separator
        out.write(separator + _dumps(item))
        separator = ","

    def release() -> None:
        nonlocal held
        if held is not None:
            emit(held)
            for result in results:
                emit(result)
        held = None
        results.clear()

    for kind, row in _by_time(messages, tools):
        if kind == "message":
            if row["role"] not in OPENAI_ROLES:
                continue
            release()
            item = {"role": row["role"], "content": row["content"] or ""}
            if row["role"] == "assistant":
                held = item
            else:
                emit(item)
            continue
        if held is None or len(results) >= MAX_HELD_CALLS:
            release()
            held = {"role": "assistant", "content": None}
        held.setdefault("tool_calls", []).append({
            "id": row["call_id"],
            "type": "function",
            "function": {"name": row["name"], "arguments": _arguments(row["input"])},
        })  # fmt: skip
        outcome = row["error"] if row["status"] == "error" else row["output"]
        results.append({"role": "tool", "tool_call_id": row["call_id"], "content": outcome or ""})
    release()
    if separator == ",":
        out.write("]}\n")
    return separator == ","


def _arguments(stored: str | None) -> str:
    """The function call's arguments as OpenAI wants them: a JSON object, as text."""
    if stored is None:
        return "{}"
    try:
        value = json.loads(stored)
    except ValueError:
        value = stored
    return stored if isinstance(value, dict) else _dumps({"input": value})


def _by_time(
    messages: Iterator[dict[str, Any]], tools: Iterator[dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Both streams in one, by time (a tool that started before a message was
    created comes first); each is already in its own order."""
    message = next(messages, None)
    tool = next(tools, None)
    while message is not None or tool is not None:
        if tool is not None and (
            message is None or (tool["started_at"] or "") < (message["created_at"] or "")
        ):
            yield "tool", tool
            tool = next(tools, None)
        else:
            assert message is not None
            yield "message", message
            message = next(messages, None)
