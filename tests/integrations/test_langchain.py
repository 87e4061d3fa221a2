"""LangChain (langchain-core 1.x, real package) -> SpoolCallbackHandler -> worker -> sqld.

Offline: langchain-core's own fake chat model replays scripted replies (tool calls
included) and real ``@tool`` tools run; an agent loop written as a RunnableLambda
drives them the way an agent does, with nested runnables inside it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from agentspool import Spool
from agentspool.integrations.langchain import SpoolCallbackHandler
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


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def flaky_forecast(days: int) -> str:
    """A forecast service that is down."""
    raise ValueError("forecast service unavailable")


TOOLS = {"get_weather": get_weather, "flaky_forecast": flaky_forecast}


def scripted_model() -> GenericFakeChatModel:
    return GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[
                        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_weather"},
                        {"name": "flaky_forecast", "args": {"days": 3}, "id": "call_forecast"},
                    ],
                    usage_metadata=USAGE,
                    response_metadata={"model_name": "fake-chat"},
                ),
                AIMessage(
                    content=ANSWER,
                    usage_metadata=USAGE,
                    response_metadata={"model_name": "fake-chat", "finish_reason": "stop"},
                ),
            ]
        )
    )


def make_agent(model: GenericFakeChatModel) -> RunnableLambda[dict[str, Any], str]:
    """A tool-calling agent loop: model, tools, model, ... until a plain answer."""
    prepare = RunnableLambda(
        lambda q: [SystemMessage("Answer briefly."), HumanMessage(q)], name="prepare"
    )

    def run_tool(call: dict[str, Any]) -> BaseMessage:
        try:
            return TOOLS[call["name"]].invoke(call)  # type: ignore[no-any-return]
        except ValueError as error:
            return ToolMessage(f"failed: {error}", tool_call_id=call["id"], status="error")

    async def arun_tool(call: dict[str, Any]) -> BaseMessage:
        try:
            return await TOOLS[call["name"]].ainvoke(call)  # type: ignore[no-any-return]
        except ValueError as error:
            return ToolMessage(f"failed: {error}", tool_call_id=call["id"], status="error")

    def loop(inputs: dict[str, Any]) -> str:
        history: list[BaseMessage] = prepare.invoke(inputs["question"])
        while True:
            reply = model.invoke(history)
            history.append(reply)
            if not reply.tool_calls:
                return str(reply.content)
            history.extend(run_tool(call) for call in reply.tool_calls)

    async def aloop(inputs: dict[str, Any]) -> str:
        history: list[BaseMessage] = await prepare.ainvoke(inputs["question"])
        while True:
            reply = await model.ainvoke(history)
            history.append(reply)
            if not reply.tool_calls:
                return str(reply.content)
            history.extend([await arun_tool(call) for call in reply.tool_calls])

    return RunnableLambda(loop, afunc=aloop, name="weather-agent")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_agent_run_lands_as_one_session(mode: str, spool: Path, sqld: Sqld) -> None:
    producer = Spool(spool)
    handler = SpoolCallbackHandler(producer, agent="weather-bot")
    config: RunnableConfig = {"callbacks": [handler]}
    agent = make_agent(scripted_model())
    if mode == "sync":
        answer = agent.invoke({"question": QUESTION}, config=config)
    else:
        answer = asyncio.run(agent.ainvoke({"question": QUESTION}, config=config))
    assert answer == ANSWER

    def broken(_: Any) -> str:
        raise RuntimeError("the agent crashed")

    with pytest.raises(RuntimeError):
        RunnableLambda(broken, name="broken-agent").invoke("hi", config=config)
    assert producer.flush(10) and handler.errors == 0
    producer.close()
    burst(spool, sqld)

    ok, failed = completed_and_failed(sqld)
    assert ok["agent"] == "weather-bot" and ok["status"] == "completed"
    assert ok["metadata"]["source"] == "langchain"
    assert ok["metadata"]["run_name"] == "weather-agent"
    assert ok["metadata"]["models"] == ["fake-chat"]
    assert ok["metadata"]["usage"] == {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30}
    assert (ok["model"], ok["input_tokens"], ok["output_tokens"]) == ("fake-chat", 20, 10)
    assert failed["status"] == "error" and "the agent crashed" in failed["error"]

    transcript = messages(sqld, ok["id"])
    assert_once_each(transcript)
    texts = [(m["role"], m["content"]) for m in transcript]
    assert texts == [
        ("system", "Answer briefly."),
        ("user", QUESTION),
        ("assistant", None),  # the tool calls, in metadata
        ("tool", "sunny in Paris"),
        ("tool", "failed: forecast service unavailable"),
        ("assistant", ANSWER),
    ]
    calls = transcript[2]["metadata"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_weather", "call_forecast"]
    assert transcript[2]["metadata"]["usage"] == USAGE
    assert transcript[-1]["metadata"]["model"] == "fake-chat"
    assert transcript[-1]["metadata"]["finish_reason"] == "stop"

    weather, forecast = sorted(tools(sqld, ok["id"]), key=lambda t: t["name"] != "get_weather")
    assert weather["call_id"] == "call_weather" and weather["status"] == "completed"
    assert json.loads(weather["input"]) == {"city": "Paris"}
    assert weather["output"] == "sunny in Paris"
    assert forecast["call_id"] == "call_forecast" and forecast["status"] == "error"
    assert forecast["error"] == "ValueError: forecast service unavailable"
    for call in (weather, forecast):
        assert call["duration_ms"] is not None and call["duration_ms"] >= 0


def test_a_tool_invoked_without_a_tool_call_is_keyed_by_its_run(spool: Path, sqld: Sqld) -> None:
    """A tool run on its own is a top-level run: a session of one tool execution,
    keyed by the run id, with the raw return value as output."""
    producer = Spool(spool)
    handler = SpoolCallbackHandler(producer)
    assert get_weather.invoke({"city": "Oslo"}, config={"callbacks": [handler]}) == "sunny in Oslo"
    producer.close()
    burst(spool, sqld)
    (session,) = sessions(sqld)
    assert session["agent"] == "get_weather" and session["status"] == "completed"
    (call,) = tools(sqld, session["id"])
    assert call["call_id"] == session["id"] and call["output"] == "sunny in Oslo"


class Notes(BaseRetriever):
    """A retriever over two fixed notes; a query of "down" fails."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if query == "down":
            raise ConnectionError("the index is down")
        return [Document("Paris is sunny."), Document("Oslo is cold.")]


