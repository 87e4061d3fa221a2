"""OpenTelemetry GenAI (opentelemetry-sdk 1.x, real package) -> SpoolSpanProcessor ->
worker -> sqld.

Offline: real TracerProvider spans built the way GenAI instrumentations build them
(an ``invoke_agent`` root, ``chat`` spans repeating the history in
``gen_ai.input.messages``, ``execute_tool`` spans, one failing), plus a trace on the
older span-event conventions and a plain HTTP trace that must be ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from agentspool import Spool
from agentspool.integrations.otel import SpoolSpanProcessor
from tests.integrations.common import (
    ANSWER,
    QUESTION,
    assert_once_each,
    burst,
    completed_and_failed,
    documented_queries,
    messages,
    sessions,
    tools,
)
from tests.sqld import Sqld

SYSTEM = [{"type": "text", "content": "Answer briefly."}]
USER = {"role": "user", "parts": [{"type": "text", "content": QUESTION}]}
CALLS = {
    "role": "assistant",
    "parts": [
        {"type": "tool_call", "id": "call_weather", "name": "get_weather",
         "arguments": {"city": "Paris"}},
        {"type": "tool_call", "id": "call_forecast", "name": "flaky_forecast",
         "arguments": {"days": 3}},
    ],
    "finish_reason": "tool_call",
}  # fmt: skip
RESULTS = {
    "role": "tool",
    "parts": [
        {"type": "tool_call_response", "id": "call_weather", "response": "sunny in Paris"},
        {"type": "tool_call_response", "id": "call_forecast", "response": "failed"},
    ],
}
REPLY = {
    "role": "assistant",
    "parts": [{"type": "text", "content": ANSWER}],
    "finish_reason": "stop",
}


@pytest.fixture
def traced(spool: Path) -> Iterator[tuple[Tracer, SpoolSpanProcessor]]:
    producer = Spool(spool)
    processor = SpoolSpanProcessor(producer)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        yield provider.get_tracer("genai-instrumentation-under-test"), processor
    finally:
        provider.shutdown()
        producer.close()


def chat(tracer: Tracer, inputs: list[Any], outputs: list[Any], tokens: tuple[int, int]) -> None:
    with tracer.start_as_current_span(
        "chat gpt-fake",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-fake",
        },
    ) as span:
        # Instrumentations set the response's attributes when it arrives.
        span.set_attribute("gen_ai.system_instructions", json.dumps(SYSTEM))
        span.set_attribute("gen_ai.input.messages", json.dumps(inputs))
        span.set_attribute("gen_ai.output.messages", json.dumps(outputs))
        span.set_attribute("gen_ai.response.model", "gpt-fake-2026")
        span.set_attribute("gen_ai.usage.input_tokens", tokens[0])
        span.set_attribute("gen_ai.usage.output_tokens", tokens[1])
        # The HTTP call underneath: not GenAI, ignored.
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as http:
            http.set_attribute("http.request.method", "POST")


def execute_tool(
    tracer: Tracer, name: str, call_id: str, arguments: dict[str, Any], result: str | None
) -> None:
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": json.dumps(arguments),
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if result is None:
            error = ValueError("forecast service unavailable")
            span.record_exception(error)
            span.set_attribute("error.type", "ValueError")
            span.set_status(Status(StatusCode.ERROR, str(error)))
        else:
            span.set_attribute("gen_ai.tool.call.result", result)


def invoke_agent(tracer: Tracer, name: str) -> Any:
    return tracer.start_as_current_span(
        f"invoke_agent {name}",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": name,
            "gen_ai.provider.name": "openai",
            "gen_ai.conversation.id": "conv-42",
        },
        record_exception=False,
    )


def test_genai_traces_land_as_sessions(
    traced: tuple[Tracer, SpoolSpanProcessor], spool: Path, sqld: Sqld
) -> None:
    tracer, processor = traced
    with invoke_agent(tracer, "weather-bot"):
        chat(tracer, [USER], [CALLS], (10, 5))
        execute_tool(tracer, "get_weather", "call_weather", {"city": "Paris"}, "sunny in Paris")
        execute_tool(tracer, "flaky_forecast", "call_forecast", {"days": 3}, None)
        chat(tracer, [USER, CALLS, RESULTS], [REPLY], (30, 7))  # the whole history again

    # A trace whose root span fails.
    with invoke_agent(tracer, "weather-bot") as root:
        chat(
            tracer, [{"role": "user", "parts": [{"type": "text", "content": "Rain?"}]}], [], (3, 0)
        )
        root.set_status(Status(StatusCode.ERROR, "model quota exceeded"))

    # A plain HTTP server trace: no GenAI attributes, no session.
    with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER) as span:
        span.set_attribute("http.response.status_code", 200)

    assert processor.force_flush(10_000)
    assert processor.errors == 0
    burst(spool, sqld)

    ok, failed = completed_and_failed(sqld)
    assert ok["agent"] == "weather-bot" and ok["status"] == "completed"
    assert len(ok["id"]) == 32  # the trace id
    meta = ok["metadata"]
    assert meta["source"] == "otel" and meta["conversation_id"] == "conv-42"
    assert meta["provider"] == "openai" and meta["models"] == ["gpt-fake-2026"]
    assert meta["usage"] == {"input_tokens": 40, "output_tokens": 12, "total_tokens": 52}
    assert (ok["model"], ok["input_tokens"], ok["output_tokens"]) == ("gpt-fake-2026", 40, 12)
    assert failed["agent"] == "weather-bot"
    assert failed["status"] == "error" and failed["error"] == "model quota exceeded"

    transcript = messages(sqld, ok["id"])
    assert_once_each(transcript)
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("system", "Answer briefly."),
        ("user", QUESTION),
        ("assistant", None),
        ("tool", "sunny in Paris"),
        ("tool", "failed"),
        ("assistant", ANSWER),
    ]
    calls = transcript[2]["metadata"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_weather", "call_forecast"]
    assert transcript[2]["metadata"]["finish_reason"] == "tool_call"
    assert transcript[-1]["metadata"]["usage"]["output_tokens"] == 7

    weather, forecast = sorted(tools(sqld, ok["id"]), key=lambda t: t["name"] != "get_weather")
    assert weather["call_id"] == "call_weather" and weather["status"] == "completed"
    assert weather["output"] == "sunny in Paris"
    assert json.loads(weather["input"]) == {"city": "Paris"}
    assert forecast["call_id"] == "call_forecast" and forecast["status"] == "error"
    assert forecast["error"] == "ValueError: forecast service unavailable"
    for call in (weather, forecast):
        assert call["started_at"] <= call["ended_at"]
        assert call["duration_ms"] is not None and call["duration_ms"] >= 0

    assert [m["content"] for m in messages(sqld, failed["id"])] == ["Answer briefly.", "Rain?"]

    # The documented example queries run, and the OTel one sees these sessions.
    queries = documented_queries()
    assert len(queries) == 3
    for query in queries:
        found = sqld.query(query, (ok["id"],) if "?" in query else ())
        if "'otel'" in query:
            assert found == [["conv-42", 2, 52 + 3]]  # both traces


def test_older_conventions_in_span_events(
    traced: tuple[Tracer, SpoolSpanProcessor], spool: Path, sqld: Sqld
) -> None:
    """Instrumentations on older conventions: messages as span events, the usage as
    prompt/completion tokens, no invoke_agent span (the root's name is the agent)."""
    tracer, processor = traced
    with tracer.start_as_current_span("support-flow"):
        for turn, answer in ((1, "Hello!"), (2, "Still sunny.")):
            with tracer.start_as_current_span(
                "chat gpt-old",
                attributes={"gen_ai.system": "openai", "gen_ai.request.model": "gpt-old"},
            ) as span:
                span.add_event("gen_ai.system.message", {"content": "Be kind."})
                span.add_event("gen_ai.user.message", {"content": "Hi"})
                if turn == 2:
                    span.add_event("gen_ai.assistant.message", {"content": "Hello!"})
                    span.add_event("gen_ai.user.message", {"content": "Weather?"})
                span.add_event(
                    "gen_ai.choice",
                    {"index": 0, "finish_reason": "stop",
                     "message": json.dumps({"role": "assistant", "content": answer})},
                )  # fmt: skip
                span.set_attribute("gen_ai.usage.prompt_tokens", 4)
                span.set_attribute("gen_ai.usage.completion_tokens", 2)
    assert processor.force_flush(10_000) and processor.errors == 0
    burst(spool, sqld)

    (session,) = sessions(sqld)
    assert session["agent"] == "support-flow" and session["status"] == "completed"
    assert session["metadata"]["usage"] == {
        "input_tokens": 8,
        "output_tokens": 4,
        "total_tokens": 12,
    }
    assert [(m["role"], m["content"]) for m in messages(sqld, session["id"])] == [
        ("system", "Be kind."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Weather?"),
        ("assistant", "Still sunny."),
    ]


def test_callbacks_never_raise_into_the_program(spool: Path) -> None:
    producer = Spool(spool)
    producer.close()
    processor = SpoolSpanProcessor(producer)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with invoke_agent(tracer, "closed-spool"):  # a closed spool drops, never raises
        chat(tracer, [USER], [REPLY], (1, 1))
    processor.on_end(object())  # type: ignore[arg-type]
    processor.on_start(None)  # type: ignore[arg-type]
    assert processor.errors == 2
    assert processor.force_flush(100) is False  # the spool is closed: nothing confirmed
    provider.shutdown()


def test_a_trace_continued_from_another_process_is_its_own_session(
    traced: tuple[Tracer, SpoolSpanProcessor], spool: Path, sqld: Sqld
) -> None:
    """A request that carries a remote parent (W3C traceparent): this process's part
    of the trace is one session, named by the trace id and its local root span."""
    from opentelemetry import trace as trace_api
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    tracer, processor = traced
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = trace_api.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("POST /chat", context=context, kind=SpanKind.SERVER) as root:
        local_root = root.get_span_context().span_id
        with invoke_agent(tracer, "remote-bot"):
            chat(tracer, [USER], [REPLY], (2, 3))
    assert processor.force_flush(10_000) and processor.errors == 0
    burst(spool, sqld)
    (session,) = sessions(sqld)
    assert session["id"] == f"0af7651916cd43dd8448eb211c80319c-{local_root:016x}"
    assert session["agent"] == "remote-bot" and session["status"] == "completed"
    assert session["metadata"]["root_span"] == "POST /chat"
    assert [m["content"] for m in messages(sqld, session["id"])] == [
        "Answer briefly.",
        QUESTION,
        ANSWER,
    ]
