"""The real Claude Code CLI, offline, with `agentspool hook claude-code` as its hooks.

Each test scripts the model (tests/fakes/anthropic_api.py), runs ``claude -p`` inside a
loopback-only namespace with the settings ``--print-settings`` prints, lands the spool
in a real sqld, and holds what agentspool recorded against the transcript Claude Code
wrote (read with agentspool.integrations.claude_transcript): the oracle.

These cover what today's hook gets right: the session, the prompts, the final reply of
each turn, every tool call by ``tool_use_id`` with its outcome, the session's end, and
what survives a SIGKILL mid-turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentspool.integrations.claude_transcript import (
    AssistantResponse,
    ToolResult,
    UserPrompt,
    read_transcript,
    subagent_transcripts,
)
from tests.claude_cli import ClaudeHome, subagent_call, wait_for
from tests.fakes.anthropic_api import FakeAnthropicAPI, text, tool_use, turn
from tests.integrations.common import burst, messages, sessions, tools
from tests.producer.test_producer import only_queue
from tests.sqld import Sqld

PROMPT = "list, read, delegate"
SUBTASK = "SUBTASK: echo from the subagent"


def transcript_records(path: Path) -> list[Any]:
    """Every record of a session: the main transcript's, then each subagent's."""
    read = read_transcript(path, final=True)
    records = list(read.records)
    for sub in subagent_transcripts(path):
        records += read_transcript(sub.path, final=True).records
    return records


def test_a_session_with_tools_a_subagent_and_a_resume(
    claude: ClaudeHome, fake_api: FakeAnthropicAPI, spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    fake_api.script(
        [
            turn(text("Listing first."), tool_use("Bash", {"command": "echo hi"})),
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

    oracle = transcript_records(first.transcript)
    (session,) = sessions(sqld)
    assert session["id"] == first.session_id
    assert (session["agent"], session["status"]) == ("claude-code", "completed")
    assert session["metadata"]["transcript_path"] == str(first.transcript)

    found = messages(sqld, first.session_id)
    prompts = [r.text for r in oracle if isinstance(r, UserPrompt) and not r.is_sidechain]
    assert [m["content"] for m in found if m["role"] == "user"] == prompts
    # Today: the last response of each turn (from Stop), not the intermediate ones.
    main_responses = [r for r in oracle if isinstance(r, AssistantResponse) and not r.is_sidechain]
    turn_ends = [r.text for r in main_responses if r.stop_reason == "end_turn"]
    assert [m["content"] for m in found if m["role"] == "assistant"] == turn_ends

    # Every tool call of the session, the subagent's too, by tool_use_id and outcome.
    calls = {t.id: t.name for r in oracle if isinstance(r, AssistantResponse) for t in r.tool_uses}
    failed = {r.tool_use_id for r in oracle if isinstance(r, ToolResult) and r.is_error}
    recorded = tools(sqld, first.session_id)
    assert {t["call_id"]: t["name"] for t in recorded} == calls
    assert sorted(calls.values()) == ["Agent", "Bash", "Bash", "Read"]
    for row in recorded:
        assert row["status"] == ("error" if row["call_id"] in failed else "completed"), row
    read_call = next(t for t in recorded if t["name"] == "Read")
    assert "does not exist" in read_call["error"]
    assert (
        json.loads(next(t for t in recorded if t["name"] == "Agent")["input"])["prompt"] == SUBTASK
    )


def test_a_claude_code_killed_mid_turn_keeps_what_its_hooks_wrote(
    claude: ClaudeHome, fake_api: FakeAnthropicAPI, spool: Path
) -> None:
    """SIGKILL while the model's second response is streaming: no Stop, no SessionEnd.
    The prompt and the finished Bash call were written by the hooks before the kill.
    (Claude Code writes a response to its transcript only once the response is whole,
    and its other records with a lag: the hooks saw more than the transcript holds.)"""
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

    transcript = wait_for(transcript_has_the_call, 30, "the tool call in the transcript")
    running.kill()

    oracle = read_transcript(transcript, final=True).records
    assert [r.text for r in oracle if isinstance(r, UserPrompt)] == [PROMPT]
    responses = [r for r in oracle if isinstance(r, AssistantResponse)]
    assert [r.texts for r in responses] == [["Listing first."]]  # not the unfinished one
    assert [t.id for t in responses[0].tool_uses] == [call_id]

    _, _, events = only_queue(spool)
    kinds = [e["type"] for e in events]
    assert "session_end" not in kinds
    assert [e["content"] for e in events if e["type"] == "message" and e["role"] == "user"] == [
        PROMPT
    ]
    finished = [e for e in events if e["type"] == "tool_finished"]
    assert [(e["call_id"], e["error"]) for e in finished] == [(call_id, None)]
