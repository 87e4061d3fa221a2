"""Shared by the integration tests: a worker burst into a real sqld, rows back as dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import run_cli, worker_env
from tests.sqld import Sqld

# The scripted agent's conversation, the same under every integration.
QUESTION = "What's the weather in Paris?"
ANSWER = "It is sunny in Paris."
USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


def burst(spool: Path, sqld: Sqld) -> None:
    """Drain the spool into sqld with `agentspool worker run --burst`, as CI would."""
    env = worker_env(spool, sqld.url)
    result = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env, timeout=180)
    assert result.returncode == 0, result.stderr


def _dicts(names: str, found: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(names.split(), row, strict=True)) for row in found]


def _json(text: Any) -> Any:
    return json.loads(text) if text else None


SESSION_FIELDS = (
    "id agent status error metadata parent_id model"
    " input_tokens output_tokens cache_read_tokens cache_write_tokens cost_usd"
)


def sessions(sqld: Sqld) -> list[dict[str, Any]]:
    found = _dicts(
        SESSION_FIELDS,
        sqld.query(
            "SELECT id, agent, status, error, metadata, parent_id, model, input_tokens,"
            " output_tokens, cache_read_tokens, cache_write_tokens, cost_usd"
            " FROM sessions ORDER BY started_at"
        ),
    )
    for row in found:
        row["metadata"] = _json(row["metadata"])
    return found


def completed_and_failed(sqld: Sqld) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two sessions of a test that ran one good and one failing run, told apart
    by status (two runs may start within the same millisecond)."""
    found = sessions(sqld)
    assert sorted(s["status"] for s in found) == ["completed", "error"], found
    ok = next(s for s in found if s["status"] == "completed")
    failed = next(s for s in found if s["status"] == "error")
    return ok, failed


MESSAGE_FIELDS = (
    "role content metadata model input_tokens output_tokens cache_read_tokens cache_write_tokens"
)


def messages(sqld: Sqld, session_id: str) -> list[dict[str, Any]]:
    found = _dicts(
        MESSAGE_FIELDS,
        sqld.query(
            "SELECT role, content, metadata, model, input_tokens, output_tokens,"
            " cache_read_tokens, cache_write_tokens FROM messages WHERE session_id = ?"
            " ORDER BY seq",
            (session_id,),
        ),
    )
    for row in found:
        row["metadata"] = _json(row["metadata"]) or {}
    return found


def tools(sqld: Sqld, session_id: str) -> list[dict[str, Any]]:
    return _dicts(
        "call_id name input output status error started_at ended_at duration_ms",
        sqld.query(
            "SELECT call_id, name, input, output, status, error, started_at, ended_at,"
            " duration_ms FROM tool_executions WHERE session_id = ? ORDER BY started_at, call_id",
            (session_id,),
        ),
    )


def assert_once_each(found: list[dict[str, Any]]) -> None:
    """Nothing twice: no two messages of a session are the same message."""
    keys = [json.dumps([m["role"], m["content"], m["metadata"]], sort_keys=True) for m in found]
    assert len(keys) == len(set(keys)), found


def documented_queries() -> list[str]:
    """The example queries of docs/INTEGRATIONS.md's OpenAI Agents, LangChain and OTel
    sections (``:run_id`` as ``?``)."""
    from tests.sqld import REPO

    text = (REPO / "docs" / "INTEGRATIONS.md").read_text()
    ours = text[text.index("\n## OpenAI Agents SDK, LangChain") :]
    blocks = ours.split("```sql\n")[1:]
    return [block.split("```")[0].replace(":run_id", "?") for block in blocks]
