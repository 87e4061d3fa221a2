"""OpenAI Agents SDK -> agentspool: a tracing processor.

    from agents import set_trace_processors
    from agentspool import Spool
    from agentspool.integrations.openai_agents import SpoolTracingProcessor

    set_trace_processors([SpoolTracingProcessor(Spool())])

One trace is one session (id = the trace id, agent = the first agent's name). Model
spans give messages: ``ResponseSpanData`` (the Responses model, the SDK's default)
and ``GenerationSpanData`` (chat completions) both carry the whole history, of which
each message is logged once; the model and token usage go in the metadata of the
model's last output message. Function spans give tool executions with their real
start and end, keyed by the model's call id when the model asked for the call. The
trace's end ends the session, ``error`` when an agent or the workflow span failed.

Written for openai-agents 0.24 (``pip install agentspool[openai-agents]``).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.tracing import Span, Trace, TracingProcessor
from agents.tracing.span_data import (
    AgentSpanData,
    FunctionSpanData,
    GenerationSpanData,
    ResponseSpanData,
    TaskSpanData,
)

from agentspool.producer import Spool

from ._guard import CallbackGuard
from ._mapping import (
    Message,
    SessionLog,
    ToolCall,
    Usage,
    arguments_of,
    as_json,
    epoch_of_iso,
    role_of,
    text_of,
)

__all__ = ["SpoolTracingProcessor"]

SOURCE = "openai-agents"
ENDED_TRACES_REMEMBERED = 1000


@dataclass
class _TraceState:
    trace_id: str
    workflow: str
    metadata: dict[str, Any]
    log: SessionLog | None = None
    error: str | None = None
    # Calls the model asked for, by (name, arguments): a function span has no call id.
    requested: dict[tuple[str, str], deque[str]] = field(default_factory=dict)


class SpoolTracingProcessor(TracingProcessor):
    """Logs every trace of the OpenAI Agents SDK as an agentspool session.

    ``agent`` overrides the agent name (default: the first agent span's name, else
    the trace's workflow name). Callbacks never raise into the SDK; ``errors``
    counts the ones that failed."""

    def __init__(
        self, spool: Spool, *, agent: str | None = None, flush_timeout: float = 5.0
    ) -> None:
        self.spool = spool
        self.agent = agent
        self.flush_timeout = flush_timeout
        self._guard = CallbackGuard(SOURCE)
        self._lock = threading.Lock()
        self._traces: dict[str, _TraceState] = {}
        # Traces already ended: a span reported after its trace's end (work left
        # running in the background) must not open the session a second time.
        self._ended: dict[str, None] = {}  # insertion-ordered: the oldest goes first

    @property
    def errors(self) -> int:
        return self._guard.errors

    @property
    def unmapped(self) -> int:
        """Items of span data left out because their shape is unknown (logged once)."""
        return self._guard.unmapped

    # ---- the SDK's interface (each call guarded) --------------------------

    def on_trace_start(self, trace: Trace) -> None:
        self._guard.call(self._trace_started, trace)

    def on_trace_end(self, trace: Trace) -> None:
        self._guard.call(self._trace_ended, trace)

    def on_span_start(self, span: Span[Any]) -> None:
        self._guard.call(self._span_started, span)

    def on_span_end(self, span: Span[Any]) -> None:
        self._guard.call(self._span_ended, span)

    def shutdown(self) -> None:
        # Called at interpreter exit, maybe after the agent closed its spool: flush
        # returns False then, and nothing raises.
        self._guard.call(self.spool.flush, self.flush_timeout)

    def force_flush(self) -> None:
        self._guard.call(self.spool.flush, self.flush_timeout)

    # ---- traces -------------------------------------------------------------

    def _trace_started(self, trace: Trace) -> None:
        with self._lock:
            self._state(trace.trace_id, trace)

    def _state(self, trace_id: str, trace: Trace | None = None) -> _TraceState:
        state = self._traces.get(trace_id)
        if state is None:
            metadata: dict[str, Any] = {"source": SOURCE, "trace_id": trace_id}
            workflow = "Agent workflow"
            if trace is not None:
                workflow = str(trace.name)
                metadata["workflow"] = workflow
                group_id = getattr(trace, "group_id", None)
                if group_id:
                    metadata["group_id"] = group_id
                extra = getattr(trace, "metadata", None)
                if extra:
                    metadata["trace_metadata"] = dict(extra)
            state = self._traces[trace_id] = _TraceState(trace_id, workflow, metadata)
        return state

    def _log(self, state: _TraceState, agent: str | None = None) -> SessionLog:
        """The trace's session, opened on first use: at the first agent span, whose
        name is the agent's (or by whatever span comes first)."""
        if state.log is None:
            name = self.agent or agent or state.workflow
            session = self.spool.session(name, session_id=state.trace_id, metadata=state.metadata)
            state.log = SessionLog(session)
        return state.log

    def _trace_ended(self, trace: Trace) -> None:
        with self._lock:
            state = self._traces.pop(trace.trace_id, None)
            if state is None:
                return
            self._ended[trace.trace_id] = None
            if len(self._ended) > ENDED_TRACES_REMEMBERED:
                del self._ended[next(iter(self._ended))]
            log = self._log(state)
            status = "error" if state.error else "completed"
            log.end(status, state.error)

    # ---- spans --------------------------------------------------------------

    def _span_started(self, span: Span[Any]) -> None:
        data = span.span_data
        if isinstance(data, AgentSpanData):
            with self._lock:
                if span.trace_id not in self._ended:
                    self._log(self._state(span.trace_id), agent=data.name)

    def _span_ended(self, span: Span[Any]) -> None:
        data = span.span_data
        with self._lock:
            if span.trace_id in self._ended:
                return
            state = self._state(span.trace_id)
            if isinstance(data, ResponseSpanData):
                self._response_ended(state, data)
            elif isinstance(data, GenerationSpanData):
                self._generation_ended(state, data)
            elif isinstance(data, FunctionSpanData):
                self._function_ended(state, span, data)
            elif isinstance(data, AgentSpanData | TaskSpanData):
                if span.error and state.error is None:
                    state.error = _error_text(span.error)

    def _response_ended(self, state: _TraceState, data: ResponseSpanData) -> None:
        """The Responses model: ``input`` is the history without the instructions,
        ``response.output`` the new items (pydantic objects)."""
        log = self._log(state)
        history = data.input
        if isinstance(history, str):
            log.history([Message("user", history)])
        elif history:
            log.history(_messages_from_items(history, self._guard.skip))
        response = data.response
        if response is None:
            return
        outputs = _messages_from_items(getattr(response, "output", None) or [], self._guard.skip)
        self._remember_requests(state, outputs)
        usage = Usage.from_mapping(data.usage) or Usage.from_mapping(
            getattr(response, "usage", None)
        )
        log.outputs(outputs, model=_text_or_none(getattr(response, "model", None)), usage=usage)

    def _generation_ended(self, state: _TraceState, data: GenerationSpanData) -> None:
        """Chat completions: ``input`` is the whole chat (system and tool messages
        included), ``output`` the assistant's message(s): chat messages, or, when the
        model streamed (SDK 0.24), the Responses-API response it assembled."""
        log = self._log(state)
        skip = self._guard.skip
        if data.input:
            log.history(_messages_from_chat(data.input, skip))
        outputs = _messages_from_generation(data.output or [], skip)
        self._remember_requests(state, outputs)
        usage = Usage.from_mapping(data.usage)
        if usage is not None and not usage.input_tokens and not usage.output_tokens:
            # A streamed chat completion reports usage only when asked to; the SDK then
            # puts zeros in the span, which are not the call's counts.
            usage = None
            self._guard.notice(
                "no-usage",
                "agentspool %s integration: a model call reported no token usage (a"
                " streamed chat completion needs ModelSettings(include_usage=True));"
                " its usage is left unknown",
            )
        log.outputs(outputs, model=_text_or_none(data.model), usage=usage)

    def _remember_requests(self, state: _TraceState, outputs: list[Message]) -> None:
        for message in outputs:
            for call in message.tool_calls:
                if call.id:
                    key = (call.name, _args_key(call.arguments))
                    state.requested.setdefault(key, deque()).append(call.id)

    def _function_ended(self, state: _TraceState, span: Span[Any], data: FunctionSpanData) -> None:
        log = self._log(state)
        arguments = arguments_of(data.input)
        waiting = state.requested.get((data.name, _args_key(arguments)))
        call_id = waiting.popleft() if waiting else span.span_id
        error = _error_text(span.error) if span.error else None
        log.tool_ran(call_id)
        log.session.tool_call(
            data.name,
            arguments,
            data.output,
            error,
            started_at=epoch_of_iso(span.started_at),
            ended_at=epoch_of_iso(span.ended_at),
            call_id=call_id,
        )


# ---- the SDK's items -> messages --------------------------------------------


def _fields(item: Any) -> Any:
    """A field reader for an item that is a dict (input items) or an SDK object
    (output items, pydantic): reading attributes is far cheaper than dumping."""
    if isinstance(item, dict | Mapping):  # dict first: an ABC check is slower
        return item.get
    return lambda name, default=None: getattr(item, name, default)


def _messages_from_items(items: Any, skip: Callable[[str], None]) -> list[Message]:
    """Responses input/output items: messages, function calls and their outputs.
    A function call is an assistant message of its own (as the Responses API has it),
    so a model's output and its copy in the next history agree item by item.
    Reasoning and other items are not messages and are skipped."""
    messages = []
    for item in items:
        get = _fields(item)
        kind = get("type")
        if kind == "function_call":
            call = ToolCall(
                _text_or_none(get("call_id")),
                str(get("name", "")),
                arguments_of(get("arguments")),
            )
            messages.append(Message("assistant", None, [call]))
        elif kind == "function_call_output":
            messages.append(
                Message(
                    "tool",
                    text_of(get("output")),
                    tool_call_id=_text_or_none(get("call_id")),
                )
            )
        elif kind in (None, "message") and get("role"):
            messages.append(Message(role_of(get("role")), text_of(get("content"))))
        elif kind not in _NOT_MESSAGES:
            skip(f"a Responses item of type {kind!r}")
    return messages


# Responses items that are the model's work, not the conversation's messages.
_NOT_MESSAGES = frozenset({"reasoning", "web_search_call", "file_search_call", "compaction"})


def _messages_from_generation(output: Any, skip: Callable[[str], None]) -> list[Message]:
    """A generation span's output: chat messages, Responses items, or whole Responses
    objects (what SDK 0.24's chat model puts there when it streamed). The items of one
    response are one assistant message (its text and its calls), as the chat history
    that repeats it next time has them."""
    messages: list[Message] = []
    for raw in output:
        item = raw if isinstance(raw, Mapping) else as_json(raw)
        if not isinstance(item, Mapping):
            skip(f"a generation output of type {type(raw).__name__}")
        elif item.get("object") == "response" or "type" in item:
            parts = _messages_from_items(
                item.get("output") or [] if "output" in item else [item], skip
            )
            texts = [m.content for m in parts if m.role == "assistant" and m.content]
            calls = [c for m in parts for c in m.tool_calls]
            others = [m for m in parts if m.role != "assistant"]
            if texts or calls:
                text = texts[0] if len(texts) == 1 else text_of(texts) if texts else None
                messages.append(Message("assistant", text, calls))
            messages += others
        else:
            messages += _messages_from_chat([item], skip)
    return messages


def _messages_from_chat(chat: Any, skip: Callable[[str], None]) -> list[Message]:
    """Chat-completions messages (``{"role", "content", "tool_calls", "tool_call_id"}``)."""
    messages = []
    for raw in chat:
        item = raw if isinstance(raw, Mapping) else as_json(raw)
        if not isinstance(item, Mapping) or "role" not in item:
            skip("a chat message without a role")
            continue
        calls = []
        for call in item.get("tool_calls") or []:
            function = call.get("function") or {}
            calls.append(
                ToolCall(
                    _text_or_none(call.get("id")),
                    str(function.get("name", "")),
                    arguments_of(function.get("arguments")),
                )
            )
        messages.append(
            Message(
                role_of(item["role"]),
                text_of(item.get("content")),
                calls,
                tool_call_id=_text_or_none(item.get("tool_call_id")),
            )
        )
    return messages


def _args_key(arguments: Any) -> str:
    try:
        return json.dumps(arguments, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(arguments)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _error_text(error: Any) -> str:
    """A span's ``SpanError`` (``{"message", "data"}``) as one line of text."""
    if not isinstance(error, dict):
        return str(error)
    message = str(error.get("message") or "error")
    data = error.get("data")
    detail = data.get("error") if isinstance(data, dict) else None
    return f"{message}: {detail}" if detail else message
