"""What the logs add up to: ``agentspool stats`` and the viewer's stats page.

    compute_stats(source, since=, agent=, status=, by=) -> dict

``source`` is where the rows are: the remote database (a ``sync.database.Database``,
or a read-only ``sqlite3.Connection`` to a ``file:`` database), or a spool directory
(its replicas, ``<spool>/replicas/*.db``, each opened read-only: nothing in the spool
is created or changed). The aggregation runs in SQL where the rows are: the database
gets all its statements in one request (``Database.query_many``); a spool's replicas
are aggregated one by one in SQL and the per-replica sums added up here.

Which rows count: the sessions that started at or after ``since`` (ISO text), of
``agent``, with ``status``; their tokens and cost are the session columns (sums over
their own messages, schema/002), their tool figures those of their tool executions.

Percentiles are nearest-rank: p is the value at rank ceil(p/100 * n) of the n known
durations in ascending order, so it is always a duration that was measured. The
database computes them with window functions; a spool's replicas each give their
durations (one number per tool call) and the ranks are taken here.

The returned dict is the ``--json`` contract of ``agentspool stats`` (docs/CLI.md).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentspool.producer.transaction import transaction
from agentspool.worker.intake.accounting import unpriced
from agentspool.worker.intake.replica_names import REPLICAS_DIRNAME
from agentspool.worker.readonly import readonly_uri

if TYPE_CHECKING:
    from agentspool.worker.sync.database import Database

STATUSES = ("running", "completed", "error", "abandoned")
TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
PERCENTILES = (50, 95)
# What a group is keyed on: a session's agent, its model (the first one it named), the
# UTC day it started; or a tool's name (``by="tool"``, which combines with nothing).
SESSION_DIMENSIONS = {
    "agent": "s.agent",
    "model": "s.model",
    "day": "substr(s.started_at, 1, 10)",
}
TOOL_DIMENSION = "tool"
DIMENSIONS = (*SESSION_DIMENSIONS, TOOL_DIMENSION)

Statement = tuple[str, Sequence[Any]]


class StatsError(ValueError):
    """Arguments that ask for no meaningful figures (an unknown ``by``, ...)."""


def compute_stats(
    source: Database | sqlite3.Connection | Path,
    *,
    since: str | None = None,
    agent: str | None = None,
    status: str | None = None,
    by: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """The figures of the selected sessions (see the module's docstring), as
    ``{"filters": {...}, "by": [...], "totals": {...}, "groups": [...]}``."""
    dims = _dimensions(by)
    if status is not None and status not in STATUSES:
        raise StatsError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    query = _Query(since=since, agent=agent, status=status, dims=dims)
    if isinstance(source, Path):
        totals, groups = _spool_stats(source, query)
    else:
        totals, groups = _database_stats(source, query)
    return {
        "filters": {"since": since, "agent": agent, "status": status},
        "by": list(dims),
        "totals": totals,
        "groups": groups,
    }


def _dimensions(by: str | Sequence[str] | None) -> tuple[str, ...]:
    dims = (by,) if isinstance(by, str) else tuple(by or ())
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        raise StatsError(f"cannot group by {unknown[0]!r}: by one of {', '.join(DIMENSIONS)}")
    if len(set(dims)) != len(dims):
        raise StatsError("each grouping may be named once")
    if TOOL_DIMENSION in dims and len(dims) > 1:
        raise StatsError("by tool groups tool calls by name: it combines with nothing else")
    return dims


# ---- the SQL -------------------------------------------------------------------


class _Query:
    """The statements for one set of filters and groupings (the same for a replica
    and for the database: they hold the same tables)."""

    def __init__(
        self, *, since: str | None, agent: str | None, status: str | None, dims: tuple[str, ...]
    ) -> None:
        self.dims = dims
        self.by_tool = dims == (TOOL_DIMENSION,)
        conditions, params = [], []
        for sql, value in (
            ("s.started_at >= ?", since),
            ("s.agent = ?", agent),
            ("s.status = ?", status),
        ):
            if value is not None:
                conditions.append(sql)
                params.append(value)
        self.where = " AND ".join(conditions) or "1"
        self.params = tuple(params)
        self.filtered = bool(conditions)

    def _group(self, *, tools: bool) -> list[tuple[str, str]]:
        """(name, SQL expression) of the group columns of a statement."""
        if self.by_tool:
            return [(TOOL_DIMENSION, "t.name")] if tools else []
        return [(d, SESSION_DIMENSIONS[d]) for d in self.dims]

    def sessions_sql(self, v2: bool = True) -> Statement:
        """Per group and status: sessions, token and cost sums, priced and unpriced."""
        group = self._group(tools=False)
        cols = [f"{expr} AS {name}" for name, expr in group]
        if v2:
            sums = [f"sum(s.{k}) AS {k}" for k in TOKEN_KEYS] + [
                "sum(s.cost_usd) AS cost_usd",
                "count(s.cost_usd) AS sessions_priced",
                # Counted tokens and has no cost (intake/accounting.py).
                f"sum({unpriced('s')}) AS sessions_unpriced",
            ]
        else:  # a replica a version-1 worker wrote: no token or cost columns
            sums = [f"NULL AS {k}" for k in (*TOKEN_KEYS, "cost_usd")] + [
                "0 AS sessions_priced",
                "0 AS sessions_unpriced",
            ]
        keys = [expr for _, expr in group] + ["s.status"]
        sql = (
            f"SELECT {', '.join([*cols, 's.status AS status', 'count(*) AS sessions', *sums])}"
            f" FROM sessions s WHERE {self.where} GROUP BY {', '.join(keys)}"
        )
        return sql, self.params

    def _tool_rows(self, group: list[tuple[str, str]]) -> str:
        """FROM and WHERE of the selected sessions' tool executions."""
        if not self.filtered and all(expr.startswith("t.") for _, expr in group):
            return "FROM tool_executions t"  # every call counts: no join needed
        return f"FROM tool_executions t JOIN sessions s ON s.id = t.session_id WHERE {self.where}"

    def tools_sql(self) -> Statement:
        """Per group: tool calls, errors, finished calls."""
        group = self._group(tools=True)
        cols = [f"{expr} AS {name}" for name, expr in group]
        figures = [
            "count(*) AS tool_calls",
            "sum(t.status = 'error') AS tool_errors",
            "sum(t.status != 'running') AS tool_finished",
        ]
        sql = f"SELECT {', '.join([*cols, *figures])} {self._tool_rows(group)}"
        if group:
            sql += f" GROUP BY {', '.join(expr for _, expr in group)}"
        return sql, self.params

    def percentiles_sql(self, *, grouped: bool) -> Statement:
        """The nearest-rank p50 and p95 of the tool durations, per group or over all:
        rows (group..., rank, n, duration_ms) at the ranks wanted."""
        group = self._group(tools=True) if grouped else []
        partition = f"PARTITION BY {', '.join(e for _, e in group)} " if group else ""
        cols = [f"{expr} AS {name}" for name, expr in group]
        rows = self._tool_rows(group)
        where = " AND " if " WHERE " in rows else " WHERE "
        inner = (
            f"SELECT {', '.join([*cols, 't.duration_ms AS duration_ms'])},"
            f" row_number() OVER ({partition}ORDER BY t.duration_ms) AS r,"
            f" count(*) OVER ({partition.strip()}) AS n"
            f" {rows}{where}t.duration_ms IS NOT NULL"
        )
        # ceil(p * n / 100) in integer arithmetic: (p * n + 99) / 100
        ranks = " OR ".join(f"r = ({p} * n + 99) / 100" for p in PERCENTILES)
        names = ", ".join([*(name for name, _ in group), "r", "n", "duration_ms"])
        return f"SELECT {names} FROM ({inner}) WHERE {ranks}", self.params

    def durations_sql(self) -> Statement:
        """Every known tool duration with its group (a replica's few)."""
        group = self._group(tools=True)
        cols = [f"{expr} AS {name}" for name, expr in group]
        rows = self._tool_rows(group)
        where = " AND " if " WHERE " in rows else " WHERE "
        sql = f"SELECT {', '.join([*cols, 't.duration_ms AS duration_ms'])} {rows}{where}"
        return sql + "t.duration_ms IS NOT NULL", self.params


# ---- the database --------------------------------------------------------------


def _database_stats(
    source: Database | sqlite3.Connection, q: _Query
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    statements = [q.sessions_sql(), q.tools_sql(), q.percentiles_sql(grouped=False)]
    if q.dims:
        statements.append(q.percentiles_sql(grouped=True))
    if isinstance(source, sqlite3.Connection):
        results = [_sqlite_rows(source, sql, params) for sql, params in statements]
    else:
        results = source.query_many(statements)  # one request
    sessions, tools, overall = results[:3]
    acc = _Accumulator(q)
    acc.add_sessions(sessions)
    acc.add_tools(tools)
    acc.set_percentiles(overall, grouped=False)
    if q.dims:
        acc.set_percentiles(results[3], grouped=True)
    return acc.result()


def _sqlite_rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, tuple(params))
    columns = [d[0] for d in cursor.description or ()]
    return [
        row if isinstance(row, dict) else dict(zip(columns, row, strict=True))
        for row in cursor.fetchall()
    ]


# ---- a spool's replicas ----------------------------------------------------------


def replica_files(spool_dir: Path) -> list[Path]:
    try:
        entries = list(os.scandir(spool_dir / REPLICAS_DIRNAME))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path) for e in entries if e.name.endswith(".db") and e.is_file(follow_symlinks=False)
    )


