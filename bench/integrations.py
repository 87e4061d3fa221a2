"""Row 14: what an integration costs the agent's thread, per framework callback.

Each integration runs in a fresh producer process under its real framework, driving
the same offline workloads as the tests (tests/integrations/): a two-turn tool-using
agent run (model call, two tools, model call) repeated. Every callback the framework
makes into the integration is timed with ``perf_counter_ns()`` around the call,
wrapping the integration's bound methods on the instance (the framework calls them
through that attribute). Floor: the same wrapper around a callback that does nothing
(the wrapper's own cost). The model-call row is the callback that converts and
dedupes the whole history (a response/generation span's end, ``on_chat_model_start``,
a ``chat`` span's end).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench.common import Config, Ref, Row, summarize

GROUP = "integrations"
US = 1e-3  # ns -> µs


def run(cfg: Config) -> list[Row]:
    from bench.common import Child

    runs = cfg.size(300, 10)
    rows: list[Row] = []
    for func, name, model_callback in (
        ("openai_agents_workload", "OpenAI Agents SDK", "model span end"),
        ("langchain_workload", "LangChain", "on_chat_model_start"),
        ("otel_workload", "OpenTelemetry GenAI", "chat span end"),
        # Fed by the real instrumentations (bench/integrations_instrumented.py).
        ("openinference_workload", "OpenInference (openai)", "LLM span end"),
        ("otel_event_only_workload", "OpenTelemetry GenAI, event_only", "chat span end"),
    ):
        module = "integrations" if func in globals() else "integrations_instrumented"
        r = Child(f"{module}:{func}", spool=str(cfg.workdir(f"integ-{func}")), runs=runs).result(
            timeout=300
        )
        ours, floor, model = r["all"], r["floor"], r["model"]
        rows.append(
            Row(
                GROUP,
                f"integrations.{func.removesuffix('_workload')}.p50",
                f"14. {name}: cost per callback on the agent's thread, median",
                ours["p50"],
                "us",
                floor=Ref(floor["p50"], "the same wrapper, a no-op callback"),
                note=(
                    f"{ours['n']:,} callbacks of {runs:,} two-turn tool-using runs "
                    f"({r['per_run']:.0f} per run, emitting {r['events_per_run']:.0f} events);"
                    f" p99 {ours['p99']:.1f} µs"
                ),
            )
        )
        rows.append(
            Row(
                GROUP,
                f"integrations.{func.removesuffix('_workload')}.model.p50",
                f"14. {name}: the model-call callback ({model_callback}), median",
                model["p50"],
                "us",
                note=(
                    f"{model['n']:,} calls; p99 {model['p99']:.1f} µs; it converts the"
                    " call's whole history and emits the new messages (a Session.message"
                    " each, whose hand-off wakes the writer thread)"
                    + (
                        f"; the log record's hand-off (on_emit): median"
                        f" {r['log_records']['p50']:.1f} µs of {r['log_records']['n']:,}"
                        if "log_records" in r
                        else ""
                    )
                ),
            )
        )
    return rows


# ---- timing -------------------------------------------------------------------


class Timer:
    """Wraps an object's callback methods on the instance and records their cost."""

    def __init__(self, target: Any, names: list[str], model: set[str]) -> None:
        self.all: list[int] = []
        self.model: list[int] = []
        for name in names:
            setattr(target, name, self._timed(getattr(target, name), name in model))

    def _timed(self, method: Callable[..., Any], is_model: bool) -> Callable[..., Any]:
        record = self.all.append
        record_model = self.model.append

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            result = method(*args, **kwargs)
            elapsed = time.perf_counter_ns() - t0
            record(elapsed)
            if is_model and _is_model_call(args):
                record_model(elapsed)
            return result

        return timed


_MODEL_CHECK: list[Callable[[tuple[Any, ...]], bool]] = []


def _is_model_call(args: tuple[Any, ...]) -> bool:
    return all(check(args) for check in _MODEL_CHECK)


def _result(timer: Timer, floor: Timer, runs: int, emitted: int) -> dict[str, Any]:
    return {
        "events_per_run": emitted / max(1, runs),
        "all": summarize(timer.all, US),
        "model": summarize(timer.model, US),
        "floor": summarize(floor.all, US),
        "per_run": len(timer.all) / max(1, runs),
    }


# ---- OpenAI Agents SDK -------------------------------------------------------


