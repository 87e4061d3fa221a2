"""OpenInference spans (Arize Phoenix's conventions) -> agentspool messages and tools.

OpenInference instrumentations (openinference-instrumentation-openai, -langchain and
dozens more) mark each span with ``openinference.span.kind`` (LLM, TOOL, AGENT,
CHAIN, ...) and flatten a model call's messages into indexed attributes:
``llm.input_messages.N.message.role`` / ``.content`` / ``.tool_call_id`` /
``.tool_calls.M.tool_call.{id,function.name,function.arguments}`` (or
``.contents.K.message_content.{type,text}``), the same under ``llm.output_messages``,
``llm.model_name``, ``llm.token_count.*`` (read by agentspool.producer.usage). A TOOL
span has ``tool.name``, ``input.value`` and ``output.value``; through LangChain the
output is the serialized ToolMessage, which holds the call id and the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._mapping import Message, arguments_of, indexed_tool_calls, role_of, str_or_none

KIND = "openinference.span.kind"


def messages(attributes: Mapping[str, Any], prefix: str) -> list[Message]:
    """``llm.input_messages`` / ``llm.output_messages`` as messages, in index order."""
    found: list[Message] = []
    n = 0
    while f"{prefix}.{n}.message.role" in attributes:
        base = f"{prefix}.{n}.message"
        calls = indexed_tool_calls(
            attributes, f"{base}.tool_calls", name="tool_call.function.name",
            call_id="tool_call.id", arguments="tool_call.function.arguments",
        )  # fmt: skip
        content = attributes.get(f"{base}.content")
        if content is None:
            content = _contents(attributes, f"{base}.contents")
        found.append(
            Message(
                role_of(attributes[f"{base}.role"]),
                content,
                calls,
                tool_call_id=str_or_none(attributes.get(f"{base}.tool_call_id")),
            )
        )
        n += 1
    return found


def _contents(attributes: Mapping[str, Any], prefix: str) -> str | None:
    texts = []
    k = 0
    while f"{prefix}.{k}.message_content.type" in attributes:
        text = attributes.get(f"{prefix}.{k}.message_content.text")
        if isinstance(text, str):
            texts.append(text)
        k += 1
    return "".join(texts) if texts else None


def tool(attributes: Mapping[str, Any], asked: Any) -> tuple[str | None, str, Any, Any, str | None]:
    """A TOOL span as (call id, name, input, output, error). ``asked(call_id)`` gives
    the model's call (whose arguments are the input: LangChain's ``input.value`` is
    the tool's input string, not its arguments)."""
    name = str(attributes.get("tool.name") or "tool")
    call_id = str_or_none(attributes.get("tool_call.id"))
    output: Any = _json(attributes.get("output.value"))
    error = None
    message = output.get("data") if isinstance(output, Mapping) else None
    if isinstance(message, Mapping) and message.get("type") == "tool":
        call_id = call_id or str_or_none(message.get("tool_call_id"))
        if message.get("status") == "error":
            error = str(message.get("content"))
        output = message.get("content")
    call = asked(call_id) if call_id else None
    if call is not None:
        arguments = call.arguments
    else:
        arguments = arguments_of(attributes.get("tool.parameters") or attributes.get("input.value"))
    return call_id, name, arguments, output, error


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
