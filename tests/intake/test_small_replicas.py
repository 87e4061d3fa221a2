"""Small sessions make small replicas, and reading the spool changes nothing in it
(issue 26, item 6: 86 KB per two-event session; the "read-only" viewer created a
``-shm`` and a ``-wal`` per replica on one listing)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentspool.worker.config import Settings
from agentspool.worker.readonly import connect_readonly
from tests.helpers import (
    finish,
    hold_open_session,
    run_cli,
    run_python,
    start_worker,
    stop_process,
    wait_until,
    worker_env,
)
from tests.ui.browser import UiServer

SMALL_SESSIONS = """
from agentspool import Spool
spool = Spool(SPOOL)
for n in range(20):
    spool.session(agent="small", session_id=f"small-{n:02d}").end(timeout=30)
assert spool.flush(timeout=30)
"""


def _files(spool: Path) -> dict[str, tuple[int, int, int]]:
    """Every file in the spool: (size, mtime, inode)."""
    found = {}
    for path in spool.rglob("*"):
        if path.is_file():
            info = path.stat()
            found[str(path.relative_to(spool))] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return found


def _drained_spool(spool: Path) -> dict[str, str]:
    env = worker_env(spool)  # the embedded database (a file in the spool)
    finish(run_python(SMALL_SESSIONS, spool), timeout=60)
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return env


def test_a_two_event_session_replica_is_at_most_16_kib(spool: Path) -> None:
    _drained_spool(spool)
    replicas = sorted((spool / "replicas").glob("*.db"))
    assert len(replicas) == 20
    sizes = {p.name: p.stat().st_size for p in replicas}
    assert max(sizes.values()) <= 16 * 1024, sizes
    # Closed: one self-contained file each, no -wal or -shm left beside it.
    assert sorted(p.name for p in (spool / "replicas").iterdir() if not p.name.endswith(".db")) == [
        ".template"
    ]
    conn = sqlite3.connect(replicas[0])
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        # The remote's indexes serve queries across sessions; a replica has one.
        indexes = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
        assert indexes == []
    finally:
        conn.close()


def test_the_viewer_and_show_create_or_change_no_file_in_the_spool(spool: Path) -> None:
    env = _drained_spool(spool)
    # A replica a crashed worker left in WAL mode without its -wal: ``mode=ro`` alone
    # would create a -shm and a -wal beside it.
    wal_left = spool / "replicas" / "small-03.db"
    conn = sqlite3.connect(wal_left)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    assert not Path(f"{wal_left}-wal").exists()
    before = _files(spool)

    for command in (["show", "small-03"], ["show", "small-04"], ["sessions"], ["status"]):
        result = run_cli(*command, env=env, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
    server = UiServer(spool, env=env)
    try:
        for path in ("/api/sessions", "/api/sessions/small-03", "/api/sessions/small-03/events",
                     "/api/sessions/small-04/details", "/api/sessions?q=x"):  # fmt: skip
            status, _, _ = server.get(path)
            assert status == 200, path
    finally:
        server.stop()
    assert _files(spool) == before


def test_synced_replicas_are_capped_by_default() -> None:
    """Pruned by age (7 days) and by size (1 GiB) unless set otherwise."""
    settings = Settings(spool_dir=Path("unused"))
    assert settings.retain_synced == 7 * 86400
    assert settings.max_replica_bytes == 1 << 30


def _content(paths: list[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


def test_reading_an_open_session_leaves_the_workers_files_as_they_were(spool: Path) -> None:
    """A replica the worker is writing is in WAL mode with its ``-wal`` and ``-shm``;
    ``mode=ro`` alone shares the ``-shm`` and writes a read mark into it whenever it
    finds frames no reader marked yet. The readers see every committed row and leave
    all three files' bytes as they were."""
    env = worker_env(spool, AGENTSPOOL_CHECKPOINT_INTERVAL="0")  # no sync reads it
    producer = hold_open_session(spool, "live-1", messages=7)
    worker = start_worker(env)
    try:
        replica = spool / "replicas" / "live-1.db"
        files = [replica, Path(f"{replica}-wal"), Path(f"{replica}-shm")]

        def applied() -> bool:
            if not all(p.exists() for p in files):
                return False
            return "step 6" in run_cli("show", "live-1", env=env, timeout=60).stdout

        wait_until(applied, timeout=60, what="the open session's 7 messages in its replica")
        before = _content(files)
        for _ in range(2):
            shown = run_cli("show", "live-1", env=env, timeout=60)
            assert shown.returncode == 0, shown.stderr
            assert "step 6" in shown.stdout
            listed = run_cli("sessions", env=env, timeout=60)
            assert "live-1" in listed.stdout, listed.stderr
        server = UiServer(spool, env=env)
        try:
            for path in ("/api/sessions", "/api/sessions/live-1/details"):
                status, _, _ = server.get(path)
                assert status == 200, path
            status, body, _ = server.get("/api/sessions/live-1/events")
            assert status == 200 and b"step 6" in body
        finally:
            server.stop()
        assert _content(files) == before
        assert sorted(p.name for p in replica.parent.iterdir() if p.name.startswith("live-1")) == [
            "live-1.db", "live-1.db-shm", "live-1.db-wal"
        ]  # fmt: skip
    finally:
        stop_process(worker)
        producer.kill()
        producer.communicate(timeout=30)


WAL_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
for line in sys.stdin:  # one committed row per line, never read back
    conn.execute("INSERT INTO t VALUES (?)", (int(line),))
    print("committed", flush=True)
"""


@pytest.mark.parametrize("reader", ["connect_readonly", "plain mode=ro"])
def test_a_live_wal_reader_writes_no_read_mark(tmp_path: Path, reader: str) -> None:
    """The mechanism under the test above, with a writer that never reads back: a
    ``mode=ro`` reader (the control) writes its read mark into the writer's ``-shm``
    each time it finds new frames; ``connect_readonly`` sees the same rows and writes
    nothing."""
    db = tmp_path / "live.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WAL_WRITER, str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdin is not None and writer.stdout is not None
    changed = 0
    try:
        for n in range(1, 6):
            writer.stdin.write(f"{n}\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "committed"
            shm = Path(f"{db}-shm").read_bytes()
            if reader == "connect_readonly":
                conn = connect_readonly(db)
            else:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == n
            finally:
                conn.close()
            changed += Path(f"{db}-shm").read_bytes() != shm
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    assert changed == (0 if reader == "connect_readonly" else 5)


def test_a_replica_upgraded_to_a_newer_version_gets_none_of_its_remote_indexes(
    tmp_path: Path,
) -> None:
    """A replica a version-2 worker wrote (no secondary indexes) upgraded in place:
    version 3 adds indexes for the remote database's reports, not for a replica."""
    from agentspool.producer.transaction import transaction
    from agentspool.worker import migrations
    from agentspool.worker.intake.replica_schema import upgrade

    conn = sqlite3.connect(tmp_path / "v2.db", isolation_level=None)
    try:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
        for migration in migrations.available_migrations()[:2]:
            with transaction(conn):
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(*migrations.version_row(migration))
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall():
            conn.execute(f'DROP INDEX "{name}"')  # a version-2 replica has none of them
        upgrade(conn)
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, migrations.latest_version() + 1))
        indexes = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
        assert indexes == []
    finally:
        conn.close()
