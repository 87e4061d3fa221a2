"""Hrana over HTTP: the libSQL wire protocol, spoken directly with httpx.

One ``POST <base>/v2/pipeline`` carries a list of requests (``execute``, ``batch``,
``close``) and returns one result per request. A ``batch`` runs its steps in order,
each step guarded by a condition on earlier steps; ``atomic_batch_body`` writes the
steps the way ``@libsql/client``'s ``batch()`` builds them, so the whole batch commits
or none of it does, and the write lock is held only while the server runs it, never
across a network round trip (Hrana spec; verified against sqld 0.24.32, DESIGN.md).

Why not the ``libsql`` package: it sends two HTTP requests per ``execute``, has no
batch call, holds the GIL while it waits and has no client-side timeout. httpx
releases the GIL while it waits, so the worker can send from threads of its own
process; deadline_http.py gives each request one total deadline (connect, send and
the whole answer) and caps the answer's size, which httpx alone does not.

Values are typed on the wire: integers travel as strings, blobs as base64.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit, urlunsplit

import httpx

from agentspool.worker.sync.deadline_http import (
    MAX_RESPONSE_BYTES,
    Deadline,
    DeadlineTransport,
    ResponseTooLarge,
    read_capped,
    read_gist,
    within,
)

PIPELINE_PATH = "/v2/pipeline"

# httpx logs every request at INFO with its full URL; ours are counted and reported
# by the sync engine, and a URL may carry credentials.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

# Kinds of failure; the sync engine decides what to do with each.
TRANSIENT = "transient"  # the network, an overloaded or restarting server: retry
PERMANENT = "permanent"  # the token, the schema: retrying cannot help until fixed
MISCONFIGURED = "misconfigured"  # the URL does not lead to a libSQL server
STATEMENT = "statement"  # a statement failed on some row: isolate it (poison row)

Statement = tuple[str, Sequence[Any]]


class HranaError(Exception):
    """A failed pipeline, with a kind and a one-line, token-free message."""

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.baton: str | None = None  # the stream goes on after a failed statement


class StepError(HranaError):
    """A statement of a batch failed: ``step`` is its index in the statement list."""

    def __init__(self, kind: str, message: str, step: int) -> None:
        super().__init__(kind, message)
        self.step = step


def http_base_url(url: str) -> str:
    """``libsql://host`` means ``https://host``; ``ws(s)://`` are Hrana's WebSocket
    spellings of the same servers. Credentials in the URL are never sent as such
    (the query string and ``user:password@`` are dropped; see ``token_in_url``)."""
    parts = urlsplit(url)
    scheme = {"libsql": "https", "wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an HTTP(S) or libsql:// URL: {redact_url(url)}")
    return urlunsplit((scheme, _host_port(parts), parts.path.rstrip("/"), "", ""))


def token_in_url(url: str) -> str | None:
    """``libsql://db.turso.io?authToken=...``: the token as Turso's clients take it."""
    values = parse_qs(urlsplit(url).query).get("authToken")
    return values[0] if values else None


def _host_port(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{host}:{parts.port}" if parts.port is not None else host


def redact_url(url: str) -> str:
    """The URL without ``user:password@`` and without its query string (which may
    carry ``authToken=``): safe to print."""
    try:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, _host_port(parts), parts.path, "", ""))
    except ValueError:  # e.g. a port that is not a number
        return url.split("?", 1)[0].rsplit("@", 1)[-1]


# ---- values ----------------------------------------------------------------


def encode_value(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "integer", "value": str(int(value))}
    if isinstance(value, int):
        return {"type": "integer", "value": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            return {"type": "null"}  # JSON has no NaN/inf; SQLite stores NaN as NULL too
        return {"type": "float", "value": value}
    if isinstance(value, str):
        return {"type": "text", "value": value}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"type": "blob", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"cannot send a {type(value).__name__} to the database")


