"""Export (issue 24): JSON Lines in the documented agentspool.session/1 shape and in
OpenAI's chat fine-tuning shape, from the spool and from a real sqld (the same
lines), streamed with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.cli.lifecycle_data import ingest, session_lines, sync
from tests.helpers import AGENTSPOOL, finish, run_cli, run_python, worker_env
from tests.sqld import Sqld


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def exported(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = run_cli("export", *args, env=env)
    assert result.returncode == 0, result.stderr
    return lines(result.stdout)


def spool_files(spool: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in spool.rglob("*")}


def some_sessions(spool: Path, tmp_path: Path) -> None:
    events = (
        session_lines("s-old", agent="coder", ended_days_ago=30, messages=4, tools=2)
        + session_lines("s-planner", agent="planner", ended_days_ago=1, messages=3, tools=1)
        + session_lines("s-new", agent="coder", ended_days_ago=0, messages=2, tools=0)
    )
    failed = session_lines("s-failed", ended_days_ago=0.5, messages=1, tools=1, end=False)
    failed.append({"v": 1, "type": "session_end", "session_id": "s-failed",
                   "seq": len(failed), "status": "error", "error": "boom"})  # fmt: skip
    ingest(spool, tmp_path, events + failed)


def test_export_jsonl_shape_and_filters(spool: Path, tmp_path: Path) -> None:
    some_sessions(spool, tmp_path)
    run_cli("worker", "run", "--burst", env=worker_env(spool), check=True, timeout=300)
    env = worker_env(spool)
    before = spool_files(spool)
    every = exported(env)
    assert spool_files(spool) == before  # read-only: nothing created or changed
    assert [s["session"]["id"] for s in every] == ["s-old", "s-planner", "s-failed", "s-new"]
    old = every[0]
    assert list(old) == ["format", "session", "messages", "tool_executions"]
    assert old["format"] == "agentspool.session/1"
    assert old["session"]["agent"] == "coder" and old["session"]["status"] == "completed"
    assert json.loads(old["session"]["metadata"])["task"] == "s-old"
    assert [m["seq"] for m in old["messages"]] == [1, 4, 7, 8]
    assert old["messages"][0]["role"] == "user"
    assert old["messages"][0]["content"] == "message 0 of s-old"
    assert [t["call_id"] for t in old["tool_executions"]] == ["call-0", "call-1"]
    first_tool = old["tool_executions"][0]
    assert json.loads(first_tool["input"]) == {"q": 0}
    assert json.loads(first_tool["output"]) == {"hits": 0}
    assert first_tool["status"] == "completed" and "session_id" not in first_tool

    assert [s["session"]["id"] for s in exported(env, "--agent", "planner")] == ["s-planner"]
    assert [s["session"]["id"] for s in exported(env, "--status", "error")] == ["s-failed"]
    recent = exported(env, "--since", "7d")
    assert {s["session"]["id"] for s in recent} == {"s-planner", "s-new", "s-failed"}
    out = tmp_path / "out.jsonl"
    to_file = run_cli("export", "-o", str(out), env=env, check=True)
    assert to_file.stdout == "" and "exported 4 session(s)" in to_file.stderr
    assert lines(out.read_text()) == every
    bad = run_cli("export", "--since", "7", env=env)
    assert bad.returncode == 2 and "7d" in bad.stderr


def test_remote_export_equals_local_export(spool: Path, tmp_path: Path, sqld: Sqld) -> None:
    some_sessions(spool, tmp_path)
    sync(spool, sqld.url)
    env = worker_env(spool, sqld.url)
    for fmt in ("jsonl", "openai"):
        local = exported(env, "--format", fmt)
        remote = exported(env, "--format", fmt, "--remote")
        assert len(local) == 4, fmt
        for a, b in zip(local, remote, strict=True):
            assert a == b, fmt
    assert exported(env, "--remote", "--agent", "coder", "--status", "error") == exported(
        env, "--agent", "coder", "--status", "error"
    )


def test_openai_shape_validates_against_the_openai_types(spool: Path, tmp_path: Path) -> None:
    pydantic = pytest.importorskip("pydantic")
    chat = pytest.importorskip("openai.types.chat")
    some_sessions(spool, tmp_path)
    ingest(spool, tmp_path, session_lines("s-empty", messages=0, tools=0), name="empty")
    run_cli("worker", "run", "--burst", env=worker_env(spool), check=True, timeout=300)
    result = run_cli("export", "--format", "openai", env=worker_env(spool), check=True)
    assert "1 session(s) without a message to keep were left out" in result.stderr
    examples = lines(result.stdout)
    assert len(examples) == 4  # the empty session is no example
    adapter = pydantic.TypeAdapter(list[chat.ChatCompletionMessageParam])
    for example in examples:
        assert list(example) == ["messages"]
        adapter.validate_python(example["messages"], strict=True)
    old = examples[0]["messages"]
    # user, then the tool call joins no assistant message before it: one of its own
    assert [m["role"] for m in old] == ["user", "assistant", "tool", "assistant", "tool",
                                        "user", "assistant"]  # fmt: skip
    call = old[1]["tool_calls"][0]
    assert call == {"id": "call-0", "type": "function",
                    "function": {"name": "search", "arguments": '{"q": 0}'}}  # fmt: skip
    assert old[2] == {"role": "tool", "tool_call_id": "call-0", "content": '{"hits": 0}'}
    assert old[3]["content"] == "message 1 of s-old" and "tool_calls" in old[3]
    # every tool message answers a call made before it
    for example in examples:
        called: set[str] = set()
        for message in example["messages"]:
            called |= {c["id"] for c in message.get("tool_calls", [])}
            if message["role"] == "tool":
                assert message["tool_call_id"] in called


MEASURE = """
import resource, subprocess, sys
result = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
assert result.returncode == 0, result.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""

BIG_SESSION = """
from agentspool import Spool
spool = Spool(SPOOL)
s = spool.session(agent="big", session_id="big-1")
text = "x" * 1000
for i in range(100_000):
    s.message("assistant", f"{i} {text}")
    if i % 10_000 == 0:
        call = s.tool_started("search", input={"i": i})
        s.tool_finished(call, output=text)
assert s.end(timeout=300)
"""


def test_a_100000_message_session_is_exported_with_bounded_memory(
    spool: Path, tmp_path: Path
) -> None:
    """100,000 messages of 1 KB (100 MB of text) exported from the replica and from the
    embedded database: the exporting process stays far below the session's size."""
    finish(run_python(BIG_SESSION, spool, timeout=600), timeout=600)
    env = worker_env(spool)
    run_cli("worker", "run", "--burst", env=env, check=True, timeout=600)
    out = tmp_path / "big.jsonl"
    for source in ([], ["--remote"]):
        peak = int(subprocess.run(
            [sys.executable, "-c", textwrap.dedent(MEASURE), AGENTSPOOL, "export", *source,
             "-o", str(out)], env=env, capture_output=True, text=True, timeout=600, check=True,
        ).stdout)  # fmt: skip
        assert peak < 90 << 20, f"export {source} peaked at {peak >> 20} MiB"
        assert out.stat().st_size > 100_000_000
    with out.open() as f:
        line = f.readline()
    assert line.startswith('{"format":"agentspool.session/1","session":{"id":"big-1"')
    assert line.endswith("]}\n") and line.count('"role":"assistant"') == 100_000
