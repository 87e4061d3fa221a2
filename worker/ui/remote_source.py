"""The viewer's ``--remote`` source: the sessions database itself (see sources.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from agentspool.worker.intake.replica import iso
from agentspool.worker.ui.list_order import DEFAULT_SORT, order_by
from agentspool.worker.ui.queries import Query
from agentspool.worker.ui.sources import (
    ERROR_PREVIEW_CHARS,
    MAX_LIST,
    STATUSES,
    AmbiguousSession,
    ListFilter,
    SessionNotFound,
    SourceError,
    StatsFilter,
    connect_readonly,
    duration_ms,
    like_pattern,
)
from agentspool.worker.ui.spool_rows import ACCOUNTING


class RemoteSource:
    """The sessions database. A ``file:`` URL (the embedded default) is opened
    read-only with sqlite3 like the replicas; anything else goes through the sync
    engine's ``open_database`` (Hrana over HTTP), which sends only these SELECTs."""

    def __init__(self, url: str, auth_token: str | None, timeout: float = 10.0) -> None:
        from agentspool.worker.sync import database

        self._error_types: tuple[type[Exception], ...] = (database.DatabaseError, sqlite3.Error)
        self.url = database.redact_url(url)
        self._lock = threading.Lock()  # one connection, one request at a time
        self._db: Any = None
        self._conn: sqlite3.Connection | None = None
        self._accounting: bool | None = None  # the version-2 columns: not asked yet
        if urlsplit(url).scheme == "file":
            path = database.local_path(url)
            try:
                self._conn = connect_readonly(path)
            except (OSError, sqlite3.Error) as exc:
                raise SourceError(f"cannot open {self.url} read-only: {exc}") from None
            return
        try:
            self._db = database.open_database(url, auth_token, timeout=timeout)
        except database.DatabaseError as exc:
            raise SourceError(str(exc)) from None

    def describe(self) -> dict[str, Any]:
        return {"kind": "remote", "where": self.url}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._db is not None:
            self._db.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            with self._lock:
                if self._conn is not None:
                    return list(self._conn.execute(sql, tuple(params)).fetchall())
                return list(self._db.query(sql, list(params)))
        except self._error_types as exc:
            raise SourceError(f"reading {self.url}: {exc}") from None

    def list_sessions(self, f: ListFilter) -> dict[str, Any]:
        now = time.time()
        where, params = ["1 = 1"], []
        if f.agent:
            where.append("agent = ?")
            params.append(f.agent)
        if f.since:
            where.append("(status = 'running' OR coalesce(ended_at, started_at) >= ?)")
            params.append(f.since)
        if f.text:
            where.append("id IN (SELECT session_id FROM messages WHERE content LIKE ? ESCAPE '\\')")
            params.append(like_pattern(f.text))
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.query(
            f"SELECT status, count(*) AS n FROM sessions WHERE {' AND '.join(where)} GROUP BY status",
            params,
        ):
            counts[row["status"]] = int(row["n"])
        if f.status:
            where.append("status = ?")
            params.append(f.status)
        # The page is chosen first (the inner SELECT, in the sort's order), and only its
        # rows are counted: the counts are subqueries per row.
        # (Without the version-2 columns every model, count and cost is unknown, and
        # unknown values keep the default order: so that is the order.)
        v2 = self._has_accounting()
        sort, descending = (f.sort, f.descending) if v2 else (DEFAULT_SORT, True)
        if not v2 and f.sort == DEFAULT_SORT:
            descending = f.descending
        order = order_by(sort, descending)
        accounting = ", ".join(ACCOUNTING if v2 else (f"NULL AS {c}" for c in ACCOUNTING))
        rows = self.query(
            "SELECT id, agent, status, started_at, ended_at, substr(error, 1, ?) AS error, host,"
            f" event_count, {accounting},"
            " (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS message_count,"
            " (SELECT count(*) FROM tool_executions t WHERE t.session_id = s.id) AS tool_count,"
            " (SELECT created_at FROM messages m WHERE m.session_id = s.id ORDER BY seq DESC"
            "  LIMIT 1) AS last_message_at"
            f" FROM (SELECT * FROM sessions WHERE {' AND '.join(where)}"
            f"  ORDER BY {order} LIMIT ? OFFSET ?) s ORDER BY {order}",
            [ERROR_PREVIEW_CHARS, *params, f.limit, f.offset],
        )
        total = counts.get(f.status, 0) if f.status else sum(counts.values())
        sessions = []
        for r in rows:
            times = [t for t in (r["ended_at"], r.pop("last_message_at"), r["started_at"]) if t]
            running = r["status"] == "running"
            sessions.append(
                r
                | {
                    "last_activity_at": max(times, default=None),
                    "replica": False,
                    "sync_state": None,
                    "sync_error": None,
                    "open": running,
                    "duration_ms": duration_ms(
                        r["started_at"],
                        r["ended_at"] or (None if running else max(times, default=None)),
                        now,
                    ),
                }
            )
        agents = [r["agent"] for r in self.query(
            "SELECT DISTINCT agent FROM sessions ORDER BY agent LIMIT ?", [MAX_LIST]
        )]  # fmt: skip
        return {
            "sessions": sessions,
            "total": total,
            "counts": counts,
            "offset": f.offset,
            "limit": f.limit,
            "now": iso(now),
            "source": self.describe(),
            "agents": agents,
        }

    def _has_accounting(self) -> bool:
        """Whether the database has the version-2 columns (a database no worker of
        version 2 has written to yet has not); asked once."""
        if self._accounting is None:
            rows = self.query("SELECT max(version) AS version FROM schema_version")
            self._accounting = bool(rows) and int(rows[0]["version"] or 0) >= 2
        return self._accounting

    def resolve(self, ref: str) -> str:
        if self.query("SELECT id FROM sessions WHERE id = ?", [ref]):
            return ref
        # A prefix as a range on the primary key (LIKE would need escaping and a scan).
        rows = self.query(
            "SELECT id FROM sessions WHERE id >= ? AND id < ? ORDER BY id LIMIT 10",
            [ref, ref + "\U0010ffff"],
        )
        if not rows:
            raise SessionNotFound(ref)
        if len(rows) > 1:
            raise AmbiguousSession(ref, [r["id"] for r in rows])
        return str(rows[0]["id"])

    @contextmanager
    def reader(self, session_id: str) -> Iterator[Query]:
        yield self.query

    def sync_state(self, session_id: str) -> dict[str, Any] | None:
        return None  # in the database: synced, or checkpointed while it runs

    def family_rows(
        self, session_id: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
        """Two requests: the session and its parent; its descendants, walked down
        ``parent_id`` (indexed: sessions_by_parent) by a recursive query bounded in
        depth and count."""
        from agentspool.worker.ui.family import FAMILY_COLUMNS, MAX_DEPTH, MAX_NODES

        if not self._has_accounting():  # no parent_id before version 2
            rows = self.query(
                "SELECT id, agent, status, started_at, ended_at FROM sessions WHERE id = ?",
                [session_id],
            )
            if not rows:
                raise SessionNotFound(session_id)
            return rows[0], None, []
        columns = ", ".join(FAMILY_COLUMNS)
        rows = self.query(
            f"SELECT {columns} FROM sessions WHERE id = ?"
            " OR id = (SELECT parent_id FROM sessions WHERE id = ?)",
            [session_id, session_id],
        )
        own = next((r for r in rows if r["id"] == session_id), None)
        if own is None:
            raise SessionNotFound(session_id)
        parent = next((r for r in rows if r["id"] == own["parent_id"] != session_id), None)
        descendants = self.query(
            "WITH RECURSIVE tree(id, depth) AS ("
            " SELECT id, 1 FROM sessions WHERE parent_id = ?"
            " UNION SELECT s.id, tree.depth + 1 FROM sessions s JOIN tree ON s.parent_id = tree.id"
            "  WHERE tree.depth <= ? LIMIT ?)"  # (the LIMIT stops the walk itself)
            f" SELECT {columns} FROM sessions WHERE id IN (SELECT id FROM tree) LIMIT ?",
            [session_id, MAX_DEPTH, 4 * MAX_NODES, MAX_NODES + 1],
        )
        return own, parent, descendants

    def stats(self, f: StatsFilter) -> dict[str, Any]:
        """In the database, all its statements in one request (reports/stats.py)."""
        from agentspool.worker.reports.stats import compute_stats

        try:
            with self._lock:
                source = self._conn if self._conn is not None else self._db
                return compute_stats(source, **f.arguments())
        except self._error_types as exc:
            raise SourceError(f"reading {self.url}: {exc}") from None

    def numbers(self, session_id: str, query: Query) -> dict[str, Any]:
        from agentspool.worker.ui.queries import counts

        found = counts(query, session_id)
        row = query(
            "SELECT event_count, ended_at, started_at FROM sessions WHERE id = ?", [session_id]
        )
        times = [found["last_message_at"], found["last_tool_at"]]
        if row:
            times += [row[0]["ended_at"], row[0]["started_at"]]
        return {
            "message_count": found["message_count"],
            "tool_count": found["tool_count"],
            "event_count": row[0]["event_count"] if row else None,
            "last_activity_at": max((t for t in times if t), default=None),
        }
