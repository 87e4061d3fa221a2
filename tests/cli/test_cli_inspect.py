"""Inspection commands against real spools: `status --check`, `queue ls|peek`,
`sessions`, `show`, and `--env-file`."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from agentspool.producer import queuefile
from agentspool.worker import state as st
from agentspool.worker.cli import main
from agentspool.worker.intake.replica import replica_path
from tests.helpers import run_cli, worker_env

TS = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def ev(sid: str, seq: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "session_id": sid, "seq": seq, "ts": TS + seq, **fields}


SESSION_A = [
    ev("a-1", 0, "session_start", agent="alpha", metadata={"task": "t"}),
    ev("a-1", 1, "message", role="user", content="line one\nline two"),
    ev("a-1", 2, "tool_started", call_id="c1", name="grep", input={"q": "x" * 600}),
    ev("a-1", 3, "tool_finished", call_id="c1", error="exit status 2", duration_ms=12.5),
    ev("a-1", 4, "message", role="assistant", content="grep failed"),
    ev("a-1", 5, "session_end", status="error", error="could not finish"),
]
SESSION_B = [ev("b-1", 0, "session_start", agent="beta"), ev("b-1", 1, "message", role="user")]


def emit_session_b(env: dict[str, str]) -> None:
    """b-1 written by `emit` on behalf of this (running) test process: it stays open."""
    for args in (["--type", "session_start", "--agent", "beta", "--ts", str(TS)],
                 ["--type", "message", "--seq", "1", "--role", "user", "--ts", str(TS + 1)]):  # fmt: skip
        run_cli("emit", "--session", "b-1", *args, env=env, check=True)


def ingest(env: dict[str, str], events: list[dict[str, Any]], tmp_path: Path) -> None:
    source = tmp_path / f"in-{time.monotonic_ns()}.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    run_cli("ingest", str(source), env=env, check=True)


def cli_json(env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == code, (args, result.returncode, result.stderr)
    return json.loads(result.stdout)


def queue_raw(spool: Path, producer_id: str, items: list[bytes]) -> None:
    """Items written straight into a queue file, as a producer that bypasses the
    checks (another implementation, an older version) would."""
    queue_dir = spool / queuefile.QUEUES_DIRNAME / producer_id
    info = queuefile.ProducerInfo(producer_id, os.getpid(), socket.gethostname(),
                                  queuefile.process_start_time(os.getpid()), time.time())  # fmt: skip
    queuefile.create_queue_file(queue_dir, info)
    conn = queuefile.connect(queue_dir)
    queuefile.append_batch(conn, items, fsync=False)
    queuefile.set_counter(conn, "closed_at", time.time())
    conn.close()


def test_status_check_exit_codes(spool: Path, tmp_path: Path) -> None:
    env = worker_env(spool)
    empty = cli_json(env, "status", "--check")
    assert empty["healthy"] is True and empty["problems"] == []
    assert empty["oldest_pending_age_s"] is None and empty["worker_alive"] is False
    for key in ("spool", "worker_pid", "producers", "sessions", "dead_letters", "last_sync_error"):
        assert key in empty

    ingest(env, SESSION_B, tmp_path)  # waiting in a queue file, no worker
    time.sleep(0.2)
    report = cli_json(env, "status", "--check", "--max-age", "0.1", code=1)
    assert report["oldest_pending_age_s"] >= 0.1
    assert any(
        "no worker is running; start one: agentspool worker run" in p for p in report["problems"]
    )
    text = run_cli("status", "--check", "--max-age", "0.1", env=env)
    assert text.returncode == 1 and "health  1 problem(s)" in text.stdout
    assert run_cli("status", "--check", env=env).returncode == 0  # the default: 600 s
    assert run_cli("status", "--max-age", "0.1", env=env).returncode == 0  # no --check: exit 0

    queue_raw(spool, "foreign-1", [b"not json"])
    # b-1 has no end and its producer (the ingest) is gone: sealed abandoned, synced.
    assert run_cli("worker", "run", "--burst", env=env).returncode == 0
    report = cli_json(env, "status", "--check", code=1)
    assert report["dead_letters"] == 1
    assert report["problems"] == ["1 dead letter(s); see: agentspool dead ls"]
    assert run_cli("dead", "purge", "--all", "--yes", env=env).returncode == 0
    assert cli_json(env, "status", "--check")["healthy"] is True

    store = st.StateStore(spool)  # a permanent sync failure, as the worker records it
    store.mark_failed("b-1", "the database rejected the auth token")
    store.close()
    report = cli_json(env, "status", "--check", code=1)
    assert report["problems"] == [
        "1 session(s) failed to sync (last error: the database rejected the auth token);"
        " fix the cause, then: agentspool retry --failed"
    ]
    assert cli_json(env, "retry", "--failed") == {"retried": 1}
    assert cli_json(env, "status", "--check")["sessions"]["pending"] == 1


def test_queue_ls_and_peek_are_read_only(spool: Path, tmp_path: Path) -> None:
    env = worker_env(spool)
    assert run_cli("queue", "ls", env=env, check=True).stdout.startswith("no producer queue files")
    assert run_cli("queue", "peek", env=env, check=True).stdout.strip() == "no events are waiting"
    ingest(env, SESSION_A, tmp_path)
    queue_raw(spool, "foreign-1", [b"\xffgarbage", json.dumps(ev("z", 1, "message")).encode()])

    queues = {q["producer_id"]: q for q in cli_json(env, "queue", "ls")["queues"]}
    assert len(queues) == 2
    mine = next(q for pid, q in queues.items() if pid.startswith("ingest-"))
    assert (mine["ready"], mine["acked"], mine["dead"], mine["dropped"]) == (6, 0, 0, 0)
    assert mine["alive"] is False and mine["closed_at"] and mine["oldest_pending_age_s"] >= 0
    assert mine["host"] == socket.gethostname() and mine["error"] is None
    text = run_cli("queue", "ls", env=env, check=True).stdout
    assert "READY" in text and "closed" in text

    peeked = cli_json(env, "queue", "peek", "-n", "3", "--producer", mine["producer_id"])["events"]
    assert [(p["item_id"], p["event"]["type"], p["error"]) for p in peeked] == [
        (1, "session_start", None), (2, "message", None), (3, "tool_started", None),
    ]  # fmt: skip
    foreign = cli_json(env, "queue", "peek", "--producer", "foreign-1")["events"]
    assert foreign[0]["event"] is None and foreign[0]["raw"] and "not JSON" in foreign[0]["error"]
    assert foreign[1]["error"] == "missing field 'producer_id'"
    text = run_cli("queue", "peek", "--producer", "foreign-1", env=env, check=True).stdout
    assert "INVALID" in text and "will be dead-lettered: missing field 'producer_id'" in text
    assert len(cli_json(env, "queue", "peek")["events"]) == 8

    missing = run_cli("queue", "peek", "--producer", "nobody", env=env)
    assert missing.returncode == 1 and "agentspool queue ls" in missing.stderr
    assert run_cli("queue", "peek", "-n", "0", env=env).returncode == 2
    # Nothing was taken: every item still waits.
    assert sum(q["ready"] for q in cli_json(env, "queue", "ls")["queues"]) == 8


def test_sessions_filters_and_show_transcript(spool: Path, tmp_path: Path) -> None:
    env = worker_env(spool)
    assert run_cli("sessions", env=env, check=True).stdout.strip() == f"no sessions yet in {spool}"
    ingest(env, SESSION_A, tmp_path)
    emit_session_b(env)
    assert run_cli("worker", "run", "--burst", env=env).returncode == 3  # b-1 stays open

    listed = cli_json(env, "sessions")["sessions"]
    assert [s["session_id"] for s in listed] == ["a-1", "b-1"]  # most recent event first
    a = listed[0]
    assert (a["agent"], a["status"], a["sync_state"], a["event_count"]) == (
        "alpha",
        "error",
        "synced",
        6,
    )
    assert a["last_event_at"] == "2026-09-21T14:13:25.000Z" and a["replica"] is True
    assert [s["session_id"] for s in cli_json(env, "sessions", "--state", "open")["sessions"]] == [
        "b-1"
    ]
    assert [s["session_id"] for s in cli_json(env, "sessions", "--agent", "alpha")["sessions"]] == [
        "a-1"
    ]
    since = cli_json(env, "sessions", "--since", "2026-09-21T14:13:24")["sessions"]
    assert [s["session_id"] for s in since] == ["a-1"]
    assert cli_json(env, "sessions", "--since", "2h")["sessions"] == []  # events from 2026-09
    assert len(cli_json(env, "sessions", "--limit", "1")["sessions"]) == 1
    assert run_cli("sessions", "--state", "bogus", env=env).returncode == 2
    bad_since = run_cli("sessions", "--since", "yesterday", env=env)
    assert bad_since.returncode == 2 and "neither a duration" in bad_since.stderr
    assert "alpha" in run_cli("sessions", env=env, check=True).stdout

    shown = cli_json(env, "show", "a-1")
    assert shown["session"]["status"] == "error" and shown["session"]["sync_state"] == "synced"
    assert [m["seq"] for m in shown["messages"]] == [1, 4]
    assert shown["tool_executions"][0]["error"] == "exit status 2"
    text = run_cli("show", "a-1", env=env, check=True).stdout
    assert "\x1b[" not in text  # no colour when not a terminal
    for expected in ("session  a-1", "status error", "error    could not finish",
                     "#1 user", "    line one\n    line two", "tool grep [c1]  12.5 ms  error",
                     "error:  exit status 2", "more characters; --full shows all", "#4 assistant"):  # fmt: skip
        assert expected in text, expected
    assert text.index("#1 user") < text.index("tool grep") < text.index("#4 assistant")
    assert "x" * 600 in run_cli("show", "a-1", "--full", env=env, check=True).stdout
    coloured = CliRunner().invoke(main, ["show", "a-1", "--spool", str(spool)], color=True)
    assert "\x1b[31m    error:  exit status 2" in coloured.output

    unknown = run_cli("show", "nope", env=env)
    assert unknown.returncode == 1 and "agentspool sessions" in unknown.stderr
    replica_path(spool, "a-1").unlink()  # as retention does after the sync
    gone = run_cli("show", "a-1", env=env)
    assert gone.returncode == 1
    assert "the replica of session a-1 is gone (pruned after it synced at" in gone.stderr
    assert "remote database" in gone.stderr
    assert cli_json(env, "sessions", "--agent", "alpha")["sessions"][0]["replica"] is False


def test_env_file_loads_and_validates_settings(spool: Path, tmp_path: Path) -> None:
    env = worker_env(tmp_path / "elsewhere")
    env_file = tmp_path / "agentspool.env"
    env_file.write_text(
        f"# the spool\nexport AGENTSPOOL_DIR='{spool}'\n\nAGENTSPOOL_SYNC_TIMEOUT=5\nRUST_LOG=error\n"
    )
    report = cli_json(env, "--env-file", str(env_file), "status")
    assert report["spool"] == str(spool)
    via_env = cli_json(dict(env, AGENTSPOOL_ENV_FILE=str(env_file)), "status")
    assert via_env["spool"] == str(spool)
    # A command-line option still wins over the file.
    assert cli_json(env, "--env-file", str(env_file), "status", "--spool", str(tmp_path))[
        "spool"
    ] == str(tmp_path)

    env_file.write_text("AGENTSPOOL_SYNC_TIMEOUT=soon\n")
    bad = run_cli("--env-file", str(env_file), "status", env=env)
    assert bad.returncode == 1
    assert "AGENTSPOOL_SYNC_TIMEOUT must be a number" in bad.stderr and str(env_file) in bad.stderr
    env_file.write_text("# fine\nTURSO_AUTH_TOKEN secret-value\n")
    malformed = run_cli("--env-file", str(env_file), "status", env=env)
    assert malformed.returncode == 1 and f"{env_file}:2: expected KEY=VALUE" in malformed.stderr
    assert "secret-value" not in malformed.stderr
    env_file.write_text("AGENTSPOOL_SYNC_TIMOUT=3\n")
    typo = run_cli("--env-file", str(env_file), "status", env=env)
    assert typo.returncode == 0
    assert "agentspool has no setting AGENTSPOOL_SYNC_TIMOUT (a typo?)" in typo.stderr
    missing = run_cli("--env-file", str(tmp_path / "none.env"), "status", env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_a_damaged_worker_state_is_an_error_not_a_traceback(spool: Path) -> None:
    env = worker_env(spool)
    (spool / st.STATE_FILENAME).write_bytes(b"this is not a database" * 200)
    for args in (["sessions"], ["show", "s"], ["dead", "ls"], ["dead", "purge", "--all", "--yes"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert "cannot read the spool's files: file is not a database" in result.stderr
