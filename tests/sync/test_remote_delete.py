"""sync/remote_delete.py on its own: how sessions are grouped into atomic batches, and
a batch that fails deletes nothing (the embedded database, a real SQLite file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentspool.worker.sync import remote_delete
from agentspool.worker.sync.database import DatabaseError, LocalDatabase


def row(n: int, messages: int, tools: int = 0) -> dict[str, Any]:
    return {"id": f"s{n}", "message_count": messages, "tool_count": tools}


def test_groups_bound_sessions_and_rows() -> None:
    many = [row(n, 1) for n in range(250)]
    sizes = [len(g) for g in remote_delete._groups(many)]
    assert sizes == [100, 100, 50]
    big = [row(0, 5), row(1, 50_000), row(2, 5), row(3, 15_000), row(4, 4_000)]
    groups = [[r["id"] for r in g] for g in remote_delete._groups(big)]
    # a session over BATCH_ROWS is a batch of its own; the others fill up to it
    assert groups == [["s0"], ["s1"], ["s2", "s3", "s4"]]


def test_a_failed_batch_deletes_nothing(tmp_path: Path) -> None:
    db = LocalDatabase(tmp_path / "agentspool.db")
    db.ensure_schema()
    for n in range(3):
        db.run_atomic([
            ("INSERT INTO sessions (id, agent, status, started_at, ended_at, message_count)"
             " VALUES (?, 'a', 'completed', '2020-01-01T00:00:00.000Z',"
             " '2020-01-01T00:00:01.000Z', 2)", (f"s{n}",)),
            ("INSERT INTO messages (session_id, seq, role, content, created_at)"
             " VALUES (?, 1, 'user', 'x', '2020-01-01T00:00:00.000Z'),"
             " (?, 2, 'user', 'y', '2020-01-01T00:00:00.000Z')", (f"s{n}", f"s{n}")),
        ])  # fmt: skip
    # A trigger makes the last statement of a batch (the session rows) fail.
    db.run_atomic([("CREATE TRIGGER refuse BEFORE DELETE ON sessions BEGIN"
                    " SELECT RAISE(ABORT, 'refused'); END", ())])  # fmt: skip
    with pytest.raises(DatabaseError):
        remote_delete.delete_expired(db, "2021-01-01T00:00:00.000Z")
    assert db.query("SELECT count(*) AS n FROM messages")[0]["n"] == 6
    db.run_atomic([("DROP TRIGGER refuse", ())])
    counts = remote_delete.delete_expired(db, "2021-01-01T00:00:00.000Z")
    assert (counts.sessions, counts.messages, counts.batches) == (3, 6, 1)
    assert db.query("SELECT count(*) AS n FROM messages")[0]["n"] == 0
    db.close()
