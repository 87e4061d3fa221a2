"""Damaged files: a truncated or garbage queue file, a garbage replica, a half-written
WAL. The worker moves a damaged file to ``spool/quarantine/<name>.<timestamp>/``
(never deletes it), reports it (log, ``status --json``), and keeps draining the rest."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from agentspool import Spool
from agentspool.producer import queuefile
from agentspool.worker.intake.drain import Drainer
from agentspool.worker.intake.quarantine import QUARANTINE_DIRNAME, REASON_FILENAME, is_damage
from agentspool.worker.intake.replica import replica_path
from agentspool.worker.reports.status import spool_status
from agentspool.worker.state import StateStore
from tests.helpers import finish, run_cli, run_python, worker_env

GARBAGE = os.urandom(64 * 1024)


def write_session(spool_dir: Path, session_id: str, messages: int, end: bool = True) -> str:
    """A producer (closed afterwards) that wrote one session; returns its producer id."""
    producer = Spool(spool_dir)
    session = producer.session(agent="corruption", session_id=session_id)
    for n in range(messages):
        session.message("user", f"{session_id} message {n}")
    assert session.end(timeout=30) if end else producer.flush(timeout=30)
    assert producer.close()
    return producer.producer_id


def drain_all(spool_dir: Path, passes: int = 5) -> None:
    state = StateStore(spool_dir)
    drainer = Drainer(spool_dir, state)
    try:
        for _ in range(passes):
            drainer.drain_all()
    finally:
        drainer.close()
        state.close()


def replica_rows(spool_dir: Path, session_id: str) -> tuple[int, str]:
    conn = sqlite3.connect(replica_path(spool_dir, session_id))
    try:
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        (status,) = conn.execute("SELECT status FROM sessions").fetchone()
    finally:
        conn.close()
    return messages, status


def quarantined(spool_dir: Path) -> list[Path]:
    root = spool_dir / QUARANTINE_DIRNAME
    return sorted(root.iterdir()) if root.exists() else []


# ---- queue files ---------------------------------------------------------------


def test_a_garbage_queue_file_is_quarantined_and_the_rest_drains(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = write_session(spool, "doomed", 20)
    write_session(spool, "fine", 20)
    bad_db = queuefile.queue_db_path(spool / queuefile.QUEUES_DIRNAME / bad)
    bad_db.write_bytes(GARBAGE)

    with caplog.at_level(logging.ERROR, "agentspool.worker"):
        drain_all(spool)

    assert replica_rows(spool, "fine") == (20, "completed")
    assert not (spool / queuefile.QUEUES_DIRNAME / bad).exists()
    (moved,) = quarantined(spool)
    assert moved.name.startswith(f"{bad}.")
    assert (moved / queuefile.DB_FILENAME).read_bytes() == GARBAGE  # moved, never deleted
    reason = (moved / REASON_FILENAME).read_text()
    assert "not a database" in reason and bad in reason
    assert f"quarantined {bad}" in caplog.text

    report = spool_status(spool).to_json()
    assert [q["name"] for q in report["quarantined"]] == [moved.name]
    assert "not a database" in report["quarantined"][0]["reason"]
    assert [p["producer_id"] for p in report["producers"]] != [bad]


def test_a_truncated_queue_file_is_quarantined(spool: Path) -> None:
    bad = write_session(spool, "truncated", 3000)
    write_session(spool, "fine", 10)
    bad_db = queuefile.queue_db_path(spool / queuefile.QUEUES_DIRNAME / bad)
    original = bad_db.read_bytes()
    with open(bad_db, "r+b") as f:
        f.truncate(len(original) * 2 // 5)

    drain_all(spool)

    assert replica_rows(spool, "fine") == (10, "completed")
    (moved,) = quarantined(spool)
    assert moved.name.startswith(f"{bad}.")
    assert (moved / queuefile.DB_FILENAME).read_bytes() == original[: len(original) * 2 // 5]
    assert "malformed" in (moved / REASON_FILENAME).read_text()


def test_burst_worker_quarantines_and_reports_a_damaged_queue_file(spool: Path) -> None:
    bad = write_session(spool, "doomed", 5)
    write_session(spool, "fine", 5)
    queuefile.queue_db_path(spool / queuefile.QUEUES_DIRNAME / bad).write_bytes(GARBAGE)
    env = worker_env(spool)
    result = run_cli("worker", "run", "--burst", env=env, timeout=60)
    # The other session syncs, but the burst reports the loss: exit 3, not 0.
    assert result.returncode == 3, result.stderr
    assert "quarantined during this run" in result.stderr and "Traceback" not in result.stderr
    report = json.loads(run_cli("status", "--json", env=env, check=True).stdout)
    assert report["sessions"]["synced"] == 1
    assert len(report["quarantined"]) == 1 and report["quarantined"][0]["name"].startswith(bad)


def test_only_sqlite_damage_verdicts_count_as_damage() -> None:
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as locked:
        conn.execute("SELECT * FROM no_such_table")
    assert not is_damage(locked.value)
    assert not is_damage(OSError("disk full"))
    assert is_damage(sqlite3.DatabaseError("database disk image is malformed"))


# ---- replicas ------------------------------------------------------------------


def test_a_garbage_replica_is_quarantined_and_rebuilt_from_the_queue(spool: Path) -> None:
    producer = Spool(spool)
    session = producer.session(agent="a", session_id="rebuilt")
    for n in range(10):
        session.message("user", f"early {n}")
    assert producer.flush(timeout=30)
    drain_all(spool)
    assert replica_rows(spool, "rebuilt") == (10, "running")

    path = replica_path(spool, "rebuilt")
    path.write_bytes(GARBAGE)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    for n in range(5):
        session.message("user", f"late {n}")
    assert session.end(timeout=30)
    producer.close()
    drain_all(spool)

    # Every event was still in the queue file (acked, not yet cleared): nothing lost.
    assert replica_rows(spool, "rebuilt") == (15, "completed")
    (moved,) = quarantined(spool)
    assert moved.name.startswith("rebuilt.db.")
    assert (moved / "rebuilt.db").read_bytes() == GARBAGE
    assert "replica of session 'rebuilt'" in (moved / REASON_FILENAME).read_text()

    env = worker_env(spool)
    result = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(run_cli("status", "--json", env=env, check=True).stdout)
    assert report["sessions"]["synced"] == 1 and len(report["quarantined"]) == 1
    embedded = sqlite3.connect(spool / "agentspool.db")
    assert embedded.execute("SELECT event_count FROM sessions").fetchone() == (17,)


def test_a_garbage_replica_of_a_session_waiting_to_sync(spool: Path) -> None:
    write_session(spool, "pending", 8)
    write_session(spool, "fine", 3)
    drain_all(spool)
    path = replica_path(spool, "pending")
    path.write_bytes(GARBAGE)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)

    env = worker_env(spool, AGENTSPOOL_BURST_TIMEOUT="20")
    result = run_cli("worker", "run", "--burst", env=env, timeout=90)
    assert "Traceback" not in result.stderr
    report = json.loads(run_cli("status", "--json", env=env, check=True).stdout)
    assert report["sessions"]["synced"] == 2, (report, result.stderr)
    assert result.returncode == 0, result.stderr
    assert len(report["quarantined"]) == 1
    embedded = sqlite3.connect(spool / "agentspool.db")
    counts = dict(embedded.execute("SELECT id, event_count FROM sessions"))
    assert counts == {"pending": 10, "fine": 5}


# ---- a half-written WAL --------------------------------------------------------

CRASHING_PRODUCER = """
import os, sqlite3
from agentspool import Spool
from agentspool.producer import queuefile

