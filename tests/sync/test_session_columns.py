"""Schema 4 and 5: each tool row carries its session's agent, model and start day,
kept by the database's triggers whoever writes (this worker's sync statements, an
older worker's), and filled in steps on the rows that existed before (schema/005).
The oracle is the join the copies stand for: every tool row's copies equal its
session row's values, or are NULL when it has no session row."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentspool.worker import migrations
from agentspool.worker.intake.replica import SESSION_COLUMNS, TOOL_COLUMNS
from agentspool.worker.sync.batch import _SESSION_UPSERT_TAIL, _TOOL_UPSERT_TAIL, multi_row
from agentspool.worker.sync.database import RemoteDatabase, open_database
from tests.helpers import run_cli, worker_env
from tests.sqld import Sqld

FILL = next(m for m in migrations.available_migrations() if m.repeat)
STEP_ROWS = 2000  # schema/005's LIMIT

# Every tool row against its session row (LEFT JOIN: no session row, NULL expected).
MISMATCHES = (
    "SELECT t.session_id, t.call_id, t.session_agent, t.session_model, t.session_day,"
    " s.agent, s.model, substr(s.started_at, 1, 10)"
    " FROM tool_executions t LEFT JOIN sessions s ON s.id = t.session_id"
    " WHERE t.session_agent IS NOT s.agent OR t.session_model IS NOT s.model"
    " OR t.session_day IS NOT substr(s.started_at, 1, 10)"
)


def session(sid: str, *, agent: str = "coder", model: str | None = "m1",
            started_at: str = "2026-11-02T10:00:00Z") -> tuple[Any, ...]:  # fmt: skip
    row = {"id": sid, "agent": agent, "status": "running", "started_at": started_at,
           "event_count": 1, "message_count": 0, "tool_count": 1, "model": model}  # fmt: skip
    return tuple(row.get(c) for c in SESSION_COLUMNS)


def tool(sid: str, call: str, duration: float = 5.0) -> tuple[Any, ...]:
    row = {"session_id": sid, "call_id": call, "name": "Bash", "input": "{}", "output": "ok",
           "status": "completed", "started_at": "2026-11-02T10:00:01Z", "duration_ms": duration}  # fmt: skip
    return tuple(row.get(c) for c in TOOL_COLUMNS)


def sync_statements(
    sessions: Sequence[tuple[Any, ...]] = (), tools: Sequence[tuple[Any, ...]] = ()
) -> list[tuple[str, Sequence[Any]]]:
    """What the sync's batch sends (sync/batch.py): tool rows first, then sessions."""
    return [
        *multi_row("INSERT INTO tool_executions", TOOL_COLUMNS, tools, _TOOL_UPSERT_TAIL),
        *multi_row("INSERT INTO sessions", SESSION_COLUMNS, sessions, _SESSION_UPSERT_TAIL),
    ]


def run(conn: sqlite3.Connection, statements: list[tuple[str, Sequence[Any]]]) -> None:
    conn.execute("BEGIN")
    for sql, params in statements:
        conn.execute(sql, tuple(params))
    conn.execute("COMMIT")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    migrations.migrate(c)
    try:
        yield c
    finally:
        c.close()


def test_the_copies_follow_the_sessions_whatever_the_order(conn: sqlite3.Connection) -> None:
    # Tool rows before their session row (the batch's order): filled when it arrives.
    run(conn, sync_statements([session("a")], [tool("a", "1"), tool("a", "2")]))
    # A session row first, its tool row in a later batch (a checkpoint).
    run(conn, sync_statements([session("b", agent="planner", model=None)]))
    run(conn, sync_statements([], [tool("b", "1")]))
    # A tool row whose session row never came, and one written as a version-3 worker
    # writes (its statements name none of the new columns).
    run(conn, sync_statements([], [tool("orphan", "1")]))
    conn.execute(
        "INSERT INTO tool_executions (session_id, call_id, name, status) VALUES ('b', '2', 'Read', 'running')"
    )
    assert conn.execute(MISMATCHES).fetchall() == []
    got = conn.execute(
        "SELECT session_id, call_id, session_agent, session_model, session_day"
        " FROM tool_executions ORDER BY session_id, call_id"
    ).fetchall()
    assert got == [
        ("a", "1", "coder", "m1", "2026-11-02"),
        ("a", "2", "coder", "m1", "2026-11-02"),
        ("b", "1", "planner", None, "2026-11-02"),
        ("b", "2", "planner", None, "2026-11-02"),
        ("orphan", "1", None, None, None),
    ]
    # The upsert learns a model and an earlier start (a day before): the copies move.
    run(conn, sync_statements([session("b", agent="planner", model="m2",
                                       started_at="2026-11-01T23:59:00Z")]))  # fmt: skip
    # A checkpoint that changes nothing the copies hold leaves the tool rows unwritten.
    before = conn.total_changes
    run(conn, sync_statements([session("a")]))
    assert conn.total_changes - before == 1  # the session row alone
    assert conn.execute(MISMATCHES).fetchall() == []
    assert conn.execute(
        "SELECT DISTINCT session_model, session_day FROM tool_executions WHERE session_id = 'b'"
    ).fetchall() == [("m2", "2026-11-01")]
    # The orphan's session arrives at last.
    run(conn, sync_statements([session("orphan", agent="late")]))
    assert conn.execute(MISMATCHES).fetchall() == []