def decode_value(value: dict[str, Any]) -> Any:
    kind = value.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(value["value"])
    if kind == "float":
        return float(value["value"])
    if kind == "text":
        return value["value"]
    if kind == "blob":
        return base64.b64decode(value.get("base64", ""))
    raise HranaError(PERMANENT, f"unknown value type {kind!r} from the database")


def statement(sql: str, args: Sequence[Any] = (), *, want_rows: bool = False) -> dict[str, Any]:
    return {"sql": sql, "args": [encode_value(a) for a in args], "want_rows": want_rows}


# An atomic batch, written straight to JSON text. A 4 MiB batch has tens of thousands
# of arguments: a dict for each (``statement``), then json.dumps of the lot, took ~50
# ms for a 5.9 MB batch on the sender thread (holding the interpreter lock the drain
# needs); writing the text in pieces, the strings through json's C string encoder,
# takes ~20 ms. tests/sync/test_hrana.py holds it, byte for byte, to json.dumps of
# the same batch built from dicts.
_json_string = json.encoder.encode_basestring  # ensure_ascii=False, the C version
_NULL = '{"type":"null"}'
_TEXT = '{"type":"text","value":'
_INTEGER = '{"type":"integer","value":"'


def _write_statement(out: list[str], sql: str, args: Sequence[Any]) -> None:
    """Append one statement's JSON to ``out`` in pieces (joined once, at the end)."""
    append = out.append
    append('{"sql":')
    append(_json_string(sql))
    append(',"args":[')
    separator = ""
    for value in args:  # text and integers inline: most values are, and calls cost
        kind = type(value)
        if kind is str:
            append(separator + _TEXT)
            append(_json_string(value))
            append("}")
        elif kind is int:
            append(separator + _INTEGER + str(value) + '"}')
        elif value is None:
            append(separator + _NULL)
        else:  # floats, booleans, blobs: encode_value's rules (and its TypeError)
            append(
                separator
                + json.dumps(encode_value(value), ensure_ascii=False, separators=(",", ":"))
            )
        separator = ","
    append('],"want_rows":false}')


def atomic_batch_body(statements: Sequence[Statement]) -> bytes:
    """The pipeline request body (compact JSON, UTF-8) of one atomic batch and a close.

    Steps: BEGIN IMMEDIATE, each statement only if the step before it succeeded,
    COMMIT only if the last statement did, and ROLLBACK unless the COMMIT succeeded.
    Statement ``i`` is step ``i + 1``."""
    out = ['{"baton":null,"requests":[{"type":"batch","batch":{"steps":[{"stmt":']
    _write_statement(out, "BEGIN IMMEDIATE", ())
    for step, (sql, args) in enumerate(statements, start=1):
        out.append('},{"stmt":')
        _write_statement(out, sql, args)
        out.append(',"condition":{"type":"ok","step":' + str(step - 1) + "}")
    commit = len(statements) + 1
    out.append('},{"stmt":')
    _write_statement(out, "COMMIT", ())
    out.append(',"condition":{"type":"ok","step":' + str(commit - 1) + '}},{"stmt":')
    _write_statement(out, "ROLLBACK", ())
    out.append(',"condition":{"type":"not","cond":{"type":"ok","step":' + str(commit) + "}}}")
    out.append(']}},{"type":"close"}]}')
    return "".join(out).encode()


@dataclass(frozen=True)
class Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    affected: int = 0


def decode_rows(result: dict[str, Any]) -> Rows:
    columns = [c.get("name") or "" for c in result.get("cols", [])]
    rows = [tuple(decode_value(v) for v in row) for row in result.get("rows", [])]
    return Rows(columns, rows, int(result.get("affected_row_count", 0) or 0))


# ---- errors ----------------------------------------------------------------

_SCHEMA_MARKERS = ("no such table", "no such column", "has no column")
_BUSY_MARKERS = ("database is locked", "sqlite_busy", "busy", "timed out", "timeout")


