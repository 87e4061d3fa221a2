"""The real OpenCode (opencode-ai 1.18.33), offline, with agentspool's plugin installed
by ``agentspool hook opencode --install``: its own database is the oracle for every
session, message, tool call, token count and cost that lands in sqld after a burst."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentspool.producer.usage import tokens_of
from tests.clients.opencode import MODEL, PROVIDER, OpenCodeHome, Oracle, opencode_binary
from tests.fakes.openai_chat_stream import FakeOpenAIChat, text, tool_call, turn
from tests.helpers import run_cli, wait_until
from tests.integrations.common import burst, messages, sessions, tools
from tests.netns import LoopbackNamespace
from tests.sqld import Sqld

MODEL_NAME = f"{PROVIDER}/{MODEL}"


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    return opencode_binary()


# ``loopback`` comes from conftest.py; this ``fake_api`` (OpenAI chat completions, what
# OpenCode calls) stands in for conftest's Anthropic one.
@pytest.fixture
def fake_api(loopback: LoopbackNamespace) -> Iterator[FakeOpenAIChat]:
    with FakeOpenAIChat(loopback.listen()) as api:
        yield api


@pytest.fixture
def opencode(
    opencode_bin: Path,
    loopback: LoopbackNamespace,
    fake_api: FakeOpenAIChat,
    spool: Path,
    tmp_path: Path,
) -> OpenCodeHome:
    return OpenCodeHome(opencode_bin, loopback, fake_api.url, tmp_path / "opencode", spool)


def documented_queries() -> list[str]:
    """The example queries of docs/INTEGRATIONS.md's OpenCode section."""
    from tests.sqld import REPO

    text = (REPO / "docs" / "INTEGRATIONS.md").read_text()
    section = text[text.index("\n## OpenCode\n") : text.index("\n## OpenAI Agents SDK, LangChain")]
    return [block.split("```")[0] for block in section.split("```sql\n")[1:]]


def by_id(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in found}


def assert_session_matches(sqld: Sqld, oracle: Oracle, session_id: str) -> list[dict[str, Any]]:
    """Every message of the session as OpenCode stored it, in agentspool: one user
    message per prompt, one assistant message per model response with its final text,
    model, tokens (cached ones added back into input) and OpenCode's own cost; every
    tool call with its input, output or error and OpenCode's own times."""
    theirs = oracle.messages(session_id)
    ours = messages(sqld, session_id)
    assert [m["role"] for m in ours] == [m["role"] for m in theirs]
    for mine, their in zip(ours, theirs, strict=True):
        assert mine["metadata"]["opencode_message_id"] == their["id"]
        assert mine["content"] == their["text"]
        if their["role"] == "assistant":
            expected = tokens_of(their["tokens"])
            assert expected is not None
            assert mine["model"] == MODEL_NAME
            assert mine["metadata"]["cost_usd"] == pytest.approx(their["cost"])
            assert (mine["input_tokens"], mine["output_tokens"], mine["cache_read_tokens"],
                    mine["cache_write_tokens"]) == expected.values()  # fmt: skip
            t = their["tokens"]
            assert mine["input_tokens"] == t["input"] + t["cache"]["read"] + t["cache"]["write"]
    their_tools = [p for m in theirs for p in m["tools"]]
    our_tools = {t["call_id"]: t for t in tools(sqld, session_id)}
    assert set(our_tools) == {p["callID"] for p in their_tools}
    for part in their_tools:
        mine, state = our_tools[part["callID"]], part["state"]
        assert mine["name"] == part["tool"]
        assert json.loads(mine["input"]) == state["input"]
        assert mine["status"] == state["status"]
        if state["status"] == "completed":
            assert mine["output"] == state["output"] and mine["error"] is None
        else:
            assert mine["error"] == state["error"]
        assert mine["duration_ms"] == pytest.approx(state["time"]["end"] - state["time"]["start"])
    return ours


def session_row(sqld: Sqld, session_id: str) -> dict[str, Any]:
    return by_id(sessions(sqld))[session_id]


