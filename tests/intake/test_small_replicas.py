"""Small sessions make small replicas, and reading the spool changes nothing in it
(issue 26, item 6: 86 KB per two-event session; the "read-only" viewer created a
``-shm`` and a ``-wal`` per replica on one listing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentspool.worker.config import Settings
from tests.helpers import finish, run_cli, run_python, worker_env
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
