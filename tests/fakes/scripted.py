"""What every scripted model server in tests/fakes/ shares: an HTTP server on 127.0.0.1
(or on a listening socket a test made, e.g. inside a network namespace) in a thread,
the routes of scripted turns, the record of requests, and stalled responses.

A client sends the whole conversation on every call, so a test scripts the model's
turns per *conversation*: a route is a queue of turns picked by a substring of the
conversation's first user message; routes with a substring are tried first, in the
order given, the route with none (the main conversation) last. A request no route has
a turn left for is listed in ``unscripted`` (a test asserts it is empty); each fake
answers it with plain text, never an HTTP error, which a client would retry.

A fake's turn may ``stall``: the handler streams its deltas, then the response hangs
until ``release()`` or ``close()``, so a test can SIGKILL the client mid-turn;
``stalled`` is set when that point is reached.

Each fake (anthropic_api.py, openai_api.py, openai_chat_stream.py) builds on
``ScriptedAPI``, ``ScriptedHandler`` and ``RecordedRequest`` and keeps the wire format
of its API to itself.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

STALL_LIMIT_S = 300.0  # a stalled response never outlives a test by more than this


@dataclass
class RecordedRequest:
    """One request a fake got (the API key headers are never kept)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    route: str | None = None  # the route that answered it ("" = the main conversation)


TurnT = TypeVar("TurnT")
RequestT = TypeVar("RequestT", bound=RecordedRequest)
ApiT = TypeVar("ApiT", bound="ScriptedAPI[Any, Any]")


def first_user_text(body: Any) -> str:
    """The text of a ``messages`` request's first user message (every text part of it)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages or []:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(
            p.get("text", "")
            for p in content or []
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def halves(value: str) -> list[str]:
    """A value streamed as two deltas (one when it is too short to split)."""
    middle = len(value) // 2
    return [value[:middle], value[middle:]] if middle else [value]


class ScriptedAPI(Generic[TurnT, RequestT]):
    """The server. ``script(turns, when=None)`` adds a route; ``url`` is its base URL."""

    handler: ClassVar[type[ScriptedHandler[Any]]]  # the fake's own wire format
    url_path: ClassVar[str] = ""  # what a client's base URL has after the port
    # False: a conversation whose route is used up is unscripted. True: the next route
    # that matches answers it, so a test may script one conversation after another.
    used_up_route_gives_way: ClassVar[bool] = False

    def __init__(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (a listening socket, e.g. made inside a network namespace),
        else on a free 127.0.0.1 port."""
        self._routes: list[tuple[str, deque[TurnT]]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[RequestT] = []
        self.unscripted: list[RequestT] = []
        self.stalled = threading.Event()
        self._released = threading.Event()
        self._closing = threading.Event()
        server = ScriptedHTTPServer(("127.0.0.1", 0), self.handler, bind_and_activate=sock is None)
        if sock is not None:
            server.socket.close()
            server.socket = sock
            server.server_address = sock.getsockname()
        server.api = self
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.url_path}"

    def script(self, turns: list[TurnT], when: str | None = None) -> None:
        """Answer a conversation whose first user message contains ``when`` (the main
        conversation when None) with ``turns``, one per request, in order."""
        with self._lock:
            self._routes.append((when or "", deque(turns)))

    def release(self) -> None:
        """Let stalled responses finish."""
        self._released.set()

    def remaining(self) -> dict[str, int]:
        with self._lock:
            return {when: len(turns) for when, turns in self._routes if turns}

    def close(self) -> None:
        self._closing.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def new_id(self, prefix: str) -> str:
        """An id shaped like the real API's (``msg_…``, ``call_…``), unique per server."""
        return f"{prefix}_fake{next(self._ids):06d}"

    # ---- for the handlers -------------------------------------------------------------

    def _first_user_text(self, body: Any) -> str:
        return first_user_text(body)

    def _next_turn(self, request: RequestT) -> TurnT | None:
        """Record ``request`` and take the turn its route has next (None: unscripted)."""
        first = self._first_user_text(request.body)
        with self._lock:
            self.requests.append(request)
            ordered = [r for r in self._routes if r[0]] + [r for r in self._routes if not r[0]]
            for when, turns in ordered:
                if when not in first:
                    continue
                if turns:
                    request.route = when
                    return turns.popleft()
                if not self.used_up_route_gives_way:
                    request.route = when
                    break
            self.unscripted.append(request)
            return None

    def _record(self, request: RequestT) -> None:
        """Record a request that takes no turn."""
        with self._lock:
            self.requests.append(request)

    def _hold_stalled(self) -> bool:
        """Hang a stalled response until released; False when the server is closing."""
        self.stalled.set()
        self._released.wait(STALL_LIMIT_S)
        return not self._closing.is_set()


class ScriptedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    api: ScriptedAPI[Any, Any]


class ScriptedHandler(BaseHTTPRequestHandler, Generic[ApiT]):
    """Reading a request and writing JSON or an event stream; a fake's handler answers."""

    server: ScriptedHTTPServer
    protocol_version = "HTTP/1.1"
    unkept_headers: ClassVar[tuple[str, ...]] = ("authorization", "api-key")
    request_id_header: ClassVar[str | None] = None  # the header the real API names a request in

    @property
    def api(self) -> ApiT:
        return cast(ApiT, self.server.api)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
        pass

    def _json_body(self) -> Any:
        """The request's JSON body (None when there is none, or it is no JSON)."""
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _kept_headers(self) -> dict[str, str]:
        return {
            k.lower(): v for k, v in self.headers.items() if k.lower() not in self.unkept_headers
        }

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self._send_request_id()
        self.end_headers()
        self.wfile.write(data)

    def _start_event_stream(self) -> None:
        """Headers of a server-sent event stream; the connection closes after it."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self._send_request_id()
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def _event(self, data: dict[str, Any], name: str | None = None) -> None:
        head = f"event: {name}\n" if name else ""
        self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _done(self) -> None:
        """The ``data: [DONE]`` line OpenAI's streams end with."""
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _stall(self) -> bool:
        """Flush what was streamed and hang until released; False when closing."""
        self.wfile.flush()
        return self.api._hold_stalled()

    def _send_request_id(self) -> None:
        if self.request_id_header:
            self.send_header(self.request_id_header, self.api.new_id("req"))
