"""Deleting sessions from the database: remote retention and deletion on request.

``prune --remote`` (and the worker, with ``AGENTSPOOL_REMOTE_RETENTION``) deletes the
sessions that ended before a cutoff; ``delete --remote`` deletes sessions by id. Both
delete in atomic batches (``Database.run_atomic``: one Hrana batch, one HTTP request,
or one local transaction for the embedded ``file:`` database): each batch deletes
whole sessions, their messages and tool executions with them, so a cut connection
leaves every session either whole or gone, and running the command again finishes
the work. The session row goes last in a batch, and the child rows are chosen through
it, so the conditions (ended before the cutoff, not running) are checked again inside
the transaction that deletes: a session that started running again in between is
kept.

A batch holds at most ``BATCH_SESSIONS`` sessions and, above one session, about
``BATCH_ROWS`` rows (from the sessions' own message and tool counts), so that one
transaction stays short (Turso ends a transaction after 5 s).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentspool.worker.sync.database import Database
from agentspool.worker.sync.hrana import Statement

BATCH_SESSIONS = 100
BATCH_ROWS = 20_000
SELECT_ROWS = 1000  # candidate sessions read per query


@dataclass
class DeletionCounts:
    sessions: int = 0
    messages: int = 0
    tool_executions: int = 0
    batches: int = 0

    def add(self, other: DeletionCounts) -> None:
        self.sessions += other.sessions
        self.messages += other.messages
        self.tool_executions += other.tool_executions
        self.batches += other.batches

    def to_json(self) -> dict[str, int]:
        return {
            "sessions": self.sessions,
            "messages": self.messages,
            "tool_executions": self.tool_executions,
        }


# The sessions retention may delete: ended before the cutoff, never a running one;
# an agent given as NULL matches every agent. Parameters: cutoff, agent, agent.
_EXPIRED = (
    "status <> 'running' AND ended_at IS NOT NULL AND ended_at < ? AND (? IS NULL OR agent = ?)"
)


def count_expired(db: Database, cutoff: str, agent: str | None = None) -> DeletionCounts:
    """What ``delete_expired`` would delete now (``--dry-run``), in three queries."""
    where = (cutoff, agent, agent)
    sessions = db.query(f"SELECT count(*) AS n FROM sessions WHERE {_EXPIRED}", where)
    messages = db.query(
        f"SELECT count(*) AS n FROM messages WHERE session_id IN"
        f" (SELECT id FROM sessions WHERE {_EXPIRED})",
        where,
    )
    tools = db.query(
        f"SELECT count(*) AS n FROM tool_executions WHERE session_id IN"
        f" (SELECT id FROM sessions WHERE {_EXPIRED})",
        where,
    )
    return DeletionCounts(sessions[0]["n"], messages[0]["n"], tools[0]["n"])


def delete_expired(
    db: Database,
    cutoff: str,
    agent: str | None = None,
    *,
    on_batch: Callable[[DeletionCounts], None] = lambda counts: None,
) -> DeletionCounts:
    """Delete every session that ended before ``cutoff`` (ISO text, as the database
    stores times), batch by batch; returns what was deleted. A failed batch raises
    ``DatabaseError``: the batches before it stay deleted, its own sessions whole."""
    total = DeletionCounts()
    while True:
        found = db.query(
            "SELECT id, message_count, tool_count FROM sessions"
            f" WHERE {_EXPIRED} ORDER BY ended_at, id LIMIT ?",
            (cutoff, agent, agent, SELECT_ROWS),
        )
        if not found:
            return total
        for group in _groups(found):
            done = _delete_batch(db, group, f"{_EXPIRED} AND id IN", (cutoff, agent, agent))
            on_batch(done)
            total.add(done)
        if len(found) < SELECT_ROWS:
            return total


def delete_sessions(db: Database, session_ids: Sequence[str]) -> DeletionCounts:
    """Delete these sessions (exact ids), whatever their status; returns what was
    deleted (ids the database does not hold count nothing)."""
    total = DeletionCounts()
    ids = list(dict.fromkeys(session_ids))
    for start in range(0, len(ids), BATCH_SESSIONS):
        chunk = ids[start : start + BATCH_SESSIONS]
        marks = ", ".join("?" * len(chunk))
        found = db.query(
            f"SELECT id, message_count, tool_count FROM sessions WHERE id IN ({marks})", chunk
        )
        for group in _groups(found):
            total.add(_delete_batch(db, group, "id IN", ()))
    return total


def _groups(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive sessions, at most BATCH_SESSIONS and about BATCH_ROWS rows a group
    (a session bigger than that is a group of its own)."""
    group: list[dict[str, Any]] = []
    rows_in_group = 0
    for row in rows:
        size = 1 + (row["message_count"] or 0) + (row["tool_count"] or 0)
        if group and (len(group) >= BATCH_SESSIONS or rows_in_group + size > BATCH_ROWS):
            yield group
            group, rows_in_group = [], 0
        group.append(row)
        rows_in_group += size
    if group:
        yield group


def _delete_batch(
    db: Database, group: list[dict[str, Any]], condition: str, params: tuple[Any, ...]
) -> DeletionCounts:
    """One atomic batch that deletes the sessions of ``group`` that still meet
    ``condition`` (which ends in ``id IN``), their rows first, the session rows last."""
    ids = [row["id"] for row in group]
    marks = "(" + ", ".join("?" * len(ids)) + ")"
    chosen = f"SELECT id FROM sessions WHERE {condition} {marks}"
    args = (*params, *ids)
    counted = db.query(
        f"SELECT (SELECT count(*) FROM messages WHERE session_id IN ({chosen})) AS m,"
        f" (SELECT count(*) FROM tool_executions WHERE session_id IN ({chosen})) AS t,"
        f" (SELECT count(*) FROM ({chosen})) AS s",
        (*args, *args, *args),
    )[0]
    statements: list[Statement] = [
        (f"DELETE FROM messages WHERE session_id IN ({chosen})", args),
        (f"DELETE FROM tool_executions WHERE session_id IN ({chosen})", args),
        (f"DELETE FROM sessions WHERE {condition} {marks}", args),
    ]
    db.run_atomic(statements)
    return DeletionCounts(counted["s"], counted["m"], counted["t"], batches=1)
