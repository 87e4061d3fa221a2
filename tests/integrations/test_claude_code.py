"""The Claude Code hook and the worker's collector, fed payloads by hand: one new
`agentspool hook claude-code` process per event, JSON on stdin, stdout read as an
answer, as Claude Code drives it; then a real worker burst into a real sqld.

tests/integrations/test_claude_code_cli.py drives the real Claude Code; this file
keeps what that CLI version does not send under ``-p`` (an interactive SessionStart's
model, Notification, an interrupted tool, fields of future versions) and the inbox's
own cases (two payloads in one file, a cut file, a collector that crashed between
its commit and its delete).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import persistqueue
import persistqueue.serializers.json
import pytest

from agentspool.integrations.claude_code import collector, inbox, mapping
from agentspool.integrations.claude_code import hook as claude_code
from agentspool.producer import events, queuefile
from tests.helpers import AGENTSPOOL, finish, run_cli, run_python, worker_env
from tests.sqld import Sqld

SID = "3f1c9a52-6c1e-4c7e-9d43-claude"
CWD = "/home/dev/project"
QUEUE = "shared-claude-code"


def payload(event: str, **fields: Any) -> dict[str, Any]:
    """An event as Claude Code sends it: the common fields, then the event's own."""
    return {
        "session_id": fields.pop("session_id", SID),
        "transcript_path": fields.pop("transcript_path", "/nonexistent/transcript.jsonl"),
        "cwd": CWD,
        "permission_mode": fields.pop("permission_mode", "default"),
        "hook_event_name": event,
        **fields,
    }