def _spool_stats(spool_dir: Path, q: _Query) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    acc = _Accumulator(q)
    for path in replica_files(spool_dir):
        try:
            conn = sqlite3.connect(readonly_uri(path), uri=True, isolation_level=None, timeout=5)
        except sqlite3.Error:
            continue  # gone or unreadable: a report skips it, as the viewer does
        try:
            # One snapshot of a replica the worker may be writing; a deferred BEGIN
            # takes no write lock.
            with transaction(conn, begin="BEGIN"):
                sessions, tools, durations = _replica_rows(conn, q)
        except sqlite3.Error:
            continue  # a replica being created (no tables yet) or damaged
        finally:
            conn.close()
        acc.add_sessions(sessions)
        acc.add_tools(tools)
        acc.add_durations(durations)
    acc.take_percentiles()
    return acc.result()


def _replica_rows(conn: sqlite3.Connection, q: _Query) -> tuple[list[dict[str, Any]], ...]:
    try:
        sessions = _sqlite_rows(conn, *q.sessions_sql())
    except sqlite3.OperationalError as exc:
        if "no such column" not in str(exc):
            raise
        sessions = _sqlite_rows(conn, *q.sessions_sql(v2=False))
    return sessions, _sqlite_rows(conn, *q.tools_sql()), _sqlite_rows(conn, *q.durations_sql())


