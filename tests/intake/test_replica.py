"""Per-session replicas: idempotent apply, tool and session lifecycles, sealing."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentspool.producer import events as ev
from agentspool.worker.intake.replica import (
    ABANDONED_ERROR,
    REPLICAS_DIRNAME,
    Replica,
    iso,
    read_session_rows,
    replica_path,
    to_text,
)

SID = "sess-1"
PRODUCER = "host-1-abcd1234"
T0 = 1_764_135_270.0  # 2025-11-26T05:34:30Z


class Events:
    """Builds a session's events with a gapless seq and a per-producer pseq."""

    def __init__(self, session_id: str = SID, start_seq: int = 0) -> None:
        self.session_id = session_id
        self.seq = itertools.count(start_seq)
        self.pseq = itertools.count(100)

    def make(self, kind: str, ts_offset: float, **fields: Any) -> dict[str, Any]:
        event = {
            "v": 1,
            "type": kind,
            "session_id": self.session_id,
            "seq": next(self.seq),
            "producer_id": PRODUCER,
            "pseq": next(self.pseq),
            "ts": T0 + ts_offset,
            **fields,
        }
        return ev.validate(event)

    def start(self, t: float = 0.0, **fields: Any) -> dict[str, Any]:
        fields.setdefault("agent", "coder")
        return self.make(ev.SESSION_START, t, **fields)

    def message(self, t: float, role: str, content: Any, **fields: Any) -> dict[str, Any]:
        return self.make(ev.MESSAGE, t, role=role, content=content, **fields)

    def tool_started(self, t: float, call_id: str, name: str, input: Any = None) -> dict[str, Any]:
        return self.make(ev.TOOL_STARTED, t, call_id=call_id, name=name, input=input)

    def tool_finished(self, t: float, call_id: str, **fields: Any) -> dict[str, Any]:
        return self.make(ev.TOOL_FINISHED, t, call_id=call_id, **fields)

    def end(self, t: float, status: str = "completed", error: str | None = None) -> dict[str, Any]:
        return self.make(ev.SESSION_END, t, status=status, error=error)


def all_rows(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608
        for table in ("sessions", "messages", "tool_executions", "applied_events")
    }


def session_row(replica: Replica, session_id: str = SID) -> dict[str, Any]:
    cur = replica.conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
    row = cur.fetchone()
    assert row is not None, f"no session row for {session_id}"
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def tool_row(replica: Replica, call_id: str) -> dict[str, Any]:
    cur = replica.conn.execute("SELECT * FROM tool_executions WHERE call_id = ?", (call_id,))
    row = cur.fetchone()
    assert row is not None, f"no tool row for {call_id}"
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def full_session() -> list[dict[str, Any]]:
    e = Events()
    return [
        e.start(0.0, metadata={"repo": "x"}, host="box", pid=4242),
        e.message(1.0, "user", "fix the bug"),
        e.tool_started(2.0, "c1", "grep", {"pattern": "bug"}),
        e.tool_finished(2.5, "c1", output={"hits": 3}, duration_ms=500.0),
        e.message(3.0, "assistant", [{"type": "text", "text": "done"}], metadata={"tokens": 7}),
        e.end(4.0),
    ]


