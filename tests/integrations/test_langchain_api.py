"""LangChain (langchain-openai's ChatOpenAI) against the fake OpenAI API over HTTP: the
weather conversation through chat completions and the Responses API, streamed and not,
under ``create_agent``, as a runnable chain, and as a hand-written tool loop, lands as
one session with the same rows (tests/integrations/common.py's oracle)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from agentspool import Spool
from agentspool.integrations.langchain import SpoolCallbackHandler
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integrations import common
from tests.integrations.common import (
    WEATHER_ANSWER,
    WEATHER_MODEL,
    WEATHER_QUESTION,
    WEATHER_RESULT,
    assert_weather_session,
    burst,
    land_weather_session,
    script_weather,
    sessions,
)
from tests.sqld import Sqld

get_weather = tool(common.get_weather)


@pytest.fixture
def handler(spool: Path) -> Iterator[SpoolCallbackHandler]:
    producer = Spool(spool)
    try:
        yield SpoolCallbackHandler(producer, agent="weather-bot")
    finally:
        producer.close()


def chat_model(api: FakeOpenAIAPI, responses: bool, streamed: bool) -> ChatOpenAI:
    # A streamed chat completion reports usage only when asked (stream_usage=True).
    return ChatOpenAI(
        model=WEATHER_MODEL,
        base_url=api.url,
        api_key="sk-offline",  # type: ignore[arg-type]
        max_retries=0,
        use_responses_api=responses,
        streaming=streamed,
        stream_usage=True,
    )


def land(handler: SpoolCallbackHandler, api: FakeOpenAIAPI, spool: Path, sqld: Sqld) -> None:
    land_weather_session(handler, api, spool, sqld, "langchain")


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_create_agent(
    api: str,
    streamed: bool,
    openai_api: FakeOpenAIAPI,
    handler: SpoolCallbackHandler,
    spool: Path,
    sqld: Sqld,
) -> None:
    script_weather(openai_api)
    agent = create_agent(chat_model(openai_api, api == "responses", streamed), tools=[get_weather])
    inputs = {"messages": [("user", WEATHER_QUESTION)]}
    config: Any = {"callbacks": [handler]}
    if streamed:
        chunks = list(agent.stream(inputs, config, stream_mode="messages"))
        assert chunks
    else:
        reply = agent.invoke(inputs, config)["messages"][-1]
        assert reply.text == WEATHER_ANSWER
    assert [r.stream for r in openai_api.requests] == [streamed, streamed]
    land(handler, openai_api, spool, sqld)


def test_a_runnable_chain(
    openai_api: FakeOpenAIAPI, handler: SpoolCallbackHandler, spool: Path, sqld: Sqld
) -> None:
    """prompt | model with tools, its tool calls run, the model again: one chain."""
    script_weather(openai_api)
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    model = chat_model(openai_api, False, False).bind_tools([get_weather])

    def with_results(state: dict[str, Any]) -> list[BaseMessage]:
        reply = state["reply"]
        results = [get_weather.invoke(call) for call in reply.tool_calls]
        return [*prompt.invoke(state).to_messages(), reply, *results]

    chain = (
        RunnablePassthrough.assign(reply=prompt | model)
        | RunnableLambda(with_results, name="run_tools")
        | model
    )
    reply = chain.invoke({"question": WEATHER_QUESTION}, {"callbacks": [handler]})
    assert reply.text == WEATHER_ANSWER
    land(handler, openai_api, spool, sqld)


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_a_hand_written_loop_in_one_session(
    api: str,
    openai_api: FakeOpenAIAPI,
    handler: SpoolCallbackHandler,
    spool: Path,
    sqld: Sqld,
) -> None:
    """A loop that calls the model with the handler each time and runs the tool itself
    (a plain function, its answer a hand-made ToolMessage): inside
    ``handler.session()`` it is one session, and the tool execution comes from the
    tool-call turn and the tool message that answers it."""
    script_weather(openai_api)
    model = chat_model(openai_api, api == "responses", False).bind_tools([get_weather])
    config: Any = {"callbacks": [handler]}

    def weather(city: str) -> str:
        return WEATHER_RESULT

    with handler.session("weather-bot"):
        history: list[BaseMessage] = [HumanMessage(WEATHER_QUESTION)]
        while True:
            reply = model.invoke(history, config)
            history.append(reply)
            if not reply.tool_calls:
                break
            for call in reply.tool_calls:
                history.append(ToolMessage(weather(**call["args"]), tool_call_id=call["id"]))
    assert reply.text == WEATHER_ANSWER
    land(handler, openai_api, spool, sqld)


def test_a_loop_without_the_block_is_a_session_per_call(
    openai_api: FakeOpenAIAPI, handler: SpoolCallbackHandler, spool: Path, sqld: Sqld
) -> None:
    """What ``session()`` is for: each model call of a loop is a top-level run."""
    script_weather(openai_api)
    model = chat_model(openai_api, False, False).bind_tools([get_weather])
    history: list[BaseMessage] = [HumanMessage(WEATHER_QUESTION)]
    reply = model.invoke(history, {"callbacks": [handler]})
    history += [reply, get_weather.invoke(reply.tool_calls[0])]
    model.invoke(history, {"callbacks": [handler]})
    assert handler.spool.flush(10)
    burst(spool, sqld)
    assert len(sessions(sqld)) == 2


def test_streamed_without_usage_says_so(
    openai_api: FakeOpenAIAPI,
    handler: SpoolCallbackHandler,
    spool: Path,
    sqld: Sqld,
    caplog: pytest.LogCaptureFixture,
) -> None:
    script_weather(openai_api)
    model = ChatOpenAI(
        model=WEATHER_MODEL, base_url=openai_api.url, api_key="sk-offline",  # type: ignore[arg-type]
        max_retries=0, streaming=True,
    )  # fmt: skip
    agent = create_agent(model, tools=[get_weather])
    with caplog.at_level(logging.WARNING, logger="agentspool.integrations"):
        agent.invoke({"messages": [("user", WEATHER_QUESTION)]}, {"callbacks": [handler]})
    told = [r.getMessage() for r in caplog.records if "stream_usage=True" in r.getMessage()]
    assert len(told) == 1, caplog.records
    assert handler.spool.flush(10)
    burst(spool, sqld)
    session = assert_weather_session(sqld, usage=False)
    assert session["input_tokens"] is None