def database_at_version_3(db: RemoteDatabase, version: int = 3) -> None:
    """The schema a worker of ``version`` left: migrations 1 to it, each with its row."""
    statements: list[tuple[str, Sequence[Any]]] = [(migrations.VERSION_TABLE, ())]
    for m in migrations.available_migrations():
        if m.version <= version:
            statements += [(s, ()) for s in m.statements]
            statements.append(migrations.version_row(m))
    db.run_atomic(statements)


def fill_old_rows(db: RemoteDatabase, sessions: int, tools_each: int, orphans: int) -> None:
    sids = [f"s{n:04d}" for n in range(sessions)]
    rows = [session(sid, agent=f"agent-{n % 3}", model=f"m{n % 2}",
                    started_at=f"2026-11-{1 + n % 9:02d}T12:00:00Z")
            for n, sid in enumerate(sids)]  # fmt: skip
    tools = [tool(sid, str(k), float(k)) for sid in sids for k in range(tools_each)]
    tools += [tool(f"gone{n}", "1") for n in range(orphans)]
    for start in range(0, len(tools), 5000):
        db.run_atomic(sync_statements([], tools[start : start + 5000]))
    db.run_atomic(sync_statements(rows))


def test_a_version_3_database_is_filled_in_steps(sqld: Sqld) -> None:
    with open_database(sqld.url, None, timeout=60) as db:
        assert isinstance(db, RemoteDatabase)
        database_at_version_3(db)
        fill_old_rows(db, sessions=500, tools_each=9, orphans=3)  # 4,503 tool rows
        steps: list[int] = []

        def step(sql: str) -> int:
            changed = db.client.execute(sql).affected
            steps.append(changed)
            return changed

        applied = migrations.migrate_atomically(db.client.run_atomic, db._applied_versions, step)
    assert applied == [4, 5]
    # Each step its own statement of at most 2,000 rows; the last one changes none.
    assert steps == [STEP_ROWS, STEP_ROWS, 500, 0]
    assert sqld.query(MISMATCHES) == []
    assert sqld.scalar("SELECT count(*) FROM tool_executions WHERE session_agent IS NULL") == 3
    assert sqld.scalar("SELECT max(version) FROM schema_version") == 5


def test_a_fill_stopped_halfway_goes_on_at_the_next_start(sqld: Sqld, tmp_path: Path) -> None:
    with open_database(sqld.url, None, timeout=60) as db:
        assert isinstance(db, RemoteDatabase)
        database_at_version_3(db)
        fill_old_rows(db, sessions=300, tools_each=10, orphans=0)  # 3,000 tool rows
        calls = 0

        def dies_after_one_step(sql: str) -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise ConnectionError("the worker was stopped")
            return db.client.execute(sql).affected

        with pytest.raises(ConnectionError):
            migrations.migrate_atomically(
                db.client.run_atomic, db._applied_versions, dies_after_one_step
            )
    # Version 4 landed, version 5 did not: a reader knows the copies are not whole.
    assert sqld.scalar("SELECT max(version) FROM schema_version") == 4
    assert sqld.scalar("SELECT count(*) FROM tool_executions WHERE session_agent IS NULL") == 1000
    # What `migrate --dry-run` shows of it, then `migrate --yes` finishes it.
    env = worker_env(tmp_path / "spool", sqld.url)
    plan = run_cli("migrate", "--dry-run", env=env, check=True).stdout
    assert "schema versions [1, 2, 3, 4]" in plan
    assert "-- 005_fill_session_columns.sql\n-- (run again and again," in plan
    assert "applied: [5]" in run_cli("migrate", "--yes", env=env, check=True).stdout
    with open_database(sqld.url, None, timeout=60) as db:
        assert db.ensure_schema() == []
    assert sqld.query(MISMATCHES) == []
    assert sqld.scalar("SELECT max(version) FROM schema_version") == 5