spool = Spool(SPOOL)
s = spool.session(agent="wal", session_id="wal-1")
for n in range(200):
    s.message("user", f"checkpointed {n} " + "x" * 100)
assert spool.flush(timeout=30)
db = queuefile.queue_db_path(spool._writer.queue_dir)
conn = sqlite3.connect(db)
busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
assert busy == 0, "checkpoint blocked"
conn.close()
for batch in range(20):
    for n in range(20):
        s.message("user", f"in the wal {batch}.{n} " + "y" * 100)
    assert spool.flush(timeout=30)  # one transaction (and its commit frame) per batch
print(db)
os._exit(0)  # a crash: nothing is checkpointed or closed
"""


def test_a_truncated_queue_wal_keeps_checkpointed_events(spool: Path) -> None:
    db = Path(finish(run_python(CRASHING_PRODUCER, spool)).strip())
    wal = db.with_name(db.name + "-wal")
    size = wal.stat().st_size
    assert size > 20_000
    with open(wal, "r+b") as f:
        f.truncate(size // 2 + 123)  # mid-frame: the tail of the log is torn

    env = worker_env(spool)
    result = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "quarantined" not in result.stderr
    embedded = sqlite3.connect(spool / "agentspool.db")
    seqs = [r[0] for r in embedded.execute("SELECT seq FROM messages ORDER BY seq")]
    # Everything checkpointed, plus the whole transactions before the tear; gapless.
    assert 200 <= len(seqs) < 600 and seqs == list(range(1, len(seqs) + 1))
    assert embedded.execute("SELECT status FROM sessions").fetchone() == ("abandoned",)
    print(f"torn queue WAL: {len(seqs)} of 600 messages survived (200 checkpointed)")


CRASHING_WRITER = """
import os, sqlite3, sys
path = sys.argv[1]
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
for n in range(50):
    conn.execute("INSERT INTO messages (session_id, seq, role, content, created_at)"
                 " VALUES ('torn', ?, 'user', ?, '2026-01-01T00:00:00.000Z')",
                 (1000 + n, "z" * 500))
