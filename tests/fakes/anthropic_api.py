"""A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code offline.

Claude Code calls streaming ``POST /v1/messages`` once per model turn and sends the
whole conversation each time. A test scripts the model's turns per *conversation*: the
main session and each subagent (whose first user message is its task prompt) make
their own requests, so a script is a list of routes, each a queue of turns picked by
a substring of the conversation's first user message (the main one has no substring).
A resumed session sends the same first message again, so its route goes on where it
stopped. Every request is recorded. A request with no turn left gets a plain text
answer and is listed in ``unscripted`` (a test asserts it is empty), never an HTTP
error: Claude Code would retry that for minutes.

A turn may ``stall``: its blocks are streamed, then the response hangs (no
``message_stop``) until ``release()`` or ``close()``, so a test can SIGKILL the client
mid-turn; ``stalled`` is set when that point is reached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from tests.fakes.scripted import (
    RecordedRequest,
    ScriptedAPI,
    ScriptedHandler,
    first_user_text,
    halves,
)

FALLBACK_MODEL = "claude-fake-1"  # for a request that names no model


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def thinking(value: str, signature: str = "sig-fake") -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    """A tool call; ``id`` (``toolu_…``) is made up per response when not given."""
    return {"type": "tool_use", "id": id, "name": name, "input": input}


@dataclass
class Turn:
    """One model response: its content blocks in order, its usage and model."""

    blocks: list[dict[str, Any]]
    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    model: str | None = None  # None: the model the request asked for, as the real API does
    stall: bool = False

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(b["type"] == "tool_use" for b in self.blocks) else "end_turn"

    def usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": output_tokens,
        }


def turn(*blocks: dict[str, Any], **fields: Any) -> Turn:
    return Turn(list(blocks), **fields)


@dataclass
class Request(RecordedRequest):
    """One request the fake got (the API key header is never kept)."""

    response_id: str | None = None
    tool_use_ids: list[str] = field(default_factory=list)

    @property
    def first_user_text(self) -> str:
        return first_user_text(self.body)

    @property
    def session_id(self) -> str | None:
        """Claude Code's session id, which it sends in ``metadata.user_id`` (a JSON text)."""
        metadata = self.body.get("metadata") if isinstance(self.body, dict) else None
        try:
            user = json.loads(metadata["user_id"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return None
        return user.get("session_id") if isinstance(user, dict) else None

    @property
    def system_text(self) -> str:
        system = self.body.get("system") if isinstance(self.body, dict) else None
        if isinstance(system, list):
            return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
        return system if isinstance(system, str) else ""


class _Handler(ScriptedHandler["FakeAnthropicAPI"]):
    unkept_headers = ("x-api-key", "authorization")
    request_id_header = "request-id"

    def do_GET(self) -> None:
        self.api._record(self._request(None))
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "fake"}})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        body = self._json_body()
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            self.api._record(self._request(body))
            self._json(200, {"input_tokens": 100})
            return
        if path != "/v1/messages":
            self.api._record(self._request(body))
            self._json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
            )
            return
        api = self.api
        request = self._request(body)
        scripted = api._next_turn(request)
        if scripted is None:
            scripted = Turn([text("(the fake API has no scripted turn for this request)")])
        blocks = [dict(b) for b in scripted.blocks]
        for block in blocks:
            if block["type"] == "tool_use" and not block.get("id"):
                block["id"] = api.new_id("toolu")
        request.tool_use_ids = [b["id"] for b in blocks if b["type"] == "tool_use"]
        request.response_id = api.new_id("msg")
        if scripted.model is None:
            asked = body.get("model") if isinstance(body, dict) else None
            scripted = replace(scripted, model=asked if isinstance(asked, str) else FALLBACK_MODEL)
        if isinstance(body, dict) and body.get("stream"):
            self._stream(request.response_id, scripted, blocks)
        else:
            self._json(200, _message(request.response_id, scripted, blocks))

    def _request(self, body: Any) -> Request:
        return Request(self.command, self.path, self._kept_headers(), body)

    def _stream(self, message_id: str, scripted: Turn, blocks: list[dict[str, Any]]) -> None:
        self._start_event_stream()
        start = _message(message_id, scripted, [], output_tokens=1, stop=False)
        try:
            self._event({"type": "message_start", "message": start}, "message_start")
            for index, block in enumerate(blocks):
                self._block(index, block)
            if scripted.stall and not self._stall():
                return
            self._event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": scripted.stop_reason, "stop_sequence": None},
                    "usage": scripted.usage(scripted.output_tokens),
                },
                "message_delta",
            )
            self._event({"type": "message_stop"}, "message_stop")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client is gone (killed mid-turn)

    def _block(self, index: int, block: dict[str, Any]) -> None:
        kind = block["type"]
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": part} for part in halves(block["text"])]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in halves(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            arguments = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in halves(arguments)]
        else:
            raise ValueError(f"unknown block type {kind!r}")
        self._event(
            {"type": "content_block_start", "index": index, "content_block": start},
            "content_block_start",
        )
        for delta in deltas:
            self._event(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        self._event({"type": "content_block_stop", "index": index}, "content_block_stop")


class FakeAnthropicAPI(ScriptedAPI[Turn, Request]):
    """The server (tests/fakes/scripted.py): ``script(turns, when=None)`` adds a route,
    ``url`` is its base URL."""

    handler = _Handler

    def messages_requests(self, route: str | None = None) -> list[Request]:
        """The ``/v1/messages`` requests, optionally only those a route answered."""
        with self._lock:
            found = [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]
        return found if route is None else [r for r in found if r.route == route]


def _message(
    message_id: str,
    scripted: Turn,
    blocks: list[dict[str, Any]],
    output_tokens: int | None = None,
    stop: bool = True,
) -> dict[str, Any]:
    content = [dict(b) for b in blocks]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": scripted.model,
        "content": content,
        "stop_reason": scripted.stop_reason if stop else None,
        "stop_sequence": None,
        "usage": scripted.usage(scripted.output_tokens if output_tokens is None else output_tokens),
    }
