"""The real Claude Code CLI, offline, with the settings `agentspool hook claude-code
--print-settings` prints: every reply, model, tokens, tools, subagents, resumes, kills.

Each test scripts the model (tests/fakes/anthropic_api.py), runs ``claude -p`` inside a
loopback-only namespace, lands the spool in a real sqld with a worker burst, and
holds what agentspool recorded against the transcript Claude Code wrote (read with
agentspool.integrations.claude_code.transcript): the oracle.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from agentspool.integrations.claude_code.mapping import subagent_session_id
from agentspool.integrations.claude_code.transcript import (
    AssistantResponse,
    ToolResult,
    UserPrompt,
    read_transcript,
    subagent_transcripts,
)
from agentspool.producer.usage import tokens_of
from tests.claude_cli import ClaudeHome, subagent_call
from tests.fakes.anthropic_api import FakeAnthropicAPI, text, thinking, tool_use, turn
from tests.helpers import wait_until
from tests.integrations.common import burst, messages, sessions, tools
from tests.sqld import Sqld

PROMPT = "list, read, delegate"
SUBTASK = "SUBTASK: echo from the subagent"


def records_of(path: Path) -> list[Any]:
    return list(read_transcript(path, final=True).records)


def assert_responses_landed(
    found: list[dict[str, Any]], responses: list[AssistantResponse]
) -> None:
    """One assistant message per model response: its texts (the intermediate ones too),
    its model and its usage counted once, in order."""
    assistant = [m for m in found if m["role"] == "assistant"]
    assert [m["metadata"]["message_id"] for m in assistant] == [r.message_id for r in responses]
    assert [m["content"] for m in assistant] == [r.text or None for r in responses]
    for message, response in zip(assistant, responses, strict=True):
        expected = tokens_of(response.usage)
        assert expected is not None
        assert message["model"] == response.model
        got = [message[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                    "cache_write_tokens")]  # fmt: skip
        assert got == list(expected.values()), (message, response.usage)


def test_a_session_with_tools_a_subagent_and_a_resume(
    claude: ClaudeHome, fake_api: FakeAnthropicAPI, spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    fake_api.script(
        [
            turn(thinking("First, list."), text("Listing first."), text("Then more."),
                 tool_use("Bash", {"command": "echo hi"}), input_tokens=40,
                 cache_read_input_tokens=1000, cache_creation_input_tokens=200),
            turn(text("A file that is not there."), tool_use("Read", {"file_path": str(tmp_path / "nope")})),
            turn(text("Delegating."), subagent_call(SUBTASK)),
            turn(text("All done.")),
            turn(text("Resumed answer.")),
        ]
    )  # fmt: skip
    fake_api.script(
        [turn(tool_use("Bash", {"command": "echo sub"})), turn(text("sub result"))], when=SUBTASK
    )
    first = claude.run(PROMPT)
    resumed = claude.run("and once more", resume=first.session_id)
    assert resumed.session_id == first.session_id
    assert fake_api.unscripted == [] and fake_api.remaining() == {}
    burst(spool, sqld)

    sid = first.session_id
    oracle = records_of(first.transcript)
    (sub_transcript,) = subagent_transcripts(first.transcript)
    sub_oracle = records_of(sub_transcript.path)
    found_sessions = {s["id"]: s for s in sessions(sqld)}
    sub_id = subagent_session_id(sid, sub_transcript.agent_id)
    assert set(found_sessions) == {sid, sub_id}
    main, sub = found_sessions[sid], found_sessions[sub_id]
    assert (main["agent"], main["status"], main["parent_id"]) == ("claude-code", "completed", None)
    assert (sub["status"], sub["parent_id"]) == ("completed", sid)
    assert main["metadata"]["transcript_path"] == str(first.transcript)

    # Messages: every prompt and every model response once, with model and usage.
    found = messages(sqld, sid)
    prompts = [r.text for r in oracle if isinstance(r, UserPrompt)]
    assert [m["content"] for m in found if m["role"] == "user"] == prompts
    responses = [r for r in oracle if isinstance(r, AssistantResponse)]
    assert len(responses) == 5
    assert_responses_landed(found, responses)
    first_reply = next(m for m in found if m["role"] == "assistant")
    assert first_reply["content"] == "Listing first.\n\nThen more."  # intermediate texts
    assert first_reply["metadata"]["thinking"] == ["First, list."]  # kept apart
    assert (first_reply["input_tokens"], first_reply["cache_read_tokens"]) == (1240, 1000)
    # The resume's SessionStart is the one hook row; no stray rows for known fields.
    assert [m["content"] for m in found if m["role"] == "hook"] == ["SessionStart"]
    # The session's columns: its own responses' sums and model.
    assert main["model"] == responses[0].model
    assert main["input_tokens"] == sum(tokens_of(r.usage).input_tokens for r in responses)
    assert main["output_tokens"] == sum(tokens_of(r.usage).output_tokens for r in responses)

    # The subagent: its task prompt, its responses, its tool call.
    sub_found = messages(sqld, sub_id)
    assert [m["content"] for m in sub_found if m["role"] == "user"] == [SUBTASK]
    assert_responses_landed(sub_found, [r for r in sub_oracle if isinstance(r, AssistantResponse)])
    assert [t["name"] for t in tools(sqld, sub_id)] == ["Bash"]

    # Tool calls by tool_use_id, with Claude Code's own duration and the outcome.
    calls = {t.id: t.name for r in responses for t in r.tool_uses}
    failed = {r.tool_use_id for r in oracle if isinstance(r, ToolResult) and r.is_error}
    recorded = tools(sqld, sid)
    assert {t["call_id"]: t["name"] for t in recorded} == calls
    assert sorted(calls.values()) == ["Agent", "Bash", "Read"]
    for row in recorded:
        assert row["status"] == ("error" if row["call_id"] in failed else "completed"), row
        assert row["duration_ms"] is not None and row["started_at"] is not None, row
    read_call = next(t for t in recorded if t["name"] == "Read")
    assert "does not exist" in read_call["error"]
    assert (
        json.loads(next(t for t in recorded if t["name"] == "Agent")["input"])["prompt"] == SUBTASK
    )


def test_a_claude_code_killed_mid_turn_ends_abandoned_with_what_it_had(
    claude: ClaudeHome, fake_api: FakeAnthropicAPI, spool: Path, sqld: Sqld
) -> None:
    """SIGKILL while the model's second response streams: no Stop, no SessionEnd. The
    next burst seals the session (its Claude Code process is gone) with everything up
    to the kill."""
    fake_api.script(
        [
            turn(text("Listing first."), tool_use("Bash", {"command": "echo before-kill"})),
            turn(text("This response never ends."), stall=True),
        ]
    )
    running = claude.start(PROMPT)
    assert fake_api.stalled.wait(120), "Claude Code never reached the stalled response"
    (call_id,) = fake_api.messages_requests()[0].tool_use_ids

    def transcript_has_the_call() -> Path | None:
        found = running.transcripts()
        return found[0] if found and call_id.encode() in found[0].read_bytes() else None

    wait_until(transcript_has_the_call, 30, "the tool call in the transcript", interval=0.02)
    running.kill()
    fake_api.release()
    burst(spool, sqld)

    (session,) = sessions(sqld)
    assert session["status"] == "abandoned"
    found = messages(sqld, session["id"])
    assert [(m["role"], m["content"]) for m in found] == [
        ("user", PROMPT),
        ("assistant", "Listing first."),
    ]
    (call,) = tools(sqld, session["id"])
    assert (call["call_id"], call["status"], call["output"] is not None) == (
        call_id,
        "completed",
        True,
    )


def test_sixteen_sessions_at_once_lose_and_reorder_nothing(
    claude: ClaudeHome, fake_api: FakeAnthropicAPI, spool: Path, sqld: Sqld
) -> None:
    prompts = [f"agent {n:02d} go" for n in range(16)]  # none a part of another
    for prompt in prompts:
        fake_api.script(
            [turn(text(f"{prompt}: running"), tool_use("Bash", {"command": f"echo {prompt!r}"})),
             turn(text(f"{prompt}: done"))],
            when=prompt,
        )  # fmt: skip
    runs: list[Any] = []
    threads = [threading.Thread(target=lambda p=p: runs.append(claude.run(p))) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert len(runs) == len(prompts)
    burst(spool, sqld)
    for run in runs:
        oracle = records_of(run.transcript)
        found = messages(sqld, run.session_id)
        assert [m["content"] for m in found if m["role"] == "user"] == [
            r.text for r in oracle if isinstance(r, UserPrompt)
        ]
        assert_responses_landed(found, [r for r in oracle if isinstance(r, AssistantResponse)])
        assert [t["status"] for t in tools(sqld, run.session_id)] == ["completed"]


# ---- agentspool import claude-code ---------------------------------------------------


def import_cli(spool: Path, *paths: Path) -> str:
    from tests.helpers import run_cli, worker_env

    result = run_cli("import", "claude-code", *map(str, paths), env=worker_env(spool))
    assert result.returncode == 0, result.stderr
    return result.stdout


def counts(sqld: Sqld) -> list[Any]:
    return sqld.query(
        "SELECT s.id, s.status, (SELECT count(*) FROM messages m WHERE m.session_id = s.id),"
        " (SELECT count(*) FROM tool_executions t WHERE t.session_id = s.id) FROM sessions s"
        " ORDER BY s.id"
    )


def test_import_of_transcripts_no_hook_saw(
    claude_bin: Path, loopback: Any, fake_api: FakeAnthropicAPI, spool: Path, sqld: Sqld,
    tmp_path: Path,
) -> None:  # fmt: skip
    plain = ClaudeHome(claude_bin, loopback, fake_api.url, tmp_path / "plain", spool, settings=None)
    fake_api.script(
        [turn(text("Looking."), tool_use("Bash", {"command": "echo hi"})),
         turn(text("Delegating."), subagent_call(SUBTASK)), turn(text("Done."))]
    )  # fmt: skip
    fake_api.script([turn(text("sub done"))], when=SUBTASK)
    run = plain.run(PROMPT)
    projects = plain.home / ".claude" / "projects"
    (projects / "garbage.jsonl").write_text('{"type": "user"\nnot json at all\n')
    out = import_cli(spool, projects)
    assert "imported 2 session(s) (2 new)" in out and "2 unreadable line(s)" in out, out
    burst(spool, sqld)

    oracle = records_of(run.transcript)
    found = messages(sqld, run.session_id)
    assert [m["content"] for m in found if m["role"] == "user"] == [PROMPT]
    assert_responses_landed(found, [r for r in oracle if isinstance(r, AssistantResponse)])
    recorded = {t["name"]: t["status"] for t in tools(sqld, run.session_id)}
    assert recorded == {"Bash": "completed", "Agent": "completed"}
    (sub,) = subagent_transcripts(run.transcript)
    sub_id = subagent_session_id(run.session_id, sub.agent_id)
    rows = {r[0]: r for r in counts(sqld)}
    assert rows[run.session_id][1] == "completed" and rows[sub_id][1] == "completed"
    assert [m["content"] for m in messages(sqld, sub_id)] == [SUBTASK, "sub done"]

    again = import_cli(spool, projects)  # idempotent
    assert "imported 0 session(s)" in again and "0 message(s)" in again, again
    before = counts(sqld)
    burst(spool, sqld)
    assert counts(sqld) == before


def test_import_over_a_session_the_hooks_captured_adds_nothing_twice(
    claude: ClaudeHome, fake_api: FakeAnthropicAPI, spool: Path, sqld: Sqld
) -> None:
    fake_api.script([turn(text("Looking."), tool_use("Bash", {"command": "echo hi"})),
                     turn(text("Done."))])  # fmt: skip
    run = claude.run(PROMPT)
    burst(spool, sqld)
    before = counts(sqld)
    out = import_cli(spool, run.transcript)
    assert "0 message(s), 0 tool call(s)" in out, out
    burst(spool, sqld)
    assert counts(sqld) == before == [[run.session_id, "completed", 3, 1]]
