"""Remote retention (issue 24): `prune --remote` against a real sqld and the embedded
file, with cut connections in the middle; `AGENTSPOOL_REMOTE_RETENTION` in a real
worker."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.cli.lifecycle_data import ingest, rows_of, session_lines, sync
from tests.helpers import (
    hold_open_session,
    run_cli,
    start_worker,
    stop_process,
    wait_until,
    worker_db_rows,
    worker_env,
)
from tests.proxy import FaultProxy
from tests.sqld import Sqld


def old_and_new(spool: Path, tmp_path: Path) -> None:
    events = (
        session_lines("old-coder", agent="coder", ended_days_ago=100, messages=4, tools=2)
        + session_lines("old-planner", agent="planner", ended_days_ago=95, messages=3, tools=1)
        + session_lines("new-coder", agent="coder", ended_days_ago=10, messages=2, tools=1)
    )
    ingest(spool, tmp_path, events)


def prune_json(env: dict[str, str], *args: str) -> dict[str, object]:
    result = run_cli("prune", "--remote", "--older-than", "90d", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_prune_remote_counts_then_deletes_whole_sessions(
    spool: Path, tmp_path: Path, sqld: Sqld
) -> None:
    old_and_new(spool, tmp_path)
    sync(spool, sqld.url)
    env = worker_env(spool, sqld.url)

    dry = prune_json(env, "--dry-run")
    assert (dry["sessions"], dry["messages"], dry["tool_executions"]) == (2, 7, 3)
    assert dry["dry_run"] is True and dry["database"] == sqld.url
    assert sqld.scalar("SELECT count(*) FROM sessions") == 3  # a dry run deletes nothing

    coder = prune_json(env, "--agent", "coder")
    assert (coder["sessions"], coder["messages"], coder["tool_executions"]) == (1, 4, 2)
    assert rows_of(sqld, "old-coder") == (0, 0, 0)
    assert rows_of(sqld, "old-planner") == (1, 3, 1)

    text = run_cli("prune", "--remote", "--older-than", "90d", env=env, check=True).stdout
    assert "deleted 1 session(s) that ended before" in text and "3 messages" in text
    assert rows_of(sqld, "old-planner") == (0, 0, 0)
    assert rows_of(sqld, "new-coder") == (1, 2, 1)
    again = prune_json(env)
    assert again["sessions"] == 0


def test_prune_remote_needs_an_age_and_keeps_running_sessions(
    spool: Path, tmp_path: Path, sqld: Sqld
) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_CHECKPOINT_INTERVAL="0.2")
    missing = run_cli("prune", "--remote", env=env)
    assert missing.returncode == 2 and "--older-than" in missing.stderr
    stray = run_cli("prune", "--agent", "x", env=env)
    assert stray.returncode == 2 and "--remote" in stray.stderr

    ingest(spool, tmp_path, session_lines("ended", ended_days_ago=0))
    producer = hold_open_session(spool, "still-running", messages=5)
    worker = start_worker(env)
    try:
        wait_until(lambda: synced(sqld, "still-running")[:2] == (1, 5), 60, "the checkpoint")
        wait_until(lambda: synced(sqld, "ended")[0] == 1, 60, "the ended session's sync")
        # Everything that ended before a moment ago goes; the running one stays.
        done = prune_json(env, "--older-than", "1ms")
        assert done["sessions"] == 1
        assert rows_of(sqld, "ended") == (0, 0, 0)
        assert rows_of(sqld, "still-running")[:2] == (1, 5)
    finally:
        producer.kill()
        producer.communicate(timeout=30)
        stop_process(worker)


def synced(sqld: Sqld, session_id: str) -> tuple[int, int, int]:
    try:
        return rows_of(sqld, session_id)
    except RuntimeError:  # no tables before the worker's first sync
        return (0, 0, 0)


def test_a_cut_connection_leaves_no_session_half_deleted(
    spool: Path, tmp_path: Path, sqld: Sqld
) -> None:
    """250 old sessions: three batches. Connections are cut at random points, and the
    answer to a COMMIT is lost once; after every failed run each session is whole or
    gone, and running the command again finishes the work."""
    events = []
    for n in range(250):
        events += session_lines(f"old-{n:03d}", ended_days_ago=120, messages=3, tools=1)
    ingest(spool, tmp_path, events)
    sync(spool, sqld.url)
    with FaultProxy(sqld.port, seed=24) as proxy:
        env = worker_env(spool, proxy.url)
        proxy.set_commit_cuts(1.0, limit=1)
        first = run_cli("prune", "--remote", "--older-than", "90d", env=env)
        assert first.returncode == 1, first.stdout
        assert "run the same command again" in first.stderr
        assert proxy.counts().commit_cuts == 1
        assert_whole_or_gone(sqld, 250)
        proxy.set_cuts(0.5, min_bytes=200, max_bytes=20_000)
        failures = 0
        for _ in range(40):
            result = run_cli("prune", "--remote", "--older-than", "90d", "--timeout", "5s", env=env)
            assert_whole_or_gone(sqld, 250)
            if result.returncode == 0:
                break
            failures += 1
        else:
            raise AssertionError("prune --remote never got through the cuts")
        proxy.stop_cuts()
        final = run_cli("prune", "--remote", "--older-than", "90d", env=env, check=True)
        assert "deleted 0 session(s)" in final.stdout
    assert sqld.scalar("SELECT count(*) FROM sessions") == 0
    assert sqld.scalar("SELECT count(*) FROM messages") == 0
    assert sqld.scalar("SELECT count(*) FROM tool_executions") == 0


def assert_whole_or_gone(sqld: Sqld, sessions: int) -> None:
    """Every session has all of its rows (1, 3, 1) or none (0, 0, 0)."""
    present = {r[0] for r in sqld.query("SELECT id FROM sessions")}
    messages = dict(
        (r[0], r[1])
        for r in sqld.query("SELECT session_id, count(*) FROM messages GROUP BY session_id")
    )
    tools = dict(
        (r[0], r[1])
        for r in sqld.query("SELECT session_id, count(*) FROM tool_executions GROUP BY session_id")
    )
    for n in range(sessions):
        sid = f"old-{n:03d}"
        state = (int(sid in present), messages.get(sid, 0), tools.get(sid, 0))
        assert state in ((1, 3, 1), (0, 0, 0)), (sid, state)


def test_prune_remote_works_on_the_embedded_database(spool: Path, tmp_path: Path) -> None:
    old_and_new(spool, tmp_path)
    sync(spool, None)
    env = worker_env(spool)
    done = prune_json(env)
    assert (done["sessions"], done["messages"], done["tool_executions"]) == (2, 7, 3)
    assert str(done["database"]).startswith("file:")
    listed = run_cli("sessions", "--remote", "--json", env=env, check=True)
    assert [s["session_id"] for s in json.loads(listed.stdout)["sessions"]] == ["new-coder"]


def test_the_worker_prunes_the_database_once_a_day(spool: Path, tmp_path: Path, sqld: Sqld) -> None:
    old_and_new(spool, tmp_path)
    sync(spool, sqld.url)
    assert sqld.scalar("SELECT count(*) FROM sessions") == 3
    env = worker_env(spool, sqld.url, AGENTSPOOL_REMOTE_RETENTION="90d")
    worker = start_worker(env)
    try:
        wait_until(lambda: sqld.scalar("SELECT count(*) FROM sessions") == 1, 60,
                   "the worker's remote retention")  # fmt: skip
        last = wait_until(
            lambda: worker_db_rows(spool, "SELECT value FROM worker_meta"
                                   " WHERE key = 'remote_retention_at'"), 30, "the run recorded",
        )  # fmt: skip
    finally:
        _, err = stop_process(worker)
    assert "remote retention: deleted 2 session(s)" in err
    # A restarted worker does not run it again within the day: a new old session stays
    # (the first periodic check, where a due run starts, comes before the first sync).
    ingest(spool, tmp_path, session_lines("old-again", ended_days_ago=200), name="again")
    worker = start_worker(env)
    try:
        wait_until(lambda: rows_of(sqld, "old-again")[0] == 1, 60, "the new session's sync")
    finally:
        _, err = stop_process(worker)
    assert "remote retention" not in err
    assert rows_of(sqld, "old-again") == (1, 3, 1)
    assert worker_db_rows(spool, "SELECT value FROM worker_meta"
                          " WHERE key = 'remote_retention_at'") == last  # fmt: skip
    # --burst (a CI job) never runs it
    burst = run_cli("worker", "run", "--burst", env=env | {"AGENTSPOOL_DIR": str(tmp_path / "ci")})
    assert burst.returncode == 0 and "remote retention" not in burst.stderr
    assert rows_of(sqld, "old-again") == (1, 3, 1)


def test_the_worker_prunes_the_embedded_database_too(spool: Path, tmp_path: Path) -> None:
    """No TURSO_DATABASE_URL: retention deletes from the spool's embedded file, on its
    own thread and connection, beside the sync's writes to the same file."""
    old_and_new(spool, tmp_path)
    sync(spool, None)
    embedded = spool / "agentspool.db"

    def held() -> set[str]:
        conn = sqlite3.connect(f"file:{embedded}?mode=ro", uri=True, timeout=10)
        try:
            return {r[0] for r in conn.execute("SELECT id FROM sessions")}
        finally:
            conn.close()

    assert held() == {"old-coder", "old-planner", "new-coder"}
    ingest(spool, tmp_path, session_lines("fresh", ended_days_ago=0), name="fresh")
    worker = start_worker(worker_env(spool, AGENTSPOOL_REMOTE_RETENTION="90d"))
    try:
        wait_until(lambda: held() == {"new-coder", "fresh"}, 60, "retention and the sync")
        wait_until(lambda: worker_db_rows(spool, "SELECT value FROM worker_meta"
                                          " WHERE key = 'remote_retention_at'"), 30, "the record")  # fmt: skip
    finally:
        _, err = stop_process(worker)
    assert "remote retention: deleted 2 session(s)" in err
