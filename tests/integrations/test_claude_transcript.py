"""The transcript reader against transcripts the real Claude Code wrote (the oracle).

One scripted session, run once for the module by the real CLI offline: a response with
thinking, two texts and a Bash call; a Read of a missing file (a failing tool); a
foreground subagent with its own Bash call; a final text; then ``--resume`` with
another prompt. What the fake API sent is what the reader must give back: every
response once and whole, its usage counted once, however the file is cut into reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentspool.integrations.claude_code.transcript import (
    AssistantResponse,
    ToolResult,
    UserPrompt,
    parse_transcript,
    read_transcript,
    subagent_transcripts,
)
from tests.claude_cli import ClaudeHome, ClaudeRun, hook_settings, subagent_call
from tests.fakes.anthropic_api import FakeAnthropicAPI, Turn, text, thinking, tool_use, turn
from tests.netns import LoopbackNamespace

PROMPT = "look around, then delegate"
RESUMED_PROMPT = "and once more"
SUBTASK = "SUBTASK: say something from the subagent"


def main_turns(missing: Path) -> list[Turn]:
    return [
        turn(
            thinking("the user wants a look around"),
            text("First I look around."),
            text("Two texts in one response."),
            tool_use("Bash", {"command": "echo hi", "description": "say hi"}),
            input_tokens=120, output_tokens=30, cache_read_input_tokens=50,
            cache_creation_input_tokens=7,
        ),
        turn(text("Now a file that is not there."), tool_use("Read", {"file_path": str(missing)})),
        turn(text("Delegating."), subagent_call(SUBTASK), input_tokens=300, output_tokens=40),
        turn(text("All done."), input_tokens=90, output_tokens=11),
        turn(text("Resumed answer."), input_tokens=95, output_tokens=12),
    ]  # fmt: skip


SUB_TURNS = [
    turn(text("sub says"), tool_use("Bash", {"command": "echo sub", "description": "sub echo"})),
    turn(text("sub result"), input_tokens=60, output_tokens=6),
]


@dataclass
class Oracle:
    first: ClaudeRun
    resumed: ClaudeRun
    api: FakeAnthropicAPI
    turns: list[Turn]

    @property
    def path(self) -> Path:
        return self.first.transcript

    def sent(self, route: str = "") -> list[tuple[str, list[str]]]:
        """(response id, tool_use ids) of what the fake API answered on a route."""
        return [(r.response_id or "", r.tool_use_ids) for r in self.api.messages_requests(route)]


@pytest.fixture(scope="module")
def oracle(claude_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oracle]:
    root = tmp_path_factory.mktemp("claude-oracle")
    spool = root / "spool"
    spool.mkdir()
    with LoopbackNamespace() as namespace, FakeAnthropicAPI(namespace.listen()) as api:
        turns = main_turns(root / "missing.txt")
        api.script(turns)
        api.script(SUB_TURNS, when=SUBTASK)
        home = ClaudeHome(claude_bin, namespace, api.url, root, spool, settings=hook_settings())
        first = home.run(PROMPT)
        resumed = home.run(RESUMED_PROMPT, resume=first.session_id)
        assert api.unscripted == [] and api.remaining() == {}
        yield Oracle(first, resumed, api, turns)


def main_records(oracle: Oracle) -> list[Any]:
    read = read_transcript(oracle.path, final=True)
    assert read.bad_lines == 0
    assert read.offset == oracle.path.stat().st_size
    return read.records


def test_resume_writes_to_the_same_transcript(oracle: Oracle) -> None:
    assert oracle.resumed.session_id == oracle.first.session_id
    assert oracle.resumed.transcript == oracle.path


def test_prompts_responses_and_tool_results_in_order(oracle: Oracle) -> None:
    records = main_records(oracle)
    kinds = [type(r).__name__ for r in records]
    assert kinds == [
        "UserPrompt", "AssistantResponse", "ToolResult", "AssistantResponse", "ToolResult",
        "AssistantResponse", "ToolResult", "AssistantResponse",
        "UserPrompt", "AssistantResponse",
    ]  # fmt: skip
    prompts = [r for r in records if isinstance(r, UserPrompt)]
    assert [p.text for p in prompts] == [PROMPT, RESUMED_PROMPT]
    assert all(p.source == "sdk" and p.uuid and p.timestamp and p.prompt_id for p in prompts)


def test_one_response_per_message_id_with_every_text_and_tool_call(oracle: Oracle) -> None:
    responses = [r for r in main_records(oracle) if isinstance(r, AssistantResponse)]
    sent = oracle.sent()
    assert [r.message_id for r in responses] == [response_id for response_id, _ in sent]
    assert [[t.id for t in r.tool_uses] for r in responses] == [ids for _, ids in sent]
    assert [r.texts for r in responses] == [
        ["First I look around.", "Two texts in one response."],
        ["Now a file that is not there."],
        ["Delegating."],
        ["All done."],
        ["Resumed answer."],
    ]
    assert responses[0].thinking == ["the user wants a look around"]
    assert all(r.thinking == [] for r in responses[1:])
    assert [t.name for r in responses for t in r.tool_uses] == ["Bash", "Read", "Agent"]
    assert responses[0].tool_uses[0].input == {"command": "echo hi", "description": "say hi"}
    assert [r.stop_reason for r in responses] == ["tool_use"] * 3 + ["end_turn"] * 2
    requested = {r.body["model"] for r in oracle.api.messages_requests("")}
    assert {r.model for r in responses} == requested
    assert all(r.request_id and r.started_at and r.ended_at for r in responses)


def test_usage_is_counted_once_per_response(oracle: Oracle) -> None:
    responses = [r for r in main_records(oracle) if isinstance(r, AssistantResponse)]
    keys = (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    )
    assert [{k: r.usage[k] for k in keys} for r in responses] == [
        dict(zip(keys, (t.input_tokens, t.output_tokens, t.cache_creation_input_tokens,
                        t.cache_read_input_tokens), strict=True))
        for t in oracle.turns
    ]  # fmt: skip
    # The oracle repeats a response's usage on each of its records: a naive sum over-counts.
    raw = [json.loads(line) for line in oracle.path.read_bytes().splitlines()]
    records_of_first = [e for e in raw if e.get("message", {}).get("id") == responses[0].message_id]
    assert len(records_of_first) == 4  # thinking, two texts, the tool call
    assert all(e["message"]["usage"]["input_tokens"] == 120 for e in records_of_first)
    assert len(responses[0].uuids) == 4


def test_tool_results_keep_errors(oracle: Oracle) -> None:
    results = [r for r in main_records(oracle) if isinstance(r, ToolResult)]
    calls = [ids[0] for _, ids in oracle.sent() if ids]
    assert [r.tool_use_id for r in results] == calls
    assert [r.is_error for r in results] == [False, True, False]
    assert results[0].content == "hi"
    assert "does not exist" in str(results[1].content)
    assert "sub result" in json.dumps(results[2].content)


def test_the_subagent_transcript(oracle: Oracle) -> None:
    found = subagent_transcripts(oracle.path)
    assert [s.path for s in found] == oracle.first.subagent_transcripts
    (sub,) = found
    agent_call = oracle.sent()[2][1][0]
    assert sub.meta["toolUseId"] == agent_call
    assert sub.meta["agentType"] == "general-purpose"
    read = read_transcript(sub.path, final=True)
    assert read.bad_lines == 0
    kinds = [type(r).__name__ for r in read.records]
    assert kinds == ["UserPrompt", "AssistantResponse", "ToolResult", "AssistantResponse"]
    assert all(r.is_sidechain and r.agent_id == sub.agent_id for r in read.records)
    assert read.records[0].text == SUBTASK  # type: ignore[union-attr]
    responses = [r for r in read.records if isinstance(r, AssistantResponse)]
    assert [r.message_id for r in responses] == [i for i, _ in oracle.sent(SUBTASK)]
    assert [r.texts for r in responses] == [["sub says"], ["sub result"]]
    assert responses[1].usage["input_tokens"] == 60
    # Nothing of the subagent is in the main transcript.
    assert all(not r.is_sidechain for r in main_records(oracle))


def test_any_cut_into_two_reads_gives_the_same_records(oracle: Oracle) -> None:
    """As if a hook read the file while Claude Code was writing it: whatever byte the
    file ended at, the first read plus the read that continues from its offset give
    every record once and whole."""
    data = oracle.path.read_bytes()
    whole = parse_transcript(data, final=True).records
    boundaries = [i + 1 for i, byte in enumerate(data) if byte == 0x0A]
    cuts = sorted({0, *boundaries, *(b - 7 for b in boundaries if b > 7)})
    for cut in cuts:
        first = parse_transcript(data[:cut], 0)
        assert first.offset <= cut
        rest = parse_transcript(data[first.offset :], first.offset, final=True)
        assert first.records + rest.records == whole, f"cut at byte {cut}"


def test_a_response_still_being_written_is_not_consumed(oracle: Oracle) -> None:
    data = oracle.path.read_bytes()
    lines = data.splitlines(keepends=True)
    first_id = oracle.sent()[0][0]
    # Up to the second of the first response's four records: nothing of it comes out.
    records_seen = 0
    for n, line in enumerate(lines):
        if json.loads(line).get("message", {}).get("id") == first_id:
            records_seen += 1
            if records_seen == 2:
                cut = sum(len(x) for x in lines[: n + 1])
                break
    read = parse_transcript(data[:cut])
    assert [type(r).__name__ for r in read.records] == ["UserPrompt"]
    start_of_response = data.index(first_id.encode())
    assert read.offset < start_of_response < cut
    flushed = parse_transcript(data[:cut], final=True)
    assert flushed.offset == cut
    assert flushed.records[-1].texts == ["First I look around."]  # type: ignore[union-attr]


def test_bad_lines_are_counted_and_skipped(oracle: Oracle, tmp_path: Path) -> None:
    lines = oracle.path.read_bytes().splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(
        b"".join(lines[:3]) + b"{not json\n" + b"[1, 2]\n" + b"\n" + b"".join(lines[3:])
    )
    read = read_transcript(damaged, final=True)
    assert read.bad_lines == 2  # an empty line is not bad
    assert read.records == main_records(oracle)


def test_reading_on_from_the_end_gives_nothing_new(oracle: Oracle) -> None:
    end = oracle.path.stat().st_size
    read = read_transcript(oracle.path, end)
    assert (read.records, read.offset, read.bad_lines) == ([], end, 0)