def test_retriever_runs_end_their_sessions(spool: Path, sqld: Sqld) -> None:
    """A retriever run nests like a chain: inside a chain it opens nothing of its own,
    and on its own it is a session that ends completed, or error when it raises."""
    producer = Spool(spool)
    handler = SpoolCallbackHandler(producer)
    config: RunnableConfig = {"callbacks": [handler]}
    notes = Notes()
    chain = RunnableLambda(lambda q: len(notes.invoke(q)), name="lookup")
    assert chain.invoke("weather", config=config) == 2
    assert len(notes.invoke("weather", config=config)) == 2
    with pytest.raises(ConnectionError):
        notes.invoke("down", config=config)
    assert producer.flush(10) and handler.errors == 0
    producer.close()
    burst(spool, sqld)
    found = sorted((s["agent"], s["status"], s["error"]) for s in sessions(sqld))
    assert found == [
        ("Notes", "completed", None),
        ("Notes", "error", "ConnectionError: the index is down"),
        ("lookup", "completed", None),
    ]


def test_callbacks_never_raise_into_langchain(spool: Path) -> None:
    producer = Spool(spool)
    producer.close()
    handler = SpoolCallbackHandler(producer)
    model = scripted_model()
    # A closed spool: emits are dropped and counted by the producer, nothing raises.
    assert model.invoke("hi", config={"callbacks": [handler]}).tool_calls
    handler.on_llm_end(None, run_id=None)  # type: ignore[arg-type]
    assert handler.errors == 0  # an unknown run is ignored, not an error
    handler.on_chat_model_start({}, None, run_id=None)  # type: ignore[arg-type]
    assert handler.errors == 1


def test_a_run_left_running_past_its_top_level_run_opens_nothing(spool: Path) -> None:
    """A child still running when the top-level run ended reports later: it must not
    open the ended session again (a second session start would collide with it)."""
    from uuid import uuid4

    from tests.producer.test_producer import only_queue

    producer = Spool(spool)
    handler = SpoolCallbackHandler(producer, agent="a")
    root, child, late = uuid4(), uuid4(), uuid4()
    handler.on_chain_start({}, {}, run_id=root, name="root")
    handler.on_chain_start({}, {}, run_id=child, parent_run_id=root, name="child")
    handler.on_chain_end({}, run_id=root)
    handler.on_tool_start({}, "x", run_id=late, parent_run_id=child, name="t", inputs={"x": 1})
    handler.on_tool_end("done", run_id=late)
    handler.on_chain_end({}, run_id=child)
    assert handler.errors == 0
    producer.close()
    _, _, events = only_queue(spool)
    assert [e["type"] for e in events] == ["session_start", "session_end"]
