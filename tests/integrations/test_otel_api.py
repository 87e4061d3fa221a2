"""OpenTelemetry instrumentations of the real libraries against the fake OpenAI API: the
weather conversation through the official openai-v2 instrumentation (content on spans,
in log records, or nowhere; with and without a parent agent span; replies streamed or
not) and through OpenInference's openai and langchain instrumentations (with and
without their GenAI attributes beside their own) lands as one session with the same
rows (tests/integrations/common.py's oracle). Span events as the content source are in
test_otel_span_events_api.py.

The program runs the tool itself, as a hand-written loop does: with an ``execute_tool``
span around it the tool row comes from that span, without one from the tool-call turn
and the tool message answering it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentspool import Spool
from agentspool.integrations.otel import SpoolSpanProcessor, install
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integrations import common
from tests.integrations.common import (
    WEATHER_ANSWER,
    WEATHER_MODEL,
    WEATHER_QUESTION,
    WEATHER_RESULT,
    assert_weather_session,
    burst,
    messages,
    script_weather,
    sessions,
)
from tests.sqld import Sqld

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


class Traced:
    def __init__(self, spool: Path) -> None:
        self.spool = Spool(spool)
        self.tracer_provider = TracerProvider()
        self.logger_provider = LoggerProvider()
        self.processor: SpoolSpanProcessor = install(
            self.spool,
            agent="weather-bot",
            tracer_provider=self.tracer_provider,
            logger_provider=self.logger_provider,
        )
        self.tracer = self.tracer_provider.get_tracer("weather-program")

    def land(self, spool: Path, sqld: Sqld) -> None:
        assert self.spool.flush(10)
        assert self.processor.errors == 0
        burst(spool, sqld)


@pytest.fixture
def traced(spool: Path) -> Iterator[Traced]:
    setup = Traced(spool)
    try:
        yield setup
    finally:
        setup.tracer_provider.shutdown()
        setup.spool.close()


@pytest.fixture
def openai_v2(traced: Traced, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()

    def instrument(capture: str | None) -> None:
        if capture is None:
            monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
        else:
            monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
        instrumentor.instrument(
            tracer_provider=traced.tracer_provider, logger_provider=traced.logger_provider
        )

    yield instrument
    instrumentor.uninstrument()


def weather_loop(api: FakeOpenAIAPI, traced: Traced, tool_span: bool, stream: bool = False) -> str:
    """A hand-written tool loop on the openai client (``stream``: each reply streamed,
    with its usage asked for, and put together from its chunks)."""
    client = OpenAI(api_key="sk-offline", base_url=api.url, max_retries=0)
    history: list[Any] = [{"role": "user", "content": WEATHER_QUESTION}]
    while True:
        if stream:
            message = streamed_reply(client, history)
        else:
            reply = client.chat.completions.create(
                model=WEATHER_MODEL, messages=history, tools=TOOLS
            )
            message = reply.choices[0].message.model_dump(exclude_none=True)
        history.append(message)
        if not message.get("tool_calls"):
            return str(message["content"])
        for call in message["tool_calls"]:
            arguments = call["function"]["arguments"]
            if tool_span:
                with traced.tracer.start_as_current_span(
                    "execute_tool get_weather",
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "get_weather",
                        "gen_ai.tool.call.id": call["id"],
                        "gen_ai.tool.call.arguments": arguments,
                    },
                ) as span:
                    span.set_attribute("gen_ai.tool.call.result", WEATHER_RESULT)
            json.loads(arguments)
            history.append({"role": "tool", "tool_call_id": call["id"], "content": WEATHER_RESULT})


def streamed_reply(client: OpenAI, history: list[Any]) -> dict[str, Any]:
    """A streamed chat completion's message, as the caller puts it together."""
    chunks = client.chat.completions.create(
        model=WEATHER_MODEL,
        messages=history,
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(
                    piece.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] += piece.id or ""
                if piece.function is not None:
                    call["function"]["name"] += piece.function.name or ""
                    call["function"]["arguments"] += piece.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return message


def agent_span(traced: Traced, openinference: bool = False) -> AbstractContextManager[Any]:
    attributes = (
        {"openinference.span.kind": "AGENT"}
        if openinference
        else {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-bot"}
    )
    return traced.tracer.start_as_current_span("invoke_agent weather-bot", attributes=attributes)


@pytest.mark.parametrize(
    "capture, parent, tool_span, stream",
    [
        ("span_only", "agent span", True, False),
        ("span_only", "agent span", False, False),
        ("span_only", "session block", False, False),
        ("event_only", "agent span", False, False),
        ("event_only", "session block", True, False),
        ("span_only", "agent span", False, True),
        ("event_only", "agent span", False, True),
    ],
)
def test_the_official_instrumentation(
    capture: str,
    parent: str,
    tool_span: bool,
    stream: bool,
    openai_api: FakeOpenAIAPI,
    traced: Traced,
    openai_v2: Any,
    spool: Path,
    sqld: Sqld,
) -> None:
    """Content on spans (``span_only``) or in log records (``event_only``), under an agent
    span or, with no span around the calls, inside ``processor.session()``; the replies
    streamed or not."""
    openai_v2(capture)
    script_weather(openai_api)
    around = agent_span(traced) if parent == "agent span" else traced.processor.session()
    with around:
        assert weather_loop(openai_api, traced, tool_span, stream) == WEATHER_ANSWER
    assert openai_api.unscripted == []
    assert [r.stream for r in openai_api.requests] == [stream, stream]
    traced.land(spool, sqld)
    assert traced.processor.unmapped == 0
    # openai-v2 2.4b0 does not report cached tokens (gen_ai.usage.cache_read.*).
    session = assert_weather_session(sqld, cached=False)
    assert session["agent"] == "weather-bot" and session["metadata"]["source"] == "otel"


def test_no_content_says_which_setting(
    openai_api: FakeOpenAIAPI,
    traced: Traced,
    openai_v2: Any,
    spool: Path,
    sqld: Sqld,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """By default the instrumentation records no content: the session has the model and
    usage, one log line names the setting, the processor counts what it missed."""
    openai_v2(None)
    script_weather(openai_api)
    with caplog.at_level(logging.WARNING, logger="agentspool.integrations"):
        with agent_span(traced):
            weather_loop(openai_api, traced, False)
    told = [r.getMessage() for r in caplog.records if "CAPTURE_MESSAGE_CONTENT" in r.getMessage()]
    assert len(told) == 1, caplog.records
    assert traced.processor.unmapped == 2
    traced.land(spool, sqld)
    (session,) = sessions(sqld)
    assert messages(sqld, session["id"]) == []
    # No message carries them, so the version-2 columns stay empty; the session's
    # metadata keeps what the spans said.
    assert session["metadata"]["models"] == [WEATHER_MODEL]
    assert session["metadata"]["usage"]["input_tokens"] == 130
    assert session["input_tokens"] is None


@pytest.fixture
def finished(traced: Traced) -> InMemorySpanExporter:
    """Every span the program's tracer provider ends, as an exporter would get it."""
    exporter = InMemorySpanExporter()
    traced.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def openinference_genai(
    semconv: bool, monkeypatch: pytest.MonkeyPatch, finished: InMemorySpanExporter
) -> Callable[[], None]:
    """With ``semconv``, OpenInference also writes the GenAI attributes on each span
    (read when the instrumentor is set up); the check after the run: an LLM span
    carries both kinds."""
    if semconv:
        monkeypatch.setenv("OPENINFERENCE_ENABLE_GENAI_SEMCONV", "true")
    else:
        monkeypatch.delenv("OPENINFERENCE_ENABLE_GENAI_SEMCONV", raising=False)

    def check() -> None:
        llm = [
            dict(span.attributes or {})
            for span in finished.get_finished_spans()
            if (span.attributes or {}).get("openinference.span.kind") == "LLM"
        ]
        assert len(llm) == 2, llm
        for attributes in llm:
            assert "llm.input_messages.0.message.role" in attributes, attributes
            assert ("gen_ai.input.messages" in attributes) is semconv, attributes
            assert ("gen_ai.output.messages" in attributes) is semconv, attributes

    return check


@pytest.mark.parametrize(
    "parent, semconv",
    [("agent span", False), ("session block", False), ("agent span", True)],
)
def test_openinference_openai(
    parent: str,
    semconv: bool,
    openai_api: FakeOpenAIAPI,
    traced: Traced,
    finished: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    spool: Path,
    sqld: Sqld,
) -> None:
    """OpenInference's attributes mapped natively; with its GenAI attributes beside
    them (OPENINFERENCE_ENABLE_GENAI_SEMCONV) still one session, nothing twice."""
    from openinference.instrumentation.openai import OpenAIInstrumentor

    check_spans = openinference_genai(semconv, monkeypatch, finished)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=traced.tracer_provider)
    try:
        script_weather(openai_api)
        around: AbstractContextManager[Any] = (
            agent_span(traced, openinference=True)
            if parent == "agent span"
            else traced.processor.session()
        )
        with around:
            assert weather_loop(openai_api, traced, False) == WEATHER_ANSWER
    finally:
        instrumentor.uninstrument()
    check_spans()
    traced.land(spool, sqld)
    assert traced.processor.unmapped == 0
    assert_weather_session(sqld)


@pytest.mark.parametrize("semconv", [False, True])
def test_openinference_langchain(
    semconv: bool,
    openai_api: FakeOpenAIAPI,
    traced: Traced,
    finished: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    spool: Path,
    sqld: Sqld,
) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from openinference.instrumentation.langchain import LangChainInstrumentor

    get_weather = tool(common.get_weather)

    check_spans = openinference_genai(semconv, monkeypatch, finished)
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=traced.tracer_provider)
    try:
        script_weather(openai_api)
        model = ChatOpenAI(
            model=WEATHER_MODEL, base_url=openai_api.url, api_key="sk-offline",  # type: ignore[arg-type]
            max_retries=0,
        )  # fmt: skip
        agent = create_agent(model, tools=[get_weather])
        agent.invoke({"messages": [("user", WEATHER_QUESTION)]})
    finally:
        instrumentor.uninstrument()
    check_spans()
    traced.land(spool, sqld)
    assert traced.processor.unmapped == 0
    assert_weather_session(sqld)