def test_replica_is_migrated(replica: Replica) -> None:
    tables = {
        r[0] for r in replica.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    assert {"sessions", "messages", "tool_executions", "schema_version"} <= tables
    assert "applied_events" in tables
    assert replica.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert replica.path.parent.name == REPLICAS_DIRNAME


def test_apply_full_session(replica: Replica) -> None:
    assert replica.apply(full_session()) == 6
    s = session_row(replica)
    assert s["agent"] == "coder"
    assert s["status"] == "completed"
    assert s["started_at"] == iso(T0) == "2025-11-26T05:34:30.000Z"
    assert s["ended_at"] == iso(T0 + 4.0)
    assert s["error"] is None
    assert json.loads(s["metadata"]) == {"repo": "x"}
    assert (s["host"], s["pid"], s["producer_id"]) == ("box", 4242, PRODUCER)
    messages = replica.conn.execute(
        "SELECT seq, role, content, created_at, metadata FROM messages ORDER BY seq"
    ).fetchall()
    assert messages == [
        (1, "user", "fix the bug", iso(T0 + 1.0), None),
        (
            4,
            "assistant",
            json.dumps([{"type": "text", "text": "done"}], ensure_ascii=False),
            iso(T0 + 3.0),
            json.dumps({"tokens": 7}),
        ),
    ]


def test_apply_twice_changes_nothing(replica: Replica) -> None:
    events = full_session()
    assert replica.apply(events) == len(events)
    before = all_rows(replica.conn)
    assert replica.apply(events) == 0
    assert all_rows(replica.conn) == before
    # A partial replay mixed with new events counts only the new ones.
    e = Events(start_seq=6)
    extra = e.message(5.0, "user", "late")
    assert replica.apply([events[2], extra, events[5]]) == 1
    assert replica.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3
    assert session_row(replica)["status"] == "completed"


def test_replay_in_a_new_replica_object(spool: Path) -> None:
    events = full_session()
    first = Replica(replica_path(spool, SID))
    try:
        assert first.apply(events) == 6
        before = all_rows(first.conn)
    finally:
        first.close()
    second = Replica(replica_path(spool, SID))  # the worker restarted
    try:
        assert second.apply(events) == 0
        assert all_rows(second.conn) == before
    finally:
        second.close()


def test_failed_apply_rolls_back_the_batch(replica: Replica) -> None:
    e = Events()
    good = e.start(0.0)
    bad = e.message(1.0, "user", "x")
    bad = {**bad, "ts": "not a number"}  # bypasses validate: iso() raises
    with pytest.raises(TypeError):
        replica.apply([good, bad])
    assert not replica.conn.in_transaction
    assert replica.conn.execute("SELECT count(*) FROM applied_events").fetchone()[0] == 0
    assert replica.conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    assert replica.apply([good]) == 1


def test_tool_started_then_finished(replica: Replica) -> None:
    e = Events()
    replica.apply([e.start(), e.tool_started(1.0, "c1", "search", {"q": "x"})])
    running = tool_row(replica, "c1")
    assert running["status"] == "running"
    assert running["ended_at"] is None and running["duration_ms"] is None
    replica.apply([e.tool_finished(1.25, "c1", output="3 hits", duration_ms=250.0)])
    done = tool_row(replica, "c1")
    assert done["status"] == "completed"
    assert done["name"] == "search"
    assert json.loads(done["input"]) == {"q": "x"}
    assert done["output"] == "3 hits"
    assert done["error"] is None
    assert done["duration_ms"] == 250.0
    assert done["started_at"] == iso(T0 + 1.0)
    assert done["ended_at"] == iso(T0 + 1.25)


def test_tool_finished_with_error(replica: Replica) -> None:
    e = Events()
    replica.apply(
        [
            e.start(),
            e.tool_started(1.0, "c1", "shell", "rm -rf /tmp/x"),
            e.tool_finished(2.0, "c1", error="exit status 1", duration_ms=1000),
        ]
    )
    row = tool_row(replica, "c1")
    assert row["status"] == "error"
    assert row["error"] == "exit status 1"
    assert row["output"] is None
    assert row["duration_ms"] == 1000


def test_tool_finished_without_start_is_recorded(replica: Replica) -> None:
    e = Events()
    replica.apply([e.start(), e.tool_finished(1.0, "orphan", output={"ok": True})])
    row = tool_row(replica, "orphan")
    assert row["status"] == "completed"
    assert row["name"] == ""
    assert row["started_at"] is None
    assert row["ended_at"] == iso(T0 + 1.0)
    assert json.loads(row["output"]) == {"ok": True}
    assert row["duration_ms"] is None


def test_events_without_session_start_get_a_placeholder(replica: Replica) -> None:
    e = Events(start_seq=1)  # the session_start (seq 0) was dropped
    assert replica.apply([e.message(1.0, "user", "hi"), e.tool_started(2.0, "c", "t")]) == 2
    s = session_row(replica)
    assert s["agent"] == ""
    assert s["status"] == "running"
    assert s["started_at"] == iso(T0 + 1.0)
    assert s["producer_id"] == PRODUCER
    assert replica.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    # A late session_start completes the placeholder instead of failing.
    late_start = Events().start(0.0, host="box", pid=1)
    assert replica.apply([late_start]) == 1
    s = session_row(replica)
    assert s["agent"] == "coder"
    assert s["started_at"] == iso(T0)
    assert (s["host"], s["pid"]) == ("box", 1)


def test_session_end_alone_creates_an_ended_placeholder(replica: Replica) -> None:
    e = Events(start_seq=7)  # everything before the end marker was dropped
    assert replica.apply([e.end(3.0, status="error", error="lost")]) == 1
    s = session_row(replica)
    assert (s["agent"], s["status"], s["error"]) == ("", "error", "lost")
    assert s["started_at"] == s["ended_at"] == iso(T0 + 3.0)
    assert read_session_rows(replica.conn, SID).session["event_count"] == 1


def test_session_end_error(replica: Replica) -> None:
    e = Events()
    replica.apply([e.start(), e.end(9.5, status="error", error="ValueError: bad")])
    s = session_row(replica)
    assert s["status"] == "error"
    assert s["ended_at"] == iso(T0 + 9.5)
    assert s["error"] == "ValueError: bad"


def test_seal_abandoned(replica: Replica) -> None:
    e = Events()
    replica.apply(
        [
            e.start(),
            e.message(1.0, "user", "go"),
            e.tool_started(2.0, "done", "a"),
            e.tool_finished(3.0, "done", output="ok"),
            e.tool_started(5.0, "hung", "b"),
        ]
    )
    replica.seal_abandoned(SID)
    s = session_row(replica)
    assert s["status"] == "abandoned"
    assert s["error"] == ABANDONED_ERROR
    assert s["ended_at"] == iso(T0 + 5.0)  # the last thing that happened
    hung = tool_row(replica, "hung")
    assert hung["status"] == "error"
    assert "abandoned" in hung["error"]
    finished = tool_row(replica, "done")
    assert finished["status"] == "completed" and finished["error"] is None
    assert not replica.conn.in_transaction


def test_seal_does_not_touch_an_ended_session(replica: Replica) -> None:
    e = Events()
    replica.apply([e.start(), e.end(2.0)])
    before = session_row(replica)
    replica.seal_abandoned(SID)
    assert session_row(replica) == before


def test_rows_for_sync_counts(replica: Replica) -> None:
    replica.apply(full_session())
    rows = read_session_rows(replica.conn, SID)
    assert rows.session["id"] == SID
    assert rows.session["status"] == "completed"
    assert rows.session["event_count"] == 6
    assert rows.session["message_count"] == 2 == len(rows.messages)
    assert rows.session["tool_count"] == 1 == len(rows.tool_executions)
    assert [m[1] for m in rows.messages] == [1, 4]
    tool = rows.tool_executions[0]
    assert tool[:3] == (SID, "c1", "grep")
    assert tool[5] == "completed"
    # Replays do not inflate the counts.
    replica.apply(full_session())
    assert read_session_rows(replica.conn, SID).session["event_count"] == 6
    with pytest.raises(LookupError):
        read_session_rows(replica.conn, "other-session")


def test_summary(replica: Replica) -> None:
    assert replica.summary(SID) is None
    e = Events()
    replica.apply([e.start(), e.message(1.0, "user", "x"), e.tool_started(2.0, "c", "t")])
    summary = replica.summary(SID)
    assert summary is not None
    assert (summary.agent, summary.status, summary.producer_id) == ("coder", "running", PRODUCER)
    assert summary.event_count == 3
    assert summary.max_seq == 2
    assert replica.last_activity(SID) == iso(T0 + 2.0)


def test_odd_text_is_stored(replica: Replica) -> None:
    e = Events()
    replica.apply(
        [
            e.start(agent="a\udc80b"),
            e.message(1.0, "user", "lone \udc80 surrogate", metadata={"k": "\ud800"}),
            e.message(2.0, "user", "emoji \U0001f600 and NUL \x00 kept"),
        ]
    )
    assert session_row(replica)["agent"] == "a?b"
    rows = replica.conn.execute("SELECT content, metadata FROM messages ORDER BY seq").fetchall()
    assert rows[0] == ("lone ? surrogate", '{"k": "?"}')
    assert rows[1][0] == "emoji \U0001f600 and NUL \x00 kept"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("plain", "plain"),
        ("", ""),
        ("\udc80", "?"),
        ("a\udc80b\ud800", "a?b?"),
        ({"a": 1, "b": [1, 2]}, '{"a": 1, "b": [1, 2]}'),
        ({"text": "h\u00e9llo"}, '{"text": "h\u00e9llo"}'),  # not \u-escaped
        ({"s": "\udc80"}, '{"s": "?"}'),
        ([1, "x"], '[1, "x"]'),
        (5, "5"),
        (2.5, "2.5"),
        (True, "true"),
    ],
)
def test_to_text(value: Any, expected: str | None) -> None:
    text = to_text(value)
    assert text == expected
    if text is not None:
        text.encode("utf-8")  # always storable as UTF-8


