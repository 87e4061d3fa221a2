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


# ---- the weather conversation, driven through the real libraries against the fake
# OpenAI API (tests/fakes/openai_api.py): every way of running it must land the same rows.

WEATHER_QUESTION = "What's the weather in Paris?"
WEATHER_RESULT = "sunny, 21C"
WEATHER_ANSWER = "It is sunny in Paris, 21C."
WEATHER_CALL_ID = "call_weather"
WEATHER_MODEL = "gpt-fake"
# Each model call's usage as the fake reports it: (input incl. cached, output, cached).
WEATHER_USAGE = ((50, 7, 10), (80, 9, 0))


def get_weather(city: str) -> str:
    """The weather in a city."""
    return WEATHER_RESULT  # each library's tool decorator wraps this one function


def script_weather(api: Any, when: str | None = None) -> None:
    """The model asks for get_weather(city="Paris"), then answers."""
    from tests.fakes.openai_api import answer, call, calls

    (i1, o1, c1), (i2, o2, c2) = WEATHER_USAGE
    api.script(
        [
            calls(call("get_weather", {"city": "Paris"}, id=WEATHER_CALL_ID),
                  input_tokens=i1, output_tokens=o1, cached_tokens=c1),
            answer(WEATHER_ANSWER, input_tokens=i2, output_tokens=o2, cached_tokens=c2),
        ],
        when=when,
    )  # fmt: skip


def assert_weather_session(
    sqld: Sqld, *, usage: bool = True, cached: bool = True
) -> dict[str, Any]:
    """The one session of the weather conversation: the question, the tool-call turn,
    the tool's result and the answer, in order and once each (after any system
    message); the tool execution with its call id, times and output; the model and
    token usage in the version-2 columns (``cached=False``: the source does not report
    cached tokens, which must then be unknown, not 0). Returns the session row."""
    found = sessions(sqld)
    assert len(found) == 1, found
    (session,) = found
    assert session["status"] == "completed", session
    transcript = messages(sqld, session["id"])
    assert_once_each(transcript)
    talk = [m for m in transcript if m["role"] != "system"]
    assert [(m["role"], m["content"]) for m in talk] == [
        ("user", WEATHER_QUESTION),
        ("assistant", None),
        ("tool", WEATHER_RESULT),
        ("assistant", WEATHER_ANSWER),
    ], transcript
    question, asked, result, reply = talk
    assert asked["metadata"]["tool_calls"] == [
        {"id": WEATHER_CALL_ID, "name": "get_weather", "arguments": {"city": "Paris"}}
    ], asked
    assert result["metadata"]["tool_call_id"] == WEATHER_CALL_ID, result
    assert (asked["model"], reply["model"]) == (WEATHER_MODEL, WEATHER_MODEL), talk
    if usage:
        for turn, (inputs, outputs, read) in zip((asked, reply), WEATHER_USAGE, strict=True):
            assert (turn["input_tokens"], turn["output_tokens"]) == (inputs, outputs), turn
            assert turn["cache_read_tokens"] == (read if cached else None), turn
        assert session["model"] == WEATHER_MODEL, session
        assert (session["input_tokens"], session["output_tokens"]) == (130, 16), session
        assert session["cache_read_tokens"] == (10 if cached else None), session
    (tool,) = tools(sqld, session["id"])
    assert (tool["call_id"], tool["name"], tool["status"]) == (
        WEATHER_CALL_ID, "get_weather", "completed"
    ), tool  # fmt: skip
    assert json.loads(tool["input"]) == {"city": "Paris"}, tool
    assert tool["output"] == WEATHER_RESULT, tool
    assert tool["error"] is None and tool["started_at"] <= tool["ended_at"], tool
    assert tool["duration_ms"] is not None and tool["duration_ms"] >= 0, tool
    return session


def land_weather_session(
    integration: Any, api: Any, spool: Path, sqld: Sqld, source: str
) -> dict[str, Any]:
    """The weather conversation, run to its end (``api`` has no turn left over and got
    no unscripted request), handed to the spool by ``integration`` (a callback handler
    or trace processor: its ``spool``, ``errors``, ``unmapped``) with nothing lost, lands
    in sqld as the one weather session of the agent "weather-bot" from ``source``."""
    assert api.unscripted == [] and api.remaining() == {}
    assert integration.spool.flush(10)
    assert (integration.errors, integration.unmapped) == (0, 0)
    burst(spool, sqld)
    session = assert_weather_session(sqld)
    assert session["agent"] == "weather-bot"
    assert session["metadata"]["source"] == source
    return session
