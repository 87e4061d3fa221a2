"""A replica deleted under the worker (issue 26, item 8): every event of an unsynced
session is still in its queue file, so the replica is rebuilt from them and the
session syncs whole, whether it was open, pending or parked as failed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentspool import Spool
from agentspool.worker.intake.replica import replica_path
from tests.helpers import run_cli, start_worker, stop_process, wait_until, worker_env
from tests.sqld import Sqld, eddsa_jwt, start_auth_sqld

SID = "rebuilt"


def replica_messages(spool: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{replica_path(spool, SID)}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def remote(sqld: Sqld) -> list[list[object]]:
    if not sqld.query("SELECT name FROM sqlite_master WHERE name = 'sessions'"):
        return []  # the worker has not migrated the database yet
    return sqld.query(
        "SELECT s.status, s.message_count, (SELECT count(*) FROM messages m"
        " WHERE m.session_id = s.id) FROM sessions s WHERE s.id = ?",
        (SID,),
    )


def test_a_replica_deleted_while_its_session_runs_is_rebuilt_and_synced_whole(
    spool: Path, sqld: Sqld
) -> None:
    """The attack: 30 messages drained, the replica deleted (``rm``), 30 more and the
    end. The rest of the session used to go into the unlinked file, the session stuck
    failed "does not exist" with 30 of 60 messages remote. Now all 60 land."""
    env = worker_env(spool, sqld.url)
    worker = start_worker(env)
    producer = Spool(spool)
    try:
        session = producer.session(agent="a", session_id=SID)
        for n in range(30):
            session.message("user", f"message {n}")
        assert producer.flush(timeout=30)
        wait_until(lambda: replica_messages(spool) == 30, 60, "the first half to be drained")
        replica_path(spool, SID).unlink()  # its -wal stays, as after a careless `rm`
        for n in range(30, 60):
            session.message("user", f"message {n}")
        assert session.end(timeout=30)
        wait_until(
            lambda: remote(sqld) == [["completed", 60, 60]], 90, "the whole session remotely"
        )
    finally:
        producer.close()
        out, err = stop_process(worker)
    assert worker.returncode == 0, err
    assert "was deleted or replaced while the worker had it open" in err
    assert replica_messages(spool) == 60


def test_retry_rebuilds_the_deleted_replica_of_a_failed_session(
    spool: Path, sqld_bin: Path, tmp_path: Path
) -> None:
    """A session parked as failed (a bad token) whose replica is then deleted: after
    ``retry`` and a burst with the good token it syncs whole from the queue file."""
    server, key = start_auth_sqld(sqld_bin, tmp_path / "sqld-auth")
    try:
        server.auth_token = eddsa_jwt(key, {"a": "rw"})
        with Spool(spool) as producer:
            session = producer.session(agent="a", session_id=SID)
            for n in range(60):
                session.message("user", f"message {n}")
            assert session.end(timeout=30)
        bad = worker_env(spool, server.url, TURSO_AUTH_TOKEN="not-a-token")
        assert run_cli("worker", "run", "--burst", env=bad, timeout=60).returncode == 3
        assert run_cli("status", env=bad, check=True).stdout.count("failed") >= 1
        replica_path(spool, SID).unlink()

        assert run_cli("retry", "--failed", env=bad, check=True).stdout.startswith("1 session")
        good = worker_env(spool, server.url, TURSO_AUTH_TOKEN=server.auth_token)
        burst = run_cli("worker", "run", "--burst", env=good, timeout=60)
        assert burst.returncode == 0, burst.stderr
        assert remote(server) == [["completed", 60, 60]]
        assert "does not exist: 62 acked events queued again" in burst.stderr
    finally:
        server.stop()
