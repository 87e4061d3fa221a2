"""The Claude Agent SDK (Python), real, driving the real Claude Code CLI offline, with
one line of agentspool setup: ``logged(ClaudeAgentOptions(...))``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query

from agentspool.integrations.claude_agent_sdk import logged
from agentspool.integrations.claude_code.transcript import AssistantResponse, read_transcript
from tests.claude_cli import OFFLINE_ENV, SYSTEM_PATH, transcript_path
from tests.fakes.anthropic_api import FakeAnthropicAPI, text, tool_use, turn
from tests.integrations.common import burst, messages, sessions, tools
from tests.netns import LoopbackNamespace
from tests.sqld import Sqld


def run_sdk(options: ClaudeAgentOptions, prompt: str) -> list[Any]:
    async def collect() -> list[Any]:
        return [message async for message in query(prompt=prompt, options=options)]

    return asyncio.run(asyncio.wait_for(collect(), 180))


def test_one_line_logs_an_sdk_session_whole(
    claude_bin: Path,
    loopback: LoopbackNamespace,
    fake_api: FakeAnthropicAPI,
    spool: Path,
    sqld: Sqld,
    tmp_path: Path,
) -> None:
    # The CLI runs inside the loopback-only namespace: a wrapper the SDK starts.
    wrapper = tmp_path / "claude"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(loopback.prefix())} {claude_bin} "$@"\n')
    wrapper.chmod(0o755)
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    user_settings = json.dumps({"env": {"KEEP": "me"}})
    options = ClaudeAgentOptions(
        cli_path=str(wrapper),
        cwd=str(project),
        allowed_tools=["Bash"],
        settings=user_settings,
        env={"HOME": str(home), "PATH": SYSTEM_PATH, "ANTHROPIC_BASE_URL": fake_api.url,
             **OFFLINE_ENV},
    )  # fmt: skip
    fake_api.script([turn(text("Checking."), tool_use("Bash", {"command": "echo sdk"})),
                     turn(text("All good."))])  # fmt: skip

    logged_options = logged(options, spool=spool)  # the one line
    assert json.loads(logged_options.settings)["env"] == {"KEEP": "me"}  # kept
    result = [m for m in run_sdk(logged_options, "check it") if isinstance(m, ResultMessage)]
    assert result and not result[0].is_error
    session_id = result[0].session_id
    burst(spool, sqld)

    (session,) = sessions(sqld)
    assert (session["id"], session["agent"], session["status"]) == (
        session_id,
        "claude-code",
        "completed",
    )
    oracle = read_transcript(transcript_path(home, session_id), final=True).records
    responses = [r for r in oracle if isinstance(r, AssistantResponse)]
    found = messages(sqld, session_id)
    assert [(m["role"], m["content"]) for m in found] == [
        ("user", "check it"),
        ("assistant", "Checking."),
        ("assistant", "All good."),
    ]
    assert [m["model"] for m in found[1:]] == [r.model for r in responses]
    assert session["input_tokens"] is not None and session["output_tokens"] is not None
    (call,) = tools(sqld, session_id)
    assert (call["name"], call["status"]) == ("Bash", "completed") and "sdk" in call["output"]
