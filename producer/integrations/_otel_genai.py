"""OpenTelemetry GenAI message content -> agentspool messages.

Where a GenAI instrumentation puts a model call's messages, by the conventions' age:
``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON text on a span, plain
values on a log record), span events (``gen_ai.user.message``, ``gen_ai.choice``, ...,
their fields as the event's attributes or, as azure-ai-inference's tracing writes them,
one JSON object in ``gen_ai.event.content``), or indexed attributes (``gen_ai.prompt.N.content``). Used by ``otel.py`` for spans and
log records alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from ._mapping import (
    Message,
    ToolCall,
    arguments_of,
    indexed_tool_calls,
    role_of,
    str_or_none,
    text_of,
)

# Older conventions: one span event per message.
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def has_content(span: ReadableSpan, attributes: Mapping[str, Any]) -> bool:
    return (
        "gen_ai.input.messages" in attributes
        or "gen_ai.output.messages" in attributes
        or "gen_ai.prompt.0.content" in attributes
        or any(
            event.name in MESSAGE_EVENTS or event.name == "gen_ai.choice" for event in span.events
        )
    )


def model_messages(
    span: ReadableSpan, attributes: Mapping[str, Any]
) -> tuple[list[Message], list[Message]]:
    """A model call's (history, outputs), from wherever its instrumentation put them."""
    history: list[Message] = []
    instructions = json_value(attributes.get("gen_ai.system_instructions"))
    if instructions:
        history.append(Message("system", _parts_text(instructions)))
    outputs: list[Message] = []
    if "gen_ai.input.messages" in attributes or "gen_ai.output.messages" in attributes:
        history += _messages_from_parts(json_value(attributes.get("gen_ai.input.messages")))
        outputs = _messages_from_parts(json_value(attributes.get("gen_ai.output.messages")))
    elif "gen_ai.prompt.0.content" in attributes or "gen_ai.completion.0.content" in attributes:
        history += _indexed_messages(attributes, "gen_ai.prompt")
        outputs = _indexed_messages(attributes, "gen_ai.completion")
    else:
        history_events, outputs = _messages_from_events(span)
        history += history_events
    return history, outputs


def json_value(value: Any) -> Any:
    """JSON text decoded; the tuples of a log record's attributes as lists."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, tuple):
        return [json_value(v) if isinstance(v, tuple) else _plain(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _parts_text(parts: Any) -> Any:
    if isinstance(parts, list | tuple):
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
        if not isinstance(parts, list | tuple):
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
        attributes = _event_fields(event.attributes or {})
        if event.name in MESSAGE_EVENTS:
            history.append(_event_message(MESSAGE_EVENTS[event.name], attributes))
        elif event.name == "gen_ai.choice" and attributes.get("index", 0) == 0:
            message = json_value(attributes.get("message"))
            fields: Mapping[str, Any] = message if isinstance(message, Mapping) else attributes
            choice = _event_message(str(fields.get("role") or "assistant"), fields)
            if attributes.get("finish_reason"):
                choice.metadata["finish_reason"] = attributes["finish_reason"]
            outputs.append(choice)
    return history, outputs


def _event_fields(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """An event's fields: its attributes, or the JSON object in its
    ``gen_ai.event.content`` (azure-ai-inference's tracing puts each event's whole body
    there, a span event's attributes holding no nested values)."""
    body = json_value(attributes.get("gen_ai.event.content"))
    return {**attributes, **body} if isinstance(body, Mapping) else attributes


def _event_message(role: str, fields: Mapping[str, Any]) -> Message:
    calls = []
    raw_calls = json_value(fields.get("tool_calls"))
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
    tool_call_id = (fields.get("id") or fields.get("tool_call_id")) if role == "tool" else None
    return Message(
        role_of(role),
        text_of(json_value(fields.get("content"))),
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
        calls = indexed_tool_calls(
            attributes, f"{base}.tool_calls", name="name", call_id="id", arguments="arguments"
        )
        role = role_of(
            attributes.get(f"{base}.role") or ("user" if prefix.endswith("prompt") else "assistant")
        )
        found.append(
            Message(
                role,
                text_of(attributes.get(f"{base}.content")),
                calls,
                tool_call_id=str_or_none(attributes.get(f"{base}.tool_call_id")),
            )
        )
        n += 1
    return found
