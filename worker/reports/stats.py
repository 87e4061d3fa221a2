"""What the logs add up to: ``agentspool stats`` and the viewer's stats page.

    compute_stats(source, since=, agent=, status=, by=) -> dict

``source`` is where the rows are: the remote database (a ``sync.database.Database``,
or a read-only ``sqlite3.Connection`` to a ``file:`` database), or a spool directory
(its replicas, ``<spool>/replicas/*.db``, each opened read-only: nothing in the spool
is created or changed). The aggregation runs in SQL where the rows are: the database
is asked its schema version, then gets its statements in one request
(``Database.query_many``), and one more for the percentiles walked along an index (per
group, or over a filtered selection), whose ranks need the counts; a spool's replicas are aggregated one by one in SQL and
the per-replica sums added up here.

Which rows count: the sessions that started at or after ``since`` (ISO text), of
``agent``, with ``status``; their tokens and cost are the session columns (sums over
their own messages, schema/002), their tool figures those of their tool executions.

Percentiles are nearest-rank: p is the value at rank ceil(p/100 * n) of the n known
durations in ascending order, so it is always a duration that was measured. The
database walks indexes of (group, duration) to the ranks: over every call, per tool
(schema/003), and from schema 5 on per agent, model or day and with ``since`` or
``agent``, along the session columns copied onto the tool rows (schema/004); a status
filter, an agent with another grouping, or two groupings rank the selected calls with
window functions (stats_sql.py). A spool's replicas each give their durations (one
number per tool call) and the ranks are taken here.

The returned dict is the ``--json`` contract of ``agentspool stats`` (docs/CLI.md).
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentspool.producer.transaction import transaction
from agentspool.worker.intake.replica_names import REPLICAS_DIRNAME
from agentspool.worker.readonly import readonly_uri
from agentspool.worker.reports.stats_sql import (
    COPIES_SINCE,
    PERCENTILES,
    SESSION_DIMENSIONS,
    TOKEN_KEYS,
    TOOL_DIMENSION,
    Statement,
    StatsQuery,
    rank,
)

if TYPE_CHECKING:
    from agentspool.worker.sync.database import Database

log = logging.getLogger("agentspool.worker")

STATUSES = ("running", "completed", "error", "abandoned")
DIMENSIONS = (*SESSION_DIMENSIONS, TOOL_DIMENSION)


class StatsError(ValueError):
    """Arguments that ask for no meaningful figures (an unknown ``by``, ...)."""


def compute_stats(
    source: Database | sqlite3.Connection | Path,
    *,
    since: str | None = None,
    agent: str | None = None,
    status: str | None = None,
    by: str | Sequence[str] | None = None,
    tool_groups: bool = True,
) -> dict[str, Any]:
    """The figures of the selected sessions (see the module's docstring), as
    ``{"filters": {...}, "by": [...], "totals": {...}, "groups": [...]}``.
    ``tool_groups=False`` leaves the tool figures out of the groups (they stay in the
    totals): the stats page charts sessions, tokens and cost per day and agent, and a
    rank per group is the costly part (1.4 s of 2 s over 500,000 calls)."""
    dims = _dimensions(by)
    if status is not None and status not in STATUSES:
        raise StatsError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    query = functools.partial(
        StatsQuery, since=since, agent=agent, status=status, dims=dims, tool_groups=tool_groups
    )
    if isinstance(source, Path):
        totals, groups = _spool_stats(source, query())
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


# ---- the database --------------------------------------------------------------


def _database_stats(
    source: Database | sqlite3.Connection, query: Callable[..., StatsQuery]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A first request for the schema version (which columns and copies there are),
    one for the figures, and a third for the percentiles walked along an index (per
    group, or over a filtered selection), whose ranks come from the second's counts."""
    (row,) = _run(source, [("SELECT max(version) AS version FROM schema_version", ())])[0]
    version = int(row["version"] or 0)
    q = query(copies=version >= COPIES_SINCE)
    sessions_sql = q.sessions_sql(v2=version >= 2)  # version 1: no tokens or cost yet
    overall = q.overall_percentiles_sql()
    first = [sessions_sql, q.tools_sql(), *([overall] if overall else [])]
    sessions, tools, *overall_rows = _run(source, first)
    acc = _Accumulator(q)
    acc.add_sessions(sessions)
    acc.add_tools(tools)
    if overall_rows:
        acc.set_percentiles(overall_rows[0], grouped=False)
    if q.walks:  # one more request: the ranks, from the counts
        walks: list[tuple[Statement, bool]] = []  # (statement, grouped)
        if overall is None:
            known = sum(row["tool_durations"] or 0 for row in tools)
            walks += [(w, False) for w in q.walks_sql({None: known}, grouped=False)]
        if q.tool_dim is not None:
            counts = {acc.key(row)[0]: row["tool_durations"] for row in tools}
            walks += [(w, True) for w in q.walks_sql(counts, grouped=True)]
        answers = _run(source, [statement for statement, _ in walks])
        for (_, grouped), rows in zip(walks, answers, strict=True):
            acc.set_percentiles(rows, grouped=grouped)
    elif q.dims and q.tool_groups:
        known = {acc.key(row): row["tool_durations"] for row in tools}
        statement = q.group_ranks_sql(known)
        if statement is None:  # more groups than one statement can name
            acc.set_percentiles(_run(source, [q.ranked_sql(grouped=True)])[0], grouped=True)
        else:
            for row in _run(source, [statement])[0]:
                n = known[acc.key(row)]
                for p in PERCENTILES:
                    if row["r"] == rank(p, n):
                        acc.set_percentiles([row | {"p": p}], grouped=True)
    return acc.result()


def _run(source: Database | sqlite3.Connection, statements: list[Statement]) -> list[Any]:
    if not statements:
        return []
    if isinstance(source, sqlite3.Connection):
        return [_sqlite_rows(source, sql, params) for sql, params in statements]
    return source.query_many(statements)  # one request


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


def _spool_stats(spool_dir: Path, q: StatsQuery) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
        except sqlite3.Error as exc:
            if "no such table" not in str(exc):  # not one being created: say so
                log.warning("stats: %s left out, it cannot be read: %s", path.name, exc)
            continue
        finally:
            conn.close()
        acc.add_sessions(sessions)
        acc.add_tools(tools)
        acc.add_durations(durations)
    acc.take_percentiles()
    return acc.result()


def _replica_rows(conn: sqlite3.Connection, q: StatsQuery) -> tuple[list[dict[str, Any]], ...]:
    try:
        sessions = _sqlite_rows(conn, *q.sessions_sql())
    except sqlite3.OperationalError as exc:
        if "no such column" not in str(exc):
            raise
        sessions = _sqlite_rows(conn, *q.sessions_sql(v2=False))
    return sessions, _sqlite_rows(conn, *q.tools_sql()), _sqlite_rows(conn, *q.durations_sql())


# ---- adding up ------------------------------------------------------------------


_TOOL_FIGURES = {
    "tool_calls": 0,
    "tool_errors": 0,
    "tool_error_rate": None,
    "tool_duration_p50_ms": None,
    "tool_duration_p95_ms": None,
    "_finished": 0,
}


def _empty_figures(by_tool_group: bool = False) -> dict[str, Any]:
    tools = dict(_TOOL_FIGURES)
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
    def __init__(self, q: StatsQuery) -> None:
        self.q = q
        self.totals = _empty_figures()
        self.groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.durations: dict[tuple[Any, ...] | None, list[float]] = {}

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        names = [TOOL_DIMENSION] if self.q.by_tool else self.q.dims
        return tuple(row[name] for name in names)

    def _group(self, key: tuple[Any, ...]) -> dict[str, Any]:
        if key not in self.groups:
            names = [TOOL_DIMENSION] if self.q.by_tool else self.q.dims
            figures = _empty_figures(by_tool_group=self.q.by_tool)
            if not self.q.tool_groups:  # tool figures in the totals alone
                figures = {k: v for k, v in figures.items() if k not in _TOOL_FIGURES}
            self.groups[key] = dict(zip(names, key, strict=True)) | figures
        return self.groups[key]

    def _targets(self, row: dict[str, Any], *, tools: bool) -> Iterable[dict[str, Any]]:
        yield self.totals
        if self.q.dims and (self.q.tool_groups if tools else not self.q.by_tool):
            yield self._group(self.key(row))

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
        """Rows of a walk (p, duration_ms) or of the window functions (r, n,
        duration_ms: the durations at the ranks wanted)."""
        for row in rows:
            figures = self._group(self.key(row)) if grouped else self.totals
            if "p" in row:
                figures[f"tool_duration_p{row['p']}_ms"] = row["duration_ms"]
                continue
            for p in PERCENTILES:
                if row["r"] == rank(p, row["n"]):
                    figures[f"tool_duration_p{p}_ms"] = row["duration_ms"]

    def add_durations(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.durations.setdefault(None, []).append(row["duration_ms"])
            if self.q.dims and self.q.tool_groups:
                self.durations.setdefault(self.key(row), []).append(row["duration_ms"])

    def take_percentiles(self) -> None:
        for key, values in self.durations.items():
            figures = self.totals if key is None else self._group(key)
            values.sort()
            for p in PERCENTILES:
                figures[f"tool_duration_p{p}_ms"] = nearest_rank(values, p)

    def result(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        for figures in (self.totals, *self.groups.values()):
            if "_finished" not in figures:
                continue  # no tool figures (``tool_groups=False``)
            finished = figures.pop("_finished")
            figures["tool_error_rate"] = figures["tool_errors"] / finished if finished else None
        return self.totals, sorted(self.groups.values(), key=self._order)

    def _order(self, group: dict[str, Any]) -> tuple[Any, ...]:
        """Days in order; agents and models by sessions, tools by calls, most first."""
        if self.q.by_tool:
            return (-group["tool_calls"], group[TOOL_DIMENSION])
        key = tuple((v is None, v or "") for v in self.key(group))
        if self.q.dims[0] == "day":
            return key
        return (-group["sessions"], key)


def nearest_rank(ordered: Sequence[float], p: int) -> float | None:
    """The value at rank ceil(p/100 * n) (1-based) of ``ordered`` (ascending)."""
    if not ordered:
        return None
    return ordered[rank(p, len(ordered)) - 1]