def classify_sql_error(message: str) -> str:
    lowered = message.lower()
    if any(m in lowered for m in _SCHEMA_MARKERS):
        return PERMANENT
    if any(m in lowered for m in _BUSY_MARKERS):
        return TRANSIENT
    return STATEMENT


def classify_status(status: int) -> str:
    """What an HTTP status from the pipeline endpoint means for us."""
    if status in (401, 403):
        return PERMANENT
    if status == 429 or status >= 500 and status not in (501, 505):
        return TRANSIENT
    return MISCONFIGURED  # 404, 405, 501, ...: this URL is not a libSQL server


CHECK_URL = "check the database URL (--db or TURSO_DATABASE_URL)"


def _status_message(status: int, where: str, body: str, *, had_token: bool = True) -> str:
    if status == 401 and not had_token:
        return (
            f"the database wants an auth token and none was given (HTTP 401 from {where}):"
            " set TURSO_AUTH_TOKEN"
        )
    if status == 401:
        return (
            f"the database rejected the auth token (HTTP 401 from {where}): check TURSO_AUTH_TOKEN"
        )
    if status == 403:
        return f"the auth token may not use this database (HTTP 403 from {where}): check TURSO_AUTH_TOKEN"
    kind = classify_status(status)
    detail = body_gist(body)
    if kind == MISCONFIGURED:
        return f"HTTP {status} from {where}: not a libSQL server? {CHECK_URL}" + (
            f" ({detail})" if detail else ""
        )
    return f"HTTP {status} from {where}" + (f": {detail}" if detail else "")


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>?")


