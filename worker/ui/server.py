"""The viewer's HTTP server: the two pages, their static files, and the JSON API.

Built on the standard library's ``ThreadingHTTPServer`` on purpose: a local,
read-only viewer serves one person's browser, a handful of requests a second, so a
web framework would add a dependency (and its updates) for nothing. One thread per
request; each request opens its own read-only SQLite connection.

Safety: it binds 127.0.0.1 unless told otherwise, and while bound to a loopback
address it answers only requests whose ``Host`` is that address (a web page
elsewhere cannot read sessions through DNS rebinding). Every response carries a
Content-Security-Policy that allows only this server's own scripts and styles, so
even a rendering mistake could not run an agent's ``<script>`` output; the page
itself renders all session text with ``textContent``. Nothing sent names a token:
the remote database is shown as its URL without credentials or query.

The API (documented in docs/CLI.md, ``ui``):
  GET /api/info                                 what is being shown
  GET /api/stats?agent&status&since&by          the figures of `stats --json`
  GET /api/sessions?agent&status&since&q&sort&dir&limit&offset   the list
  GET /api/sessions/<id or unique prefix>       one session: its row, counts, sync state
  GET /api/sessions/<id>/details                the side panel: model, tokens, cost, cwd
  GET /api/sessions/<id>/tree                   its parent, its children as a tree, totals
  GET /api/sessions/<id>/events?after&limit     transcript items after a cursor
  GET /api/sessions/<id>/tools?limit            the tool calls, for the timeline
  GET /api/sessions/<id>/messages/<seq>?full=1  one message (full text with full=1)
  GET /api/sessions/<id>/tools/<call_id>?full=1 one tool call
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from agentspool.worker.reports.stats import StatsError
from agentspool.worker.reports.transcript import end_reason, since_to_iso
from agentspool.worker.ui import family, queries
from agentspool.worker.ui.list_order import DEFAULT_SORT, SORTS
from agentspool.worker.ui.sources import (
    STATUSES,
    AmbiguousSession,
    ListFilter,
    ReplicaGone,
    SessionNotFound,
    Source,
    SourceError,
    StatsFilter,
    duration_ms,
)

log = logging.getLogger(__name__)

POLL_MS = 2000  # how often an open page asks for news
MAX_LIST_LIMIT = 500

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def load_static() -> dict[str, bytes]:
    """The page's files, read once from the package (they ship as package data)."""
    files: dict[str, bytes] = {}
    root = resources.files("agentspool.worker.ui") / "static"
    for entry in root.iterdir():
        if entry.is_file() and any(entry.name.endswith(ext) for ext in _CONTENT_TYPES):
            files[entry.name] = entry.read_bytes()
    return files


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, source: Source, *, verbose: bool = False) -> None:
        self.source = source
        self.verbose = verbose
        self.static = load_static()
        self.loopback = is_loopback(host)
        super().__init__((host, port), ViewerHandler)
        bound_port = self.server_address[1]
        self.allowed_hosts = {
            f"{name}:{bound_port}" for name in ("127.0.0.1", "localhost", "[::1]", host)
        }

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        if shown in ("0.0.0.0", "[::]"):
            shown = "127.0.0.1"
        return f"http://{shown}:{port}/"


