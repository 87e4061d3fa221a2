"""The remote database: a small interface, implemented with libSQL.

    connect(url, token)          -> a connection (sqld, Turso, or a local ``file:``)
    ensure_schema(conn)          -> apply pending migrations
    push_session(conn, rows)     -> write one session's rows in one transaction
    classify(exc)                -> "transient" or "permanent", and a message

Only the sync child process (sync_child.py) imports this module: libsql holds the
GIL while it waits on the network and has no client-side timeout, so the worker's
own process never calls it (DESIGN.md).

A push costs a number of HTTP round trips that grows with the session's bytes, not
its rows: rows go in multi-row ``INSERT`` statements of up to ~1 MiB of values each
(``executemany`` would cost two round trips per row). Every statement is keyed on
natural ids (``INSERT OR IGNORE`` for messages, upserts of the same values for the
session and tool rows), so pushing a session twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentspool.worker import migrations
from agentspool.worker.intake.replica import (
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    TOOL_COLUMNS,
    SessionRows,
)

MAX_STATEMENT_BYTES = 1 << 20  # values per multi-row INSERT (about one HTTP request)
MAX_STATEMENT_VARIABLES = 30_000  # below SQLite's 32,766 host-parameter limit

TRANSIENT = "transient"
PERMANENT = "permanent"


@dataclass(frozen=True)
class PushResult:
    statements: int  # each is one HTTP request against sqld/Turso
    rows: int


def connect(url: str, auth_token: str | None) -> Any:
    import libsql  # imported here: only the sync child ever loads it

    # isolation_level=None: we send BEGIN/COMMIT ourselves, as one interactive transaction.
    if auth_token:
        return libsql.connect(url, auth_token=auth_token, isolation_level=None)
    return libsql.connect(url, isolation_level=None)


def ensure_schema(conn: Any) -> list[int]:
    return migrations.migrate(conn)


def push_session(conn: Any, rows: SessionRows) -> PushResult:
    """Write the session's rows in one transaction: all of it lands, or none."""
    statements = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        session = rows.session
        conn.execute(
            f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(SESSION_COLUMNS))})"
            " ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in SESSION_COLUMNS if c != "id"),
            tuple(session[c] for c in SESSION_COLUMNS),
        )
        statements += 2  # BEGIN and this
        for sql, params in multi_row_inserts(
            "INSERT OR IGNORE INTO messages", MESSAGE_COLUMNS, rows.messages, ""
        ):
            conn.execute(sql, params)
            statements += 1
        tool_update = " ON CONFLICT (session_id, call_id) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in TOOL_COLUMNS if c not in ("session_id", "call_id")
        )
        for sql, params in multi_row_inserts(
            "INSERT INTO tool_executions", TOOL_COLUMNS, rows.tool_executions, tool_update
        ):
            conn.execute(sql, params)
            statements += 1
        conn.execute("COMMIT")
        statements += 1
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except Exception:
            pass  # the server drops an unfinished transaction when its stream ends
        raise
    return PushResult(statements, 1 + len(rows.messages) + len(rows.tool_executions))


def multi_row_inserts(
    head: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], tail: str
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Yield (sql, params) statements inserting ``rows`` in chunks bounded by bytes and
    by SQLite's host-parameter limit. Values only ever travel as parameters."""
    placeholder = "(" + ", ".join("?" * len(columns)) + ")"
    max_rows = max(1, MAX_STATEMENT_VARIABLES // len(columns))
    chunk: list[tuple[Any, ...]] = []
    size = 0
    for row in rows:
        row_bytes = sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)
        if chunk and (size + row_bytes > MAX_STATEMENT_BYTES or len(chunk) >= max_rows):
            yield _statement(head, columns, placeholder, chunk, tail)
            chunk, size = [], 0
        chunk.append(row)
        size += row_bytes
    if chunk:
        yield _statement(head, columns, placeholder, chunk, tail)


def _statement(
    head: str, columns: Sequence[str], placeholder: str, chunk: list[tuple[Any, ...]], tail: str
) -> tuple[str, tuple[Any, ...]]:
    sql = f"{head} ({', '.join(columns)}) VALUES {', '.join([placeholder] * len(chunk))}{tail}"
    return sql, tuple(v for row in chunk for v in row)


_PERMANENT_MARKERS = (
    ("401", "the database rejected the auth token (HTTP 401): check TURSO_AUTH_TOKEN"),
    ("403", "the auth token may not write to this database (HTTP 403): check TURSO_AUTH_TOKEN"),
    ("unauthorized", "the database rejected the auth token: check TURSO_AUTH_TOKEN"),
    ("no such table", "the remote schema does not match: run `agentspool migrate`"),
    ("no such column", "the remote schema does not match: run `agentspool migrate`"),
    ("has no column", "the remote schema does not match: run `agentspool migrate`"),
)


def classify(exc: BaseException) -> tuple[str, str]:
    """Return (TRANSIENT | PERMANENT, message). Unknown errors count as transient:
    retrying costs little, giving up loses data."""
    if isinstance(exc, migrations.SchemaError):
        return PERMANENT, str(exc)
    text = str(exc)
    lowered = text.lower()
    for marker, hint in _PERMANENT_MARKERS:
        if marker in lowered:
            return PERMANENT, f"{hint} ({_short(text)})"
    return TRANSIENT, _short(text)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
