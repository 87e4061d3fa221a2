"""The SQL of ``agentspool stats`` (reports/stats.py): the same statements for a replica
and for the database, which hold the same tables.

Values travel only as parameters; what is written into the text is this module's
own: column expressions of the groupings (``SESSION_DIMENSIONS``,
``COPIED_DIMENSIONS``) and the percentiles. The plans were chosen by measuring 100,000
sessions and 500,000 tool calls (bench/stats.py, docs/PERFORMANCE.md); each choice
says its figure where it is made.
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
# whole from version 5 on), each first in an index (group, duration_ms, status,
# session_started_at), as the duration and the tool name are.
COPIED_DIMENSIONS = {
    "agent": "t.session_agent",
    "model": "t.session_model",
    "day": "t.session_day",
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
        # What the tool figures are grouped by: nothing (the totals), a tool's name, one
        # session column, or several (the page's day and agent: joined, never walked).
        if self.by_tool:
            self.tool_dim: str | None = TOOL_DIMENSION
        elif not self.tool_groups or not dims:
            self.tool_dim = None
        else:
            self.tool_dim = dims[0] if len(dims) == 1 else ",".join(dims)
        # Along the copies (a database at COPIES_SINCE): the selected calls are found
        # on the tool rows themselves, without the sessions: each group counted and
        # walked to its ranks along its index, where the session's start and agent are
        # at hand (0.05 s for 10 agents and 500,000 calls; joined from the sessions and
        # ranked by window functions, 1.4 s). Not for a status (it changes: it is not
        # copied), nor an agent with another grouping (the agent is not in that index).
        self.copied = (
            copies
            and status is None
            and self.tool_dim in (None, TOOL_DIMENSION, *COPIED_DIMENSIONS)
            and (agent is None or self.tool_dim in (None, "agent"))
        )
        tool_conditions, tool_params = [], []
        for sql, value in (("t.session_started_at >= ?", since), ("t.session_agent = ?", agent)):
            if value is not None:
                tool_conditions.append(sql)
                tool_params.append(value)
        if not tool_conditions and self.tool_dim in COPIED_DIMENSIONS:
            # Grouped by a session column, only calls whose session row is there count,
            # as in the join (a NULL model is a group: the start tells them apart).
            tool_conditions.append("t.session_started_at IS NOT NULL")
        self.tool_where = " AND ".join(tool_conditions) or "1"
        self.tool_params = tuple(tool_params)
        # Per group by a walk along an index of (group, duration): along the copies,
        # or per tool name over every call (schema/003 and later).
        self.walks = self.copied or (self.by_tool and not self.filtered)

    def group(self, *, tools: bool) -> list[tuple[str, str]]:
        """(name, SQL expression) of the group columns of a statement."""
        if self.by_tool:
            return [(TOOL_DIMENSION, "t.name")] if tools else []
        if tools and not self.tool_groups:
            return []
        if tools and self.copied and self.tool_dim in COPIED_DIMENSIONS:
            return [(self.tool_dim, COPIED_DIMENSIONS[self.tool_dim])]
        return [(d, SESSION_DIMENSIONS[d]) for d in self.dims]

    def _sessions(self) -> str:
        # Every session counts: one pass over the table beats the status index's
        # lookup of each row (0.09 s against 0.23 s for 100,000 sessions).
        return "sessions s" if self.filtered else "sessions s NOT INDEXED"

    def _tool_rows(self, group: list[tuple[str, str]]) -> tuple[str, tuple[Any, ...]]:
        """FROM and WHERE of the selected sessions' tool executions, and its parameters."""
        if self.walks:  # on the tool rows alone
            return f"FROM tool_executions t WHERE {self.tool_where}", self.tool_params
        if not self.filtered and all(expr.startswith("t.") for _, expr in group):
            return "FROM tool_executions t WHERE 1", ()  # every call counts: no join
        # Sessions first, then each one's calls by its key: 0.3 s for 500,000 calls,
        # against 0.9 s for a lookup of the session of each call.
        return (
            f"FROM {self._sessions()} CROSS JOIN tool_executions t ON t.session_id = s.id"
            f" WHERE {self.where}"
        ), self.params

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
        rows, params = self._tool_rows(group)
        sql = f"SELECT {', '.join([*cols, *figures])} {rows}"
        if group:
            sql += f" GROUP BY {', '.join(expr for _, expr in group)}"
        return sql, params

    def overall_percentiles_sql(self) -> Statement | None:
        """p50 and p95 of every selected call's duration: rows (p, duration_ms), or the
        window function's rows (r, n, duration_ms) when only some sessions count.
        None: walked along the copies (``walks_sql``) from the count of the calls."""
        if self.filtered:
            return None if self.copied else self.ranked_sql(grouped=False)
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
        rows, params = self._tool_rows(group)
        inner = (
            f"SELECT {', '.join([*cols, 't.duration_ms AS duration_ms'])},"
            f" row_number() OVER ({partition}ORDER BY t.duration_ms) AS r,"
            f" count(*) OVER ({partition.strip()}) AS n"
            f" {rows} AND t.duration_ms IS NOT NULL"
        )
        ranks = " OR ".join(f"r = ({p} * n + 99) / 100" for p in PERCENTILES)
        names = ", ".join([*(name for name, _ in group), "r", "n", "duration_ms"])
        return f"SELECT {names} FROM ({inner}) WHERE {ranks}", params

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
        rows, params = self._tool_rows(group)
        if not wanted or len(wanted) * width + len(params) > MAX_PARAMETERS:
            return None
        exprs = ", ".join(e for _, e in group)
        cols = [f"{expr} AS {name}" for name, expr in group]
        inner = (
            f"SELECT {', '.join([*cols, 't.duration_ms AS duration_ms'])},"
            f" row_number() OVER (PARTITION BY {exprs} ORDER BY t.duration_ms) AS r"
            f" {rows} AND t.duration_ms IS NOT NULL"
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
        return sql, [*params, *(v for w in wanted for v in w)]

    def walks_sql(self, counts: dict[Any, int], *, grouped: bool) -> list[Statement]:
        """p50 and p95 by a walk along an index of (group, duration), per group or over
        all (``counts``: the known durations of each group, or ``{None: n}``): rows
        (group, p, duration_ms), or (p, duration_ms). A filter is tested on each index
        entry on the way (the session's start and agent are in it). 0.03 s for 12 tools
        and 500,000 calls; the window functions' sort took 2.4 s."""
        group = self.group(tools=True) if grouped else []
        walks = [(value, p, rank(p, n) - 1)
                 for value, n in sorted(counts.items(), key=lambda kv: repr(kv[0])) if n
                 for p in PERCENTILES]  # fmt: skip
        head, test = "", ""
        if group:
            (name, column), *_ = group
            # "IS ?": a group may be NULL (sessions that named no model).
            head, test = f"? AS {name}, ", f"{column} IS ? AND "
        walk = (
            f"SELECT {head}? AS p, (SELECT duration_ms FROM tool_executions t"
            f" WHERE {test}{self.tool_where} AND duration_ms IS NOT NULL"
            " ORDER BY duration_ms LIMIT 1 OFFSET ?) AS duration_ms"
        )
        statements: list[Statement] = []
        for start in range(0, len(walks), WALKS_PER_STATEMENT):
            chunk = walks[start : start + WALKS_PER_STATEMENT]
            params = [
                v
                for value, p, offset in chunk
                for v in ((value, p, value) if group else (p,)) + self.tool_params + (offset,)
            ]
            statements.append((" UNION ALL ".join([walk] * len(chunk)), params))
        return statements

    def durations_sql(self) -> Statement:
        """Every known tool duration with its group (a replica's few)."""
        group = self.group(tools=True)
        cols = [f"{expr} AS {name}" for name, expr in group]
        rows, params = self._tool_rows(group)
        sql = f"SELECT {', '.join([*cols, 't.duration_ms AS duration_ms'])} {rows}"
        return sql + " AND t.duration_ms IS NOT NULL", params