def start_hook(env: dict[str, str], data: dict[str, Any] | bytes) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [AGENTSPOOL, "hook", "claude-code"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(data if isinstance(data, bytes) else json.dumps(data).encode())
    proc.stdin.close()
    return proc


def wait_hook(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 0, err
    assert out == b"", f"the hook printed on stdout: {out!r}"
    return err.decode()


def hook(env: dict[str, str], data: dict[str, Any] | bytes) -> None:
    """One hook call: it must exit 0 with nothing on stdout or stderr."""
    err = wait_hook(start_hook(env, data))
    assert err == "", err


def burst(env: dict[str, str], sqld: Sqld, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert result.returncode == expect, result.stderr
    return result


def tool_pre(call_id: str, name: str, tool_input: Any, **extra: Any) -> dict[str, Any]:
    return payload("PreToolUse", tool_name=name, tool_input=tool_input, tool_use_id=call_id,
                   prompt_id="p-1", effort={"level": "medium"}, **extra)  # fmt: skip


def transcript_line(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "sessionId": SID, "isSidechain": False, **fields}) + "\n"


def response(message_id: str, *blocks: dict[str, Any], usage: dict[str, int]) -> str:
    """One model response as Claude Code writes it: a record per content block, each
    repeating the response's id, model and usage."""
    return "".join(
        transcript_line("assistant", uuid=f"{message_id}-{n}", timestamp="2026-12-06T10:00:01.000Z",
                        message={"id": message_id, "model": "claude-x", "role": "assistant",
                                 "content": [block], "stop_reason": "tool_use", "usage": usage})
        for n, block in enumerate(blocks)
    )  # fmt: skip


def shown(env: dict[str, str], session_id: str = SID) -> Any:
    return json.loads(run_cli("show", session_id, "--json", env=env, check=True).stdout)


# ---- a whole session ---------------------------------------------------------------


def test_a_session_from_hooks_and_transcript_lands_once_and_in_order(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    env = worker_env(spool, sqld.url)
    transcript = tmp_path / "t.jsonl"
    usage = {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 7}
    transcript.write_text(
        transcript_line("user", uuid="u-1", promptId="p-1", timestamp="2026-12-06T10:00:00.000Z",
                        message={"role": "user", "content": "grep it"})
        + response("msg_1", {"type": "text", "text": "Looking."},
                   {"type": "tool_use", "id": "toolu_1", "name": "Grep", "input": {"q": "x"}},
                   usage=usage)
        + transcript_line("user", uuid="u-2", timestamp="2026-12-06T10:00:02.000Z",
                          message={"role": "user", "content": [
                              {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hit"}]})
        + response("msg_2", {"type": "text", "text": "Found it."}, usage=usage)
        + transcript_line("system", uuid="s-1", content="done")
    )  # fmt: skip
    common = {"transcript_path": str(transcript)}
    hook(env, payload("SessionStart", source="startup", model="claude-x-interactive", **common))
    hook(env, payload("UserPromptSubmit", prompt="grep it", prompt_id="p-1", **common))
    hook(env, tool_pre("toolu_1", "Grep", {"q": "x"}, **common))
    hook(env, dict(tool_pre("toolu_1", "Grep", {"q": "x"}, **common),
                   hook_event_name="PostToolUse", tool_response="hit", duration_ms=12.5))  # fmt: skip
    hook(env, payload("Notification", message="Claude needs your permission", **common))
    hook(env, payload("PostToolUseFailure", tool_name="Bash", tool_input={"command": "sleep"},
                      tool_use_id="toolu_2", error="stopped", is_interrupt=True,
                      duration_ms=3.0, **common))  # fmt: skip
    hook(env, payload("Stop", last_assistant_message="Found it.", stop_hook_active=False, **common))
    hook(env, payload("SessionEnd", reason="prompt_input_exit", **common))
    assert sorted(os.listdir(inbox.inbox_dir(str(spool)))), "the hooks wrote to the inbox"
    burst(env, sqld)
    assert os.listdir(inbox.inbox_dir(str(spool))) == []  # collected

    session = sqld.query("SELECT agent, status, model, input_tokens, output_tokens,"
                         " cache_read_tokens, metadata FROM sessions")  # fmt: skip
    (agent, status, model, input_tokens, output_tokens, cache_read, metadata) = session[0]
    assert (agent, status, model) == ("claude-code", "completed", "claude-x-interactive")
    assert (input_tokens, output_tokens, cache_read) == (210, 14, 200)  # two responses, once
    assert json.loads(metadata)["end_reason"] == "prompt_input_exit"
    rows = sqld.query("SELECT role, content, model, input_tokens FROM messages ORDER BY seq")
    assert rows == [
        ["user", "grep it", None, None],  # from the hook, recognized in the transcript
        # The transcript was written ahead here: read whole at the prompt's hook.
        ["assistant", "Looking.", "claude-x", 105],
        ["assistant", "Found it.", "claude-x", 105],
        ["hook", "Notification", None, None],
    ]
    tools = sqld.query("SELECT call_id, name, output, status, error, duration_ms"
                       " FROM tool_executions ORDER BY call_id")  # fmt: skip
    assert tools == [
        ["toolu_1", "Grep", "hit", "completed", None, 12.5],  # Claude Code's own duration
        ["toolu_2", "Bash", None, "error", "interrupted: stopped", 3.0],
    ]


def test_an_open_hook_session_is_not_abandoned_by_a_burst(spool: Path, sqld: Sqld) -> None:
    """The hooks' parent (here: this test) still runs: the session stays open."""
    env = worker_env(spool, sqld.url)
    hook(env, payload("SessionStart", source="startup"))
    hook(env, payload("UserPromptSubmit", prompt="still thinking", prompt_id="p-1"))
    hook(env, tool_pre("toolu_9", "Bash", {"command": "sleep 600"}))
    for _ in range(2):
        burst(env, sqld, expect=3)
        assert shown(env)["session"]["status"] == "running"
        assert sqld.query("SELECT status FROM sessions") == [["running"]]
        assert sqld.query("SELECT status FROM tool_executions") == [["running"]]
    (listed,) = json.loads(run_cli("queue", "ls", "--json", env=env, check=True).stdout)["queues"]
    assert (listed["producer_id"], listed["shared"], listed["alive"]) == (QUEUE, True, True)

    hook(env, payload("SessionEnd", reason="other"))
    burst(env, sqld)
    assert sqld.query("SELECT status FROM sessions") == [["completed"]]
    assert sqld.query("SELECT status, error FROM tool_executions") == [
        ["error", mapping.UNFINISHED_TOOL]
    ]


def test_a_session_resumed_after_its_end_goes_on_and_ends_again(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    hook(env, payload("SessionStart", source="startup"))
    hook(env, payload("UserPromptSubmit", prompt="first", prompt_id="p-1"))
    hook(env, payload("SessionEnd", reason="prompt_input_exit"))
    burst(env, sqld)
    (first_end,) = sqld.query("SELECT ended_at FROM sessions")[0]

    hook(env, payload("SessionStart", source="resume", seconds_since_last_response=9))
    hook(env, payload("UserPromptSubmit", prompt="again", prompt_id="p-2"))
    hook(env, payload("SessionEnd", reason="other"))
    burst(env, sqld)
    rows = sqld.query("SELECT role, content FROM messages ORDER BY seq")
    assert rows == [["user", "first"], ["hook", "SessionStart"], ["user", "again"]]
    status, ended_at, metadata = sqld.query("SELECT status, ended_at, metadata FROM sessions")[0]
    assert status == "completed" and ended_at > first_end  # the second end decides
    assert json.loads(metadata)["end_reason"] == "other"
    assert (
        json.loads(run_cli("dead", "ls", "--json", env=env, check=True).stdout)["dead_letters"]
        == []
    )


# ---- the hook itself -----------------------------------------------------------------


def test_the_hook_writes_what_it_gets_and_the_worker_dead_letters_what_is_not_an_event(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    env = worker_env(spool, sqld.url)
    junk = [b"not json", b"[1, 2]", b'{"hook_event_name": "Stop"}',
            json.dumps({"session_id": "x" * 201, "hook_event_name": "Stop"}).encode(),
            json.dumps({"session_id": SID}).encode()]  # fmt: skip
    for data in junk:
        hook(env, data)  # the hook checks nothing: it must be quick and never lose input
    hook(env, payload("UserPromptSubmit", prompt="good", prompt_id="p-1"))
    err = wait_hook(start_hook(env, b"  "))
    assert err.count("\n") == 1 and "ignored an empty event" in err, err
    burst(env, sqld, expect=3)  # the good session is open (no end)
    dead = json.loads(run_cli("dead", "ls", "--json", env=env, check=True).stdout)["dead_letters"]
    assert len(dead) == len(junk)
    assert all(d["reason"].startswith("hook input ") for d in dead), dead
    assert sqld.query("SELECT content FROM messages") == [["good"]]

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool should be\n")
    err = wait_hook(start_hook(worker_env(blocked), payload("UserPromptSubmit", prompt="lost")))
    assert err.count("\n") == 1 and "cannot record the event in the spool" in err, err


def test_parallel_hooks_of_one_session_make_one_gapless_sequence(tmp_path: Path) -> None:
    spool = tmp_path / "not-yet" / "spool"  # the hook creates it, private
    env = worker_env(spool)
    first = [tool_pre(f"toolu_{n}", "Bash", {"n": n}) for n in range(6)]
    other = [dict(p, session_id=f"other-{n}") for n, p in enumerate(first[:3])]
    procs = [start_hook(env, d) for d in first + other]  # all started before any is awaited
    for proc in procs:
        assert wait_hook(proc) == ""
    for path in (spool, spool / inbox.INBOX_DIRNAME, Path(inbox.inbox_dir(str(spool)))):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert len(os.listdir(inbox.inbox_dir(str(spool)))) == 9  # a file per hook process
    assert collector.collect(str(spool), final=True).files == 9

    conn = queuefile.connect(spool / queuefile.QUEUES_DIRNAME / QUEUE, readonly=True)
    try:
        items = [json.loads(i.data) for i in queuefile.read_pending(conn, 0, 1000)]
        info = queuefile.read_producer_info(conn)
    finally:
        conn.close()
    assert info is not None and info.shared
    for e in items:
        events.validate(e)
    mine = [e for e in items if e["session_id"] == SID]
    assert [e["seq"] for e in mine] == list(range(7))  # in queue order, gapless
    assert mine[0]["type"] == "session_start" and mine[0]["metadata"]["first_event"] == "PreToolUse"
    assert mine[0]["pid"] == os.getpid()  # the hooks' parent owns the session
    assert sorted(e["call_id"] for e in mine[1:]) == [f"toolu_{n}" for n in range(6)]


def test_persist_queue_reads_the_shared_queue_file(spool: Path) -> None:
    env = worker_env(spool)
    hook(env, payload("SessionStart", source="startup"))
    hook(env, payload("UserPromptSubmit", prompt="hello", prompt_id="p-1"))
    collector.collect(str(spool), final=True)
    queue_dir = spool / queuefile.QUEUES_DIRNAME / QUEUE
    conn = queuefile.connect(queue_dir, readonly=True)
    try:
        ours = [(i.item_id, json.loads(i.data)) for i in queuefile.read_pending(conn, 0, 100)]
    finally:
        conn.close()
    pq = persistqueue.SQLiteAckQueue(str(queue_dir), name="default", auto_resume=False,
                                     multithreading=True, serializer=persistqueue.serializers.json)  # fmt: skip
    try:
        assert [(row["id"], row["data"]) for row in pq.queue()] == ours
        assert pq.qsize() == 2
    finally:
        pq.close()


def test_the_hook_path_imports_neither_click_nor_the_worker_nor_sqlite(spool: Path) -> None:
    proc = run_python(
        """
        import json, sys
        import agentspool
        after_root = sorted(sys.modules)
        import agentspool.integrations.claude_code.hook
        import agentspool.worker.cli
        print(json.dumps({"after_root": after_root, "after_hook": sorted(sys.modules)}))
        """,
        spool,
    )
    modules = json.loads(finish(proc, timeout=60).strip().splitlines()[-1])
    assert "agentspool.producer" not in modules["after_root"]  # `import agentspool` is lazy
    heavy = ("click", "agentspool.worker.cli.app", "agentspool.worker.intake", "sqlite3",
             "agentspool.producer.sharedqueue", "agentspool.integrations.claude_code.mapping",
             "typing", "dataclasses", "pathlib")  # fmt: skip
    loaded = [m for m in modules["after_hook"] if m in heavy or m.startswith("click.")]
    assert loaded == [], f"the hook path imported {loaded}"


# ---- settings ------------------------------------------------------------------------


def test_print_settings_and_install(tmp_path: Path, spool: Path) -> None:
    env = worker_env(spool)
    printed = json.loads(
        run_cli("hook", "claude-code", "--print-settings", env=env, check=True).stdout
    )
    assert list(printed["hooks"]) == list(mapping.HOOK_EVENTS)
    for event, entries in printed["hooks"].items():
        (entry,) = entries
        (command,) = entry["hooks"]
        assert command == {"type": "command", "command": inbox.hook_command()}
        assert ("matcher" in entry) == (event in (*mapping.TOOL_EVENTS, "PermissionDenied"))

    settings = tmp_path / "project" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    mine = {"type": "command", "command": "./lint.sh"}
    settings.write_text(json.dumps({
        "model": "opus",
        "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [mine]}],
                  "Stop": [{"hooks": [{"type": "command",
                                       "command": "/opt/venv/bin/agentspool hook claude-code"}]}]},
    }))  # fmt: skip
    out = run_cli("hook", "claude-code", "--install", str(settings), env=env, check=True).stdout
    assert f"added the agentspool hook to {len(mapping.HOOK_EVENTS) - 1} events" in out
    merged = json.loads(settings.read_text())
    assert merged["model"] == "opus"
    assert merged["hooks"]["PreToolUse"][0] == {"matcher": "Bash", "hooks": [mine]}
    assert merged["hooks"]["PreToolUse"][1]["hooks"][0]["command"] == inbox.hook_command()
    assert len(merged["hooks"]["Stop"]) == 1  # an older agentspool's hook counts as ours
    again = run_cli("hook", "claude-code", "--install", str(settings), env=env, check=True)
    assert "already runs" in again.stdout and json.loads(settings.read_text()) == merged

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    failed = run_cli("hook", "claude-code", "--install", str(broken), env=env)
    assert failed.returncode == 1 and "cannot read" in failed.stderr
    assert broken.read_text() == "{not json"
    for odd in ({"hooks": []}, {"hooks": {"Stop": {}}}):
        with pytest.raises(ValueError):
            claude_code.merge_settings(odd)


def test_the_settings_command_is_a_dd_into_the_inbox(spool: Path) -> None:
    """The command the settings run, in a shell as Claude Code runs it: the payload
    lands in the inbox file named after the shell's parent, whole."""
    data = json.dumps(payload("UserPromptSubmit", prompt="via dd " * 1000, prompt_id="p-9"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(spool), "AGENTSPOOL_DIR": str(spool)}
    for _ in range(2):  # the second appends to no file of the first: another writer pid
        done = subprocess.run(["/bin/sh", "-c", inbox.hook_command()], input=data.encode(),
                              env=env, capture_output=True, timeout=30)  # fmt: skip
        assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done
    files = inbox.pending_files(str(spool))
    assert len(files) == 2 and all(f.owner_pid == os.getpid() for f in files)
    assert [inbox.read_payloads(f) for f in files] == [[json.loads(data)]] * 2


# ---- the collector -------------------------------------------------------------------


def test_a_reused_pid_appends_a_second_payload_taken_in_order(spool: Path) -> None:
    first = json.dumps(payload("SessionStart", source="startup")).encode()
    second = json.dumps(payload("UserPromptSubmit", prompt="second", prompt_id="p-2")).encode()
    directory = Path(inbox.inbox_dir(str(spool)))
    directory.mkdir(parents=True)
    (directory / f"{os.getpid()}-999999999.json").write_bytes(first + b"\n" + second)
    result = collector.collect(str(spool), final=True)
    assert (result.files, result.payloads, result.unreadable) == (1, 2, [])
    kinds = [(e["type"], e.get("content")) for e in _shared_events(spool)]
    assert kinds == [("session_start", None), ("message", "second")]


def test_a_file_cut_by_a_killed_writer_is_dead_lettered_and_a_running_one_waits(
    spool: Path,
) -> None:
    directory = Path(inbox.inbox_dir(str(spool)))
    directory.mkdir(parents=True)
    (directory / f"{os.getpid()}-999999999.json").write_bytes(b'{"session_id": "cut", "hook_')
    (directory / f"{os.getpid()}-{os.getpid()}.json").write_bytes(b'{"session_id": "still')
    result = collector.collect(str(spool), final=True)
    assert result.waiting == 1  # its writer (this process) still runs
    ((name, data, reason),) = result.unreadable
    assert name == f"{os.getpid()}-999999999.json" and data.startswith(b'{"session_id": "cut"')
    assert "not a whole JSON document" in reason
    assert sorted(os.listdir(directory)) == [f"{os.getpid()}-{os.getpid()}.json"]


def test_a_collector_killed_between_its_commit_and_its_delete_logs_nothing_twice(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for data in (payload("SessionStart", source="startup"),
                 payload("UserPromptSubmit", prompt="once", prompt_id="p-1")):  # fmt: skip
        inbox.write_payload(str(spool), json.dumps(data).encode(), owner_pid=os.getpid())
    monkeypatch.setattr(collector, "_remove", lambda path: None)  # the kill
    collector.collect(str(spool), final=True)
    monkeypatch.undo()
    assert collector.collect(str(spool), final=True).payloads == 2  # taken again: no events
    assert [e["type"] for e in _shared_events(spool)] == ["session_start", "message"]
    assert inbox.pending_files(str(spool)) == []


def test_fields_a_mapping_does_not_know_are_kept_and_known_ones_make_no_rows(
    spool: Path,
) -> None:
    for data in (tool_pre("toolu_x", "Task", {"prompt": "go"}, brand_new="field"),
                 tool_pre("toolu_y", "Bash", {"command": "ls"})):  # fmt: skip
        inbox.write_payload(str(spool), json.dumps(data).encode(), owner_pid=os.getpid())
    collector.collect(str(spool), final=True)
    found = [(e["type"], e.get("content"), e.get("metadata")) for e in _shared_events(spool)]
    assert [f[:2] for f in found] == [
        ("session_start", None),
        ("tool_started", None),
        ("message", "PreToolUse"),
        ("tool_started", None),
    ]
    assert found[2][2] == {"tool_use_id": "toolu_x", "brand_new": "field"}


def _shared_events(spool: Path) -> list[dict[str, Any]]:
    conn = queuefile.connect(spool / queuefile.QUEUES_DIRNAME / QUEUE, readonly=True)
    try:
        return [json.loads(i.data) for i in queuefile.read_pending(conn, 0, 1000)]
    finally:
        conn.close()