os._exit(0)
"""


def test_a_truncated_replica_wal_keeps_checkpointed_rows_and_the_worker_goes_on(
    spool: Path,
) -> None:
    write_session(spool, "torn", 30, end=False)  # the producer closed: abandoned
    drain_all(spool)
    path = replica_path(spool, "torn")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(path)], check=True, timeout=60)
    wal = path.with_name(path.name + "-wal")
    size = wal.stat().st_size
    assert size > 10_000
    with open(wal, "r+b") as f:
        f.truncate(size // 3)

    env = worker_env(spool)
    result = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    embedded = sqlite3.connect(spool / "agentspool.db")
    seqs = [
        r[0] for r in embedded.execute("SELECT seq FROM messages WHERE seq < 1000 ORDER BY seq")
    ]
    assert seqs == list(range(1, 31))  # every checkpointed row
    extra = embedded.execute("SELECT count(*) FROM messages WHERE seq >= 1000").fetchone()[0]
    assert extra < 50  # the torn tail of the log is gone, the commits before it stay


# ---- agentspool verify ---------------------------------------------------------


def _damage_pages(path: Path) -> None:
    """Overwrite the middle of a database with garbage, keeping its header valid."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(b"\xa5" * min(size - 4096, 8192))


def test_verify_passes_a_sound_spool_and_fails_on_each_kind_of_damage(spool: Path) -> None:
    write_session(spool, "one", 50)
    keep = write_session(spool, "two", 300, end=False)
    drain_all(spool)
    env = worker_env(spool)
    sound = run_cli("verify", env=env, timeout=60)
    assert sound.returncode == 0, sound.stdout + sound.stderr
    report = json.loads(run_cli("verify", "--json", "--full", env=env, check=True).stdout)
    names = [f["path"] for f in report["files"]]
    assert report["damaged"] == 0 and report["checked"] == len(names) == 5
    assert "worker.db" in names and "replicas/one.db" in names
    assert f"queues/{keep}/data.db" in names

    # A replica whose pages (not its header) are damaged.
    replica = replica_path(spool, "two")
    conn = sqlite3.connect(replica)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    _damage_pages(replica)
    damaged = run_cli("verify", env=env, timeout=60)
    assert damaged.returncode == 1, damaged.stdout
    assert "DAMAGED  replicas/two.db" in damaged.stdout
    assert "1 damaged file(s)" in damaged.stderr and "Traceback" not in damaged.stderr

    # A garbage queue file and worker.db: each is named.
    queuefile.queue_db_path(spool / queuefile.QUEUES_DIRNAME / keep).write_bytes(GARBAGE)
    (spool / "worker.db").write_bytes(GARBAGE)
    for suffix in ("-wal", "-shm"):
        (spool / f"worker.db{suffix}").unlink(missing_ok=True)
    report = json.loads(run_cli("verify", "--json", env=env, timeout=60).stdout)
    bad = {f["path"]: f["problem"] for f in report["files"] if not f["ok"]}
    assert set(bad) == {"replicas/two.db", f"queues/{keep}/data.db", "worker.db"}
    assert all(bad.values())


def test_verify_lists_quarantined_files(spool: Path) -> None:
    bad = write_session(spool, "doomed", 5)
    queuefile.queue_db_path(spool / queuefile.QUEUES_DIRNAME / bad).write_bytes(GARBAGE)
    drain_all(spool)
    result = run_cli("verify", env=worker_env(spool), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr  # quarantined: not in use
    assert f"held     quarantine/{bad}." in result.stdout
    assert "1 quarantined" in result.stdout


# ---- worker.db -----------------------------------------------------------------


def test_a_garbage_worker_db_is_quarantined_and_rebuilt_from_the_replicas(spool: Path) -> None:
    write_session(spool, "done", 4)
    env = worker_env(spool)
    first = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    write_session(spool, "later", 6)
    drain_all(spool)  # "later" is drained and pending sync when the state is lost
    (spool / "worker.db").write_bytes(GARBAGE)
    for suffix in ("-wal", "-shm"):
        (spool / f"worker.db{suffix}").unlink(missing_ok=True)
    damaged_state = spool_status(spool).worker_state_error
    assert damaged_state and "worker.db is damaged" in damaged_state

    second = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "quarantined worker.db" in second.stderr and "Traceback" not in second.stderr
    (moved,) = quarantined(spool)
    assert moved.name.startswith("worker.db.") and (moved / "worker.db").read_bytes() == GARBAGE
    report = json.loads(run_cli("status", "--json", env=env, check=True).stdout)
    assert report["sessions"]["synced"] == 2 and report["worker_state_error"] is None
    embedded = sqlite3.connect(spool / "agentspool.db")
    assert dict(embedded.execute("SELECT id, event_count FROM sessions")) == {"done": 6, "later": 8}
