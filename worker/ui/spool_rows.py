"""One replica as a row of the viewer's session list: read from the file (a summary,
cached by the file's signature), or stood in for by the worker's index (a stub)."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from agentspool.producer.transaction import transaction
from agentspool.worker.readonly import connect_readonly as open_readonly_file

log = logging.getLogger(__name__)

ERROR_PREVIEW_CHARS = 300
# A session's version-2 columns the list shows and sorts by (schema/002; a replica an
# older worker wrote has none of them: they are None then, unknown).
ACCOUNTING = (
    "parent_id", "model", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_usd",
)  # fmt: skip


def _dict_rows(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def connect_readonly(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only SQLite connection that returns rows as dicts."""
    conn = open_readonly_file(path, timeout)
    conn.row_factory = _dict_rows
    return conn


def file_signature(path: str) -> tuple[int, ...]:
    """Changes whenever the replica's content may have: the file or its WAL."""
    parts: list[int] = []
    for name in (path, path + "-wal"):
        try:
            stat = os.stat(name)
            parts += [stat.st_mtime_ns, stat.st_size, stat.st_ino]
        except FileNotFoundError:
            parts += [0, 0, 0]
    return tuple(parts)


def stub(state: dict[str, Any], path: str) -> dict[str, Any]:
    """A replica's row from the worker's index: enough to filter, count and sort."""
    return {
        "id": state["session_id"],
        "agent": state["agent"],
        "status": state["status"],
        "started_at": state["started_at"],
        "ended_at": None,
        "last_activity_at": state["last_event_at"],
        "error": None,
        "host": None,
        "event_count": state["event_count"],
        "message_count": None,
        "tool_count": None,
        **dict.fromkeys(ACCOUNTING),
        "replica": True,
        "path": path,
        "stub": True,
    }


def read_summary(path: Path) -> dict[str, Any] | None:
    try:
        conn = connect_readonly(path)
    except (OSError, sqlite3.Error):
        return None
    try:
        with transaction(conn, begin="BEGIN"):  # one snapshot
            # `*`: the version-2 columns where the replica has them.
            rows = conn.execute(
                "SELECT *, substr(error, 1, ?) AS error_preview FROM sessions LIMIT 1",
                (ERROR_PREVIEW_CHARS,),
            ).fetchall()
            if not rows:
                return None
            row = rows[0]
            s = {k: row[k] for k in ("id", "agent", "status", "started_at", "ended_at", "host")}
            s["error"] = row["error_preview"]
            s |= {k: row.get(k) for k in ACCOUNTING}
            numbers = conn.execute(
                "SELECT (SELECT count(*) FROM messages) AS message_count,"
                " (SELECT count(*) FROM tool_executions) AS tool_count,"
                " (SELECT count(*) FROM applied_events) AS event_count,"
                # The last message along the primary key: a replica has no index on
                # created_at (max() over it would read every row).
                " (SELECT created_at FROM messages WHERE session_id = ?1"
                "  ORDER BY seq DESC LIMIT 1) AS last_message_at,"
                " (SELECT max(started_at) FROM tool_executions WHERE session_id = ?1) AS last_tool_at",
                (s["id"],),
            ).fetchone()
    except sqlite3.Error as exc:
        log.debug("skipping replica %s: %s", path.name, exc)
        return None  # being created, or damaged (the worker quarantines those)
    finally:
        conn.close()
    times = [t for t in (s["ended_at"], numbers["last_message_at"], numbers["last_tool_at"]) if t]
    return s | {
        "event_count": numbers["event_count"],
        "message_count": numbers["message_count"],
        "tool_count": numbers["tool_count"],
        "last_activity_at": max(times) if times else s["started_at"],
        "replica": True,
        "path": str(path),
    }


def replica_contains(summary: dict[str, Any], pattern: str) -> bool:
    try:
        conn = connect_readonly(Path(summary["path"]))
    except (OSError, sqlite3.Error):
        return False
    try:
        row = conn.execute(
            "SELECT 1 AS hit FROM messages WHERE content LIKE ? ESCAPE '\\' LIMIT 1", (pattern,)
        ).fetchone()
        return row is not None
    except sqlite3.Error:
        return False
    finally:
        conn.close()
