"""The one transaction helper: commit, roll back, and never leave a transaction open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentspool.producer.transaction import transaction


def connect(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return conn


def test_commits_when_the_block_returns(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db")
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert connect(tmp_path / "db").execute("SELECT x FROM t").fetchall() == [(1,)]


def test_rolls_back_when_the_block_raises(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db")
    with pytest.raises(KeyError), transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise KeyError("boom")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_failed_commit_rolls_back_instead_of_leaving_the_transaction_open(
    tmp_path: Path,
) -> None:
    # Rollback-journal mode: a reader's shared lock makes the writer's COMMIT busy.
    writer = connect(tmp_path / "db", timeout=0)
    reader = connect(tmp_path / "db")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds a shared lock
    with pytest.raises(sqlite3.OperationalError, match="locked"), transaction(writer):
        writer.execute("INSERT INTO t VALUES (1)")
    assert not writer.in_transaction  # the write lock is released, not held forever
    reader.execute("COMMIT")
    with transaction(writer):  # and the connection works on
        writer.execute("INSERT INTO t VALUES (2)")
    assert reader.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_a_deferred_transaction_reads_one_snapshot(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db")
    conn.execute("PRAGMA journal_mode=WAL")
    other = connect(tmp_path / "db")
    with transaction(conn, begin="BEGIN"):
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        other.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