def test_a_replica_keeps_no_remote_trigger_or_index(tmp_path: Path) -> None:
    from agentspool.worker.intake.replica_schema import create_from_template

    path = tmp_path / "replicas" / "one.db"
    path.parent.mkdir()
    create_from_template(path)
    conn = sqlite3.connect(path)
    try:
        triggers = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        indexes = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    assert triggers and not {t for t in triggers if "copy" in t}, triggers
    assert indexes == []


# Every grouping with every filter the copies serve (and two they leave to the join).
QUERIES = [
    {"by": by, "since": since, "agent": agent}
    for by in (None, "agent", "model", "day", "tool")
    for since in (None, "2026-11-03T05:00:00Z")
    for agent in (None, "agent-1")
]


def test_stats_read_the_copies_as_the_join_reads_the_sessions(sqld: Sqld) -> None:
    """The same rows, counted and ranked through the sessions (a version-3 database:
    joined, window functions) and along the copies once version 5 is there: every
    figure equal, for every grouping and filter."""
    from agentspool.worker.reports.stats import compute_stats

    with open_database(sqld.url, None, timeout=60) as db:
        assert isinstance(db, RemoteDatabase)
        database_at_version_3(db)
        sids = [f"s{n:03d}" for n in range(120)]
        rows = [session(sid, agent=f"agent-{n % 4}", model=None if n % 5 == 0 else f"m{n % 3}",
                        started_at=f"2026-11-{1 + n % 6:02d}T{n % 24:02d}:00:00Z")
                for n, sid in enumerate(sids)]  # fmt: skip
        tools = []
        for n, sid in enumerate(sids):
            for k in range(n % 7):
                status = "error" if k == 3 else "running" if k == 5 else "completed"
                duration = None if status == "running" else float((n * 37 + k * 11) % 500)
                row = dict(zip(TOOL_COLUMNS, tool(sid, str(k)), strict=True))
                tools.append(tuple((row | {"status": status, "duration_ms": duration}).values()))
        tools += [tool("gone", "1", 1.0)]  # no session row: in no group, in every total
        db.run_atomic(sync_statements(rows, tools))
        joined = [compute_stats(db, **q) for q in QUERIES]
        assert db.ensure_schema() == [4, 5]
        copied = [compute_stats(db, **q) for q in QUERIES]
        for q, want, got in zip(QUERIES, joined, copied, strict=True):
            assert got == want, q
        # a status, which the copies leave to the join, on the version-5 database
        assert compute_stats(db, by="agent", status="running")["totals"]["tool_calls"] > 0
    assert any(g["tool_duration_p95_ms"] is not None for c in copied for g in c["groups"])
    by_model = copied[QUERIES.index({"by": "model", "since": None, "agent": None})]
    assert None in [g["model"] for g in by_model["groups"]]


def test_stats_of_a_version_1_database(sqld: Sqld) -> None:
    """A database only a version-1 worker wrote has no token or cost columns: its
    sessions and tools are counted, its tokens and cost unknown (None)."""
    from agentspool.worker.reports.stats import compute_stats

    with open_database(sqld.url, None, timeout=60) as db:
        assert isinstance(db, RemoteDatabase)
        database_at_version_3(db, version=1)
        db.run_atomic([
            ("INSERT INTO sessions (id, agent, status, started_at) VALUES"
             " ('old', 'coder', 'completed', '2026-11-02T10:00:00Z')", ()),
            ("INSERT INTO tool_executions (session_id, call_id, name, status, duration_ms)"
             " VALUES ('old', '1', 'Bash', 'completed', 12.5)", ()),
        ])  # fmt: skip
        for by in (None, "agent", "tool"):
            got = compute_stats(db, by=by)
            assert got["totals"]["sessions"] == 1 and got["totals"]["tool_calls"] == 1
            assert got["totals"]["input_tokens"] is None and got["totals"]["cost_usd"] is None
            assert got["totals"]["tool_duration_p95_ms"] == 12.5