def test_replica_path_safe_id(spool: Path) -> None:
    assert replica_path(spool, "abc-123_x.y") == spool / REPLICAS_DIRNAME / "abc-123_x.y.db"


@pytest.mark.parametrize(
    "session_id",
    ["../../etc/passwd", "a/b", "..", ".", "/abs", "x" * 121, "spaces here", "\udc80", "-lead"],
)
def test_replica_path_unsafe_id_is_hashed(spool: Path, session_id: str) -> None:
    path = replica_path(spool, session_id)
    replicas = (spool / REPLICAS_DIRNAME).resolve()
    assert path.parent == spool / REPLICAS_DIRNAME
    assert path.resolve().parent == replicas
    assert path.name.startswith("h~") and path.name.endswith(".db")
    assert len(path.name) == len("h~") + 40 + len(".db")
    assert "/" not in path.name and ".." not in path.name
    # Deterministic, and distinct ids get distinct files.
    assert replica_path(spool, session_id) == path
    assert replica_path(spool, session_id + "!") != path


def test_replica_for_unsafe_id_lives_in_replicas(spool: Path) -> None:
    session_id = "../../escape/attempt"
    path = replica_path(spool, session_id)
    r = Replica(path)
    try:
        e = Events(session_id=session_id)
        assert r.apply([e.start(), e.end(1.0)]) == 2
        assert session_row(r, session_id)["status"] == "completed"
    finally:
        r.close()
    assert path.exists()
    assert [p.name for p in (spool / REPLICAS_DIRNAME).glob("*.db")] == [path.name]
    assert not (spool.parent / "escape").exists()
