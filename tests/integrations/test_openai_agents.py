"""The OpenAI Agents SDK (0.24, real package) -> SpoolTracingProcessor -> worker -> sqld.

Offline: the SDK's own model classes (the Responses model, its default, and the
chat-completions model) talk to an AsyncOpenAI client whose HTTP transport is a
scripted in-process fake, so the SDK builds its spans exactly as it does against
the API, with no network and no API key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import Agent, Runner, function_tool, set_trace_processors, trace
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from agentspool import Spool
from agentspool.integrations.openai_agents import SpoolTracingProcessor
from tests.integrations.common import (
    ANSWER,
    QUESTION,
    USAGE,
    assert_once_each,
    burst,
    completed_and_failed,
    messages,
    sessions,
    tools,
)
from tests.sqld import Sqld


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def tell_the_model(context: Any, error: Exception) -> str:
    return f"failed: {error}"


# With the SDK's default error function the SDK redacts a tool's error in the trace
# ("Error details are redacted."); a tool's own error function keeps it.
@function_tool(failure_error_function=tell_the_model)
def flaky_forecast(days: int) -> str:
    """A forecast service that is down."""
    raise ValueError("forecast service unavailable")


def responses_api(turns: list[list[dict[str, Any]]]) -> Callable[[httpx.Request], httpx.Response]:
    """A fake Responses API: each request gets the next scripted output."""
    script = iter(turns)

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/responses")
        output = next(script)
        return httpx.Response(
            200,
            json={
                "id": f"resp_{len(output)}",
                "object": "response",
                "created_at": 0,
                "model": "gpt-fake",
                "status": "completed",
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    **USAGE,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            },
        )

    return handle


def chat_api(turns: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """A fake chat-completions API: each request gets the next scripted message."""
    script = iter(turns)

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/chat/completions")
        message = next(script)
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-fake",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        )

    return handle


def failing_api(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, json={"error": {"message": "the model is down", "type": "server"}})


def client(handler: Callable[[httpx.Request], httpx.Response]) -> AsyncOpenAI:
    transport = httpx.MockTransport(handler)
    return AsyncOpenAI(
        api_key="sk-offline",
        base_url="http://127.0.0.1:9/v1",  # never reached: the transport answers
        http_client=httpx.AsyncClient(transport=transport),
        max_retries=0,
    )


ARGS_WEATHER = json.dumps({"city": "Paris"})
ARGS_FORECAST = json.dumps({"days": 3})

RESPONSES_TURNS = [
    [
        {"type": "function_call", "id": "fc_1", "call_id": "call_weather",
         "name": "get_weather", "arguments": ARGS_WEATHER, "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_forecast",
         "name": "flaky_forecast", "arguments": ARGS_FORECAST, "status": "completed"},
    ],
    [
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]},
    ],
]  # fmt: skip

CHAT_TURNS = [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_weather", "type": "function",
         "function": {"name": "get_weather", "arguments": ARGS_WEATHER}},
        {"id": "call_forecast", "type": "function",
         "function": {"name": "flaky_forecast", "arguments": ARGS_FORECAST}},
    ]},
    {"role": "assistant", "content": ANSWER},
]  # fmt: skip


@pytest.fixture
def processor(spool: Path) -> Iterator[SpoolTracingProcessor]:
    producer = Spool(spool)
    installed = SpoolTracingProcessor(producer)
    set_trace_processors([installed])
    try:
        yield installed
    finally:
        set_trace_processors([])  # no exporter to the OpenAI API at exit either
        producer.close()


def run_agent(model: Any, question: str = QUESTION) -> Any:
    agent = Agent(
        name="weather-bot",
        instructions="Answer briefly.",
        model=model,
        tools=[get_weather, flaky_forecast],
    )
    return asyncio.run(Runner.run(agent, question))


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_a_run_lands_as_one_session(
    api: str, processor: SpoolTracingProcessor, spool: Path, sqld: Sqld
) -> None:
    if api == "responses":
        model: Any = OpenAIResponsesModel("gpt-fake", client(responses_api(RESPONSES_TURNS)))
    else:
        model = OpenAIChatCompletionsModel("gpt-fake", client(chat_api(CHAT_TURNS)))
    result = run_agent(model)
    assert result.final_output == ANSWER

    # A second run whose model fails: its own session, ended `error`.
    failing = OpenAIResponsesModel("gpt-fake", client(failing_api))
    with pytest.raises(Exception, match="the model is down"):
        run_agent(failing, "Will it rain?")
    assert processor.spool.flush(10)
    assert processor.errors == 0
    burst(spool, sqld)

    ok, failed = completed_and_failed(sqld)
    assert ok["agent"] == "weather-bot" and ok["status"] == "completed"
    assert ok["id"].startswith("trace_")
    assert ok["metadata"]["source"] == "openai-agents"
    assert ok["metadata"]["workflow"] == "Agent workflow"
    assert ok["metadata"]["models"] == ["gpt-fake"]
    # The SDK reports cached input tokens (0 here): the usage mapping keeps them.
    assert ok["metadata"]["usage"] == {
        "input_tokens": 20, "output_tokens": 10, "cache_read_tokens": 0,
        "cache_write_tokens": 0, "total_tokens": 30,
    }  # fmt: skip
    # Schema version 2: the model and the token counts in the session's columns.
    assert (ok["model"], ok["input_tokens"], ok["output_tokens"], ok["cache_read_tokens"]) == (
        "gpt-fake", 20, 10, 0
    )  # fmt: skip
    assert failed["agent"] == "weather-bot" and failed["status"] == "error"
    assert "the model is down" in failed["error"], failed["error"]

    transcript = messages(sqld, ok["id"])
    assert_once_each(transcript)
    texts = [(m["role"], m["content"]) for m in transcript]
    # The chat model also sees the instructions as a system message; Responses does not.
    if api == "chat_completions":
        assert texts[0] == ("system", "Answer briefly.")
        texts = texts[1:]
    assert texts[0] == ("user", QUESTION) and texts[-1] == ("assistant", ANSWER)
    assert [r for r, _ in texts].count("user") == 1
    requested = [call["id"] for m in transcript for call in m["metadata"].get("tool_calls", [])]
    assert requested == ["call_weather", "call_forecast"]
    results = [m for m in transcript if m["role"] == "tool"]
    assert [m["metadata"]["tool_call_id"] for m in results] == ["call_weather", "call_forecast"]
    answer = transcript[-1]["metadata"]
    assert answer["model"] == "gpt-fake" and answer["usage"]["output_tokens"] == 5

    weather, forecast = sorted(tools(sqld, ok["id"]), key=lambda t: t["name"] != "get_weather")
    assert weather["call_id"] == "call_weather" and weather["status"] == "completed"
    assert json.loads(weather["input"]) == {"city": "Paris"}
    assert weather["output"] == "sunny in Paris"
    assert forecast["call_id"] == "call_forecast" and forecast["status"] == "error"
    assert "forecast service unavailable" in forecast["error"]
    assert forecast["output"] == "failed: forecast service unavailable"
    for call in (weather, forecast):
        assert call["started_at"] <= call["ended_at"]
        assert call["duration_ms"] is not None and call["duration_ms"] >= 0

    # The SDK records a model call's input only when the call succeeded.
    assert messages(sqld, failed["id"]) == []


def test_a_custom_trace_with_two_runs_is_one_session(
    processor: SpoolTracingProcessor, spool: Path, sqld: Sqld
) -> None:
    """`with trace(...)` around two runs: one session, the second run's history
    repeating the first's messages logged once."""
    turns = [
        [{"type": "message", "id": "m1", "role": "assistant", "status": "completed",
          "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]}],
        [{"type": "message", "id": "m2", "role": "assistant", "status": "completed",
          "content": [{"type": "output_text", "text": "Still sunny.", "annotations": []}]}],
    ]  # fmt: skip
    model = OpenAIResponsesModel("gpt-fake", client(responses_api(turns)))
    agent = Agent(name="greeter", model=model)

    async def conversation() -> None:
        with trace("Support chat", group_id="thread-7", metadata={"customer": "c-1"}):
            first = await Runner.run(agent, "Hi")
            await Runner.run(agent, [*first.to_input_list(), {"role": "user", "content": "Hi"}])

    asyncio.run(conversation())
    assert processor.spool.flush(10)
    burst(spool, sqld)

    (session,) = sessions(sqld)
    assert session["agent"] == "greeter" and session["status"] == "completed"
    assert session["metadata"]["workflow"] == "Support chat"
    assert session["metadata"]["group_id"] == "thread-7"
    assert session["metadata"]["trace_metadata"] == {"customer": "c-1"}
    texts = [(m["role"], m["content"]) for m in messages(sqld, session["id"])]
    # The same question asked twice is two messages; the repeated history is not.
    assert texts == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Hi"),
        ("assistant", "Still sunny."),
    ]


def test_callbacks_never_raise_into_the_sdk(spool: Path) -> None:
    """A closed spool, spans the processor has never seen, broken span data: the SDK
    sees nothing raised, and the processor counts what failed."""
    producer = Spool(spool)
    producer.close()
    processor = SpoolTracingProcessor(producer)

    class Broken:
        trace_id = property(lambda self: 1 / 0)

    processor.on_span_end(Broken())  # type: ignore[arg-type]
    processor.on_trace_end(Broken())  # type: ignore[arg-type]
    processor.shutdown()  # after the agent closed its spool: the SDK's atexit order
    processor.force_flush()
    assert processor.errors == 2


def test_a_span_after_its_traces_end_opens_nothing(
    processor: SpoolTracingProcessor, spool: Path, sqld: Sqld
) -> None:
    """Work left running past the end of its trace reports a span later: it must not
    open the session again (a second session start would collide with the first)."""
    from agents import custom_span, function_span

    with trace("short workflow") as workflow:
        with custom_span("agent-ish"):
            pass
    late = function_span("late_tool", input="{}", parent=workflow)
    late.start()
    late.finish()
    assert processor.spool.flush(10) and processor.errors == 0
    burst(spool, sqld)
    (session,) = sessions(sqld)
    assert session["agent"] == "short workflow" and session["status"] == "completed"
    assert tools(sqld, session["id"]) == []
