"""A scripted OpenAI chat-completions API on 127.0.0.1, for driving the real OpenCode offline.

OpenCode (through ``@ai-sdk/openai-compatible``) calls only streaming
``POST /v1/chat/completions``: a title request (no tools) when a session starts, then
one request per model step, each with the whole conversation. A test scripts the
model's turns per *conversation*: the main session and each child session of the task
tool (whose first user message is the task prompt) make their own requests, so a script
is a list of routes, each a queue of turns picked by a substring of the conversation's
first user message (the main one has no substring). A continued session sends the same
first message again, so its route goes on where it stopped. Title requests never take a
turn: they get ``title`` back. Every request is recorded. A request with no turn left
gets a plain text answer and is listed in ``unscripted`` (a test asserts it is empty),
never an HTTP error: a client would retry that.

A turn streams as the real API does: a first chunk with the role, content deltas, tool
call deltas (id and name first, then the arguments in pieces), a chunk with the
``finish_reason``, then a chunk with no choices and the ``usage`` (``prompt_tokens``
counting cached ones too, ``prompt_tokens_details.cached_tokens``, ``completion_tokens``),
then ``data: [DONE]``. A turn may ``stall``: its deltas are streamed, then the response
hangs (no finish) until ``release()`` or ``close()``, so a test can SIGKILL the client
mid-stream; ``stalled`` is set when that point is reached.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.scripted import (
    RecordedRequest,
    ScriptedAPI,
    ScriptedHandler,
    first_user_text,
    halves,
)

FALLBACK_MODEL = "fake-model"  # for a request that names no model
TITLE = "A scripted session"


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_call(name: str, arguments: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    """A function call; ``id`` (``call_…``) is made up per response when not given."""
    return {"type": "tool_call", "id": id, "name": name, "arguments": arguments}


@dataclass
class Turn:
    """One model response: text and tool calls in order, and its usage."""

    parts: list[dict[str, Any]]
    prompt_tokens: int = 100  # every input token, the cached ones included (as OpenAI counts)
    completion_tokens: int = 20
    cached_tokens: int = 0
    stall: bool = False

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if any(p["type"] == "tool_call" for p in self.parts) else "stop"

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def turn(*parts: dict[str, Any], **fields: Any) -> Turn:
    return Turn(list(parts), **fields)


@dataclass
class Request(RecordedRequest):
    """One request the fake got (the authorization header is never kept)."""

    title: bool = False  # a title request (no tools), answered with TITLE
    tool_call_ids: list[str] = field(default_factory=list)

    @property
    def first_user_text(self) -> str:
        return first_user_text(self.body)

    @property
    def session_id(self) -> str | None:
        """OpenCode's session id, which it sends in the ``x-session-id`` header."""
        return self.headers.get("x-session-id")


class _Handler(ScriptedHandler["FakeOpenAIChat"]):
    def do_GET(self) -> None:
        self.api._record(self._request(None))
        self._json(404, {"error": {"message": f"no {self.path} here", "type": "not_found"}})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        body = self._json_body()
        api = self.api
        request = self._request(body)
        if not self.path.split("?")[0].endswith("/chat/completions"):
            api._record(request)
            self._json(404, {"error": {"message": f"no {self.path} here", "type": "not_found"}})
            return
        if isinstance(body, dict) and not body.get("tools"):
            request.title = True  # OpenCode's title request: never takes a scripted turn
            api._record(request)
            scripted: Turn | None = Turn([text(TITLE)], prompt_tokens=10, completion_tokens=3)
        else:
            scripted = api._next_turn(request)
        if scripted is None:
            scripted = Turn([text("(the fake API has no scripted turn for this request)")])
        parts = [dict(p) for p in scripted.parts]
        for part in parts:
            if part["type"] == "tool_call" and not part.get("id"):
                part["id"] = api.new_id("call")
        request.tool_call_ids = [p["id"] for p in parts if p["type"] == "tool_call"]
        asked = body.get("model") if isinstance(body, dict) else None
        model = asked if isinstance(asked, str) else FALLBACK_MODEL
        response_id = api.new_id("chatcmpl")
        if isinstance(body, dict) and body.get("stream"):
            self._stream(response_id, model, scripted, parts)
        else:
            self._json(200, _completion(response_id, model, scripted, parts))

    def _request(self, body: Any) -> Request:
        return Request(self.command, self.path, self._kept_headers(), body)

    def _stream(
        self, response_id: str, model: str, scripted: Turn, parts: list[dict[str, Any]]
    ) -> None:
        self._start_event_stream()
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> None:
            self._event({"id": response_id, "object": "chat.completion.chunk", "created": created,
                         "model": model, "choices": choices, **extra})  # fmt: skip

        def delta(value: dict[str, Any], finish: str | None = None) -> None:
            chunk([{"index": 0, "delta": value, "finish_reason": finish}])

        try:
            delta({"role": "assistant", "content": ""})
            calls = 0
            for part in parts:
                if part["type"] == "text":
                    for piece in halves(part["text"]):
                        delta({"content": piece})
                elif part["type"] == "tool_call":
                    index, calls = calls, calls + 1
                    head = {"index": index, "id": part["id"], "type": "function",
                            "function": {"name": part["name"], "arguments": ""}}  # fmt: skip
                    delta({"tool_calls": [head]})
                    for piece in halves(json.dumps(part["arguments"])):
                        delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                else:
                    raise ValueError(f"unknown part type {part['type']!r}")
            if scripted.stall and not self._stall():
                return
            delta({}, finish=scripted.finish_reason)
            chunk([], usage=scripted.usage())
            self._done()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client is gone (killed mid-stream)


class FakeOpenAIChat(ScriptedAPI[Turn, Request]):
    """The server (tests/fakes/scripted.py): ``script(turns, when=None)`` adds a route,
    ``url`` is its base URL (``…/v1`` is what a client's ``baseURL`` takes)."""

    handler = _Handler
    url_path = "/v1"

    def completions(self, route: str | None = None) -> list[Request]:
        """The model requests (title requests left out), optionally only a route's."""
        with self._lock:
            found = [
                r for r in self.requests if r.path.endswith("/chat/completions") and not r.title
            ]
        return found if route is None else [r for r in found if r.route == route]


def _completion(
    response_id: str, model: str, scripted: Turn, parts: list[dict[str, Any]]
) -> dict[str, Any]:
    calls = [
        {
            "id": p["id"],
            "type": "function",
            "function": {"name": p["name"], "arguments": json.dumps(p["arguments"])},
        }  # fmt: skip
        for p in parts
        if p["type"] == "tool_call"
    ]
    content = "".join(p["text"] for p in parts if p["type"] == "text")
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": scripted.finish_reason}],
        "usage": scripted.usage(),
    }