def body_gist(body: str, limit: int = 160) -> str:
    """An error body as one short line: an HTML page by its title (or its text without
    tags), anything else cut at a word boundary."""
    if body.lstrip()[:1] == "<":
        title = _TITLE.search(body)
        text = title.group(1) if title else _TAG.sub(" ", body)
        text = " ".join(text.split())
        return f"an HTML page: {_cut(text, limit)}" if text else "an HTML page"
    return _cut(" ".join(body.split()), limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: rare from sqld/Turso; the backoff applies instead


# ---- the client ------------------------------------------------------------


class HranaClient:
    """One HTTP connection pool to one database. Not shared between threads: each
    sending thread owns a client."""

    def __init__(self, url: str, auth_token: str | None, timeout: float) -> None:
        self.base_url = http_base_url(url)
        auth_token = auth_token or token_in_url(url)
        self.where = redact_url(self.base_url) + PIPELINE_PATH
        headers = {"Content-Type": "application/json"}
        if auth_token:
            headers["Authorization"] = f"Bearer {auth_token}"
        self._token = auth_token
        self.timeout = timeout
        self._deadline = Deadline()
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
            transport=DeadlineTransport(self._deadline),
        )

    def close(self) -> None:
        self._http.close()

    def abort(self) -> None:
        """Fail the request in progress at once (from another thread): the sync
        engine's last word to a sender past its deadline."""
        self._deadline.abort()

    def __enter__(self) -> HranaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pipeline(
        self, requests: list[dict[str, Any]], baton: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Send requests in one HTTP request; return (results, baton). A result is the
        ``response`` of an ``ok`` entry; an ``error`` entry raises."""
        body = json.dumps(
            {"baton": baton, "requests": requests}, ensure_ascii=False, separators=(",", ":")
        )
        return self._post(body.encode())

    def _post(self, body: bytes) -> tuple[list[dict[str, Any]], str | None]:
        try:
            with (
                within(self._deadline, self.timeout),
                self._http.stream("POST", self.base_url + PIPELINE_PATH, content=body) as response,
            ):
                if response.status_code != 200:
                    raise HranaError(
                        classify_status(response.status_code),
                        self._scrub(
                            _status_message(
                                response.status_code,
                                self.where,
                                read_gist(response),
                                had_token=self._token is not None,
                            )
                        ),
                        retry_after=_retry_after(response),
                    )
                content = read_capped(response, MAX_RESPONSE_BYTES)
        except httpx.HTTPError as exc:
            raise HranaError(
                TRANSIENT, self._scrub(f"{self.where}: {_describe(exc, self.timeout)}")
            ) from None
        except ResponseTooLarge as exc:
            raise HranaError(
                MISCONFIGURED, f"{self.where}: {exc}, more than a libSQL server sends: {CHECK_URL}"
            ) from None
        try:
            answer = json.loads(content)
            entries = answer["results"]
        except (ValueError, KeyError, TypeError):
            raise HranaError(
                MISCONFIGURED,
                f"HTTP 200 from {self.where} is not a Hrana answer: not a libSQL server?"
                f" {CHECK_URL}",
            ) from None
        results = []
        for entry in entries:
            if entry.get("type") != "ok":
                message = str((entry.get("error") or {}).get("message", "unknown error"))
                error = HranaError(classify_sql_error(message), self._scrub(message))
                error.baton = answer.get("baton")
                raise error
            results.append(entry["response"])
        return results, answer.get("baton")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        """One statement in a stream of its own (one HTTP request)."""
        results, _ = self.pipeline(
            [{"type": "execute", "stmt": statement(sql, args, want_rows=True)}, {"type": "close"}]
        )
        return decode_rows(results[0]["result"])

    def execute_many(self, statements: Sequence[Statement]) -> list[Rows]:
        """Several statements in one stream, one HTTP request (reads: ``stats``). The
        first that fails raises; there is no transaction around them."""
        requests = [
            {"type": "execute", "stmt": statement(sql, args, want_rows=True)}
            for sql, args in statements
        ]
        results, _ = self.pipeline([*requests, {"type": "close"}])
        return [decode_rows(r["result"]) for r in results[: len(statements)]]

    def run_atomic(self, statements: Sequence[Statement]) -> None:
        """Run the statements as one atomic batch in one HTTP request. Raises
        StepError naming the failed statement; on any error nothing was committed."""
        results, _ = self._post(atomic_batch_body(statements))
        outcome = results[0]["result"]
        errors = outcome.get("step_errors") or []
        commit = len(statements) + 1
        step_results = outcome.get("step_results") or []
        if commit < len(step_results) and step_results[commit] is not None:
            return  # the COMMIT ran: everything landed
        for index, error in enumerate(errors):
            if error is not None:
                message = self._scrub(str(error.get("message", "unknown error")))
                kind = classify_sql_error(message)
                if index == 0 or index >= commit:  # BEGIN or COMMIT itself
                    kind = TRANSIENT if kind == STATEMENT else kind
                raise StepError(kind, f"{message} (statement {index} of the batch)", index - 1)
        raise HranaError(TRANSIENT, "the batch did not commit and reported no error")

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


class Stream:
    """An interactive Hrana stream (a baton passed from request to request): a
    DB-API-like ``execute`` for the migration runner, whose transaction spans round
    trips. Used only for migrations, which are rare and small."""

    def __init__(self, client: HranaClient) -> None:
        self.client = client
        self._baton: str | None = None

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        try:
            results, self._baton = self.client.pipeline(
                [{"type": "execute", "stmt": statement(sql, parameters, want_rows=True)}],
                self._baton,
            )
        except HranaError as exc:
            self._baton = exc.baton
            raise
        return Cursor(decode_rows(results[0]["result"]).rows)

    def close(self) -> None:
        if self._baton is not None:
            try:
                self.client.pipeline([{"type": "close"}], self._baton)
            except HranaError:
                pass  # the server drops an idle stream by itself
            self._baton = None


class Cursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None


def _describe(exc: httpx.HTTPError, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from the database within {timeout:g}s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    return f"{type(exc).__name__}: {exc}"