def test_text_reply_and_a_good_and_a_failing_tool(
    opencode: OpenCodeHome, fake_api: FakeOpenAIChat, spool: Path, sqld: Sqld
) -> None:
    fake_api.script([
        turn(text("Let me look."), tool_call("bash", {"command": "echo hi", "description": "say hi"}),
             prompt_tokens=1200, cached_tokens=80),
        turn(tool_call("read", {"filePath": str(opencode.project / "missing.txt")})),
        turn(text("All done."), prompt_tokens=1500, completion_tokens=9),
    ])  # fmt: skip
    # Installed globally too: OpenCode loads both files, and each event is logged once.
    env = {"PATH": os.environ["PATH"], "HOME": str(opencode.home)}
    run_cli("hook", "opencode", "--install", "--global", env=env, check=True)
    assert (opencode.home / ".config/opencode/plugin/agentspool.js").exists()
    opencode.run("look around")
    assert fake_api.unscripted == [] and fake_api.remaining() == {}
    burst(spool, sqld)
    for query in documented_queries():
        assert sqld.query(query), query  # each example query of the docs finds this session

    oracle = opencode.oracle()
    (their,) = oracle.sessions()
    ours = session_row(sqld, their["id"])
    assert ours["agent"] == "opencode" and ours["status"] == "completed"
    assert ours["parent_id"] is None and ours["model"] == MODEL_NAME
    assert ours["metadata"]["title"] == their["title"]  # the title OpenCode gave it later
    found = assert_session_matches(sqld, oracle, their["id"])
    assert [m["role"] for m in found] == ["user", "assistant", "assistant", "assistant"]
    assert found[0]["content"] == '"look around"'  # OpenCode quotes `run`'s prompt
    assert found[2]["content"] is None  # a response that only calls a tool: no text...
    assert found[2]["metadata"]["cost_usd"] > 0 and found[2]["output_tokens"] == 20  # ...but a cost
    assert found[1]["cache_read_tokens"] == 80 and found[1]["input_tokens"] == 1200
    assert ours["cost_usd"] == pytest.approx(their["cost"])
    assert (
        ours["input_tokens"]
        == their["tokens_input"] + their["tokens_cache_read"] + their["tokens_cache_write"]
    )
    assert ours["output_tokens"] == their["tokens_output"]
    statuses = sorted(t["status"] for t in tools(sqld, their["id"]))
    assert statuses == ["completed", "error"]


def test_a_subagent_is_a_child_session_with_its_own_cost(
    opencode: OpenCodeHome, fake_api: FakeOpenAIChat, spool: Path, sqld: Sqld
) -> None:
    task = {
        "description": "sub job",
        "prompt": "SUBTASK: count to three",
        "subagent_type": "general",
    }
    fake_api.script([turn(tool_call("task", task)), turn(text("The subagent counted."))])
    fake_api.script(
        [turn(text("one two three"), prompt_tokens=300, completion_tokens=30)], when="SUBTASK"
    )
    opencode.run("delegate the counting")
    assert fake_api.unscripted == [] and fake_api.remaining() == {}
    burst(spool, sqld)

    oracle = opencode.oracle()
    parent, child = sorted(oracle.sessions(), key=lambda s: s["parent_id"] is not None)
    assert child["parent_id"] == parent["id"]
    ours = by_id(sessions(sqld))
    assert set(ours) == {parent["id"], child["id"]}
    assert ours[child["id"]]["parent_id"] == parent["id"]
    assert ours[parent["id"]]["parent_id"] is None
    for session in (parent, child):
        assert ours[session["id"]]["status"] == "completed"
        assert ours[session["id"]]["cost_usd"] == pytest.approx(session["cost"])  # its own only
        assert_session_matches(sqld, oracle, session["id"])
    child_messages = messages(sqld, child["id"])
    assert child_messages[0]["role"] == "user" and "SUBTASK" in child_messages[0]["content"]
    assert child_messages[-1]["content"] == "one two three"
    (call,) = tools(sqld, parent["id"])
    assert call["name"] == "task" and call["status"] == "completed"


