"""The first hour, second round (issue 23): each point is checked on the real command
(a subprocess, real pipes, a real sqld), by its exit status and its words."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import AGENTSPOOL, run_cli, worker_db_rows, worker_env
from tests.sqld import Sqld, eddsa_jwt, free_port, start_auth_sqld

REPO = Path(__file__).resolve().parents[2]

SESSION_WITH_A_BAD_LINE = [
    {"v": 1, "type": "session_start", "session_id": "s1", "seq": 0, "agent": "a"},
    {"v": 1, "type": "message", "session_id": "s1", "seq": 1, "role": "user", "content": "hi"},
    # line 3: an unknown field, so ingest rejects the call's start
    {"v": 1, "type": "tool_started", "session_id": "s1", "seq": 2, "call_id": "c1",
     "name": "ls", "bogus": 1},
    {"v": 1, "type": "tool_finished", "session_id": "s1", "seq": 3, "call_id": "c1",
     "output": "x", "duration_ms": 812.5},
    {"v": 1, "type": "session_end", "session_id": "s1", "seq": 4, "status": "completed"},
]  # fmt: skip


def ingest_and_sync(spool: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    lines = "\n".join(json.dumps(e) for e in SESSION_WITH_A_BAD_LINE) + "\n"
    source = spool.parent / "events.jsonl"
    source.write_text(lines)
    result = run_cli("ingest", str(source), env=env, timeout=60)
    run_cli("worker", "run", "--burst", env=env, timeout=120, check=True)
    return result


# ---- 1. a line ingest rejects is kept, and its session says so --------------------


def test_a_rejected_line_becomes_a_dead_letter_and_marks_its_session(
    spool: Path, sqld: Sqld
) -> None:
    env = worker_env(spool, sqld.url)
    ingested = ingest_and_sync(spool, env)
    assert ingested.returncode == 4, ingested.stderr
    assert "line 3: unknown field(s) for tool_started: bogus" in ingested.stderr
    assert "1 line rejected, kept for `agentspool dead ls`" in ingested.stdout

    dead = run_cli("dead", "ls", "--json", env=env, check=True)
    (letter,) = json.loads(dead.stdout)["dead_letters"]
    assert letter["session_id"] == "s1" and letter["seq"] == 2
    assert "line 3: rejected: unknown field(s) for tool_started: bogus" in letter["reason"]
    shown = run_cli("dead", "show", str(letter["id"]), "--json", env=env, check=True)
    assert json.loads(json.loads(shown.stdout)["data"]) == SESSION_WITH_A_BAD_LINE[2]

    (rejected,) = worker_db_rows(spool, "SELECT rejected_events FROM session_state")
    assert rejected == (1,)
    status = run_cli("status", env=env)
    assert "rejected events  1 session(s) miss events kept as dead letters" in status.stdout
    sessions = run_cli("sessions", env=env, check=True)
    assert "1 event rejected (dead letters)" in sessions.stdout

    show = run_cli("show", "s1", env=env, check=True)
    assert "rejected 1 event of this session kept as dead letters" in show.stdout
    assert "missing  seq 2" in show.stdout
    assert "tool (start missing) [c1]" in show.stdout
    assert "its tool_started event never arrived" in show.stdout
    assert "tool ? [c1]" not in show.stdout
    as_json = json.loads(run_cli("show", "s1", "--json", env=env, check=True).stdout)
    assert as_json["rejected_events"] == 1 and as_json["missing_seqs"] == [2]


def test_a_requeued_fix_clears_the_mark(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    ingest_and_sync(spool, env)
    (letter,) = json.loads(run_cli("dead", "ls", "--json", env=env).stdout)["dead_letters"]
    fixed = {k: v for k, v in SESSION_WITH_A_BAD_LINE[2].items() if k != "bogus"}
    requeue = subprocess.run(
        [AGENTSPOOL, "dead", "requeue", str(letter["id"]), "--event", "-"],
        input=json.dumps(fixed), env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert requeue.returncode == 0, requeue.stderr
    run_cli("worker", "run", "--burst", env=env, timeout=120, check=True)
    assert worker_db_rows(spool, "SELECT rejected_events FROM session_state") == [(0,)]
    show = run_cli("show", "s1", env=env, check=True)
    assert "rejected" not in show.stdout and "missing" not in show.stdout
    assert "tool ls [c1]" in show.stdout


# ---- 2. a closed stdout ends quietly -----------------------------------------------


@pytest.mark.parametrize("args", [["show", "s1"], ["status"], ["show", "s1", "--remote"]])
def test_a_reader_that_closes_stdout_ends_the_command_quietly(
    spool: Path, sqld: Sqld, args: list[str]
) -> None:
    env = worker_env(spool, sqld.url)
    ingest_and_sync(spool, env)
    # The reader is gone before the first write: the write must fail, every time.
    proc = subprocess.Popen(
        [AGENTSPOOL, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == -signal.SIGPIPE, stderr
    assert stderr == ""
    # And as people type it: a shell pipeline into head -1.
    for _ in range(3):
        piped = subprocess.run(
            ["bash", "-c", f'"{AGENTSPOOL}" {" ".join(args)} | head -1; echo "${{PIPESTATUS[0]}}" >&2'],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert len(piped.stdout.splitlines()) == 1
        assert piped.stderr.strip() in ("0", "141"), piped.stderr  # done, or ended by SIGPIPE


# ---- 3. .env.example as shipped ------------------------------------------------------


def test_the_shipped_env_example_loads_without_warnings(spool: Path) -> None:
    env = worker_env(spool)
    for key in [k for k in env if k.startswith("AGENTSPOOL_") and k != "AGENTSPOOL_DIR"]:
        env.pop(key)  # the file's own values, as a user who copied it has
    result = run_cli("--env-file", str(REPO / ".env.example"), "status", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr and "has no setting" not in result.stderr
    text = (REPO / ".env.example").read_text()
    # a placeholder is never a value: the embedded default stays the default
    assert not re.search(r"^TURSO_DATABASE_URL=\S", text, re.MULTILINE)
    assert "# TURSO_DATABASE_URL=libsql://" in text


# ---- 4. --burst against a database that is down --------------------------------------


def test_burst_timeout_option_and_its_last_line(spool: Path, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = worker_env(spool, closed)
    env.pop("AGENTSPOOL_BURST_TIMEOUT")
    ingest_and_sync_args = tmp_path / "e.jsonl"
    ingest_and_sync_args.write_text(json.dumps(SESSION_WITH_A_BAD_LINE[0]) + "\n")
    run_cli("ingest", str(ingest_and_sync_args), env=env, check=True)
    result = run_cli("worker", "run", "--burst", "--timeout", "2s", env=env, timeout=60)
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "--burst: gave up after 2s syncing to " + closed in last
    assert "Connection refused" in last and "AGENTSPOOL_BURST_TIMEOUT" in last
    assert "--timeout" in last
    assert f"syncing to the database {closed}" in result.stderr  # named at start
    misuse = run_cli("worker", "run", "--timeout", "2s", env=env, timeout=30)
    assert misuse.returncode == 2 and "--timeout goes with --burst" in misuse.stderr


# ---- 5. one answer to a spool that is a file -----------------------------------------


@pytest.mark.parametrize("command", [["status"], ["sessions"], ["worker", "run", "--burst"]])
def test_spool_option_and_env_give_the_same_answer(tmp_path: Path, command: list[str]) -> None:
    a_file = tmp_path / "FILE"
    a_file.write_text("x")
    env = worker_env(tmp_path / "unused")
    env.pop("AGENTSPOOL_DIR")
    by_option = run_cli("--spool", str(a_file), *command, env=env, timeout=60)
    by_env = run_cli(*command, env={**env, "AGENTSPOOL_DIR": str(a_file)}, timeout=60)
    assert (by_option.returncode, by_option.stderr) == (by_env.returncode, by_env.stderr)
    assert "Usage:" not in by_option.stderr and "Invalid value" not in by_option.stderr


# ---- 6. sync logs that agree with themselves ------------------------------------------


def test_a_rejected_token_is_reported_once_and_no_token_is_named_as_such(
    spool: Path, sqld_bin: Path, tmp_path: Path
) -> None:
    server, key = start_auth_sqld(sqld_bin, tmp_path / "sqld-auth")
    try:
        source = tmp_path / "e.jsonl"
        source.write_text("\n".join(json.dumps(e) for e in SESSION_WITH_A_BAD_LINE) + "\n")
        env = worker_env(spool, server.url, TURSO_AUTH_TOKEN="not-a-token")
        run_cli("ingest", str(source), env=env)
        bad = run_cli("worker", "run", "--burst", env=env, timeout=120)
        assert bad.returncode == 3
        assert "rejected the auth token" in bad.stderr
        assert "retrying in" not in bad.stderr  # parked until `retry`: nothing is retried
        assert "not-a-token" not in bad.stderr
        run_cli("retry", "--failed", env=env, check=True)
        env.pop("TURSO_AUTH_TOKEN")
        none = run_cli("worker", "run", "--burst", env=env, timeout=120)
        assert "wants an auth token and none was given" in none.stderr
        assert "rejected the auth token" not in none.stderr
        status = run_cli("status", env=env)
        assert "last sync error  s1: the database wants an auth token" in status.stdout
        token = eddsa_jwt(key, {"a": "rw"})
        run_cli("retry", "--failed", env=env, check=True)
        good = run_cli("worker", "run", "--burst", env={**env, "TURSO_AUTH_TOKEN": token})
        assert good.returncode == 0, good.stderr
    finally:
        server.stop()


class HtmlPage(http.server.BaseHTTPRequestHandler):
    PAGE = (
        b"<!DOCTYPE html><html><head><title>404 Not Found</title><style>body{}</style>"
        + b"</head><body>" + b"<p>nothing here</p>" * 40 + b"</body></html>"
    )  # fmt: skip

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.PAGE)))
        self.end_headers()
        self.wfile.write(self.PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_plain_http_server_is_named_once_by_its_page_title(
    spool: Path, tmp_path: Path, plain_http_server: str
) -> None:
    source = tmp_path / "e.jsonl"
    source.write_text("\n".join(json.dumps(e) for e in SESSION_WITH_A_BAD_LINE) + "\n")
    env = worker_env(spool)
    run_cli("ingest", str(source), env=env)
    result = run_cli("worker", "run", "--burst", "--db", plain_http_server, env=env, timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("404 Not Found") == 1, result.stderr
    assert "an HTML page: 404 Not Found" in result.stderr
    assert "<p>" not in result.stderr and "<!DOCTYPE" not in result.stderr
    assert "check the database URL (--db or TURSO_DATABASE_URL)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("the sessions stay pending")


# ---- 7. help and options --------------------------------------------------------------


def test_filters_point_at_each_other(spool: Path) -> None:
    env = worker_env(spool)
    state = run_cli("sessions", "--state", "error", env=env)
    assert state.returncode == 2 and "did you mean --status error?" in state.stderr
    status = run_cli("sessions", "--status", "failed", env=env)
    assert status.returncode == 2 and "did you mean --state failed?" in status.stderr
    since = run_cli("sessions", "--since", "10", env=env)
    assert since.returncode == 2 and "'10' has no unit: say 10s, 10m, 10h or 10d" in since.stderr
    assert run_cli("sessions", "--since", "10m", env=env).returncode == 0


def test_sizes_take_units(spool: Path) -> None:
    env = worker_env(spool)
    run_cli("worker", "run", "--burst", env=env, check=True)
    pruned = run_cli("prune", "--max-bytes", "1G", "--dry-run", env=env)
    assert pruned.returncode == 0, pruned.stderr
    wrong = run_cli("prune", "--max-bytes", "1 gig", "--dry-run", env=env)
    assert wrong.returncode == 2 and "a size such as 500K, 64M, 1G" in wrong.stderr
    setting = run_cli("status", env={**env, "AGENTSPOOL_MAX_REPLICA_BYTES": "2G"})
    assert setting.returncode == 0, setting.stderr


def test_emit_hints_and_stdin(spool: Path) -> None:
    env = worker_env(spool, AGENTSPOOL_OWNER_PID=str(os.getpid()))
    start = ["emit", "--session", "e1", "--type", "session_start", "--agent", "a"]
    bad = run_cli(*start, "--metadata", "{a:1}", env=env)
    assert bad.returncode == 2
    assert 'must be a JSON object, e.g. \'{"task": "fix-123"}\'' in bad.stderr
    assert "JSON string" not in bad.stderr
    run_cli(*start, env=env, check=True)
    for seq, extra in ((1, ["--type", "tool_started", "--name", "ls", "--input", "-"]),
                       (2, ["--type", "tool_finished", "--output", "-"])):  # fmt: skip
        given = '{"path": "."}' if seq == 1 else "total 8\n-rw x"
        done = subprocess.run(
            [AGENTSPOOL, "emit", "--session", "e1", "--seq", str(seq), "--call-id", "c1", *extra],
            input=given, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    # The session stays open (its owner, this test, still runs): exit 3, rows applied.
    assert run_cli("worker", "run", "--burst", env=env).returncode == 3
    show = json.loads(run_cli("show", "e1", "--json", env=env, check=True).stdout)
    (call,) = show["tool_executions"]
    assert call["output"] == "total 8\n-rw x" and json.loads(call["input"]) == {"path": "."}


def test_duration_defaults_have_units_everywhere() -> None:
    from agentspool.worker.cli.app import main

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSPOOL_", "TURSO_"))}
    seen = 0
    for path in _command_paths(main):
        text = run_cli(*path, "--help", env=env, timeout=60).stdout
        for default in re.findall(r"default:\s*([^\];]+)[\];]", " ".join(text.split())):
            seen += 1
            assert not re.fullmatch(r"\d+\.\d+", default.strip()), (path, default)
        for option, default in re.findall(r"(--\S*(?:timeout|max-age)\S*).*?default:\s*(\S+?)\]",
                                          " ".join(text.split())):  # fmt: skip
            assert re.fullmatch(r"\d+[smhdw]", default), (path, option, default)
    assert seen > 10


def _command_paths(group, prefix=()):  # type: ignore[no-untyped-def]
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


# ---- 8. small things a user sees ------------------------------------------------------


def test_counts_hosts_and_empty_listings_read_well(spool: Path, tmp_path: Path) -> None:
    env = worker_env(spool)
    empty = run_cli("sessions", env=env, check=True)
    assert empty.stdout.strip() == f"no sessions yet in {spool}"
    lines = [
        {"v": 1, "type": "session_start", "session_id": "h1", "seq": 0, "agent": "claude-code",
         "host": "vm", "metadata": {"end_reason": "prompt_input_exit"}},
        {"v": 1, "type": "message", "session_id": "h1", "seq": 1, "role": "user", "content": "x"},
        {"v": 1, "type": "tool_started", "session_id": "h1", "seq": 2, "call_id": "c", "name": "B"},
        {"v": 1, "type": "tool_finished", "session_id": "h1", "seq": 3, "call_id": "c",
         "output": json.dumps("total 8\n-rw x")},
        {"v": 1, "type": "session_end", "session_id": "h1", "seq": 4, "status": "completed"},
    ]  # fmt: skip
    source = tmp_path / "h.jsonl"
    source.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    run_cli("ingest", str(source), env=env, check=True)
    run_cli("worker", "run", "--burst", env=env, check=True)
    show = run_cli("show", "h1", env=env, check=True).stdout
    assert "(1 message, 1 tool call)" in show
    assert "host     vm\n" in show and "pid ?" not in show
    assert "(reason: prompt_input_exit)" in show
    assert "output: total 8\n    -rw x" in show
