"""A scripted OpenAI API on 127.0.0.1: chat completions and the Responses API, streamed
and not, for driving the real OpenAI-compatible libraries offline (the openai client,
the OpenAI Agents SDK, langchain-openai, and the instrumentations that wrap them).

A client sends the whole conversation on every call. A test scripts the model's turns
per conversation (tests/fakes/scripted.py): a route is a queue of turns picked by a
substring of the conversation's first user message (the route with no substring answers
the rest); here a route whose turns are used up gives way to the next route that
matches, so a test may script one conversation after another. Every POST is recorded.
A request with no turn left gets a plain text answer and is listed in ``unscripted`` (a
test asserts it is empty), never an HTTP error, which a client would retry.

Both APIs answer the same ``Turn`` (text and/or function calls, usage, model), each in
its own shape: ``/v1/chat/completions`` as a ``chat.completion`` or its
``chat.completion.chunk`` stream (usage in a last chunk only when the request asks for
it with ``stream_options.include_usage``, as the real API does), ``/v1/responses`` as a
``response`` or its ``response.*`` event stream ending in ``response.completed``.

The libraries run in the test's own process: ``loopback_only()`` makes any connection
to an address but the loopback fail while it is open, so a library that would reach
the internet (an exporter, a download) is caught, not tolerated.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.scripted import RecordedRequest, ScriptedAPI, ScriptedHandler, halves

FALLBACK_MODEL = "gpt-fake-1"  # for a request that names no model


@dataclass
class FunctionCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None  # the call id (``call_…``); made up per response when None


def call(name: str, arguments: dict[str, Any], id: str | None = None) -> FunctionCall:
    return FunctionCall(name, arguments, id)


@dataclass
class Turn:
    """One model response: its text and/or function calls, its usage and model."""

    text: str | None = None
    calls: list[FunctionCall] = field(default_factory=list)
    input_tokens: int = 100
    output_tokens: int = 20
    cached_tokens: int = 0
    model: str | None = None  # None: the model the request asked for, as the real API does

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else "stop"


def answer(text: str, **fields: Any) -> Turn:
    return Turn(text, **fields)


def calls(*requested: FunctionCall, **fields: Any) -> Turn:
    return Turn(None, list(requested), **fields)


@dataclass
class Request(RecordedRequest):
    """One request the fake got (the API key header is never kept; ``path`` without
    the query)."""

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


def first_user_text(body: Any) -> str:
    """The text of a request's first user message, in either API's shape."""
    if not isinstance(body, dict):
        return ""
    items = body.get("messages") or body.get("input") or []
    if isinstance(items, str):
        return items
    for item in items:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(
            str(part.get("text", "")) for part in content or [] if isinstance(part, dict)
        )
    return ""


@contextmanager
def loopback_only() -> Iterator[list[Any]]:
    """While open, a TCP connection to any address but the loopback raises
    ConnectionRefusedError before it is attempted; the refused addresses are listed in
    what this yields (a test asserts it is empty)."""
    connect = socket.socket.connect
    refused: list[Any] = []

    def guarded(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host is not None:
            if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                refused.append(address)
                raise ConnectionRefusedError(f"the tests stay offline: {address!r}")
        connect(sock, address)

    socket.socket.connect = guarded  # type: ignore[method-assign, assignment]
    try:
        yield refused
    finally:
        socket.socket.connect = connect  # type: ignore[method-assign]


class _Handler(ScriptedHandler["FakeOpenAIAPI"]):
    request_id_header = "x-request-id"

    def do_GET(self) -> None:
        self._json(404, {"error": {"type": "not_found", "message": self.path}})

    def do_POST(self) -> None:
        body = self._json_body()
        path = self.path.split("?")[0]
        request = Request(self.command, path, self._kept_headers(), body)
        api = self.api
        if path not in ("/v1/chat/completions", "/v1/responses"):
            api._record(request)
            self._json(404, {"error": {"type": "not_found", "message": path}})
            return
        scripted = api._next_turn(request)
        if scripted is None:
            scripted = Turn("(the fake API has no scripted turn for this request)")
        asked = body.get("model") if isinstance(body, dict) else None
        model = scripted.model or (asked if isinstance(asked, str) else FALLBACK_MODEL)
        ids = [c.id or api.new_id("call") for c in scripted.calls]
        if path == "/v1/chat/completions":
            chat = _Chat(api.new_id("chatcmpl"), model, scripted, ids)
            if request.stream:
                options = body.get("stream_options") or {}
                self._sse(chat.chunks(bool(options.get("include_usage"))), done=True)
            else:
                self._json(200, chat.completion())
        else:
            responses = _Responses(api, model, scripted, ids)
            if request.stream:
                self._sse(responses.events(), done=False)
            else:
                self._json(200, responses.response("completed"))

    def _sse(self, events: list[tuple[str | None, dict[str, Any]]], *, done: bool) -> None:
        self._start_event_stream()
        try:
            for name, data in events:
                self._event(data, name)
            if done:
                self._done()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client is gone


class FakeOpenAIAPI(ScriptedAPI[Turn, Request]):
    """The server (tests/fakes/scripted.py): ``script(turns, when=None)`` adds a route,
    ``url`` is its base URL (``…/v1``, what ``OpenAI(base_url=...)`` and
    ``OPENAI_BASE_URL`` take). A route whose turns are used up gives way to the next
    route that matches, so a test may script one conversation after another."""

    handler = _Handler
    url_path = "/v1"
    used_up_route_gives_way = True

    def _first_user_text(self, body: Any) -> str:
        return first_user_text(body)  # either API's shape


@dataclass
class _Chat:
    """A turn as chat completions has it."""

    id: str
    model: str
    turn: Turn
    ids: list[str]

    def usage(self) -> dict[str, Any]:
        t = self.turn
        return {
            "prompt_tokens": t.input_tokens,
            "completion_tokens": t.output_tokens,
            "total_tokens": t.input_tokens + t.output_tokens,
            "prompt_tokens_details": {"cached_tokens": t.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": 0, "model": self.model}

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.turn.text}
        if self.turn.calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c, call_id in zip(self.turn.calls, self.ids, strict=True)
            ]
        choice = {"index": 0, "message": message, "finish_reason": self.turn.finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage()}

    def chunks(self, include_usage: bool) -> list[tuple[str | None, dict[str, Any]]]:
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": part} for part in _halves(self.turn.text or "")]
        for index, (c, call_id) in enumerate(zip(self.turn.calls, self.ids, strict=True)):
            start = {"index": index, "id": call_id, "type": "function"}
            deltas.append(
                {"tool_calls": [{**start, "function": {"name": c.name, "arguments": ""}}]}
            )
            for part in _halves(json.dumps(c.arguments)):
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        head = self._head("chat.completion.chunk")
        chunks: list[tuple[str | None, dict[str, Any]]] = [
            (None, {**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
            for d in deltas
        ]
        last = {"index": 0, "delta": {}, "finish_reason": self.turn.finish_reason}
        chunks.append((None, {**head, "choices": [last]}))
        if include_usage:
            chunks.append((None, {**head, "choices": [], "usage": self.usage()}))
        return chunks


class _Responses:
    """A turn as the Responses API has it: a message item, then a function_call item
    per call."""

    def __init__(self, api: FakeOpenAIAPI, model: str, turn: Turn, ids: list[str]) -> None:
        self.id = api.new_id("resp")
        self.model = model
        self.turn = turn
        self.items: list[dict[str, Any]] = []
        if turn.text is not None:
            part = {"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}
            self.items.append(
                {"type": "message", "id": api.new_id("msg"), "role": "assistant",
                 "status": "completed", "content": [part]}
            )  # fmt: skip
        for c, call_id in zip(turn.calls, ids, strict=True):
            self.items.append(
                {"type": "function_call", "id": api.new_id("fc"), "call_id": call_id,
                 "name": c.name, "arguments": json.dumps(c.arguments), "status": "completed"}
            )  # fmt: skip

    def response(self, status: str) -> dict[str, Any]:
        t = self.turn
        done = status == "completed"
        return {
            "id": self.id, "object": "response", "created_at": 0, "status": status,
            "model": self.model, "output": self.items if done else [],
            "error": None, "incomplete_details": None, "instructions": None,
            "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0, "top_p": 1.0,
            "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
            "usage": {
                "input_tokens": t.input_tokens, "output_tokens": t.output_tokens,
                "total_tokens": t.input_tokens + t.output_tokens,
                "input_tokens_details": {"cached_tokens": t.cached_tokens},
                "output_tokens_details": {"reasoning_tokens": 0},
            } if done else None,
        }  # fmt: skip

    def events(self) -> list[tuple[str | None, dict[str, Any]]]:
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.response("in_progress")},
            {"type": "response.in_progress", "response": self.response("in_progress")},
        ]
        for index, item in enumerate(self.items):
            at = {"output_index": index, "item_id": item["id"]}
            if item["type"] == "message":
                text = item["content"][0]["text"]
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                events += [
                    {"type": "response.output_item.added", "output_index": index,
                     "item": {**item, "status": "in_progress", "content": []}},
                    {"type": "response.content_part.added", **at, "content_index": 0,
                     "part": part},
                    *({"type": "response.output_text.delta", **at, "content_index": 0,
                       "delta": piece, "logprobs": []} for piece in _halves(text)),
                    {"type": "response.output_text.done", **at, "content_index": 0,
                     "text": text, "logprobs": []},
                    {"type": "response.content_part.done", **at, "content_index": 0,
                     "part": item["content"][0]},
                ]  # fmt: skip
            else:
                events += [
                    {"type": "response.output_item.added", "output_index": index,
                     "item": {**item, "status": "in_progress", "arguments": ""}},
                    *({"type": "response.function_call_arguments.delta", **at, "delta": piece}
                      for piece in _halves(item["arguments"])),
                    {"type": "response.function_call_arguments.done", **at,
                     "name": item["name"], "arguments": item["arguments"]},
                ]  # fmt: skip
            events.append(
                {"type": "response.output_item.done", "output_index": index, "item": item}
            )
        events.append({"type": "response.completed", "response": self.response("completed")})
        for n, event in enumerate(events):
            event["sequence_number"] = n
        return [(event["type"], event) for event in events]


def _halves(value: str) -> list[str]:
    """``halves``, but nothing for an empty value: no empty delta is streamed."""
    return halves(value) if value else []
