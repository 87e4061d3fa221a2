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

import itertools
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FALLBACK_MODEL = "claude-fake-1"  # for a request that names no model
STALL_LIMIT_S = 300.0  # a stalled response never outlives a test by more than this


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
class Request:
    """One request the fake got (the API key header is never kept)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    route: str | None = None  # the route that answered it ("" = the main conversation)
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


def first_user_text(body: Any) -> str:
    """The text of a request's first user message (every text block of it)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages or []:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(
            b.get("text", "")
            for b in content or []
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


class FakeAnthropicAPI:
    """The server. ``script(turns, when=None)`` adds a route; ``url`` is its base URL."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (a listening socket, e.g. made inside a network namespace),
        else on a free 127.0.0.1 port."""
        self._routes: list[tuple[str, deque[Turn]]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[Request] = []
        self.unscripted: list[Request] = []
        self.stalled = threading.Event()
        self._released = threading.Event()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler, bind_and_activate=sock is None)
        if sock is not None:
            self._server.socket.close()
            self._server.socket = sock
            self._server.server_address = sock.getsockname()
        self._server.api = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, turns: list[Turn], when: str | None = None) -> None:
        """Answer a conversation whose first user message contains ``when`` (the main
        conversation when None) with ``turns``, one per request, in order."""
        with self._lock:
            self._routes.append((when or "", deque(turns)))

    def release(self) -> None:
        """Let stalled responses finish."""
        self._released.set()

    def messages_requests(self, route: str | None = None) -> list[Request]:
        """The ``/v1/messages`` requests, optionally only those a route answered."""
        with self._lock:
            found = [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]
        return found if route is None else [r for r in found if r.route == route]

    def remaining(self) -> dict[str, int]:
        with self._lock:
            return {when: len(turns) for when, turns in self._routes if turns}

    def close(self) -> None:
        self._closing.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FakeAnthropicAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- answering -----------------------------------------------------------------

    def _next_turn(self, request: Request) -> Turn | None:
        first = request.first_user_text
        with self._lock:
            self.requests.append(request)
            # Routes with a substring first, in the order given; the main one last.
            ordered = [r for r in self._routes if r[0]] + [r for r in self._routes if not r[0]]
            for when, turns in ordered:
                if when in first:
                    request.route = when
                    if turns:
                        return turns.popleft()
                    break
            self.unscripted.append(request)
            return None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    def _wait_released(self) -> None:
        self.stalled.set()
        self._released.wait(STALL_LIMIT_S)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: FakeAnthropicAPI


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
        pass

    def do_GET(self) -> None:
        self._record(None)
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "fake"}})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            self._record(body)
            self._json(200, {"input_tokens": 100})
            return
        if path != "/v1/messages":
            self._record(body)
            self._json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
            )
            return
        api = self.server.api
        request = self._request(body)
        scripted = api._next_turn(request)
        if scripted is None:
            scripted = Turn([text("(the fake API has no scripted turn for this request)")])
        blocks = [dict(b) for b in scripted.blocks]
        for block in blocks:
            if block["type"] == "tool_use" and not block.get("id"):
                block["id"] = api._new_id("toolu")
        request.tool_use_ids = [b["id"] for b in blocks if b["type"] == "tool_use"]
        request.response_id = api._new_id("msg")
        if scripted.model is None:
            asked = body.get("model") if isinstance(body, dict) else None
            scripted = replace(scripted, model=asked if isinstance(asked, str) else FALLBACK_MODEL)
        if isinstance(body, dict) and body.get("stream"):
            self._stream(request.response_id, scripted, blocks)
        else:
            self._json(200, _message(request.response_id, scripted, blocks))

    def _request(self, body: Any) -> Request:
        headers = {
            k.lower(): v
            for k, v in self.headers.items()
            if k.lower() not in ("x-api-key", "authorization")
        }
        return Request(self.command, self.path, headers, body)

    def _record(self, body: Any) -> None:
        request = self._request(body)
        with self.server.api._lock:
            self.server.api.requests.append(request)

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", self.server.api._new_id("req"))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, message_id: str, scripted: Turn, blocks: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", self.server.api._new_id("req"))
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        start = _message(message_id, scripted, [], output_tokens=1, stop=False)
        try:
            self._event("message_start", {"type": "message_start", "message": start})
            for index, block in enumerate(blocks):
                self._block(index, block)
            if scripted.stall:
                self.wfile.flush()
                self.server.api._wait_released()
                if self.server.api._closing.is_set():
                    return
            self._event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": scripted.stop_reason, "stop_sequence": None},
                    "usage": scripted.usage(scripted.output_tokens),
                },
            )
            self._event("message_stop", {"type": "message_stop"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client is gone (killed mid-turn)

    def _block(self, index: int, block: dict[str, Any]) -> None:
        kind = block["type"]
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": part} for part in _halves(block["text"])]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _halves(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            arguments = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _halves(arguments)]
        else:
            raise ValueError(f"unknown block type {kind!r}")
        self._event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        for delta in deltas:
            self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _event(self, name: str, data: dict[str, Any]) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


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


def _halves(value: str) -> list[str]:
    """A value streamed as two deltas (one when it is too short to split)."""
    middle = len(value) // 2
    return [value[:middle], value[middle:]] if middle else [value]
