"""What every integration needs between a framework's callbacks and a ``Session``.

Frameworks hand a model call the whole conversation every time (an OpenAI Agents
model span, a LangChain ``on_chat_model_start``, an OTel ``chat`` span all repeat the
history), so an integration that logged what it was given would log the question
once per turn. ``Transcript`` logs each message once, in order. ``role_of`` maps the
frameworks' message types onto the roles agentspool stores, ``Usage`` sums token
counts, and ``SessionLog`` ties them to one session; ``session_block`` is the body of
an integration's ``session()`` block.

Standard library only; the integrations import their framework, this never does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentspool.producer import Session
from agentspool.producer.usage import TOKEN_COLUMNS, tokens_of

# Framework message types and roles -> the roles agentspool stores.
_ROLES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}

# Content-part types whose text is the message's text (OpenAI chat and Responses,
# LangChain blocks, OTel GenAI parts).
_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})


def role_of(kind: Any) -> str:
    """``human``/``ai``/``developer``/... -> ``user``/``assistant``/``system``/...;
    a role it does not know is kept as it is (lower case)."""
    text = str(kind or "").strip().lower()
    return _ROLES.get(text, text or "unknown")


def text_of(content: Any) -> Any:
    """A message's content as plain text when it is text (a string, or a list of text
    parts, as dicts or as the SDKs' objects); other content (images, audio) is kept
    as the JSON value it is."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
                continue
            if isinstance(part, dict | Mapping):  # dict first: an ABC check is slower
                kind, text = part.get("type", "text"), part.get("text", part.get("content"))
            else:  # an SDK's object (pydantic): read its fields, do not dump it
                kind, text = getattr(part, "type", None), getattr(part, "text", None)
            if kind not in _TEXT_PARTS or not isinstance(text, str):
                return [as_json(p) for p in content]
            texts.append(text)
        return "".join(texts)
    return as_json(content)


def as_json(value: Any) -> Any:
    """A framework's object as the JSON value it stands for (pydantic models dumped)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return dump(mode="json", exclude_none=True)
        except Exception:
            return str(value)
    return value


def arguments_of(arguments: Any) -> Any:
    """Tool-call arguments as the JSON value they encode (frameworks pass a JSON
    string); text that is not JSON is kept as text."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


@dataclass
class ToolCall:
    """A tool call the model asked for (kept in its message's metadata)."""

    id: str | None
    name: str
    arguments: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


def str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def indexed_tool_calls(
    attributes: Mapping[str, Any], prefix: str, *, name: str, call_id: str, arguments: str
) -> list[ToolCall]:
    """Tool calls flattened into span attributes, ``<prefix>.0.<name>``,
    ``<prefix>.1.<name>``, ... (OpenLLMetry's ``tool_calls.N.name``, OpenInference's
    ``tool_calls.N.tool_call.function.name``), in index order."""
    calls = []
    n = 0
    while f"{prefix}.{n}.{name}" in attributes:
        call = f"{prefix}.{n}"
        calls.append(
            ToolCall(
                str_or_none(attributes.get(f"{call}.{call_id}")),
                str(attributes[f"{call}.{name}"]),
                arguments_of(attributes.get(f"{call}.{arguments}")),
            )
        )
        n += 1
    return calls


@dataclass
class Message:
    """One message of a conversation, framework-neutral."""

    role: str
    content: Any = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # a tool result's call
    metadata: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> tuple[Any, ...]:
        """What makes two messages the same message: a model's output and its copy in
        the next call's history must agree, whatever extra fields either carries."""
        calls = tuple(
            c.id or (c.name, _canonical(arguments_of(c.arguments))) for c in self.tool_calls
        )
        return (self.role, _canonical(self.content or ""), calls, self.tool_call_id)

    def event_metadata(self) -> dict[str, Any] | None:
        meta = dict(self.metadata)
        if self.tool_calls:
            meta["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            meta["tool_call_id"] = self.tool_call_id
        return meta or None


_encode_sorted = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":")).encode


