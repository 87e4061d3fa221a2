"""OpenTelemetry GenAI and OpenInference -> agentspool: a span processor (and a
log-record processor), set up in one line.

    from agentspool import Spool
    from agentspool.integrations.otel import install

    install(Spool())  # the global tracer and logger providers (SDK ones made if unset)

or by hand: ``provider.add_span_processor(SpoolSpanProcessor(Spool()))`` (and, for
content recorded as log records, ``logger_provider.add_log_record_processor(
processor.log_records)``).

Any instrumentation that follows the OpenTelemetry GenAI semantic conventions, or
OpenInference's (``openinference.span.kind``), then logs durably: one trace is one
session, opened by the trace's first GenAI or OpenInference span and ended by the
trace's root span (``error`` when its status is ERROR). Model spans (``chat``, or
OpenInference's LLM) give messages, each logged once although every call repeats the
history; their content may come from span attributes, span events, or a log record
emitted inside the span (the official instrumentation's ``event_only``).
``execute_tool`` and TOOL spans give tool executions with their real start and end;
a tool the program runs without a span is written from the tool-call turn and the
tool message answering it. Model calls made with no span around them are each a trace
of their own: inside ``with processor.session("my-agent"):`` they are one session.
Traces without GenAI attributes (HTTP, database) are ignored.

Written for opentelemetry-sdk 1.x (``pip install agentspool[otel]``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext, StatusCode

from agentspool.producer import Session, Spool

from . import _openinference as openinference
from ._guard import CallbackGuard
from ._mapping import SessionLog, Usage, arguments_of, session_block
from ._otel_genai import has_content, model_messages

__all__ = ["SpoolLogRecordProcessor", "SpoolSpanProcessor", "install"]

SOURCE = "otel"
DEFAULT_MAX_TRACES = 10_000  # open traces remembered at once (a leak must not grow forever)

# Operations whose spans carry a model call's messages.
_MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
# A log record's attributes that hold a model call's content (event_only).
_CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")
_NO_CONTENT = (
    "agentspool %s integration: a model span carried no message content, so only its"
    " model and usage are logged; turn content on (the official OpenAI instrumentation:"
    " OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_only, or event_only with"
    " agentspool.integrations.otel.install; OpenInference: unset OPENINFERENCE_HIDE_INPUTS"
    " and OPENINFERENCE_HIDE_OUTPUTS)"
)


@dataclass
class _TraceState:
    session_id: str
    root_span_id: int
    root_name: str
    log: SessionLog | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # merged at the end
    borrowed: bool = False  # the log is a session() block's: the block ends it
    content: dict[int, Mapping[str, Any]] = field(default_factory=dict)  # span id -> log record


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
        self._block: ContextVar[SessionLog | None] = ContextVar(
            f"agentspool-otel-{id(self)}", default=None
        )
        self.log_records = SpoolLogRecordProcessor(self)

    @property
    def errors(self) -> int:
        return self._guard.errors

    @property
    def unmapped(self) -> int:
        """Model spans without content (their messages missing; logged once)."""
        return self._guard.unmapped

    @contextmanager
    def session(
        self,
        agent: str | None = None,
        *,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Iterator[Session]:
        """One session for every trace started inside the block (model calls made with
        no span around them are each a trace). Ends ``completed``, or ``error`` when
        the block raises."""
        session = self.spool.session(
            agent or self.agent or "otel",
            session_id=session_id,
            metadata={"source": SOURCE, **(metadata or {})},
        )
        with session_block(session, self._block, self._lock):
            yield session

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
            block = self._block.get()
            if block is not None and not block.ended:
                state.log, state.borrowed = block, True
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
        content = state.content.pop(context.span_id, None)
        if content:  # recorded as a log record inside the span (event_only)
            attributes = {**attributes, **content}
        if _is_genai(attributes):
            log = self._open(state, attributes)
            conversation = attributes.get("gen_ai.conversation.id")
            if conversation:
                state.summary["conversation_id"] = conversation
            kind = attributes.get(openinference.KIND)
            operation = attributes.get("gen_ai.operation.name")
            if kind is not None:  # OpenInference (its GenAI attributes, if any, repeat it)
                if kind == "LLM":
                    self._model_ended(log, span, attributes, openinference_kind=True)
                elif kind == "TOOL":
                    _openinference_tool(log, span, attributes)
            elif operation == "execute_tool":
                _tool_ended(log, span, attributes)
            elif operation in _MODEL_OPERATIONS or has_content(span, attributes):
                self._model_ended(log, span, attributes)
        if context.span_id == state.root_span_id:
            del self._traces[context.trace_id]
            if state.log is not None and not state.borrowed:
                failed = span.status.status_code == StatusCode.ERROR
                error = _error_text(span) if failed else None
                state.log.end("error" if failed else "completed", error, state.summary)

    def _model_ended(
        self,
        log: SessionLog,
        span: ReadableSpan,
        attributes: Mapping[str, Any],
        openinference_kind: bool = False,
    ) -> None:
        if openinference_kind:
            history = openinference.messages(attributes, "llm.input_messages")
            outputs = openinference.messages(attributes, "llm.output_messages")
            model = attributes.get("llm.model_name")
        else:
            history, outputs = model_messages(span, attributes)
            model = attributes.get("gen_ai.response.model") or attributes.get(
                "gen_ai.request.model"
            )
        if not history and not outputs:
            self._guard.notice("no-content", _NO_CONTENT, missed=True)
        started, ended = _times(span)
        log.history(history, at=started)
        usage = Usage.from_mapping(attributes)  # gen_ai.usage.*, llm.token_count.*
        log.outputs(outputs, model=None if model is None else str(model), usage=usage, at=ended)

    def _log_record(self, record: ReadWriteLogRecord) -> None:
        """A log record emitted inside a model span: keep its content for the span's
        end (it comes first)."""
        data = record.log_record
        attributes = data.attributes or {}
        content = {key: attributes[key] for key in _CONTENT_KEYS if key in attributes}
        if not content or not data.trace_id or not data.span_id:
            return
        with self._lock:
            state = self._traces.get(data.trace_id)
            if state is not None:
                state.content[data.span_id] = content


class SpoolLogRecordProcessor(LogRecordProcessor):
    """Hands a span processor the content that instrumentations record as log records
    (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=event_only``): add it to the
    logger provider (``install`` does)."""

    def __init__(self, spans: SpoolSpanProcessor) -> None:
        self.spans = spans

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.spans._guard.call(self.spans._log_record, log_record)

    def emit(self, log_record: ReadWriteLogRecord) -> None:  # older SDKs' name
        self.on_emit(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def install(
    spool: Spool,
    *,
    agent: str | None = None,
    tracer_provider: Any = None,
    logger_provider: Any = None,
) -> SpoolSpanProcessor:
    """Add the span processor to ``tracer_provider`` and its log-record processor to
    ``logger_provider`` (default: the global ones; an SDK provider is made and set
    globally where none is) and return it."""
    from opentelemetry import _logs, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.trace import TracerProvider

    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
        if not hasattr(tracer_provider, "add_span_processor"):  # the API's no-op or proxy
            tracer_provider = TracerProvider()
            trace.set_tracer_provider(tracer_provider)
    if logger_provider is None:
        logger_provider = _logs.get_logger_provider()
        if not hasattr(logger_provider, "add_log_record_processor"):
            logger_provider = LoggerProvider()
            _logs.set_logger_provider(logger_provider)
    processor = SpoolSpanProcessor(spool, agent=agent)
    tracer_provider.add_span_processor(processor)
    logger_provider.add_log_record_processor(processor.log_records)
    return processor


# ---- spans -> messages and tool executions ------------------------------------


def _is_genai(attributes: Mapping[str, Any]) -> bool:
    return openinference.KIND in attributes or any(key.startswith("gen_ai.") for key in attributes)


def _times(span: ReadableSpan) -> tuple[float | None, float | None]:
    start, end = span.start_time, span.end_time
    return (None if start is None else start / 1e9, None if end is None else end / 1e9)


def _openinference_tool(log: SessionLog, span: ReadableSpan, attributes: Mapping[str, Any]) -> None:
    call_id, name, arguments, output, error = openinference.tool(attributes, log.asked)
    if call_id is None:
        context = span.get_span_context()
        call_id = None if context is None else f"{context.span_id:016x}"
    failed = span.status.status_code == StatusCode.ERROR
    started, ended = _times(span)
    log.tool_ran(call_id)
    log.session.tool_call(
        name,
        arguments,
        output,
        _error_text(span) if failed else error,
        started_at=started,
        ended_at=ended,
        call_id=call_id,
    )


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
