"""Producers in any language: `agentspool ingest` (JSON Lines) and `agentspool emit`
(one event) write into the spool with the Python producer's checks and durability,
and what they write lands in a real sqld exactly."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentspool.producer import queuefile
from agentspool.worker.intake.ingest import read_line_batches
from tests.helpers import AGENTSPOOL, run_cli, start_worker, stop_process, wait_until, worker_env
from tests.sqld import Sqld

TS = 1_790_000_000.25  # 2026-09-21T14:13:20.250Z

GOOD_AND_BAD = [
    # 1
    {"v": 1, "type": "session_start", "session_id": "js-1", "seq": 0, "agent": "node-agent",
     "metadata": {"task": "t1"}, "ts": TS},
    # 2
    {"v": 1, "type": "message", "session_id": "js-1", "seq": 1, "role": "user",
     "content": "Fix the failing test", "ts": TS + 1},
    # 3: not JSON
    "{this is not json",
    # 4: a typo'd field
    {"v": 1, "type": "message", "session_id": "js-1", "seq": 2, "role": "assistant", "contnet": "x"},
    # 5
    {"v": 1, "type": "tool_started", "session_id": "js-1", "seq": 2, "call_id": "c1",
     "name": "run_tests", "input": {"path": "tests/"}, "ts": TS + 2},
    # 6: blank (skipped, still counted)
    "",
    # 7
    {"v": 1, "type": "tool_finished", "session_id": "js-1", "seq": 3, "call_id": "c1",
     "output": "3 passed", "duration_ms": 812.5, "ts": TS + 3},
    # 8: missing role
    {"v": 1, "type": "message", "session_id": "js-1", "seq": 4, "content": "no role"},
    # 9: structured content, no ts (filled in)
    {"v": 1, "type": "message", "session_id": "js-1", "seq": 4, "role": "assistant",
     "content": [{"type": "text", "text": "Done."}]},
    # 10: an invalid end status
    {"v": 1, "type": "session_end", "session_id": "js-1", "seq": 5, "status": "cancelled"},
    # 11
    {"v": 1, "type": "session_end", "session_id": "js-1", "seq": 5, "status": "completed",
     "ts": TS + 5},
    # 12: not an object
    [1, 2, 3],
    # 13-15: a second session, failed tool call, ended with an error
    {"v": 1, "type": "session_start", "session_id": "js-2", "seq": 0, "agent": "go-agent", "ts": TS},
    {"v": 1, "type": "tool_started", "session_id": "js-2", "seq": 1, "call_id": "k", "name": "curl",
     "ts": TS},
    {"v": 1, "type": "tool_finished", "session_id": "js-2", "seq": 2, "call_id": "k",
     "error": "HTTP 503", "duration_ms": 20, "ts": TS + 0.5},
    # 16
    {"v": 1, "type": "session_end", "session_id": "js-2", "seq": 3, "status": "error",
     "error": "gave up", "ts": TS + 1},
]  # fmt: skip

EXPECTED_REJECTIONS = {
    3: "not JSON",
    4: "unknown field(s) for message: contnet",
    8: "missing field 'role'",
    10: "session_end status must be one of",
    12: "an event is a JSON object, not an array",
}


def jsonl(lines: list[Any]) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def test_ingest_good_and_bad_lines_then_burst_lands_exact_rows(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(jsonl(GOOD_AND_BAD))
    env = worker_env(spool, sqld.url)
    before = time.time()
    result = run_cli("ingest", str(source), "--json", env=env)
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    assert report["written"] == 10 and report["rejected"] == 5
    assert report["producer_id"].startswith("ingest-")
    assert {e["line"] for e in report["errors"]} == set(EXPECTED_REJECTIONS)
    for line, reason in EXPECTED_REJECTIONS.items():
        assert f"line {line}: {reason}" in result.stderr, result.stderr
    assert result.stderr.count("line ") == 5

    burst = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert burst.returncode == 0, burst.stderr

    assert sqld.query(
        "SELECT id, agent, status, error, metadata, started_at, ended_at, event_count,"
        " message_count, tool_count FROM sessions ORDER BY id"
    ) == [
        ["js-1", "node-agent", "completed", None, '{"task": "t1"}',
         "2026-09-21T14:13:20.250Z", "2026-09-21T14:13:25.250Z", 6, 2, 1],
        ["js-2", "go-agent", "error", "gave up", None,
         "2026-09-21T14:13:20.250Z", "2026-09-21T14:13:21.250Z", 4, 0, 1],
    ]  # fmt: skip
    messages = sqld.query(
        "SELECT session_id, seq, role, content, created_at FROM messages ORDER BY session_id, seq"
    )
    assert [m[:4] for m in messages] == [
        ["js-1", 1, "user", "Fix the failing test"],
        ["js-1", 4, "assistant", '[{"type": "text", "text": "Done."}]'],
    ]
    assert messages[0][4] == "2026-09-21T14:13:21.250Z"
    filled_ts = messages[1][4]  # no ts on input: the time of the ingest
    assert filled_ts >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before - 1))
    assert sqld.query(
        "SELECT session_id, call_id, name, input, output, status, error, duration_ms"
        " FROM tool_executions ORDER BY session_id"
    ) == [
        ["js-1", "c1", "run_tests", '{"path": "tests/"}', "3 passed", "completed", None, 812.5],
        ["js-2", "k", "curl", None, None, "error", "HTTP 503", 20.0],
    ]


def test_ingest_with_every_line_bad_keeps_the_lines_for_the_dead_letters(spool: Path) -> None:
    env = worker_env(spool)
    result = subprocess.run(
        [AGENTSPOOL, "ingest"], input="nope\n[]\n", env=env, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 4
    assert (
        "line 1: not JSON" in result.stderr and "line 2: an event is a JSON object" in result.stderr
    )
    assert result.stdout.startswith("wrote 0 events as producer ingest-")
    assert "; 2 lines rejected, kept for `agentspool dead ls`" in result.stdout
    # No event, but the two lines, on their way to the worker's dead letters (issue 23).
    (queue,) = queuefile.list_queue_dirs(spool)
    subprocess.run([AGENTSPOOL, "worker", "run", "--burst"], env=env, timeout=60, check=True)
    dead = subprocess.run([AGENTSPOOL, "dead", "ls"], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert "line 1: rejected: not JSON" in dead.stdout
    assert "line 2: rejected: an event is a JSON object" in dead.stdout
    empty = subprocess.run(
        [AGENTSPOOL, "ingest"], input="", env=env, capture_output=True, text=True, timeout=30
    )
    assert empty.returncode == 0 and empty.stdout.strip() == "wrote 0 events"


def test_ingest_streams_each_line_to_disk_as_it_arrives(spool: Path) -> None:
    """A live agent piping into one long-running ingest: each line is on disk (and
    visible to the worker) before the next one is written; the queue is closed at EOF."""
    env = worker_env(spool)
    proc = subprocess.Popen(
        [AGENTSPOOL, "ingest", "--json"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        lines = jsonl(GOOD_AND_BAD[12:16]).splitlines(keepends=True)

        def queued() -> list[dict[str, Any]]:
            out = run_cli("queue", "ls", "--json", env=env, check=True).stdout
            return json.loads(out)["queues"]

        for n, line in enumerate(lines, start=1):
            proc.stdin.write(line)
            proc.stdin.flush()
            wait_until(lambda n=n: queued() and queued()[0]["ready"] == n, 60, f"line {n} on disk")
        live = queued()[0]
        assert live["alive"] is True and live["closed_at"] is None
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["written"] == 4
    closed = queued()[0]
    assert closed["closed_at"] is not None and closed["alive"] is False


def test_read_line_batches_numbers_lines_and_never_holds_an_overlong_one() -> None:
    stream = io.BufferedReader(io.BytesIO(b"a\n\nbbbbbbbbbbbb\nc\r\nlast"))  # type: ignore[arg-type]
    lines = [line for batch in read_line_batches(stream, 5) for line in batch]
    assert lines == [(1, b"a"), (2, b""), (3, None), (4, b"c\r"), (5, b"last")]
    tail = io.BufferedReader(io.BytesIO(b"ok\n" + b"x" * 20))  # type: ignore[arg-type]
    assert [line for batch in read_line_batches(tail, 5) for line in batch] == [
        (1, b"ok"),
        (2, None),
    ]


# ---- emit ------------------------------------------------------------------------


def emit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("emit", *args, env=env)


def test_emit_a_session_event_by_event_lands_in_sqld(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    steps = [
        ["--type", "session_start", "--agent", "bash-agent", "--metadata", '{"ci": true}'],
        ["--type", "message", "--seq", "1", "--role", "user", "--content", "deploy v2"],
        ["--type", "tool_started", "--seq", "2", "--call-id", "c1", "--name", "kubectl",
         "--input", '["apply", "-f", "app.yaml"]', "--ts", "2026-09-21T14:13:20Z"],
        ["--type", "tool_finished", "--seq", "3", "--call-id", "c1", "--output", "configured",
         "--duration-ms", "950", "--ts", "1790000001"],
        ["--type", "tool_started", "--seq", "4", "--call-id", "c2", "--name", "curl"],
        ["--type", "tool_finished", "--seq", "5", "--call-id", "c2", "--error", "timeout"],
        ["--type", "session_end", "--seq", "6"],
    ]  # fmt: skip
    written = []
    for step in steps:
        result = emit(env, "--session", "sh-1", "--json", *step)
        assert result.returncode == 0, result.stderr
        written.append(json.loads(result.stdout))
    # One producer (this test process, the caller), a gapless pseq, the caller as pid.
    assert len({e["producer_id"] for e in written}) == 1
    assert [e["pseq"] for e in written] == list(range(len(steps)))
    assert written[0]["pid"] > 1 and written[0]["host"]
    assert written[2]["ts"] == 1_790_000_000.0

    # Without --json, emit is silent.
    quiet = emit(env, "--session", "sh-2", "--type", "session_start", "--agent", "a")
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert emit(env, "--session", "sh-2", "--type", "session_end", "--seq", "1").returncode == 0

    burst = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert burst.returncode == 0, burst.stderr
    assert sqld.query(
        "SELECT id, agent, status, metadata, event_count, message_count, tool_count"
        " FROM sessions ORDER BY id"
    ) == [
        ["sh-1", "bash-agent", "completed", '{"ci": true}', 7, 1, 2],
        ["sh-2", "a", "completed", None, 2, 0, 0],
    ]
    assert sqld.query("SELECT seq, role, content FROM messages") == [[1, "user", "deploy v2"]]
    rows = sqld.query(
        "SELECT call_id, name, input, output, status, error, duration_ms"
        " FROM tool_executions ORDER BY call_id"
    )
    assert rows[0] == [
        "c1", "kubectl", '["apply", "-f", "app.yaml"]', "configured", "completed", None, 950.0
    ]  # fmt: skip
    assert rows[1][:6] == ["c2", "curl", None, None, "error", "timeout"]
    # No --duration-ms: the worker takes it from the two events' times (ms precision).
    expected_ms = (written[5]["ts"] - written[4]["ts"]) * 1000
    assert abs(rows[1][6] - expected_ms) <= 2.0
    assert sqld.scalar("SELECT started_at FROM tool_executions WHERE call_id = 'c1'") == (
        "2026-09-21T14:13:20.000Z"
    )


def test_emit_rejects_bad_input_and_writes_nothing(spool: Path) -> None:
    env = worker_env(spool)
    base = ["--session", "s"]
    cases = [
        # (args, exit code, text in stderr)
        (["--type", "message", "--role", "user"], 2, "--seq is required for message"),
        (["--type", "tool_started", "--seq", "1", "--call-id", "c", "--name", "n", "--role", "x"],
         2, "--role does not apply to tool_started"),
        (["--type", "tool_started", "--seq", "1", "--call-id", "c"], 2, "tool_started needs --name"),
        (["--type", "tool_started", "--seq", "1", "--call-id", "c", "--name", "n", "--input", "ls -la"],
         2, "not JSON"),
        (["--type", "message", "--seq", "0", "--role", "user"], 4, "seq 0 is the session_start"),
        (["--type", "session_start", "--seq", "3", "--agent", "a"], 4, "seq 0 is the session_start"),
        (["--type", "message", "--seq", "1", "--role", "user", "--ts", "soon"], 2, "--ts"),
        (["--type", "session_start", "--agent", "a", "--owner-pid", "999999999"], 1, "--owner-pid"),
    ]  # fmt: skip
    for args, code, text in cases:
        result = emit(env, *base, *args)
        assert result.returncode == code, (args, result.stderr)
        assert text in result.stderr, (args, result.stderr)
    long_id = emit(env, "--session", "x" * 201, "--type", "session_start", "--agent", "a")
    assert long_id.returncode == 4 and "session_id must be 1 to 200" in long_id.stderr
    assert queuefile.list_queue_dirs(spool) == []


def test_emit_sessions_belong_to_the_owner_process(spool: Path) -> None:
    """With a worker running, a session emitted call by call stays open while its
    owner runs (it is not sealed between calls) and is sealed abandoned when the
    owner exits without ending it."""
    env = worker_env(spool)
    # Owners that outlive any test run (killed at the end): an owner that exits on its
    # own while the test still runs would get its session sealed.
    keeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    doomed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    worker = start_worker(env)
    try:
        for sid, owner in (("kept", keeper.pid), ("lost", doomed.pid)):
            for args in (["--type", "session_start", "--agent", "a"],
                         ["--type", "message", "--seq", "1", "--role", "user", "--content", "hi"]):  # fmt: skip
                result = emit(env, "--session", sid, "--owner-pid", str(owner), *args)
                assert result.returncode == 0, result.stderr

        def by_id() -> dict[str, dict[str, Any]]:
            out = run_cli("sessions", "--json", env=env, check=True).stdout
            return {s["session_id"]: s for s in json.loads(out)["sessions"]}

        wait_until(lambda: len(by_id()) == 2, 60, "both sessions drained")
        time.sleep(1.0)  # five liveness checks (AGENTSPOOL_LIVENESS_INTERVAL=0.2)
        assert {s["sync_state"] for s in by_id().values()} == {"open"}

        doomed.kill()
        doomed.wait(timeout=10)
        wait_until(lambda: by_id()["lost"]["status"] == "abandoned", 60, "the orphan sealed")
        assert by_id()["kept"]["status"] == "running"

        end = emit(env, "--session", "kept", "--owner-pid", str(keeper.pid),
                   "--type", "session_end", "--seq", "2")  # fmt: skip
        assert end.returncode == 0, end.stderr
        wait_until(lambda: by_id()["kept"]["sync_state"] == "synced", 60, "the kept session synced")
        assert by_id()["kept"]["status"] == "completed"
    finally:
        stop_process(worker)
        for proc in (keeper, doomed):
            proc.kill()
            proc.wait(timeout=10)


def test_ids_that_are_not_utf8_text_are_refused_by_emit_and_ingest(spool: Path, sqld: Sqld) -> None:
    """The attack of issue 26: a lone surrogate as a session id (a JSON escape, or bytes
    a shell passes that are not UTF-8) is refused with a reason (exit 4), and the
    sessions around it land whole."""
    env = worker_env(spool, sqld.url)
    undecodable = subprocess.run(
        [AGENTSPOOL.encode(), b"emit", b"--session", b"\xed\xb2\x80", b"--type",
         b"session_start", b"--agent", b"a"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert undecodable.returncode == 4, undecodable.stderr
    assert "session_id is not valid UTF-8 text" in undecodable.stderr
    assert queuefile.list_queue_dirs(spool) == []

    lines = [
        *({"v": 1, "type": t, "session_id": sid, "seq": n, "ts": TS, **extra}
          for sid in ("before", "\udc80", "after")
          for n, (t, extra) in enumerate([("session_start", {"agent": "a"}),
                                          ("message", {"role": "user", "content": sid}),
                                          ("session_end", {"status": "completed"})])),
        {"v": 1, "type": "tool_started", "session_id": "before", "seq": 9, "call_id": "c\udc80",
         "name": "t", "ts": TS},
    ]  # fmt: skip
    result = subprocess.run(
        [AGENTSPOOL, "ingest"], input=jsonl(lines), env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    for line in (4, 5, 6):
        assert f"line {line}: session_id is not valid UTF-8 text" in result.stderr
    assert "line 10: call_id is not valid UTF-8 text" in result.stderr
    assert result.stdout.strip().startswith("wrote 6 events")

    burst = run_cli("worker", "run", "--burst", env=env)
    assert burst.returncode == 0, burst.stderr
    assert sqld.query("SELECT id, status, message_count FROM sessions ORDER BY id") == [
        ["after", "completed", 1],
        ["before", "completed", 1],
    ]
