"""The batch builder over real replicas: parts, watermarks, final status, byte bounds.

Batches are run against the embedded database (LocalDatabase), which executes the
same statements the remote one gets, so what a reader would see can be checked.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentspool.worker.intake.replica import Replica, ensure_local_tables, replica_path
from agentspool.worker.sync.batch import (
    DEFERRED,
    EMPTY,
    SENT_ALL,
    SENT_PART,
    SessionCursor,
    build_batch,
)
from agentspool.worker.sync.database import LocalDatabase
from tests.intake.test_replica import SID, Events


def _cursor(spool: Path, session_id: str, after: int = 0, log_id: str | None = None,
            ended: bool = False) -> SessionCursor:  # fmt: skip
    return SessionCursor(session_id, replica_path(spool, session_id), after, log_id, ended)


def _db(tmp_path: Path) -> LocalDatabase:
    db = LocalDatabase(tmp_path / "remote.db")
    db.ensure_schema()
    return db


def test_an_open_session_goes_as_running_then_only_what_is_new(spool: Path, tmp_path: Path) -> None:
    events = Events()
    replica = Replica(replica_path(spool, SID))
    replica.apply([events.start(), events.message(1, "user", "hi")])
    replica.apply([events.tool_started(2, "c1", "search")])
    db = _db(tmp_path)

    visited: dict[str, str] = {}
    batch = build_batch([_cursor(spool, SID)], visited=visited)
    assert batch is not None and visited == {SID: SENT_ALL}
    part = batch.parts[0]
    assert not part.final and part.complete
    db.run_atomic(batch.statements)
    assert db.query("SELECT status, message_count, tool_count FROM sessions") == [
        {"status": "running", "message_count": 1, "tool_count": 1}
    ]

    # Nothing new: an open session costs nothing.
    assert build_batch([_cursor(spool, SID, part.up_to, part.log_id)], visited=visited) is None
    assert visited[SID] == EMPTY

    # The call finishes, a message arrives, the session ends: only that is sent.
    replica.apply([events.tool_finished(3, "c1", output="ok"), events.message(4, "assistant", "x")])
    replica.apply([events.end(5)])
    batch = build_batch([_cursor(spool, SID, part.up_to, part.log_id, ended=True)])
    assert batch is not None
    final = batch.parts[0]
    assert final.final and final.rows == 3  # the finished call, the message, the session row
    db.run_atomic(batch.statements)
    assert db.query("SELECT status, message_count, tool_count FROM sessions") == [
        {"status": "completed", "message_count": 2, "tool_count": 1}
    ]
    assert db.query("SELECT status, output FROM tool_executions") == [
        {"status": "completed", "output": "ok"}
    ]
    replica.close()


def test_a_large_session_spans_batches_and_only_its_last_part_is_final(
    spool: Path, tmp_path: Path
) -> None:
    events = Events()
    replica = Replica(replica_path(spool, SID))
    replica.apply([events.start(), *(events.message(i, "user", "x" * 500) for i in range(200))])
    replica.apply([events.end(300)])
    db = _db(tmp_path)
    after, log_id, parts = 0, None, []
    while True:
        visited: dict[str, str] = {}
        batch = build_batch(
            [_cursor(spool, SID, after, log_id, ended=True)], max_bytes=16_384, visited=visited
        )
        assert batch is not None
        part = batch.parts[0]
        parts.append(part)
        db.run_atomic(batch.statements)
        status = db.query("SELECT status FROM sessions")[0]["status"]
        landed = db.query("SELECT count(*) AS n FROM messages")[0]["n"]
        assert (status == "completed") == part.final
        assert status != "completed" or landed == 200  # final means complete
        assert batch.size <= 16_384 + 1024
        after, log_id = part.up_to, part.log_id
        if part.final:
            break
        assert visited[SID] == SENT_PART
    assert len(parts) >= 6
    assert db.query("SELECT message_count FROM sessions") == [{"message_count": 200}]
    replica.close()


def test_many_sessions_share_a_batch_until_the_bound(spool: Path) -> None:
    ids = [f"s{n}" for n in range(30)]
    for sid in ids:
        events = Events(sid)
        replica = Replica(replica_path(spool, sid))
        replica.apply([events.start(), events.message(1, "user", "y" * 1000), events.end(2)])
        replica.close()
    visited: dict[str, str] = {}
    batch = build_batch([_cursor(spool, s, ended=True) for s in ids], max_bytes=11_000,
                        visited=visited)  # fmt: skip
    assert batch is not None
    assert 3 <= len(batch.parts) < 30
    assert all(p.final for p in batch.parts)
    sent = {s for s, how in visited.items() if how == SENT_ALL}
    assert sent == {p.session_id for p in batch.parts}
    assert DEFERRED in visited.values()  # the next session waits its turn
    assert EMPTY not in visited.values()


def test_a_watermark_from_another_change_log_is_not_trusted(spool: Path) -> None:
    events = Events()
    replica = Replica(replica_path(spool, SID))
    replica.apply([events.start(), events.message(1, "user", "a"), events.end(2)])
    replica.close()
    # A watermark far ahead, from a replica that was since rebuilt: everything is sent.
    batch = build_batch([_cursor(spool, SID, after=10_000, log_id="0123456789abcdef", ended=True)])
    assert batch is not None and batch.parts[0].final and batch.parts[0].rows == 2


def test_an_older_replica_gets_a_change_log_of_what_it_holds(spool: Path) -> None:
    events = Events()
    replica = Replica(replica_path(spool, SID))
    replica.apply(
        [events.start(), events.message(1, "user", "a"), events.tool_started(2, "c", "t")]
    )
    replica.close()
    conn = sqlite3.connect(replica_path(spool, SID), isolation_level=None)
    for name in ("message_changed", "tool_inserted", "tool_updated", "session_inserted",
                 "session_updated"):  # fmt: skip
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE changes")
    conn.execute("DROP TABLE change_log")
    ensure_local_tables(conn)
    kinds = [r[0] for r in conn.execute("SELECT kind FROM changes ORDER BY change_no")]
    conn.close()
    assert sorted(kinds) == ["m", "s", "t"]


def test_sealing_an_abandoned_session_is_sent(spool: Path, tmp_path: Path) -> None:
    events = Events()
    replica = Replica(replica_path(spool, SID))
    replica.apply([events.start(), events.tool_started(1, "c", "t")])
    db = _db(tmp_path)
    batch = build_batch([_cursor(spool, SID)])
    assert batch is not None
    db.run_atomic(batch.statements)
    part = batch.parts[0]
    replica.seal_abandoned(SID)  # no event: the triggers still log it
    batch = build_batch([_cursor(spool, SID, part.up_to, part.log_id, ended=True)])
    assert batch is not None and batch.parts[0].final
    db.run_atomic(batch.statements)
    assert db.query("SELECT status FROM sessions") == [{"status": "abandoned"}]
    assert db.query("SELECT status FROM tool_executions") == [{"status": "error"}]
    replica.close()


def test_late_events_after_a_pruned_replica_keep_what_the_database_knows(
    spool: Path, tmp_path: Path
) -> None:
    events = Events()
    replica = Replica(replica_path(spool, SID))
    replica.apply([events.start(metadata={"task": "t-1"}), events.message(1, "user", "a")])
    replica.apply([events.end(2)])
    replica.close()
    db = _db(tmp_path)
    batch = build_batch([_cursor(spool, SID, ended=True)])
    assert batch is not None
    db.run_atomic(batch.statements)
    # Retention deletes the replica; a late event arrives and starts a new one.
    replica_path(spool, SID).unlink()
    late = Replica(replica_path(spool, SID))
    late.apply([events.message(50, "assistant", "late")])
    late.close()
    batch = build_batch([_cursor(spool, SID)])
    assert batch is not None
    db.run_atomic(batch.statements)
    assert db.query("SELECT agent, status, metadata, started_at FROM sessions") == [
        {"agent": "coder", "status": "completed", "metadata": '{"task": "t-1"}',
         "started_at": "2025-11-26T05:34:30.000Z"}
    ]  # fmt: skip
    assert db.query("SELECT count(*) AS n FROM messages") == [{"n": 2}]
