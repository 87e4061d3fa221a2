"""Content as span events, from a real instrumentation: Azure AI Inference's tracing
(azure-ai-inference 1.0.0b9 with azure-core-tracing-opentelemetry 1.0.0b13) records
each model call as a ``chat`` span whose events are ``gen_ai.{user,assistant,tool}.message``
and ``gen_ai.choice``, each with its body as JSON in ``gen_ai.event.content``. The
weather conversation, driven by its ChatCompletionsClient against the fake OpenAI API
(same wire format), lands as one session with tests/integrations/common.py's rows.

Azure's spans come from the global tracer provider, which OpenTelemetry lets a process
set once: it is set here once, with a processor that hands each span to the running
test's processor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from agentspool import Spool
from agentspool.integrations.otel import SpoolSpanProcessor
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integrations.common import (
    WEATHER_ANSWER,
    WEATHER_MODEL,
    WEATHER_QUESTION,
    WEATHER_RESULT,
    assert_weather_session,
    burst,
    script_weather,
)
from tests.sqld import Sqld


class _ToTheRunningTest(SpanProcessor):
    target: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.target is not None:
            self.target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.target is not None:
            self.target.on_end(span)


_FORWARD = _ToTheRunningTest()


def _global_provider() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # not set yet in this process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if _FORWARD not in provider._active_span_processor._span_processors:
        provider.add_span_processor(_FORWARD)


@pytest.fixture
def azure_traced(spool: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SpoolSpanProcessor]:
    from azure.ai.inference.tracing import AIInferenceInstrumentor
    from azure.core.settings import settings

    _global_provider()
    monkeypatch.setenv("AZURE_TRACING_GEN_AI_CONTENT_RECORDING_ENABLED", "true")
    previous = settings.tracing_implementation()
    settings.tracing_implementation = "opentelemetry"
    producer = Spool(spool)
    processor = SpoolSpanProcessor(producer, agent="weather-bot")
    _FORWARD.target = processor
    instrumentor = AIInferenceInstrumentor()
    instrumentor.instrument()
    try:
        yield processor
    finally:
        instrumentor.uninstrument()
        _FORWARD.target = None
        settings.tracing_implementation = previous
        producer.close()


def weather_loop(api: FakeOpenAIAPI) -> str:
    """A hand-written tool loop on azure-ai-inference's ChatCompletionsClient."""
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import (
        AssistantMessage,
        ChatCompletionsToolDefinition,
        FunctionDefinition,
        ToolMessage,
        UserMessage,
    )
    from azure.core.credentials import AzureKeyCredential

    client = ChatCompletionsClient(endpoint=api.url, credential=AzureKeyCredential("sk-offline"))
    tool = ChatCompletionsToolDefinition(
        function=FunctionDefinition(
            name="get_weather",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        )
    )
    history: list[Any] = [UserMessage(WEATHER_QUESTION)]
    while True:
        reply = client.complete(messages=history, tools=[tool], model=WEATHER_MODEL)
        message = reply.choices[0].message
        history.append(AssistantMessage(content=message.content, tool_calls=message.tool_calls))
        if not message.tool_calls:
            return str(message.content)
        for call in message.tool_calls:
            history.append(ToolMessage(WEATHER_RESULT, tool_call_id=call.id))


@pytest.mark.parametrize("parent", ["agent span", "session block"])
def test_azure_ai_inference_span_events(
    parent: str,
    openai_api: FakeOpenAIAPI,
    azure_traced: SpoolSpanProcessor,
    spool: Path,
    sqld: Sqld,
) -> None:
    script_weather(openai_api)
    if parent == "agent span":
        tracer = trace.get_tracer("weather-program")
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-bot"}
        with tracer.start_as_current_span("invoke_agent weather-bot", attributes=attributes):
            assert weather_loop(openai_api) == WEATHER_ANSWER
    else:
        with azure_traced.session():
            assert weather_loop(openai_api) == WEATHER_ANSWER
    assert openai_api.unscripted == [] and len(openai_api.requests) == 2
    assert azure_traced.spool.flush(10)
    assert (azure_traced.errors, azure_traced.unmapped) == (0, 0)
    burst(spool, sqld)
    # azure-ai-inference 1.0.0b9 does not report cached tokens.
    session = assert_weather_session(sqld, cached=False)
    assert session["agent"] == "weather-bot" and session["metadata"]["source"] == "otel"
