"""Deletion on request (issue 24): `agentspool delete` locally and in a real sqld, by
prefix, with confirmation; a deleted session is never sent again, whether its events
wait in a queue file or a running worker gets more of them."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

from tests.cli.lifecycle_data import ingest, rows_of, session_lines, sync
from tests.helpers import (
    AGENTSPOOL,
    run_cli,
    run_python,
    start_worker,
    stop_process,
    wait_until,
    worker_db_rows,
    worker_env,
)
from tests.sqld import Sqld


def three_synced(spool: Path, tmp_path: Path, sqld: Sqld) -> dict[str, str]:
    events = (
        session_lines("abc12345-one")
        + session_lines("abc12399-two")
        + session_lines("ffe00001-three", messages=4, tools=2)
    )
    ingest(spool, tmp_path, events)
    sync(spool, sqld.url)
    return worker_env(spool, sqld.url)


def local_traces(spool: Path, session_id: str) -> list[str]:
    """Where the spool still holds the session (besides its tombstone)."""
    found = [p.name for p in (spool / "replicas").glob(f"{session_id}.db*")]
    found += [f"session_state {r[0]}" for r in worker_db_rows(
        spool, "SELECT session_id FROM session_state WHERE session_id = ?", (session_id,))]  # fmt: skip
    found += [f"dead letter {r[0]}" for r in worker_db_rows(
        spool, "SELECT id FROM dead_letters WHERE session_id = ?", (session_id,))]  # fmt: skip
    return found


def test_delete_by_prefix_here_and_in_the_database(spool: Path, tmp_path: Path, sqld: Sqld) -> None:
    env = three_synced(spool, tmp_path, sqld)
    ambiguous = run_cli("delete", "abc", "--yes", env=env)
    assert ambiguous.returncode == 1
    assert "abc12345-one" in ambiguous.stderr and "abc12399-two" in ambiguous.stderr
    unknown = run_cli("delete", "nope", "--yes", env=env)
    assert unknown.returncode == 1 and "no session 'nope'" in unknown.stderr

    local_only = run_cli("delete", "abc12399", "--yes", "--json", env=env)
    assert local_only.returncode == 0, local_only.stderr
    assert json.loads(local_only.stdout)["deleted"] == ["abc12399-two"]
    assert local_traces(spool, "abc12399-two") == []
    assert rows_of(sqld, "abc12399-two") == (1, 3, 1)  # without --remote the database keeps it

    both = run_cli("delete", "ffe0", "abc12399-two", "--remote", "--yes", "--json", env=env)
    assert both.returncode == 0, both.stderr
    document = json.loads(both.stdout)
    assert document["deleted"] == ["ffe00001-three", "abc12399-two"]
    assert document["remote"] == {"sessions": 2, "messages": 7, "tool_executions": 3}
    assert rows_of(sqld, "ffe00001-three") == (0, 0, 0)
    assert rows_of(sqld, "abc12399-two") == (0, 0, 0)
    assert local_traces(spool, "ffe00001-three") == []
    assert rows_of(sqld, "abc12345-one") == (1, 3, 1)
    tombstones = worker_db_rows(spool, "SELECT session_id FROM tombstones ORDER BY 1")
    assert tombstones == [("abc12399-two",), ("ffe00001-three",)]

    # A session only the database holds (its spool is elsewhere) is found there.
    elsewhere = worker_env(tmp_path / "other-machine", sqld.url)
    remote = run_cli("delete", "abc12345", "--remote", "--yes", env=elsewhere)
    assert remote.returncode == 0, remote.stderr
    assert rows_of(sqld, "abc12345-one") == (0, 0, 0)


def test_delete_asks_on_a_terminal_and_wants_yes_elsewhere(
    spool: Path, tmp_path: Path, sqld: Sqld
) -> None:
    env = three_synced(spool, tmp_path, sqld)
    piped = run_cli("delete", "abc12345", env=env)
    assert piped.returncode == 2 and "--yes" in piped.stderr
    assert worker_db_rows(spool, "SELECT count(*) FROM session_state") == [(3,)]

    def on_a_terminal(answer: bytes) -> tuple[int, str]:
        controller, terminal = pty.openpty()
        proc = subprocess.Popen([AGENTSPOOL, "delete", "abc12345"], env=env, stdin=terminal,
                                stdout=terminal, stderr=terminal)  # fmt: skip
        os.close(terminal)
        seen = b""
        try:
            while b"[y/N]" not in seen:
                chunk = os.read(controller, 4096)
                if not chunk:
                    break
                seen += chunk
            os.write(controller, answer)
            proc.wait(timeout=60)
            try:
                while chunk := os.read(controller, 4096):
                    seen += chunk
            except OSError:
                pass  # the terminal closed with the process
        finally:
            os.close(controller)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        return proc.returncode, seen.decode(errors="replace")

    code, said = on_a_terminal(b"n\n")
    assert code == 1 and "nothing deleted" in said, said
    assert local_traces(spool, "abc12345-one") != []
    code, said = on_a_terminal(b"y\n")
    assert code == 0 and "deleted abc12345-one" in said, said
    assert local_traces(spool, "abc12345-one") == []


def test_queued_events_of_a_deleted_session_are_dropped_not_resent(
    spool: Path, tmp_path: Path, sqld: Sqld
) -> None:
    """The session synced; more of its events wait in a queue file (no worker runs)
    when it is deleted. The next worker drops them: nothing reaches the replica or the
    database, and they are counted on the tombstone, not kept as dead letters."""
    env = three_synced(spool, tmp_path, sqld)
    late = [
        {"v": 1, "type": "message", "session_id": "abc12345-one", "seq": 10 + i,
         "role": "assistant", "content": f"late {i}"}
        for i in range(4)
    ]  # fmt: skip
    ingest(spool, tmp_path, late, name="late")
    run_cli("delete", "abc12345-one", "--remote", "--yes", env=env, check=True)
    assert rows_of(sqld, "abc12345-one") == (0, 0, 0)
    burst = run_cli("worker", "run", "--burst", env=env, timeout=300)
    assert burst.returncode == 0, burst.stderr
    assert "dropping events of session abc12345-one: it was deleted" in burst.stderr
    assert rows_of(sqld, "abc12345-one") == (0, 0, 0)
    assert local_traces(spool, "abc12345-one") == []
    assert worker_db_rows(
        spool, "SELECT dropped_events FROM tombstones WHERE session_id = 'abc12345-one'"
    ) == [(4,)]
    assert worker_db_rows(spool, "SELECT count(*) FROM dead_letters") == [(0,)]


LIVE_AGENT = """
import sys
from agentspool import Spool
spool = Spool(SPOOL)
s = spool.session(agent="live", session_id="live-1")
for i in range(20):
    s.message("assistant", f"before {i}")
