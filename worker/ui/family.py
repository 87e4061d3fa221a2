"""A session's family for its page: its parent, its children (subagents) as a tree
with their own figures, and the totals rolled up over the whole tree.

``sessions.parent_id`` (schema/002) links a child to the session that started it.
A source gives the rows (the session, its parent, and candidate descendants, each
with its ``parent_id``); ``tree`` builds the same answer from them whatever the
source. The tree is bounded (depth and count): a cycle in bad data, or a session that
started thousands of others, cannot make the answer unbounded.

Totals: token counts and cost are sums over the sessions that know them (NULL is
unknown, never 0: a total is None when no session in it knows the figure), and
``unpriced`` counts the sessions that counted tokens and have no cost (as ``stats``
counts them), so "$0.12 + 2 sessions without a price" can be said instead of a sum
that looks complete and is not.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from agentspool.worker.ui.sources import duration_ms

MAX_DEPTH = 8  # levels of children below the session
MAX_NODES = 500  # sessions in one tree

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
# The columns a source reads for every session of a family.
FAMILY_COLUMNS = (
    "id", "parent_id", "agent", "status", "started_at", "ended_at", "model", *TOKEN_FIELDS,
    "cost_usd",
)  # fmt: skip


def node(row: dict[str, Any], now: float) -> dict[str, Any]:
    """One session of the tree: what its line on the page shows."""
    running = row.get("status") == "running"
    ended = row.get("ended_at") or (None if running else row.get("last_activity_at"))
    shown = {k: row.get(k) for k in FAMILY_COLUMNS}
    shown["duration_ms"] = (
        duration_ms(row.get("started_at"), ended, now) if running or ended else None
    )
    return shown


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"sessions": len(rows)}
    for field in (*TOKEN_FIELDS, "cost_usd"):
        known = [r[field] for r in rows if isinstance(r.get(field), int | float)]
        out[field] = sum(known) if known else None
    out["unpriced"] = sum(1 for r in rows if _unpriced(r))
    return out


def _unpriced(row: dict[str, Any]) -> bool:
    """Counted tokens and has no cost: what ``stats`` calls unpriced
    (intake/accounting.py, ``unpriced``)."""
    counted = row.get("input_tokens") is not None or row.get("output_tokens") is not None
    return counted and row.get("cost_usd") is None


def tree(
    own: dict[str, Any],
    parent: dict[str, Any] | None,
    candidates: list[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    """The family of ``own``: ``candidates`` may hold any sessions (the spool gives all
    it has); those that descend from ``own`` by ``parent_id`` become its tree."""
    children_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in candidates:
        if row.get("parent_id"):
            children_of[row["parent_id"]].append(row)
    for rows in children_of.values():
        rows.sort(key=lambda r: (r.get("started_at") or "", r["id"]))
    seen = {own["id"]}
    descendants: list[dict[str, Any]] = []
    truncated = False

    def grow(session_id: str, depth: int) -> list[dict[str, Any]]:
        nonlocal truncated
        grown = []
        for row in children_of.get(session_id, []):
            if row["id"] in seen:
                continue  # a cycle in the parent links
            if depth > MAX_DEPTH or len(descendants) >= MAX_NODES:
                truncated = True
                break
            seen.add(row["id"])
            descendants.append(row)
            grown.append(node(row, now) | {"children": []})
        for child in grown:
            child["children"] = grow(child["id"], depth + 1)
        return grown

    children = grow(own["id"], 1)
    return {
        "session": node(own, now),
        "parent": None if parent is None else node(parent, now),
        "children": children,
        "totals": {
            "own": totals([own]),
            "descendants": totals(descendants),
            "all": totals([own, *descendants]),
        },
        "truncated": truncated,
    }
