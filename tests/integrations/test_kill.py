"""`kill -9` of an agent in the middle of a tool call, under each integration: what
reached the spool survives, and the session lands as `abandoned` with the question
and the model's tool request. (An OTel BatchSpanProcessor would have lost all of it:
the spans were still in memory, and the root span never ended.)"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_python, wait_until
from tests.integrations.common import QUESTION, burst, messages, sessions, tools
from tests.producer.test_producer import LineReader, kill9, queue_dirs, read_queue
from tests.sqld import Sqld

CHILDREN = {
    "openai_agents": """
        import asyncio, time
        from agents import Agent, Runner, function_tool, set_trace_processors
        from agents.models.openai_responses import OpenAIResponsesModel
        from agentspool import Spool
        from agentspool.integrations.openai_agents import SpoolTracingProcessor
        from tests.integrations.test_openai_agents import (
            RESPONSES_TURNS, client, flaky_forecast, responses_api,
        )

        set_trace_processors([SpoolTracingProcessor(Spool(SPOOL))])

        @function_tool
        def get_weather(city: str) -> str:
            '''The weather in a city.'''
            print("IN_TOOL", flush=True)
            time.sleep(120)  # killed here
            return "never"

        model = OpenAIResponsesModel("gpt-fake", client(responses_api(RESPONSES_TURNS)))
        agent = Agent(name="weather-bot", model=model, tools=[get_weather, flaky_forecast])
        asyncio.run(Runner.run(agent, QUESTION))
    """,
    "langchain": """
        import time
        from langchain_core.tools import tool
        from agentspool import Spool
        from agentspool.integrations.langchain import SpoolCallbackHandler
        from tests.integrations import test_langchain as lc

        @tool
        def get_weather(city: str) -> str:
            '''The weather in a city.'''
            print("IN_TOOL", flush=True)
            time.sleep(120)  # killed here
            return "never"

        lc.TOOLS["get_weather"] = get_weather
        handler = SpoolCallbackHandler(Spool(SPOOL), agent="weather-bot")
        lc.make_agent(lc.scripted_model()).invoke(
            {"question": QUESTION}, config={"callbacks": [handler]}
        )
    """,
    "otel": """
        import time
        from opentelemetry.sdk.trace import TracerProvider
        from agentspool import Spool
        from agentspool.integrations.otel import SpoolSpanProcessor
        from tests.integrations.test_otel import CALLS, USER, chat, invoke_agent

        provider = TracerProvider()
        provider.add_span_processor(SpoolSpanProcessor(Spool(SPOOL)))
        tracer = provider.get_tracer("t")
        with invoke_agent(tracer, "weather-bot"):
            chat(tracer, [USER], [CALLS], (10, 5))
            with tracer.start_as_current_span(
                "execute_tool get_weather",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"},
            ):
                print("IN_TOOL", flush=True)
                time.sleep(120)  # killed here
    """,
}


def spooled_events(spool: Path) -> list[dict[str, Any]]:
    found = []
    for queue_dir in queue_dirs(spool):
        found += read_queue(queue_dir)[1]
    return found


@pytest.mark.parametrize("integration", sorted(CHILDREN))
def test_kill9_mid_tool_keeps_what_reached_the_spool(
    integration: str, spool: Path, sqld: Sqld
) -> None:
    code = f"QUESTION = {QUESTION!r}\n" + textwrap.dedent(CHILDREN[integration])
    proc = run_python(code, spool)
    try:
        LineReader(proc).expect("IN_TOOL", timeout=60)
        # The model's reply (the tool request) was emitted before the tool ran; the
        # writer thread commits it within milliseconds. Kill once it is on disk.
        wait_until(
            lambda: any(
                e["type"] == "message" and (e.get("metadata") or {}).get("tool_calls")
                for e in spooled_events(spool)
            ),
            timeout=30,
            what="the tool request in the queue file",
        )
    finally:
        stderr = kill9(proc)
    assert "Traceback" not in stderr, stderr
    burst(spool, sqld)

    (session,) = sessions(sqld)
    assert session["agent"] == "weather-bot" and session["status"] == "abandoned"
    transcript = messages(sqld, session["id"])
    users = [m["content"] for m in transcript if m["role"] == "user"]
    assert users == [QUESTION]
    requested = [c["name"] for m in transcript for c in m["metadata"].get("tool_calls", [])]
    assert "get_weather" in requested
    calls = tools(sqld, session["id"])
    if integration == "langchain":  # a tool's start is its own callback: it was recorded
        assert [(c["name"], c["status"]) for c in calls] == [("get_weather", "error")]
        assert calls[0]["error"] == "the session was abandoned before the tool finished"
        assert json.loads(calls[0]["input"]) == {"city": "Paris"}
    else:  # a span is reported when it ends: the killed call is not there (the other
        # tool of the same turn, run alongside, may have ended before the kill)
        assert "get_weather" not in [c["name"] for c in calls]
