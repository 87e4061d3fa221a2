"""Row 14's OpenTelemetry paths fed by real instrumentations: OpenInference's openai
instrumentation (its LLM spans' flattened attributes) and the official openai-v2
instrumentation with ``event_only`` content (each model call's messages in a log
record, joined to its span at the span's end).

Each workload runs in a fresh producer process: the openai client, instrumented, over
an in-process HTTP transport that answers chat completions (the first call of a run
asks for two tools, the second answers); the program runs the tools itself, without
spans, under an agent span, as a hand-written loop does. The processors are set up by
``install()``; their callbacks are timed on the instance as in bench/integrations.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

from bench.integrations import _MODEL_CHECK, Timer, _result

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    for name in ("get_weather", "get_time")
]
RESULTS = {"get_weather": "sunny", "get_time": "noon"}


def _client() -> Any:
    import httpx
    from openai import OpenAI

    turn = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        turn["n"] += 1
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if turn["n"] % 2:
            message["tool_calls"] = [
                {"id": f"call_{turn['n']}_{name}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps({"city": "Paris"})}}
                for name in RESULTS
            ]  # fmt: skip
            finish = "tool_calls"
        else:
            message["content"] = "Sunny, noon."
            finish = "stop"
        body = {
            "id": f"chatcmpl_{turn['n']}", "object": "chat.completion", "created": 0,
            "model": "gpt-fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }  # fmt: skip
        return httpx.Response(200, json=body)

    return OpenAI(
        api_key="sk-offline",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handle)),
        max_retries=0,
    )


def _loop(client: Any) -> None:
    """One run: ask, run the tools the model asked for, ask again."""
    history: list[Any] = [{"role": "user", "content": "Weather and time in Paris?"}]
    while True:
        reply = client.chat.completions.create(model="gpt-fake", messages=history, tools=TOOLS)
        message = reply.choices[0].message
        history.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return
        for call in message.tool_calls:
            history.append(
                {"role": "tool", "tool_call_id": call.id, "content": RESULTS[call.function.name]}
            )


def _workload(
    spool: str, runs: int, instrumentor: Any, agent_attributes: dict[str, Any], model_check: Any
) -> dict[str, Any]:
    from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from agentspool import Spool
    from agentspool.integrations.otel import install

    class NoLogs(LogRecordProcessor):
        def on_emit(self, log_record: Any) -> None: ...
        def emit(self, log_record: Any) -> None: ...
        def shutdown(self) -> None: ...
        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    producer = Spool(spool)
    tracer_provider, logger_provider = TracerProvider(), LoggerProvider()
    processor = install(producer, tracer_provider=tracer_provider, logger_provider=logger_provider)
    _MODEL_CHECK[:] = [model_check]
    timer = Timer(processor, ["on_start", "on_end"], {"on_end"})
    log_records = Timer(processor.log_records, ["on_emit"], set())
    nothing, no_logs = SpanProcessor(), NoLogs()
    floor = Timer(nothing, ["on_start", "on_end"], set())
    tracer_provider.add_span_processor(nothing)
    logger_provider.add_log_record_processor(no_logs)
    instrumentor.instrument(tracer_provider=tracer_provider, logger_provider=logger_provider)
    tracer = tracer_provider.get_tracer("bench")
    client = _client()
    try:
        for _ in range(runs):
            with tracer.start_as_current_span(
                "invoke_agent bench-bot", attributes=agent_attributes
            ):
                _loop(client)
    finally:
        instrumentor.uninstrument()
    tracer_provider.shutdown()
    emitted = producer.stats().emitted
    producer.close()
    result = _result(timer, floor, runs, emitted)
    if log_records.all:
        # The log record's hand-off is a callback on the agent's thread too.
        timer.all += log_records.all
        result = _result(timer, floor, runs, emitted)
        result["log_records"] = _result(log_records, floor, runs, emitted)["all"]
    return result


def openinference_workload(spool: str, runs: int) -> dict[str, Any]:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    return _workload(
        spool,
        runs,
        OpenAIInstrumentor(),
        {"openinference.span.kind": "AGENT"},
        lambda args: (args[0].attributes or {}).get("openinference.span.kind") == "LLM",
    )


def otel_event_only_workload(spool: str, runs: int) -> dict[str, Any]:
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "event_only"
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    return _workload(
        spool,
        runs,
        OpenAIInstrumentor(),
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench-bot"},
        lambda args: (args[0].attributes or {}).get("gen_ai.operation.name") == "chat",
    )