def _canonical(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return _encode_sorted(value)
    except (TypeError, ValueError):
        return repr(value)


class Transcript:
    """Logs each message of a repeated history once, in order.

    A message is new when the history holds more copies of it than were logged
    (counted by fingerprint): a history that grows by a turn yields that turn, a
    question asked twice is logged twice, and a trimmed history logs nothing again."""

    def __init__(self) -> None:
        self._logged: Counter[tuple[Any, ...]] = Counter()

    def new_in(self, history: Iterable[Message]) -> list[Message]:
        seen: Counter[tuple[Any, ...]] = Counter()
        new = []
        for message in history:
            fingerprint = message.fingerprint()
            seen[fingerprint] += 1
            if seen[fingerprint] > self._logged[fingerprint]:
                self._logged[fingerprint] += 1
                new.append(message)
        return new

    def record(self, messages: Iterable[Message]) -> None:
        """Count messages that are new by definition (a model's outputs)."""
        for message in messages:
            self._logged[message.fingerprint()] += 1


@dataclass
class Usage:
    """Token counts of one or more model calls, read by the one mapping every producer
    shares (agentspool.producer.usage): ``input_tokens`` includes cached tokens, the
    cache columns break them out. ``None``: a count no call reported."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    calls: int = 0

    @classmethod
    def from_mapping(cls, usage: Any) -> Usage | None:
        """Read a provider's or framework's usage (a dict, an SDK's object, OTel span
        attributes); ``None`` when it holds no counts."""
        tokens = tokens_of(usage)
        if tokens is None:
            return None
        return cls(*tokens.values(), calls=1)

    def add(self, other: Usage) -> None:
        for name in TOKEN_COLUMNS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else mine + theirs)
        self.calls += other.calls

    def as_dict(self) -> dict[str, int]:
        """The known counts under agentspool's own names (what the worker reads back
        as they are), plus ``total_tokens`` (input + output)."""
        counts = {name: getattr(self, name) for name in TOKEN_COLUMNS}
        known = {name: n for name, n in counts.items() if n is not None}
        known["total_tokens"] = (self.input_tokens or 0) + (self.output_tokens or 0)
        return known


class SessionLog:
    """One session as an integration writes it: messages once each, usage summed,
    and at the end the models used and the total usage merged into its metadata.

    A tool the program runs itself, outside the framework's view (no tool span, no
    tool callback), still leaves two traces in the conversation: the model's call
    (id, name, arguments) and the tool message answering it. When a tool message
    arrives for a call no execution was recorded for (``tool_ran``), the tool
    execution is written from those two, timed from the end of the model call that
    asked (``outputs(at=...)``) to the start of the one that got the answer
    (``history(at=...)``)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.transcript = Transcript()
        self.usage = Usage()
        self.models: list[str] = []
        self.ended = False
        self._asked: dict[str, tuple[ToolCall, float]] = {}  # call id -> (call, asked at)
        self._ran: set[str] = set()  # call ids whose execution the framework reported

    def tool_ran(self, call_id: str | None) -> None:
        """The framework reported this call's execution: do not write it again."""
        if call_id:
            self._ran.add(call_id)
            self._asked.pop(call_id, None)

    def asked(self, call_id: str | None) -> ToolCall | None:
        """The model's call with this id, while no execution of it was recorded."""
        found = self._asked.get(call_id) if call_id else None
        return None if found is None else found[0]

    def history(self, messages: Iterable[Message], *, at: float | None = None) -> None:
        """A model call's input (the call started ``at``, epoch seconds): log the
        messages not logged before."""
        for message in self.transcript.new_in(messages):
            self._log(message)
            if message.tool_call_id and message.tool_call_id in self._asked:
                self._derive_tool(message, time.time() if at is None else at)

    def outputs(
        self,
        messages: list[Message],
        *,
        model: str | None = None,
        usage: Usage | None = None,
        at: float | None = None,
    ) -> None:
        """A model call's output (the call ended ``at``): always new. The model goes on
        each message, the call's usage on the last one (so summing the messages' usage
        is right)."""
        self.transcript.record(messages)
        self.count(model, usage)
        asked_at = time.time() if at is None else at
        for n, message in enumerate(messages):
            if model:
                message.metadata.setdefault("model", model)
            if usage is not None and n == len(messages) - 1:
                message.metadata.setdefault("usage", usage.as_dict())
            self._log(message)
            for call in message.tool_calls:
                if call.id and call.id not in self._ran:
                    self._asked[call.id] = (call, asked_at)

    def _derive_tool(self, answer: Message, answered_at: float) -> None:
        call, asked_at = self._asked.pop(str(answer.tool_call_id))
        self.session.tool_call(
            call.name,
            arguments_of(call.arguments),
            answer.content,
            started_at=asked_at,
            ended_at=max(asked_at, answered_at),
            call_id=call.id,
        )

    def count(self, model: str | None, usage: Usage | None) -> None:
        if model and model not in self.models:
            self.models.append(model)
        if usage is not None:
            self.usage.add(usage)

    def _log(self, message: Message) -> None:
        # An assistant turn that only calls tools has "" or None as content: one form.
        content = None if message.content == "" else message.content
        self.session.message(message.role, content, message.event_metadata())

    def end(
        self,
        status: str = "completed",
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout: float = 0.0,
    ) -> None:
        """End the session once. ``timeout`` 0: the framework's thread does not wait for
        the disk; the writer thread still fsyncs the end as for any ``end()``."""
        if self.ended:
            return
        self.ended = True
        summary = dict(metadata or {})
        if self.models:
            summary["models"] = self.models
        if self.usage.calls:
            summary["usage"] = self.usage.as_dict()
        self.session.end(status, error, timeout=timeout, metadata=summary or None)


@contextmanager
def session_block(
    session: Session, block: ContextVar[SessionLog | None], lock: threading.Lock
) -> Iterator[SessionLog]:
    """While open, ``block`` holds ``session``'s log for the caller's thread and task,
    so every run or trace the integration sees start inside joins it. The session
    ends ``completed``, or ``error`` when the block raises; ``lock`` is the
    integration's, which guards its logs against its callbacks."""
    log = SessionLog(session)
    token = block.set(log)
    try:
        yield log
    except BaseException as error:
        with lock:
            log.end("error", f"{type(error).__name__}: {error}")
        raise
    finally:
        block.reset(token)
        with lock:
            log.end("completed")


def epoch_of_iso(text: Any) -> float | None:
    """An ISO-8601 time ('2026-01-02T03:04:05.678+00:00') as seconds since the epoch."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
