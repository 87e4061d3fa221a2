"""Numbered migrations: sqlite3 replicas, concurrent migrators, and the real sqld."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentspool.worker import migrations
from agentspool.worker.migrations import Migration, SchemaError, migrate, split_statements
from agentspool.worker.sync.database import open_database
from tests.helpers import wait_until
from tests.sqld import Sqld

TABLES = {"sessions", "messages", "tool_executions", "schema_version"}
ALL = [m.version for m in migrations.available_migrations()]  # [1, 2, ...]
LATEST = ALL[-1]
INDEXES = {
    "sessions_by_parent",
    "sessions_by_model_started",
    "sessions_by_agent_started",
    "sessions_by_status_started",
    "sessions_by_started",
    "messages_by_created",
    "tool_executions_by_session_started",
    "tool_executions_by_name_started",
    "tool_executions_by_status",
    "tool_executions_by_duration_start",
    "tool_executions_by_name_duration_start",
    "tool_executions_by_session_agent",
    "tool_executions_by_session_model",
    "tool_executions_by_session_day",
}


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "db.sqlite")
    try:
        yield c
    finally:
        c.close()


def names(conn: sqlite3.Connection, kind: str) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'", (kind,)
    ).fetchall()
    return {r[0] for r in rows}


# ---- sqlite3 ------------------------------------------------------------------


def test_available_migrations_start_at_one() -> None:
    found = migrations.available_migrations()
    assert [m.version for m in found][0] == 1
    assert found[0].name == "001_init.sql"
    assert migrations.latest_version() == max(m.version for m in found)
    # 3 tables + 7 indexes, one statement each
    assert len(found[0].statements) == 10


def test_migrate_empty_db_creates_schema(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == ALL
    assert names(conn, "table") == TABLES
    assert names(conn, "index") == INDEXES
    rows = conn.execute("SELECT version, applied_at FROM schema_version").fetchall()
    assert [r[0] for r in rows] == ALL
    assert rows[0][1].startswith("20")  # ISO-8601 timestamp
    assert not conn.in_transaction
    # The tables are usable and enforce their constraints.
    conn.execute(
        "INSERT INTO sessions (id, agent, status, started_at) VALUES ('s', 'a', 'running', 't')"
    )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO sessions (id, agent, status, started_at) VALUES ('s2', 'a', 'bogus', 't')"
        )


def test_migrate_twice_is_harmless(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == ALL
    assert migrate(conn) == []
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(ALL)
    assert migrations.pending_migrations(conn) == []


def test_migrate_from_a_second_connection(tmp_path: Path) -> None:
    first = connect(tmp_path / "db.sqlite")
    second = connect(tmp_path / "db.sqlite")
    try:
        assert migrate(first) == ALL
        assert migrate(second) == []
        assert second.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(ALL)
    finally:
        first.close()
        second.close()


def test_newer_schema_raises_schema_error(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == ALL
    conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (999, 'x')")
    with pytest.raises(SchemaError, match="999"):
        migrate(conn)


def test_newer_schema_on_otherwise_empty_db_raises(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
    conn.execute("INSERT INTO schema_version VALUES (999, 'x')")
    with pytest.raises(SchemaError, match="upgrade agentspool"):
        migrate(conn)
    # Nothing was applied on top of the unknown schema.
    assert "sessions" not in names(conn, "table")


def test_failed_migration_rolls_back_whole(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert migrate(conn) == ALL
    broken = Migration(
        LATEST + 1, "00x_broken.sql", ["CREATE TABLE half_done (a)", "NOT VALID SQL"]
    )
    real = migrations.available_migrations()
    monkeypatch.setattr(migrations, "available_migrations", lambda: [*real, broken])
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn)
    assert not conn.in_transaction
    assert "half_done" not in names(conn, "table")
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == ALL


def test_pending_migrations_on_empty_db(conn: sqlite3.Connection) -> None:
    assert [m.version for m in migrations.pending_migrations(conn)] == ALL
    assert "sessions" not in names(conn, "table")


CONCURRENT_MIGRATOR = textwrap.dedent(
    """
    import os, sqlite3, sys, time
    from agentspool.worker.migrations import migrate
    db, ready, go = sys.argv[1:4]
    open(ready, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.001)
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    print(migrate(conn))
    """
)


def test_concurrent_processes_apply_each_migration_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"
    go = tmp_path / "go"
    count = 4
    ready = [tmp_path / f"ready-{n}" for n in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_MIGRATOR, str(db), str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    try:
        wait_until(lambda: all(r.exists() for r in ready), 30, "all migrators to start")
        # Every process is running (none can finish before the go signal).
        assert all(p.poll() is None for p in procs)
        go.touch()
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outputs.append(out.strip())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert sorted(outputs) == sorted(["[]"] * (count - 1) + [str(ALL)])
    check = connect(db)
    try:
        assert check.execute(
            "SELECT version, count(*) FROM schema_version GROUP BY version"
        ).fetchall() == [(v, 1) for v in ALL]
        assert names(check, "table") == TABLES
        assert names(check, "index") == INDEXES
    finally:
        check.close()


# ---- split_statements ---------------------------------------------------------


def test_split_statements_comments_and_multiline() -> None:
    sql = textwrap.dedent(
        """\
        -- a header comment; with a semicolon at the end;
        CREATE TABLE a (
            x INTEGER,  -- an inline comment without a terminator
            y TEXT
        );
          -- an indented comment;

        CREATE INDEX a_x ON a (x);\t
        CREATE TABLE b (z)"""
    )
    statements = split_statements(sql)
    assert statements == [
        "CREATE TABLE a (\n    x INTEGER,  -- an inline comment without a terminator\n"
        "    y TEXT\n)",
        "CREATE INDEX a_x ON a (x)",
        "CREATE TABLE b (z)",
    ]
    # Each piece is exactly one statement sqlite3 accepts.
    c = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in statements:
            c.execute(statement)
        assert names(c, "table") == {"a", "b"}
    finally:
        c.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("", []),
        ("-- only a comment\n\n   \n", []),
        ("SELECT 1;", ["SELECT 1"]),
        ("SELECT 1;\nSELECT 2;\n", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1;   \r\nSELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT\n1\n;\nSELECT 2;", ["SELECT\n1", "SELECT 2"]),
        # a ';' that does not end a line does not end the statement
        ("SELECT ';' AS x;\n", ["SELECT ';' AS x"]),
    ],
)
def test_split_statements_cases(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


# ---- the real sqld over Hrana -----------------------------------------------------


def test_migrate_real_sqld_over_hrana(sqld: Sqld) -> None:
    with open_database(sqld.url, None, timeout=30) as db:
        assert db.ensure_schema() == ALL
        assert db.schema_plan()[0] == ALL and not db.schema_plan()[1]
    tables = {
        r[0]
        for r in sqld.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    assert TABLES <= tables
    indexes = {r[0] for r in sqld.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert INDEXES <= indexes
    assert sqld.query("SELECT version FROM schema_version ORDER BY version") == [[v] for v in ALL]
    with open_database(sqld.url, None, timeout=30) as db:
        assert db.ensure_schema() == []
    assert sqld.scalar("SELECT count(*) FROM schema_version") == len(ALL)
    assert "libsql" not in sys.modules


def test_two_processes_migrating_sqld_at_once_apply_it_once(sqld: Sqld) -> None:
    code = (
        "import sys; from agentspool.worker.sync.database import open_database\n"
        "print('APPLIED', open_database(sys.argv[1], None, timeout=30).ensure_schema())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, sqld.url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    applied = [
        ast.literal_eval(line.removeprefix("APPLIED "))
        for out in outputs
        for line in out.splitlines()
        if line.startswith("APPLIED")
    ]
    # Each version exactly once; a migration in steps (schema/005) is its own turn, so
    # two processes may share the list between them.
    assert len(applied) == 4 and sorted(v for a in applied for v in a) == ALL, applied
    assert sqld.scalar("SELECT count(*) FROM schema_version") == len(ALL)