class ViewerHandler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"
    server_version = "agentspool-ui"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            log.info("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            if self.server.loopback and self.headers.get("Host") not in self.server.allowed_hosts:
                raise HttpError(HTTPStatus.FORBIDDEN, "unexpected Host header")
            url = urlsplit(self.path)
            segments = [unquote(s) for s in url.path.split("/")[1:]]
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if segments and segments[0] == "api":
                self._send_json(HTTPStatus.OK, self._api(segments[1:], params))
            else:
                self._page(segments)
        except HttpError as exc:
            self._send_json(exc.status, {"error": str(exc), **exc.extra})
        except BrokenPipeError:
            pass
        except Exception:
            log.exception("the viewer failed on %s", self.path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "the viewer failed; its log (stderr) has the details"},
            )

    # ---- pages -----------------------------------------------------------------

    def _page(self, segments: list[str]) -> None:
        if segments in ([""], []):
            name = "index.html"
        elif segments == ["stats"]:
            name = "stats.html"
        elif segments[0] == "s" and len(segments) == 2 and segments[1]:
            name = "session.html"
        elif segments[0] == "static" and len(segments) == 2:
            name = segments[1]
        elif segments == ["favicon.ico"]:
            self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
            return
        else:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such page")
        body = self.server.static.get(name)
        if body is None:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such file")
        ext = name[name.rfind(".") :]
        self._send(HTTPStatus.OK, body, _CONTENT_TYPES[ext], cache="no-cache")

    # ---- the API ---------------------------------------------------------------

    def _api(self, segments: list[str], params: dict[str, str]) -> Any:
        source = self.server.source
        try:
            if segments == ["info"]:
                return self._info()
            if segments == ["sessions"]:
                return source.list_sessions(_list_filter(params))
            if segments == ["stats"]:
                return source.stats(_stats_filter(params))
            if len(segments) >= 2 and segments[0] == "sessions":
                session_id = source.resolve(segments[1])
                rest = segments[2:]
                if not rest:
                    return self._session(session_id)
                if rest == ["events"]:
                    return self._events(session_id, params)
                if rest == ["tools"]:
                    return self._tools(session_id, params)
                if rest == ["details"]:
                    return self._details(session_id)
                if rest == ["tree"]:
                    return family.tree(*source.family_rows(session_id), time.time())
                if len(rest) == 2 and rest[0] == "messages":
                    return self._message(session_id, _int(rest[1], "seq"), _flag(params, "full"))
                if len(rest) == 2 and rest[0] == "tools":
                    return self._tool(session_id, rest[1], _flag(params, "full"))
        except SessionNotFound as exc:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no session {exc.args[0]!r}") from None
        except AmbiguousSession as exc:
            raise HttpError(HTTPStatus.CONFLICT, str(exc), candidates=exc.candidates) from None
        except ReplicaGone as exc:
            raise HttpError(HTTPStatus.GONE, str(exc)) from None
        except (queries.BadCursor, StatsError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except SourceError as exc:
            raise HttpError(HTTPStatus.BAD_GATEWAY, str(exc)) from None
        raise HttpError(HTTPStatus.NOT_FOUND, "no such API path; see docs/CLI.md")

    def _info(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "source": self.server.source.describe(),
            "version": version("agentspool"),
            "poll_ms": POLL_MS,
            "statuses": list(STATUSES),
        }

    def _summary(self, q: queries.Query, session_id: str) -> dict[str, Any]:
        row = queries.session_row(q, session_id)
        if row is None:
            raise SessionNotFound(session_id)
        # The metadata comes parsed with the details; why the session ended is part of
        # its status, so it comes with every poll (a live page sees the end arrive).
        row["end_reason"] = end_reason(row.pop("metadata", None))
        numbers = self.server.source.numbers(session_id, q)
        last = numbers["last_activity_at"] or row["started_at"]
        ended = row["ended_at"] or (None if row["status"] == "running" else last)
        return (
            row
            | numbers
            | {
                "duration_ms": duration_ms(row["started_at"], ended, time.time()),
                "open": row["status"] == "running",
            }
        )

    def _session(self, session_id: str) -> dict[str, Any]:
        source = self.server.source
        with source.reader(session_id) as q:
            session = self._summary(q, session_id)
        return {
            "session": session,
            "sync": source.sync_state(session_id),
            "source": source.describe(),
        }

    def _details(self, session_id: str) -> dict[str, Any]:
        with self.server.source.reader(session_id) as q:
            row = queries.session_row(q, session_id)
            if row is None:
                raise SessionNotFound(session_id)
            return queries.details(q, row)

    def _events(self, session_id: str, params: dict[str, str]) -> dict[str, Any]:
        limit = _int(params.get("limit", str(queries.PAGE_ITEMS)), "limit")
        with self.server.source.reader(session_id) as q:
            page = queries.transcript_page(q, session_id, params.get("after"), limit)
            session = self._summary(q, session_id)
        return page | {"session": session}

    def _tools(self, session_id: str, params: dict[str, str]) -> dict[str, Any]:
        limit = _int(params.get("limit", str(queries.TIMELINE_TOOLS)), "limit")
        with self.server.source.reader(session_id) as q:
            tools = queries.timeline(q, session_id, limit)
            session = self._summary(q, session_id)
        return {"tools": tools, "total": session["tool_count"], "session": session}

    def _message(self, session_id: str, seq: int, full: bool) -> dict[str, Any]:
        with self.server.source.reader(session_id) as q:
            found = queries.message(q, session_id, seq, full)
        if found is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no message {seq} in session {session_id}")
        return found

    def _tool(self, session_id: str, call_id: str, full: bool) -> dict[str, Any]:
        with self.server.source.reader(session_id) as q:
            found = queries.tool(q, session_id, call_id, full)
        if found is None:
            raise HttpError(
                HTTPStatus.NOT_FOUND, f"no tool call {call_id!r} in session {session_id}"
            )
        return found

    # ---- sending ---------------------------------------------------------------

    def _send_json(self, status: HTTPStatus, document: Any) -> None:
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", cache="no-store")

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, cache: str = "no-store"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer") from None


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "") in ("1", "true", "yes")


def _status_and_since(params: dict[str, str]) -> tuple[str | None, str | None]:
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"status must be one of {', '.join(STATUSES)}")
    since = params.get("since") or None
    if since is not None:
        try:
            since = since_to_iso(since)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
    return status, since


def _stats_filter(params: dict[str, str]) -> StatsFilter:
    """``by`` is a comma-separated list (``day,agent``); compute_stats checks it.
    ``tool_groups=0`` leaves the tool figures out of the groups."""
    status, since = _status_and_since(params)
    by = tuple(part for part in (params.get("by") or "").split(",") if part)
    tool_groups = params.get("tool_groups", "1")
    if tool_groups not in ("0", "1"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "tool_groups is 0 or 1")
    return StatsFilter(
        agent=params.get("agent") or None,
        status=status,
        since=since,
        by=by,
        tool_groups=tool_groups == "1",
    )


def _list_filter(params: dict[str, str]) -> ListFilter:
    status, since = _status_and_since(params)
    limit = _int(params.get("limit", "100"), "limit")
    offset = _int(params.get("offset", "0"), "offset")
    sort = params.get("sort") or DEFAULT_SORT
    if sort not in SORTS:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"sort must be one of {', '.join(SORTS)}")
    direction = params.get("dir") or "desc"
    if direction not in ("asc", "desc"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "dir must be asc or desc")
    return ListFilter(
        agent=params.get("agent") or None,
        status=status,
        since=since,
        text=params.get("q") or None,
        limit=max(1, min(limit, MAX_LIST_LIMIT)),
        offset=max(0, offset),
        sort=sort,
        descending=direction == "desc",
    )


def serve(
    server: ViewerServer,
    *,
    open_browser: bool = False,
    ready: Callable[[str], None] = print,
) -> None:
    """Serve until SIGTERM or SIGINT. Signal handlers only set a flag; the server's
    loop runs in a thread and is shut down from here."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.serve_forever, name="ui-server", daemon=True)
    thread.start()
    try:
        ready(server.url)
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        for s, handler in previous.items():
            signal.signal(s, handler)