# ---- adding up ------------------------------------------------------------------


def _empty_figures(by_tool_group: bool = False) -> dict[str, Any]:
    tools: dict[str, Any] = {
        "tool_calls": 0,
        "tool_errors": 0,
        "tool_error_rate": None,
        "tool_duration_p50_ms": None,
        "tool_duration_p95_ms": None,
        "_finished": 0,
    }
    if by_tool_group:
        return tools
    return {
        "sessions": 0,
        "sessions_by_status": dict.fromkeys(STATUSES, 0),
        **dict.fromkeys(TOKEN_KEYS),
        "cost_usd": None,
        "sessions_priced": 0,
        "sessions_unpriced": 0,
        **tools,
    }


def _add(a: Any, b: Any) -> Any:
    """SQL's sum: NULL only when every value is NULL."""
    if b is None:
        return a
    return b if a is None else a + b


class _Accumulator:
    def __init__(self, q: _Query) -> None:
        self.q = q
        self.totals = _empty_figures()
        self.groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.durations: dict[tuple[Any, ...] | None, list[float]] = {}

    def _key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        names = [TOOL_DIMENSION] if self.q.by_tool else self.q.dims
        return tuple(row[name] for name in names)

    def _group(self, key: tuple[Any, ...]) -> dict[str, Any]:
        if key not in self.groups:
            names = [TOOL_DIMENSION] if self.q.by_tool else self.q.dims
            self.groups[key] = dict(zip(names, key, strict=True)) | _empty_figures(
                by_tool_group=self.q.by_tool
            )
        return self.groups[key]

    def _targets(self, row: dict[str, Any], *, tools: bool) -> Iterable[dict[str, Any]]:
        yield self.totals
        if self.q.dims and (tools or not self.q.by_tool):
            yield self._group(self._key(row))

    def add_sessions(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for figures in self._targets(row, tools=False):
                figures["sessions"] += row["sessions"]
                status = row["status"]
                by_status = figures["sessions_by_status"]
                by_status[status] = by_status.get(status, 0) + row["sessions"]
                for key in (*TOKEN_KEYS, "cost_usd"):
                    figures[key] = _add(figures[key], row[key])
                figures["sessions_priced"] += row["sessions_priced"] or 0
                figures["sessions_unpriced"] += row["sessions_unpriced"] or 0

    def add_tools(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if not row["tool_calls"]:
                continue  # an ungrouped count over no rows
            for figures in self._targets(row, tools=True):
                figures["tool_calls"] += row["tool_calls"]
                figures["tool_errors"] += row["tool_errors"] or 0
                figures["_finished"] += row["tool_finished"] or 0

    def set_percentiles(self, rows: list[dict[str, Any]], *, grouped: bool) -> None:
        """Rows of ``percentiles_sql``: the durations at the ranks wanted."""
        for row in rows:
            figures = self._group(self._key(row)) if grouped else self.totals
            for p in PERCENTILES:
                if row["r"] == (p * row["n"] + 99) // 100:
                    figures[f"tool_duration_p{p}_ms"] = row["duration_ms"]

    def add_durations(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.durations.setdefault(None, []).append(row["duration_ms"])
            if self.q.dims:
                self.durations.setdefault(self._key(row), []).append(row["duration_ms"])

    def take_percentiles(self) -> None:
        for key, values in self.durations.items():
            figures = self.totals if key is None else self._group(key)
            values.sort()
            for p in PERCENTILES:
                figures[f"tool_duration_p{p}_ms"] = nearest_rank(values, p)

    def result(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        for figures in (self.totals, *self.groups.values()):
            finished = figures.pop("_finished")
            figures["tool_error_rate"] = figures["tool_errors"] / finished if finished else None
        return self.totals, sorted(self.groups.values(), key=self._order)

    def _order(self, group: dict[str, Any]) -> tuple[Any, ...]:
        """Days in order; agents and models by sessions, tools by calls, most first."""
        if self.q.by_tool:
            return (-group["tool_calls"], group[TOOL_DIMENSION])
        key = tuple((v is None, v or "") for v in self._key(group))
        if self.q.dims[0] == "day":
            return key
        return (-group["sessions"], key)


def nearest_rank(ordered: Sequence[float], p: int) -> float | None:
    """The value at rank ceil(p/100 * n) (1-based) of ``ordered`` (ascending)."""
    if not ordered:
        return None
    return ordered[(p * len(ordered) + 99) // 100 - 1]
