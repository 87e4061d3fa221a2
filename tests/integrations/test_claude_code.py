"""The Claude Code hook, driven as Claude Code drives it: one new `agentspool hook
claude-code` process per event, JSON on stdin, stdout read as an answer.

The session's events come from dozens of short-lived processes (some in parallel),
then a real worker burst lands them in a real sqld; the database must hold the one
session, in order, exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import persistqueue
import persistqueue.serializers.json

from agentspool.integrations import claude_code, claude_code_transcript
from agentspool.producer import events, queuefile
from agentspool.worker.intake.replica import replica_path
from tests.helpers import AGENTSPOOL, finish, run_cli, run_python, worker_env
from tests.sqld import Sqld

SID = "3f1c9a52-6c1e-4c7e-9d43-claude"
CWD = "/home/dev/project"
QUEUE = "shared-claude-code"


def payload(event: str, **fields: Any) -> dict[str, Any]:
    """An event as Claude Code sends it: the common fields, then the event's own."""
    return {
        "session_id": SID,
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


def wait_hook(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 0, err
    assert out == b"", f"the hook printed on stdout: {out!r}"
    return out, err


def hook(env: dict[str, str], data: dict[str, Any] | bytes) -> str:
    """One hook call; it must exit 0 with nothing on stdout. Returns its stderr."""
    return wait_hook(start_hook(env, data))[1].decode()


def quiet_hook(env: dict[str, str], data: dict[str, Any]) -> None:
    err = hook(env, data)
    assert err == "", err


def parallel_hooks(env: dict[str, str], datas: list[dict[str, Any]]) -> None:
    procs = [start_hook(env, d) for d in datas]  # all started before any is awaited
    for proc in procs:
        assert wait_hook(proc)[1] == b""


def write_transcript(path: Path, prompt: str, reply: str) -> None:
    """A Claude Code transcript (JSON Lines) ending with a turn that used a tool."""
    entries = [
        {"type": "summary", "summary": "earlier"},
        {"type": "user", "uuid": "u-1", "message": {"role": "user", "content": prompt}},
        {"type": "assistant", "uuid": "a-1", "message": {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_3", "name": "Grep", "input": {"pattern": "x"}}]}},
        {"type": "user", "uuid": "u-2", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_3", "content": "found"}]}},
        {"type": "assistant", "uuid": "a-side", "isSidechain": True,
         "message": {"role": "assistant", "content": [{"type": "text", "text": "subagent"}]}},
        {"type": "assistant", "uuid": "a-2", "message": {"role": "assistant", "content": [
            {"type": "text", "text": reply}]}},
        {"type": "system", "uuid": "s-1", "content": "hook ran"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def tool_pre(call_id: str, name: str, tool_input: Any) -> dict[str, Any]:
    return payload("PreToolUse", tool_name=name, tool_input=tool_input, tool_use_id=call_id)


def tool_post(call_id: str, name: str, tool_input: Any, response: Any) -> dict[str, Any]:
    return payload(
        "PostToolUse",
        tool_name=name,
        tool_input=tool_input,
        tool_use_id=call_id,
        tool_response=response,
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(run_cli(*args, "--json", env=env, check=True).stdout)


def test_a_claude_code_session_lands_in_sqld_once_and_in_order(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    env = worker_env(spool, sqld.url)
    transcript = tmp_path / "transcript.jsonl"

    # Turn 1: a prompt, a tool that works, a tool that fails, the reply in the event.
    quiet_hook(env, payload("SessionStart", source="startup", model="claude-sonnet-4-5"))
    quiet_hook(env, payload("UserPromptSubmit", prompt="prompt 1", prompt_id="p-1"))
    quiet_hook(env, tool_pre("toolu_1", "Bash", {"command": "ls"}))
    quiet_hook(env, tool_post("toolu_1", "Bash", {"command": "ls"}, {"stdout": "a.txt"}))
    quiet_hook(env, tool_pre("toolu_2", "Read", {"file_path": "/nope"}))
    quiet_hook(
        env,
        payload(
            "PostToolUseFailure",
            tool_name="Read",
            tool_input={"file_path": "/nope"},
            tool_use_id="toolu_2",
            error="File does not exist.",
            is_interrupt=False,
        ),
    )
    quiet_hook(env, payload("Stop", stop_hook_active=False, last_assistant_message="reply 1"))

    # Claude Code now waits for the user; every hook process is gone. A worker burst
    # in between must leave the session open, not seal it as abandoned.
    between = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert between.returncode == 3, between.stderr  # 3: a session is left open
    assert cli_json(env, "status")["sessions"]["open"] == 1
    assert cli_json(env, "status")["sessions"]["abandoned"] == 0
    assert sqld.query("SELECT status FROM sessions") == [["running"]]  # a checkpoint
    assert sqld.query("SELECT content FROM messages WHERE role != 'hook' ORDER BY seq") == [
        ["prompt 1"],
        ["reply 1"],
    ]
    # The worker deletes delivered rows (clear_acked): the sequence must not depend on them.
    conn = queuefile.connect(spool / queuefile.QUEUES_DIRNAME / QUEUE)
    try:
        assert queuefile.clear_acked(conn, 1 << 60) > 0  # in a transaction of its own
    finally:
        conn.close()

    # Turn 2, after the wait: parallel tool calls, the reply read from the transcript.
    quiet_hook(env, payload("UserPromptSubmit", prompt="prompt 2"))
    calls = [(f"toolu_p{n}", {"pattern": f"p{n}"}) for n in range(4)]
    parallel_hooks(env, [tool_pre(c, "Grep", i) for c, i in calls])
    parallel_hooks(env, [tool_post(c, "Grep", i, f"hits {c}") for c, i in calls])
    write_transcript(transcript, "prompt 2", "reply 2 from the transcript")
    quiet_hook(env, payload("Stop", stop_hook_active=False, transcript_path=str(transcript)))
    # A second Stop on the same transcript (a Stop hook made Claude go on, and the
    # transcript had not moved yet) logs no reply twice.
    quiet_hook(env, payload("Stop", stop_hook_active=True, transcript_path=str(transcript)))
    # Through a shell, as a settings command may be run: nothing depends on the parent.
    shell = subprocess.run(
        ["sh", "-c", f"{AGENTSPOOL} hook claude-code"],
        input=json.dumps(payload("Notification", message="Claude needs your permission")),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (shell.returncode, shell.stdout, shell.stderr) == (0, "", "")

    # `claude --resume`: a new Claude Code process, SessionStart again, same session.
    quiet_hook(env, payload("SessionStart", source="resume", model="claude-sonnet-4-5"))
    quiet_hook(env, payload("UserPromptSubmit", prompt="prompt 3", permission_mode="acceptEdits"))
    quiet_hook(env, payload("FutureEvent", shiny={"new": True}))  # unknown: kept, no error
    quiet_hook(
        env,
        payload("Stop", last_assistant_message="reply 3", transcript_path=str(transcript)),
    )
    quiet_hook(env, payload("SessionEnd", reason="prompt_input_exit"))

    # A long session stays a handful of files: one shared queue file per spool.
    assert [p.name for p in queuefile.list_queue_dirs(spool)] == [QUEUE]
    files = sorted(p.name for p in (spool / queuefile.QUEUES_DIRNAME).rglob("*"))
    assert len(files) <= 5, files

    burst = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert burst.returncode == 0, burst.stderr

    sessions = sqld.query("SELECT id, agent, status, metadata, event_count FROM sessions")
    assert len(sessions) == 1
    session_id, agent, status, metadata, event_count = sessions[0]
    assert (session_id, agent, status) == (SID, "claude-code", "completed")
    meta = json.loads(metadata)
    assert (meta["cwd"], meta["model"], meta["permission_mode"]) == (
        CWD,
        "claude-sonnet-4-5",
        "default",
    )
    assert meta["source"] == "startup"

    messages = sqld.query(
        "SELECT seq, role, content, metadata FROM messages WHERE session_id = ? ORDER BY seq",
        (SID,),
    )
    conversation = [(role, content) for _, role, content, _ in messages if role != "hook"]
    assert conversation == [
        ("user", "prompt 1"),
        ("assistant", "reply 1"),
        ("user", "prompt 2"),
        ("assistant", "reply 2 from the transcript"),
        ("user", "prompt 3"),
        ("assistant", "reply 3"),
    ]
    by_content = {content: json.loads(m) if m else None for _, _, content, m in messages}
    assert by_content["prompt 1"] == {"prompt_id": "p-1"}  # an unknown field, kept
    assert by_content["prompt 3"] == {"permission_mode": "acceptEdits"}  # it changed
    hook_events = [(content, json.loads(m)) for _, role, content, m in messages if role == "hook"]
    assert [name for name, _ in hook_events] == [
        "Notification",
        "SessionStart",
        "FutureEvent",
        "SessionEnd",
    ]
    assert hook_events[0][1]["message"] == "Claude needs your permission"
    assert hook_events[1][1]["source"] == "resume"
    assert hook_events[2][1] == {"shiny": {"new": True}, "permission_mode": "default"}
    assert hook_events[3][1]["reason"] == "prompt_input_exit"

    tools = {
        row[0]: tuple(row[1:])
        for row in sqld.query(
            "SELECT call_id, name, status, input, output, error, duration_ms"
            " FROM tool_executions WHERE session_id = ?",
            (SID,),
        )
    }
    assert sorted(tools) == sorted(["toolu_1", "toolu_2", *(c for c, _ in calls)])
    assert tools["toolu_1"][:5] == (
        "Bash",
        "completed",
        '{"command": "ls"}',
        '{"stdout": "a.txt"}',
        None,
    )
    assert tools["toolu_2"][:2] == ("Read", "error")
    assert tools["toolu_2"][4] == "File does not exist."
    for call_id, _ in calls:
        assert tools[call_id][:2] == ("Grep", "completed")
        assert tools[call_id][3] == f"hits {call_id}"
    assert all(t[5] is not None and t[5] >= 0 for t in tools.values())

    # Every event exactly once, gapless, across ~25 processes: the replica's seqs.
    replica = sqlite3.connect(replica_path(spool, SID))
    try:
        seqs = [r[0] for r in replica.execute("SELECT seq FROM applied_events ORDER BY seq")]
    finally:
        replica.close()
    assert seqs == list(range(len(seqs))) and event_count == len(seqs)
    # messages + 2 per tool call (started, finished) + session start and end
    assert event_count == len(messages) + 2 * len(tools) + 2
    assert cli_json(env, "dead", "ls")["dead_letters"] == []

    # A second burst changes nothing.
    again = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert again.returncode == 0, again.stderr
    assert sqld.scalar("SELECT count(*) FROM messages") == len(messages)
    assert sqld.scalar("SELECT count(*) FROM tool_executions") == len(tools)


def test_an_open_hook_session_is_not_abandoned_by_a_burst(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    quiet_hook(env, payload("SessionStart", source="startup", model="m"))
    quiet_hook(env, payload("UserPromptSubmit", prompt="still thinking"))
    quiet_hook(env, tool_pre("toolu_9", "Bash", {"command": "sleep 600"}))

    for _ in range(2):  # the hook processes are long gone; still open after each burst
        burst = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
        assert burst.returncode == 3, burst.stderr
        shown = cli_json(env, "show", SID)
        assert shown["session"]["status"] == "running"
        assert shown["session"]["sync_state"] == "open"
        assert [t["status"] for t in shown["tool_executions"]] == ["running"]
        assert cli_json(env, "status")["sessions"]["abandoned"] == 0
        # ...and visible in the database while open (the burst's checkpoint).
        assert sqld.query("SELECT id, agent, status FROM sessions") == [
            [SID, "claude-code", "running"]
        ]
        assert sqld.query("SELECT status FROM tool_executions") == [["running"]]
    # The shared queue file stays (its producer is never "gone").
    assert [p.name for p in queuefile.list_queue_dirs(spool)] == [QUEUE]
    (listed,) = cli_json(env, "queue", "ls")["queues"]
    assert (listed["producer_id"], listed["shared"], listed["alive"]) == (QUEUE, True, True)
    assert f"{QUEUE}        -  shared" in run_cli("queue", "ls", env=env, check=True).stdout

    quiet_hook(env, payload("SessionEnd", reason="other"))
    assert run_cli("worker", "run", "--burst", "--db", sqld.url, env=env).returncode == 0
    assert sqld.query("SELECT status FROM sessions") == [["completed"]]
    # The tool call that never finished is closed as failed by the end.
    assert sqld.query("SELECT status, error FROM tool_executions") == [
        ["error", claude_code.UNFINISHED_TOOL]
    ]


def test_a_session_resumed_after_its_end_goes_on_in_the_same_session(
    spool: Path, sqld: Sqld
) -> None:
    env = worker_env(spool, sqld.url)
    quiet_hook(env, payload("SessionStart", source="startup", model="m"))
    quiet_hook(env, payload("UserPromptSubmit", prompt="first"))
    quiet_hook(env, payload("Stop", last_assistant_message="first reply"))
    quiet_hook(env, payload("SessionEnd", reason="prompt_input_exit"))
    assert run_cli("worker", "run", "--burst", "--db", sqld.url, env=env).returncode == 0

    # Days later: `claude --resume`, one more turn, exit again.
    quiet_hook(env, payload("SessionStart", source="resume", model="m"))
    quiet_hook(env, payload("UserPromptSubmit", prompt="again"))
    quiet_hook(env, payload("Stop", last_assistant_message="second reply"))
    quiet_hook(env, payload("SessionEnd", reason="prompt_input_exit"))
    burst = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert burst.returncode == 0, burst.stderr

    assert sqld.query("SELECT agent, status FROM sessions") == [["claude-code", "completed"]]
    rows = sqld.query("SELECT role, content FROM messages ORDER BY seq")
    assert [c for r, c in rows if r != "hook"] == ["first", "first reply", "again", "second reply"]
    assert [c for r, c in rows if r == "hook"] == ["SessionEnd", "SessionStart", "SessionEnd"]
    assert cli_json(env, "dead", "ls")["dead_letters"] == []  # one session_end, not two


def test_bad_input_and_an_unusable_spool_print_nothing_and_exit_0(
    spool: Path, tmp_path: Path
) -> None:
    env = worker_env(spool)
    for bad in (b"", b"not json", b"[1, 2]", b'{"hook_event_name": "Stop"}', b"\xff\xfe",
                json.dumps({"session_id": "x" * 201, "hook_event_name": "Stop"}).encode(),
                json.dumps({"session_id": SID}).encode()):  # fmt: skip
        err = hook(env, bad)
        assert err.count("\n") == 1 and err.startswith("agentspool hook claude-code: "), err
        assert "Traceback" not in err
    assert queuefile.list_queue_dirs(spool) == []  # nothing was written

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool should be\n")
    err = hook(worker_env(blocked), payload("UserPromptSubmit", prompt="lost"))
    assert err.count("\n") == 1 and "cannot record the event in the spool" in err, err
    assert str(blocked) in err


def test_parallel_first_calls_share_one_file_and_one_sequence(tmp_path: Path) -> None:
    """Hooks may run in parallel from the very first event of a spool: one process
    builds the queue file (under a lock), every event gets its own seq."""
    spool = tmp_path / "not-yet" / "spool"  # the hook creates it, private
    env = worker_env(spool)
    first = [tool_pre(f"toolu_{n}", "Bash", {"n": n}) for n in range(6)]
    other = [dict(p, session_id=f"other-{n}") for n, p in enumerate(first[:3])]
    parallel_hooks(env, first + other)

    assert [p.name for p in queuefile.list_queue_dirs(spool)] == [QUEUE]
    for path in (spool, spool / queuefile.QUEUES_DIRNAME, spool / queuefile.QUEUES_DIRNAME / QUEUE):
        assert path.stat().st_mode & 0o777 == 0o700, path
    conn = queuefile.connect(spool / queuefile.QUEUES_DIRNAME / QUEUE, readonly=True)
    try:
        items = [json.loads(i.data) for i in queuefile.read_pending(conn, 0, 1000)]
        info = queuefile.read_producer_info(conn)
    finally:
        conn.close()
    assert info is not None and info.shared and info.producer_id == QUEUE
    for e in items:
        events.validate(e)
    mine = [e for e in items if e["session_id"] == SID]
    assert [e["seq"] for e in mine] == list(range(7))  # in queue order, gapless
    assert [e["type"] for e in mine].count("session_start") == 1
    assert mine[0]["type"] == "session_start"
    assert mine[0]["metadata"]["first_event"] == "PreToolUse"
    assert sorted(e["call_id"] for e in mine[1:]) == [f"toolu_{n}" for n in range(6)]
    pseqs = [e["pseq"] for e in items]
    assert pseqs == sorted(set(pseqs)) and len(pseqs) == 7 + 2 * 3


def test_persist_queue_reads_the_shared_queue_file(spool: Path) -> None:
    env = worker_env(spool)
    quiet_hook(env, payload("SessionStart", source="startup", model="m"))
    quiet_hook(env, payload("UserPromptSubmit", prompt="hello"))
    queue_dir = spool / queuefile.QUEUES_DIRNAME / QUEUE
    conn = queuefile.connect(queue_dir, readonly=True)
    try:
        ours = [(i.item_id, json.loads(i.data)) for i in queuefile.read_pending(conn, 0, 100)]
    finally:
        conn.close()
    pq = persistqueue.SQLiteAckQueue(
        str(queue_dir),
        name="default",
        auto_resume=False,
        multithreading=True,
        serializer=persistqueue.serializers.json,
    )
    try:
        assert [(row["id"], row["data"]) for row in pq.queue()] == ours
        assert pq.qsize() == 2
    finally:
        pq.close()


def test_print_settings_and_install(tmp_path: Path, spool: Path) -> None:
    env = worker_env(spool)
    printed = json.loads(
        run_cli("hook", "claude-code", "--print-settings", env=env, check=True).stdout
    )
    assert list(printed["hooks"]) == list(claude_code.HOOK_EVENTS)
    for event, entries in printed["hooks"].items():
        (entry,) = entries
        (command,) = entry["hooks"]
        assert command["type"] == "command"
        assert command["command"].endswith("hook claude-code")
        assert ("matcher" in entry) == (event in claude_code.TOOL_EVENTS)

    settings = tmp_path / "project" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    mine = {"type": "command", "command": "./lint.sh"}
    settings.write_text(json.dumps({
        "model": "opus",
        "permissions": {"allow": ["Bash(ls)"]},
        "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [mine]}]},
    }))  # fmt: skip
    out = run_cli(
        "hook", "claude-code", "--install", str(settings), "--command", "agentspool hook claude-code",
        env=env, check=True,
    ).stdout  # fmt: skip
    assert f"added `agentspool hook claude-code` to {len(claude_code.HOOK_EVENTS)} events" in out
    merged = json.loads(settings.read_text())
    assert merged["model"] == "opus" and merged["permissions"] == {"allow": ["Bash(ls)"]}
    assert merged["hooks"]["PreToolUse"][0] == {"matcher": "Bash", "hooks": [mine]}
    assert merged["hooks"]["PreToolUse"][1]["hooks"][0]["command"] == "agentspool hook claude-code"
    assert set(merged["hooks"]) == set(claude_code.HOOK_EVENTS)

    # Installing again adds nothing (no event runs the hook twice).
    again = run_cli("hook", "claude-code", "--install", str(settings), env=env, check=True)
    assert "already runs" in again.stdout
    assert json.loads(settings.read_text()) == merged

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    failed = run_cli("hook", "claude-code", "--install", str(broken), env=env)
    assert failed.returncode == 1 and "cannot read" in failed.stderr
    assert broken.read_text() == "{not json"  # left as it was


def test_the_hook_path_imports_neither_click_nor_the_worker(spool: Path) -> None:
    proc = run_python(
        """
        import json, sys
        import agentspool
        after_root = sorted(sys.modules)
        import agentspool.integrations.claude_code
        import agentspool.worker.cli
        after_hook = sorted(sys.modules)
        from agentspool import Spool  # the public API still works, loaded on use
        assert Spool.__module__ == "agentspool.producer.spool"
        print(json.dumps({"after_root": after_root, "after_hook": after_hook}))
        """,
        spool,
    )
    modules = json.loads(finish(proc, timeout=60).strip().splitlines()[-1])
    assert "agentspool.producer" not in modules["after_root"]  # `import agentspool` is lazy
    heavy = ("click", "agentspool.worker.cli.app", "agentspool.worker.intake",
             "agentspool.producer.spool", "agentspool.producer.queuefile", "typing",
             "dataclasses", "pathlib")  # fmt: skip
    loaded = [m for m in modules["after_hook"] if m in heavy or m.startswith("click.")]
    assert loaded == [], f"the hook path imported {loaded}"


# ---- the mapping, in process -----------------------------------------------------


def test_the_transcript_reply_is_the_text_after_the_last_user_entry(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_transcript(path, "q", "the answer")
    assert claude_code_transcript.transcript_reply(str(path), print) == ("the answer", "a-2")
    # A turn whose reply is not written yet: the tail is the user's entry.
    with path.open("a") as f:
        f.write(json.dumps({"type": "user", "uuid": "u-3", "message": {"content": "next"}}) + "\n")
        f.write("{truncated line")
    assert claude_code_transcript.transcript_reply(str(path), print) == (None, None)
    assert claude_code_transcript.transcript_reply(str(tmp_path / "missing.jsonl"), print) == (
        None,
        None,
    )
    assert claude_code_transcript.transcript_reply(None, print) == (None, None)


def test_settings_merge_keeps_other_hooks_and_refuses_odd_shapes() -> None:
    merged, added = claude_code.merge_settings({"hooks": {"Stop": [{"hooks": [
        {"type": "command", "command": "/opt/venv/bin/agentspool hook claude-code"}]}]}},
        "agentspool hook claude-code")  # fmt: skip
    assert "Stop" not in added and len(merged["hooks"]["Stop"]) == 1
    assert len(added) == len(claude_code.HOOK_EVENTS) - 1
    for odd in ({"hooks": []}, {"hooks": {"Stop": {}}}):
        try:
            claude_code.merge_settings(odd, "agentspool hook claude-code")
        except ValueError:
            continue
        raise AssertionError(f"{odd} was accepted")


def test_unknown_fields_of_a_tool_event_are_kept_beside_it(spool: Path) -> None:
    claude_code.record(
        dict(tool_pre("toolu_x", "Task", {"prompt": "go"}), agent_id="sub-1"), str(spool)
    )
    conn = queuefile.connect(spool / queuefile.QUEUES_DIRNAME / QUEUE, readonly=True)
    try:
        items = [json.loads(i.data) for i in queuefile.read_pending(conn, 0, 100)]
    finally:
        conn.close()
    assert [(e["type"], e["seq"]) for e in items] == [
        ("session_start", 0),
        ("tool_started", 1),
        ("message", 2),
    ]
    assert items[1]["call_id"] == "toolu_x" and items[1]["input"] == {"prompt": "go"}
    assert items[2]["role"] == "hook" and items[2]["content"] == "PreToolUse"
    assert items[2]["metadata"] == {"tool_use_id": "toolu_x", "agent_id": "sub-1"}