def openai_agents_workload(spool: str, runs: int) -> dict[str, Any]:
    import asyncio

    import httpx
    from agents import Agent, Runner, TracingProcessor, function_tool, set_trace_processors
    from agents.models.openai_responses import OpenAIResponsesModel
    from agents.tracing.span_data import ResponseSpanData
    from openai import AsyncOpenAI

    from agentspool import Spool
    from agentspool.integrations.openai_agents import SpoolTracingProcessor

    class Nothing(TracingProcessor):
        def on_trace_start(self, trace: Any) -> None: ...
        def on_trace_end(self, trace: Any) -> None: ...
        def on_span_start(self, span: Any) -> None: ...
        def on_span_end(self, span: Any) -> None: ...
        def shutdown(self) -> None: ...
        def force_flush(self) -> None: ...

    names = ["on_trace_start", "on_trace_end", "on_span_start", "on_span_end"]
    _MODEL_CHECK[:] = [lambda args: isinstance(args[0].span_data, ResponseSpanData)]
    producer = Spool(spool)
    processor = SpoolTracingProcessor(producer)
    timer = Timer(processor, names, {"on_span_end"})
    nothing = Nothing()
    floor = Timer(nothing, names, set())
    set_trace_processors([processor, nothing])

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    @function_tool
    def get_time(city: str) -> str:
        """The time in a city."""
        return "noon"

    turn = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        turn["n"] += 1
        if turn["n"] % 2:
            output: list[dict[str, Any]] = [
                {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{turn['n']}_{n}",
                 "name": name, "arguments": json.dumps({"city": "Paris"}), "status": "completed"}
                for n, name in enumerate(("get_weather", "get_time"))
            ]  # fmt: skip
        else:
            output = [
                {"type": "message", "id": "m", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Sunny, noon.", "annotations": []}]}
            ]  # fmt: skip
        body = {
            "id": f"resp_{turn['n']}", "object": "response", "created_at": 0,
            "model": "gpt-fake", "status": "completed", "output": output,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }  # fmt: skip
        return httpx.Response(200, json=body)

    client = AsyncOpenAI(
        api_key="sk-offline",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
        max_retries=0,
    )
    agent = Agent(
        name="bench-bot",
        instructions="Be brief.",
        model=OpenAIResponsesModel("gpt-fake", client),
        tools=[get_weather, get_time],
    )

    async def many() -> None:
        for _ in range(runs):
            await Runner.run(agent, "Weather and time in Paris?")

    asyncio.run(many())
    set_trace_processors([])
    emitted = producer.stats().emitted
    producer.close()
    return _result(timer, floor, runs, emitted)


# ---- LangChain --------------------------------------------------------------


def langchain_workload(spool: str, runs: int) -> dict[str, Any]:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool

    from agentspool import Spool
    from agentspool.integrations.langchain import SpoolCallbackHandler

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    @tool
    def get_time(city: str) -> str:
        """The time in a city."""
        return "noon"

    tools = {"get_weather": get_weather, "get_time": get_time}

    def replies() -> Any:
        n = 0
        while True:
            n += 1
            yield AIMessage(
                content="",
                tool_calls=[
                    {"name": name, "args": {"city": "Paris"}, "id": f"call_{n}_{name}"}
                    for name in tools
                ],
                usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
            )
            yield AIMessage(content="Sunny, noon.")

    model = GenericFakeChatModel(messages=replies())

    def loop(question: str) -> str:
        history: list[BaseMessage] = [SystemMessage("Be brief."), HumanMessage(question)]
        while True:
            reply = model.invoke(history)
            history.append(reply)
            if not reply.tool_calls:
                return str(reply.content)
            history.extend(tools[call["name"]].invoke(call) for call in reply.tool_calls)

    agent = RunnableLambda(loop, name="bench-agent")
    names = [
        "on_chain_start", "on_chain_end", "on_chat_model_start", "on_llm_end",
        "on_tool_start", "on_tool_end",
    ]  # fmt: skip
    _MODEL_CHECK[:] = []
    producer = Spool(spool)
    handler = SpoolCallbackHandler(producer, agent="bench-bot")
    timer = Timer(handler, names, {"on_chat_model_start"})

    class Nothing(BaseCallbackHandler):
        run_inline = True

    nothing = Nothing()
    for name in names:
        setattr(nothing, name, lambda *args, **kwargs: None)
    floor = Timer(nothing, names, set())
    for _ in range(runs):
        agent.invoke("Weather and time in Paris?", config={"callbacks": [handler, nothing]})
    emitted = producer.stats().emitted
    producer.close()
    return _result(timer, floor, runs, emitted)


# ---- OpenTelemetry GenAI ------------------------------------------------------


def otel_workload(spool: str, runs: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from agentspool import Spool
    from agentspool.integrations.otel import SpoolSpanProcessor

    producer = Spool(spool)
    processor = SpoolSpanProcessor(producer)
    _MODEL_CHECK[:] = [
        lambda args: (args[0].attributes or {}).get("gen_ai.operation.name") == "chat"
    ]
    timer = Timer(processor, ["on_start", "on_end"], {"on_end"})
    nothing = SpanProcessor()
    floor = Timer(nothing, ["on_start", "on_end"], set())
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(nothing)
    tracer = provider.get_tracer("bench")

    def text(role: str, content: str) -> dict[str, Any]:
        return {"role": role, "parts": [{"type": "text", "content": content}]}

    user = text("user", "Weather and time in Paris?")
    calls = {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": f"call_{name}",
                "name": name,
                "arguments": {"city": "Paris"},
            }
            for name in ("get_weather", "get_time")
        ],
    }
    results = {
        "role": "tool",
        "parts": [
            {"type": "tool_call_response", "id": "call_get_weather", "response": "sunny"},
            {"type": "tool_call_response", "id": "call_get_time", "response": "noon"},
        ],
    }

    def chat(inputs: list[Any], outputs: list[Any]) -> None:
        with tracer.start_as_current_span(
            "chat gpt-fake", attributes={"gen_ai.operation.name": "chat"}
        ) as span:
            span.set_attribute("gen_ai.input.messages", json.dumps(inputs))
            span.set_attribute("gen_ai.output.messages", json.dumps(outputs))
            span.set_attribute("gen_ai.response.model", "gpt-fake")
            span.set_attribute("gen_ai.usage.input_tokens", 10)
            span.set_attribute("gen_ai.usage.output_tokens", 5)

    for _ in range(runs):
        with tracer.start_as_current_span(
            "invoke_agent bench-bot",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench-bot"},
        ):
            chat([user], [calls])
            for name, result in (("get_weather", "sunny"), ("get_time", "noon")):
                with tracer.start_as_current_span(
                    f"execute_tool {name}",
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": name,
                        "gen_ai.tool.call.id": f"call_{name}",
                        "gen_ai.tool.call.arguments": '{"city": "Paris"}',
                    },
                ) as span:
                    span.set_attribute("gen_ai.tool.call.result", result)
            chat([user, calls, results], [text("assistant", "Sunny, noon.")])
    provider.shutdown()
    emitted = producer.stats().emitted
    producer.close()
    return _result(timer, floor, runs, emitted)
