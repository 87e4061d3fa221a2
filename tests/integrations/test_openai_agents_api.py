"""The OpenAI Agents SDK against the fake OpenAI API over HTTP: the weather conversation
through the Responses model and the chat-completions model, each streamed and not,
lands as one session with the same rows (tests/integrations/common.py's oracle).

The SDK 0.24 chat model, streamed, puts the Responses-API object it assembled in the
generation span's output, and reports zero usage unless ``include_usage`` is set:
both are mapped (the object's items) or said (a log line naming the setting)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner, function_tool, set_trace_processors
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from agentspool import Spool
from agentspool.integrations.openai_agents import SpoolTracingProcessor
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integrations import common
from tests.integrations.common import (
    WEATHER_ANSWER,
    WEATHER_MODEL,
    WEATHER_QUESTION,
    assert_weather_session,
    burst,
    land_weather_session,
    messages,
    script_weather,
    sessions,
)
from tests.sqld import Sqld

get_weather = function_tool(common.get_weather)


@pytest.fixture
def processor(spool: Path) -> Iterator[SpoolTracingProcessor]:
    producer = Spool(spool)
    installed = SpoolTracingProcessor(producer)
    set_trace_processors([installed])  # also: nothing exported to the OpenAI API
    try:
        yield installed
    finally:
        set_trace_processors([])
        producer.close()


def run(api: FakeOpenAIAPI, kind: str, streamed: bool, settings: ModelSettings) -> Any:
    client = AsyncOpenAI(api_key="sk-offline", base_url=api.url, max_retries=0)
    model: Any
    if kind == "responses":
        model = OpenAIResponsesModel(WEATHER_MODEL, client)
    else:
        model = OpenAIChatCompletionsModel(WEATHER_MODEL, client)
    agent = Agent(
        name="weather-bot",
        instructions="Answer briefly.",
        model=model,
        tools=[get_weather],
        model_settings=settings,
    )

    async def go() -> Any:
        if not streamed:
            return (await Runner.run(agent, WEATHER_QUESTION)).final_output
        result = Runner.run_streamed(agent, WEATHER_QUESTION)
        async for _ in result.stream_events():
            pass
        return result.final_output

    return asyncio.run(go())


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("kind", ["responses", "chat_completions"])
def test_the_weather_conversation_lands_once(
    kind: str,
    streamed: bool,
    openai_api: FakeOpenAIAPI,
    processor: SpoolTracingProcessor,
    spool: Path,
    sqld: Sqld,
) -> None:
    script_weather(openai_api)
    # A streamed chat completion reports usage only when asked (as the real API does).
    settings = ModelSettings(include_usage=True) if kind == "chat_completions" else ModelSettings()
    assert run(openai_api, kind, streamed, settings) == WEATHER_ANSWER
    assert [r.stream for r in openai_api.requests] == [streamed, streamed]
    land_weather_session(processor, openai_api, spool, sqld, "openai-agents")


def test_streamed_chat_without_usage_says_so(
    openai_api: FakeOpenAIAPI,
    processor: SpoolTracingProcessor,
    spool: Path,
    sqld: Sqld,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without ``include_usage`` the SDK puts zeros in the span: the counts are left
    unknown (NULL, not 0), and one log line names the setting."""
    script_weather(openai_api)
    with caplog.at_level(logging.WARNING, logger="agentspool.integrations"):
        assert run(openai_api, "chat_completions", True, ModelSettings()) == WEATHER_ANSWER
    told = [r.getMessage() for r in caplog.records if "include_usage" in r.getMessage()]
    assert len(told) == 1, caplog.records
    assert processor.spool.flush(10)
    burst(spool, sqld)
    session = assert_weather_session(sqld, usage=False)
    assert session["input_tokens"] is None and session["output_tokens"] is None
    replies = [m for m in messages(sqld, session["id"]) if m["role"] == "assistant"]
    assert [m["input_tokens"] for m in replies] == [None, None]
    assert len(sessions(sqld)) == 1
