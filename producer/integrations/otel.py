"""OpenTelemetry GenAI -> agentspool: a span processor.

    from opentelemetry.sdk.trace import TracerProvider
    from agentspool import Spool
    from agentspool.integrations.otel import SpoolSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SpoolSpanProcessor(Spool()))

Any instrumentation that follows the OpenTelemetry GenAI semantic conventions then
logs durably: one trace is one session, opened by the trace's first span that
carries ``gen_ai.*`` attributes (the root ``invoke_agent`` span, typically) and
ended by the trace's root span (``error`` when its status is ERROR). ``chat`` spans
give messages (``gen_ai.input.messages`` / ``gen_ai.output.messages``, or the older
span events and indexed ``gen_ai.prompt.N.*`` attributes), each message logged once
although every chat span repeats the history; ``execute_tool`` spans give tool
executions with their real start and end. Traces without GenAI attributes (HTTP,
database) are ignored.

Written for opentelemetry-sdk 1.x (``pip install agentspool[otel]``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext, StatusCode

from agentspool.producer import Spool

from ._guard import CallbackGuard
from ._mapping import Message, SessionLog, ToolCall, Usage, arguments_of, role_of, text_of

__all__ = ["SpoolSpanProcessor"]

SOURCE = "otel"
DEFAULT_MAX_TRACES = 10_000  # open traces remembered at once (a leak must not grow forever)

# Operations whose spans carry a model call's messages.
_MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
# Older conventions: one span event per message.
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


@dataclass
class _TraceState:
    session_id: str
    root_span_id: int
    root_name: str
    log: SessionLog | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # merged at the end


class SpoolSpanProcessor(SpanProcessor):
    """Logs each OpenTelemetry trace that carries GenAI spans as an agentspool session.

    ``agent`` overrides the agent name (default: ``gen_ai.agent.name``, else the root
    span's name). Callbacks never raise into the instrumented program; ``errors``
    counts the ones that failed."""

    def __init__(
        self, spool: Spool, *, agent: str | None = None, max_traces: int = DEFAULT_MAX_TRACES
    ) -> None:
        self.spool = spool
        self.agent = agent
        self.max_traces = max_traces
        self._guard = CallbackGuard(SOURCE)
        self._lock = threading.Lock()
        self._traces: dict[int, _TraceState] = {}

    @property
    def errors(self) -> int:
        return self._guard.errors

    # ---- the SDK's interface (each call guarded) --------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._guard.call(self._locked, self._started, span)

    def on_end(self, span: ReadableSpan) -> None:
        self._guard.call(self._locked, self._ended, span)

    def shutdown(self) -> None:
        self._guard.call(self.spool.flush)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._guard.call(self.spool.flush, timeout_millis / 1000.0))

    # ---- spans --------------------------------------------------------------

    def _locked(
        self,
        handle: Callable[[Any, SpanContext, Mapping[str, Any]], None],
        span: ReadableSpan,
    ) -> None:
        """Either end of a span, handled under the lock: the SDK may call from many
        threads, and both ends look up and change their trace's state."""
        context = span.get_span_context()
        if context is not None:
            with self._lock:
                handle(span, context, span.attributes or {})

    def _started(self, span: Span, context: SpanContext, attributes: Mapping[str, Any]) -> None:
        state = self._traces.get(context.trace_id)
        if state is None:
            # The trace's first span here is its local root (its parent, if any,
            # is in another process: that part of the trace is its own session).
            session_id = f"{context.trace_id:032x}"
            if span.parent is not None:
                session_id += f"-{context.span_id:016x}"
            state = _TraceState(session_id, context.span_id, span.name)
            if len(self._traces) >= self.max_traces:
                self._traces.pop(next(iter(self._traces)))
            self._traces[context.trace_id] = state
        if state.log is None and _is_genai(attributes):
            self._open(state, attributes)

    def _open(self, state: _TraceState, attributes: Mapping[str, Any]) -> SessionLog:
        if state.log is None:
            agent = self.agent or attributes.get("gen_ai.agent.name") or state.root_name
            metadata: dict[str, Any] = {"source": SOURCE, "root_span": state.root_name}
            for key, name in (
                ("gen_ai.conversation.id", "conversation_id"),
                ("gen_ai.provider.name", "provider"),
                ("gen_ai.system", "provider"),
                ("gen_ai.agent.id", "agent_id"),
            ):
                if attributes.get(key) and name not in metadata:
                    metadata[name] = attributes[key]
            session = self.spool.session(str(agent), session_id=state.session_id, metadata=metadata)
            state.log = SessionLog(session)
        return state.log

    def _ended(
        self, span: ReadableSpan, context: SpanContext, attributes: Mapping[str, Any]
    ) -> None:
        state = self._traces.get(context.trace_id)
        if state is None:
            return  # started before this processor was added
        if _is_genai(attributes):
            log = self._open(state, attributes)
            conversation = attributes.get("gen_ai.conversation.id")
            if conversation:
                state.summary["conversation_id"] = conversation
            operation = attributes.get("gen_ai.operation.name")
            if operation == "execute_tool":
                _tool_ended(log, span, attributes)
            elif operation in _MODEL_OPERATIONS or _has_messages(span, attributes):
                _model_ended(log, span, attributes)
        if context.span_id == state.root_span_id:
            del self._traces[context.trace_id]
            if state.log is not None:
                failed = span.status.status_code == StatusCode.ERROR
                error = _error_text(span) if failed else None
                state.log.end("error" if failed else "completed", error, state.summary)


# ---- spans -> messages and tool executions ------------------------------------


def _is_genai(attributes: Mapping[str, Any]) -> bool:
    return any(key.startswith("gen_ai.") for key in attributes)


def _has_messages(span: ReadableSpan, attributes: Mapping[str, Any]) -> bool:
    return (
        "gen_ai.input.messages" in attributes
        or "gen_ai.prompt.0.content" in attributes
        or any(
            event.name in _MESSAGE_EVENTS or event.name == "gen_ai.choice" for event in span.events
        )
    )


def _model_ended(log: SessionLog, span: ReadableSpan, attributes: Mapping[str, Any]) -> None:
    history: list[Message] = []
    instructions = _json_value(attributes.get("gen_ai.system_instructions"))
    if instructions:
        history.append(Message("system", _parts_text(instructions)))
    outputs: list[Message] = []
    if "gen_ai.input.messages" in attributes or "gen_ai.output.messages" in attributes:
        history += _messages_from_parts(_json_value(attributes.get("gen_ai.input.messages")))
        outputs = _messages_from_parts(_json_value(attributes.get("gen_ai.output.messages")))
    elif "gen_ai.prompt.0.content" in attributes or "gen_ai.completion.0.content" in attributes:
        history += _indexed_messages(attributes, "gen_ai.prompt")
        outputs = _indexed_messages(attributes, "gen_ai.completion")
    else:
        history_events, outputs = _messages_from_events(span)
        history += history_events
    log.history(history)
    model = attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model")
    usage = Usage.from_mapping(attributes)  # gen_ai.usage.* (agentspool.producer.usage)
    log.outputs(outputs, model=None if model is None else str(model), usage=usage)


def _tool_ended(log: SessionLog, span: ReadableSpan, attributes: Mapping[str, Any]) -> None:
    context = span.get_span_context()
    call_id = attributes.get("gen_ai.tool.call.id") or (
        f"{context.span_id:016x}" if context is not None else None
    )
    failed = span.status.status_code == StatusCode.ERROR
    log.tool_ran(None if call_id is None else str(call_id))
    log.session.tool_call(
        str(attributes.get("gen_ai.tool.name") or span.name),
        arguments_of(attributes.get("gen_ai.tool.call.arguments")),
        arguments_of(attributes.get("gen_ai.tool.call.result")),
        _error_text(span) if failed else None,
        started_at=None if span.start_time is None else span.start_time / 1e9,
        ended_at=None if span.end_time is None else span.end_time / 1e9,
        call_id=None if call_id is None else str(call_id),
    )


def _error_text(span: ReadableSpan) -> str:
    """A failed span's error: its status description, the recorded exception, or
    ``error.type``."""
    attributes = span.attributes or {}
    exception = next((e for e in span.events if e.name == "exception"), None)
    kind: Any = attributes.get("error.type")
    message: Any = span.status.description
    if exception is not None and exception.attributes:
        kind = kind or exception.attributes.get("exception.type")
        message = message or exception.attributes.get("exception.message")
    if kind and message and str(kind) not in str(message):
        return f"{kind}: {message}"
    return str(message or kind or "error")


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _parts_text(parts: Any) -> Any:
    if isinstance(parts, list):
        return text_of([_part_as_text(p) for p in parts])
    return text_of(parts)


def _part_as_text(part: Any) -> Any:
    # GenAI parts hold text in "content"; text_of reads "text".
    if isinstance(part, Mapping) and part.get("type") == "text" and "text" not in part:
        return {"type": "text", "text": part.get("content")}
    return part


def _messages_from_parts(messages: Any) -> list[Message]:
    """``[{"role", "parts": [text | tool_call | tool_call_response ...], "finish_reason"}]``.
    A tool message holding several responses becomes one message per response."""
    found: list[Message] = []
    if not isinstance(messages, list):
        return found
    for item in messages:
        if not isinstance(item, Mapping):
            continue
        role = role_of(item.get("role"))
        parts = item.get("parts")
        if not isinstance(parts, list):
            found.append(Message(role, text_of(item.get("content"))))
            continue
        texts, calls, others = [], [], []
        for part in parts:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "tool_call_response" and isinstance(part, Mapping):
                response = part.get("response")
                found.append(
                    Message(
                        "tool",
                        response,
                        tool_call_id=None if part.get("id") is None else str(part["id"]),
                    )
                )
            elif kind == "tool_call" and isinstance(part, Mapping):
                calls.append(
                    ToolCall(
                        None if part.get("id") is None else str(part["id"]),
                        str(part.get("name", "")),
                        arguments_of(part.get("arguments")),
                    )
                )
            elif kind == "text" and isinstance(part, Mapping):
                texts.append(str(part.get("content", part.get("text", ""))))
            elif kind != "reasoning":
                others.append(part)
        if texts or calls or others:
            content: Any = "".join(texts) if texts and not others else (parts if others else None)
            message = Message(role, content, calls)
            if item.get("finish_reason"):
                message.metadata["finish_reason"] = item["finish_reason"]
            found.append(message)
    return found


def _messages_from_events(span: ReadableSpan) -> tuple[list[Message], list[Message]]:
    """Older conventions: ``gen_ai.{system,user,assistant,tool}.message`` events for
    the history and ``gen_ai.choice`` events for the output."""
    history: list[Message] = []
    outputs: list[Message] = []
    for event in span.events:
        attributes = event.attributes or {}
        if event.name in _MESSAGE_EVENTS:
            history.append(_event_message(_MESSAGE_EVENTS[event.name], attributes))
        elif event.name == "gen_ai.choice" and attributes.get("index", 0) == 0:
            message = _json_value(attributes.get("message"))
            fields: Mapping[str, Any] = message if isinstance(message, Mapping) else attributes
            choice = _event_message(str(fields.get("role") or "assistant"), fields)
            if attributes.get("finish_reason"):
                choice.metadata["finish_reason"] = attributes["finish_reason"]
            outputs.append(choice)
    return history, outputs


def _event_message(role: str, fields: Mapping[str, Any]) -> Message:
    calls = []
    raw_calls = _json_value(fields.get("tool_calls"))
    for call in raw_calls if isinstance(raw_calls, list) else []:
        if isinstance(call, Mapping):
            inner = call.get("function")
            function: Mapping[str, Any] = inner if isinstance(inner, Mapping) else call
            calls.append(
                ToolCall(
                    None if call.get("id") is None else str(call["id"]),
                    str(function.get("name", "")),
                    arguments_of(function.get("arguments")),
                )
            )
    tool_call_id = fields.get("id") if role == "tool" else None
    return Message(
        role_of(role),
        text_of(_json_value(fields.get("content"))),
        calls,
        tool_call_id=None if tool_call_id is None else str(tool_call_id),
    )


def _indexed_messages(attributes: Mapping[str, Any], prefix: str) -> list[Message]:
    """``gen_ai.prompt.0.role`` / ``gen_ai.prompt.0.content`` / ``...tool_calls.0.name``
    (the indexed attributes of OpenLLMetry-style instrumentations)."""
    found: list[Message] = []
    n = 0
    while f"{prefix}.{n}.content" in attributes or f"{prefix}.{n}.role" in attributes:
        base = f"{prefix}.{n}"
        calls = []
        m = 0
        while f"{base}.tool_calls.{m}.name" in attributes:
            call = f"{base}.tool_calls.{m}"
            calls.append(
                ToolCall(
                    _str_or_none(attributes.get(f"{call}.id")),
                    str(attributes[f"{call}.name"]),
                    arguments_of(attributes.get(f"{call}.arguments")),
                )
            )
            m += 1
        role = role_of(
            attributes.get(f"{base}.role") or ("user" if prefix.endswith("prompt") else "assistant")
        )
        found.append(
            Message(
                role,
                text_of(attributes.get(f"{base}.content")),
                calls,
                tool_call_id=_str_or_none(attributes.get(f"{base}.tool_call_id")),
            )
        )
        n += 1
    return found


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
