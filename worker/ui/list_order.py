"""How the sessions list can be sorted, the same for the spool and the remote database.

A sort is a column of the list (``started``, ``model``, ``input_tokens``,
``output_tokens``, ``tokens`` = input + output, ``cost``) and a direction. Sessions
without the value (NULL: unknown model, no token counts, no price) come last in both
directions, so "most expensive first" and "cheapest first" both start with sessions
that have a price. Ties keep the default order, newest first, then by id.

The remote database sorts in its ORDER BY (``order_by``); the spool sorts the rows it
read from the replicas in Python (``sort_rows``) with the same rules.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SORT = "started"

# The sort name -> the SQL expression over a ``sessions`` row it sorts by. Tokens are
# NULL (unknown) only when both counts are: a session with output but no input count
# still has tokens.
SORT_SQL = {
    "started": "started_at",
    "model": "model",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "tokens": (
        "CASE WHEN input_tokens IS NULL AND output_tokens IS NULL THEN NULL"
        " ELSE coalesce(input_tokens, 0) + coalesce(output_tokens, 0) END"
    ),
    "cost": "cost_usd",
}
SORTS = tuple(SORT_SQL)


def order_by(sort: str, descending: bool) -> str:
    """The ORDER BY clause (without the keywords) of a sort; ``sort`` must be one of
    SORTS (it is SQL text chosen from this module, never the client's)."""
    expression = SORT_SQL[sort]
    direction = "DESC" if descending else "ASC"
    if sort == "started":
        return f"started_at {direction}, id {direction}"
    return f"({expression}) IS NULL, {expression} {direction}, started_at DESC, id DESC"


def sort_value(row: dict[str, Any], sort: str) -> Any:
    """A list row's value for ``sort`` (None: unknown), as ``SORT_SQL`` computes it."""
    if sort == "cost":
        return row.get("cost_usd")
    if sort == "tokens":
        counts = [row.get("input_tokens"), row.get("output_tokens")]
        known = [c for c in counts if isinstance(c, int | float)]
        return sum(known) if known else None
    return row.get(sort)


def sort_rows(rows: list[dict[str, Any]], sort: str, descending: bool) -> list[dict[str, Any]]:
    """``rows`` in the order ``order_by`` gives. The default order first (newest first,
    then by id), then a stable sort by the value with the unknown ones last."""
    rows = sorted(rows, key=lambda s: (s["started_at"] or s["last_activity_at"] or "", s["id"]))
    rows.reverse()
    if sort == DEFAULT_SORT:
        return rows if descending else rows[::-1]
    known = [r for r in rows if sort_value(r, sort) is not None]
    unknown = [r for r in rows if sort_value(r, sort) is None]
    known.sort(key=lambda r: sort_value(r, sort), reverse=descending)  # stable both ways
    return known + unknown