def test_a_continued_session_goes_on_in_the_same_session(
    opencode: OpenCodeHome, fake_api: FakeOpenAIChat, spool: Path, sqld: Sqld
) -> None:
    fake_api.script([turn(text("First answer.")), turn(text("Second answer."))])
    opencode.run("first question")
    (first,) = opencode.oracle().sessions()
    burst(spool, sqld)
    assert session_row(sqld, first["id"])["status"] == "completed"

    opencode.run("second question", session=first["id"])
    assert fake_api.unscripted == [] and fake_api.remaining() == {}
    burst(spool, sqld)
    oracle = opencode.oracle()
    assert [s["id"] for s in oracle.sessions()] == [first["id"]]  # no new session
    found = assert_session_matches(sqld, oracle, first["id"])
    assert [m["content"] for m in found] == [
        '"first question"',
        "First answer.",
        '"second question"',
        "Second answer.",
    ]
    ours = session_row(sqld, first["id"])
    assert ours["status"] == "completed"  # the second end
    assert ours["cost_usd"] == pytest.approx(oracle.sessions()[0]["cost"])


def test_sigkill_mid_stream_ends_abandoned_with_what_was_seen(
    opencode: OpenCodeHome, fake_api: FakeOpenAIChat, spool: Path, sqld: Sqld
) -> None:
    fake_api.script([
        turn(tool_call("bash", {"command": "echo before", "description": "before"})),
        turn(text("Half an answer that never"), stall=True),
    ])  # fmt: skip
    process = opencode.start("work until killed")
    assert fake_api.stalled.wait(120), "OpenCode never reached the stalled response"
    process.kill()
    fake_api.release()
    burst(spool, sqld)

    oracle = opencode.oracle()
    (their,) = oracle.sessions()
    ours = session_row(sqld, their["id"])
    assert ours["status"] == "abandoned"
    found = messages(sqld, their["id"])
    # The prompt and the finished response with its tool call; OpenCode's database also
    # keeps the unfinished response, with no cost: it never completed, so it is not here.
    assert [m["role"] for m in found] == ["user", "assistant"]
    assert found[0]["content"] == '"work until killed"'
    unfinished = oracle.messages(their["id"])[-1]
    assert unfinished["role"] == "assistant" and not unfinished.get("time", {}).get("completed")
    (call,) = tools(sqld, their["id"])
    assert call["status"] == "completed" and call["output"] == "before\n"


def test_two_sessions_at_once(
    opencode: OpenCodeHome, fake_api: FakeOpenAIChat, spool: Path, sqld: Sqld
) -> None:
    for name in ("alpha", "beta"):
        fake_api.script(
            [turn(tool_call("bash", {"command": f"echo {name}", "description": name}),
                  stall=name == "alpha"),
             turn(text(f"{name} done"))],
            when=f"job {name}",
        )  # fmt: skip
    first = opencode.start("job alpha")
    # Alpha's first response hangs until beta is asking too: both sessions are open at
    # once. (Waiting for it also keeps the two first runs on a fresh home from racing
    # to create OpenCode's database.)
    assert fake_api.stalled.wait(120), "the first run never asked"
    second = opencode.start("job beta")
    wait_until(lambda: fake_api.completions("job beta"), 120, "the second run asking")
    fake_api.release()
    for process in (first, second):
        result = process.wait()
        assert result.returncode == 0, result.stderr
    assert fake_api.unscripted == [] and fake_api.remaining() == {}
    assert len(list((spool / "queues").iterdir())) == 2  # one queue file per OpenCode process
    burst(spool, sqld)

    oracle = opencode.oracle()
    theirs = oracle.sessions()
    assert len(theirs) == 2
    ours = by_id(sessions(sqld))
    assert set(ours) == {s["id"] for s in theirs}
    for session in theirs:
        assert ours[session["id"]]["status"] == "completed"
        found = assert_session_matches(sqld, oracle, session["id"])
        name = "alpha" if "alpha" in found[0]["content"] else "beta"
        assert found[-1]["content"] == f"{name} done"
        (call,) = tools(sqld, session["id"])
        assert json.loads(call["input"])["command"] == f"echo {name}"