assert spool.flush(60)
print("ready", flush=True)
sys.stdin.readline()  # the test deletes the session meanwhile
for i in range(30):
    s.message("assistant", f"after {i}")
assert s.end(timeout=60)
print("ended", flush=True)
"""


def test_a_running_worker_never_resends_a_session_deleted_under_it(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_CHECKPOINT_INTERVAL="0.2")
    worker = start_worker(env)
    agent = run_python(LIVE_AGENT, spool, stdin=subprocess.PIPE)
    try:
        assert agent.stdout is not None and agent.stdin is not None
        assert agent.stdout.readline().strip() == "ready"

        def checkpointed() -> bool:
            try:
                return rows_of(sqld, "live-1")[:2] == (1, 20)
            except RuntimeError:  # no tables yet
                return False

        wait_until(checkpointed, 60, "the open session's checkpoint in the database")
        deleted = run_cli("delete", "live-1", "--remote", "--yes", "--json", env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert json.loads(deleted.stdout)["remote"]["messages"] == 20
        assert local_traces(spool, "live-1") == []
        agent.stdin.write("go\n")
        agent.stdin.flush()
        assert agent.stdout.readline().strip() == "ended"
        wait_until(lambda: worker_db_rows(spool, "SELECT dropped_events FROM tombstones")
                   == [(31,)], 60, "the worker dropping the later events")  # fmt: skip
        drained = run_cli("drain", "--timeout", "60s", env=env)
        assert drained.returncode == 0, drained.stdout + drained.stderr
    finally:
        agent.kill()
        agent.communicate(timeout=30)
        _, err = stop_process(worker)
    assert rows_of(sqld, "live-1") == (0, 0, 0)
    assert local_traces(spool, "live-1") == []
    assert "deleted session live-1 locally" in err
