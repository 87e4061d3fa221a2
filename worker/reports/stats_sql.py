"""The SQL of ``agentspool stats`` (reports/stats.py): the same statements for a replica
and for the database, which hold the same tables.

Values travel only as parameters; what is written into the text is this module's
own: column expressions of the groupings (``SESSION_DIMENSIONS``) and the percentiles.
The plans were chosen by measuring 100,000 sessions and 500,000 tool calls
(bench/stats.py, docs/PERFORMANCE.md); each choice says its figure where it is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentspool.worker.intake.accounting import unpriced

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
# The same groupings on a tool row: its copies of its session's columns (schema/004,
# whole from version 5 on), each first in an index (group, duration_ms, status), and
# the test that the row has a session row at all (its copies are NULL until it has).
# The model's index holds session_day too, since a NULL model is a group of its own.
COPIED_DIMENSIONS = {
    "agent": ("t.session_agent", "t.session_agent IS NOT NULL"),
    "model": ("t.session_model", "t.session_day IS NOT NULL"),
    "day": ("t.session_day", "t.session_day IS NOT NULL"),
}
COPIES_SINCE = 5  # the schema version from which every tool row's copies are filled
# SQLite's limit of terms in one compound SELECT is 500.
WALKS_PER_STATEMENT = 200
# SQLite's limit of parameters in one statement is 32,766.
MAX_PARAMETERS = 32_000

Statement = tuple[str, Sequence[Any]]


def rank(p: int, n: int) -> int:
    """The nearest rank (1-based) of percentile ``p`` among ``n`` values: ceil(p n / 100)."""
    return (p * n + 99) // 100


class StatsQuery:
    """The statements for one set of filters and groupings."""

    def __init__(
        self,
        *,
        since: str | None,
        agent: str | None,
        status: str | None,
        dims: tuple[str, ...],
        copies: bool = False,
        tool_groups: bool = True,
    ) -> None:
        """``copies``: the tool rows carry their session's columns (a database at
        ``COPIES_SINCE``). ``tool_groups=False``: the groups get session figures
        only, the tool figures are the totals' alone (the stats page's charts)."""
        self.dims = dims
        self.by_tool = dims == (TOOL_DIMENSION,)
        self.tool_groups = tool_groups or self.by_tool
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
        # Every call counts and one session column groups them: each group's calls are
        # counted, and its percentiles walked, along that column's index on the tool
        # rows (0.05 s for 10 agents and 500,000 calls; joined from the sessions and
        # ranked by a window function, 1.4 s).
        self.copied = (
            copies
            and self.tool_groups
            and not self.filtered
            and len(dims) == 1
            and dims[0] in COPIED_DIMENSIONS
        )

    def group(self, *, tools: bool) -> list[tuple[str, str]]:
        """(name, SQL expression) of the group columns of a statement."""
        if self.by_tool:
            return [(TOOL_DIMENSION, "t.name")] if tools else []
        if tools and not self.tool_groups:
            return []
        if tools and self.copied:
            return [(self.dims[0], COPIED_DIMENSIONS[self.dims[0]][0])]
        return [(d, SESSION_DIMENSIONS[d]) for d in self.dims]

    @property
    def walks_index(self) -> bool:
        """Per-group percentiles by walking an index of (group, duration): every call
        counts, grouped by tool name or by one session column copied onto the calls."""
        return (self.by_tool and not self.filtered) or self.copied

    def _sessions(self) -> str:
        # Every session counts: one pass over the table beats the status index's
        # lookup of each row (0.09 s against 0.23 s for 100,000 sessions).
        return "sessions s" if self.filtered else "sessions s NOT INDEXED"

    def _tool_rows(self, group: list[tuple[str, str]]) -> str:
        """FROM and WHERE of the selected sessions' tool executions."""
        if self.copied and group:  # the calls that have a session row, as the join has
            return f"FROM tool_executions t WHERE {COPIED_DIMENSIONS[self.dims[0]][1]}"
        if not self.filtered and all(expr.startswith("t.") for _, expr in group):
            return "FROM tool_executions t"  # every call counts: no join needed
        # Sessions first, then each one's calls by its key: 0.3 s for 500,000 calls,
        # against 0.9 s for a lookup of the session of each call.
        return (
            f"FROM {self._sessions()} CROSS JOIN tool_executions t ON t.session_id = s.id"
            f" WHERE {self.where}"
        )

    def sessions_sql(self, v2: bool = True) -> Statement:
        """Per group and status: sessions, token and cost sums, priced and unpriced."""
        group = self.group(tools=False)
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
            f" FROM {self._sessions()} WHERE {self.where} GROUP BY {', '.join(keys)}"
        )
        return sql, self.params

    def tools_sql(self) -> Statement:
        """Per group: tool calls, errors, finished calls, known durations."""
        group = self.group(tools=True)
        cols = [f"{expr} AS {name}" for name, expr in group]
        figures = [
            "count(*) AS tool_calls",
            "sum(t.status = 'error') AS tool_errors",
            "sum(t.status != 'running') AS tool_finished",
            "count(t.duration_ms) AS tool_durations",
        ]
        sql = f"SELECT {', '.join([*cols, *figures])} {self._tool_rows(group)}"
        if group:
            sql += f" GROUP BY {', '.join(expr for _, expr in group)}"
        return sql, self.params

    def overall_percentiles_sql(self) -> Statement:
        """p50 and p95 of every selected call's duration: rows (p, duration_ms), or the
        window function's rows (r, n, duration_ms) when only some sessions count."""
        if self.filtered:
            return self.ranked_sql(grouped=False)
        # Every call counts: a walk along the duration index to the rank (0.05 s for
        # both over 500,000 calls; a sort took 0.9 s). Without the index (a database
        # schema 003 has not reached) it is still right, only slower.
        walk = (
            "SELECT {p} AS p, (SELECT duration_ms FROM tool_executions"
            " WHERE duration_ms IS NOT NULL ORDER BY duration_ms LIMIT 1 OFFSET"
            " (SELECT ({p} * count(duration_ms) + 99) / 100 - 1 FROM tool_executions))"
            " AS duration_ms"
        )
        return " UNION ALL ".join(walk.format(p=p) for p in PERCENTILES), ()

    def ranked_sql(self, *, grouped: bool) -> Statement:
        """The nearest-rank p50 and p95 of the tool durations, per group or over all, by
        window functions: rows (group..., r, n, duration_ms) at the ranks wanted."""
        group = self.group(tools=True) if grouped else []
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
        ranks = " OR ".join(f"r = ({p} * n + 99) / 100" for p in PERCENTILES)
        names = ", ".join([*(name for name, _ in group), "r", "n", "duration_ms"])
        return f"SELECT {names} FROM ({inner}) WHERE {ranks}", self.params

    def group_ranks_sql(self, counts: dict[tuple[Any, ...], int]) -> Statement | None:
        """p50 and p95 per group of agent, model or day, by one window function whose
        ranks come from ``counts`` (each group's known durations, from a first request):
        rows (group..., r, duration_ms). ``ranked_sql``, which counts in a second window,
        sorts the calls twice (2.5 s against 3.2 s for 500,000 calls on a loaded
        machine). None: nothing to rank, or more groups than one statement's parameters
        can name (``ranked_sql`` then)."""
        group = self.group(tools=True)
        wanted = sorted(
            {(*key, rank(p, n)) for key, n in counts.items() if n for p in PERCENTILES},
            key=repr,
        )
        width = len(group) + 1
        if not wanted or len(wanted) * width + len(self.params) > MAX_PARAMETERS:
            return None
        exprs = ", ".join(e for _, e in group)
        cols = [f"{expr} AS {name}" for name, expr in group]
        rows = self._tool_rows(group)
        where = " AND " if " WHERE " in rows else " WHERE "
        inner = (
            f"SELECT {', '.join([*cols, 't.duration_ms AS duration_ms'])},"
            f" row_number() OVER (PARTITION BY {exprs} ORDER BY t.duration_ms) AS r"
            f" {rows}{where}t.duration_ms IS NOT NULL"
        )
        names = [name for name, _ in group]
        row = "(" + ", ".join("?" * width) + ")"
        # Joined on IS, not "(group, r) IN (VALUES ...)": a group may be NULL (sessions
        # that named no model), and NULL = NULL is not true.
        matches = [f"x.{name} IS w.column{i}" for i, name in enumerate(names, 1)]
        sql = (
            f"SELECT {', '.join([*(f'x.{n}' for n in names), 'x.r', 'x.duration_ms'])}"
            f" FROM ({inner}) x JOIN (VALUES {', '.join([row] * len(wanted))}) w"
            f" ON {' AND '.join([*matches, f'x.r = w.column{width}'])}"
        )
        return sql, [*self.params, *(v for w in wanted for v in w)]

    def walks_sql(self, counts: dict[Any, int]) -> list[Statement]:
        """Per group (``counts``: its known durations), p50 and p95 by a walk along the
        index of (group, duration): rows (group, p, duration_ms). 0.03 s for 12 tools
        and 500,000 calls; the window functions' sort took 2.4 s."""
        (name, column), *_ = self.group(tools=True)
        present = COPIED_DIMENSIONS[name][1] if self.copied else "1"
        walks = [(value, p, rank(p, n) - 1)
                 for value, n in sorted(counts.items(), key=lambda kv: repr(kv[0])) if n
                 for p in PERCENTILES]  # fmt: skip
        # "IS ?": a group may be NULL (sessions that named no model).
        walk = (
            f"SELECT ? AS {name}, ? AS p, (SELECT duration_ms FROM tool_executions t"
            f" WHERE {column} IS ? AND {present} AND duration_ms IS NOT NULL"
            " ORDER BY duration_ms LIMIT 1 OFFSET ?) AS duration_ms"
        )
        statements: list[Statement] = []
        for start in range(0, len(walks), WALKS_PER_STATEMENT):
            chunk = walks[start : start + WALKS_PER_STATEMENT]
            params = [v for value, p, offset in chunk for v in (value, p, value, offset)]
            statements.append((" UNION ALL ".join([walk] * len(chunk)), params))
        return statements

    def durations_sql(self) -> Statement:
        """Every known tool duration with its group (a replica's few)."""
        group = self.group(tools=True)
        cols = [f"{expr} AS {name}" for name, expr in group]
        rows = self._tool_rows(group)
        where = " AND " if " WHERE " in rows else " WHERE "
        sql = f"SELECT {', '.join([*cols, 't.duration_ms AS duration_ms'])} {rows}{where}"
        return sql + "t.duration_ms IS NOT NULL", self.params
