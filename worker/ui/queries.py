"""The SQL the viewer reads one session with, the same for a replica and the remote
database (both have schema/001_init.sql).

Nothing here reads a whole session: the transcript comes in pages (keyset
pagination on a cursor), long texts come as previews with their length, and the
full text of one message or tool call is fetched on its own when someone asks.

The transcript is one stream of messages and tool calls in the order they happened,
as ``agentspool show`` prints it: by time (a message's ``created_at``, a tool call's
``started_at``, or ``ended_at`` when its start was never recorded), a message before
a tool call of the same millisecond, then by ``seq`` / ``call_id``. A cursor names
the last item a page held; the next page is everything after it, which is also how
the page of an open session asks for what arrived since.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

# A query function: SQL with ``?`` parameters -> rows as dicts (sqlite3 or remote).
Query = Callable[[str, Sequence[Any]], list[dict[str, Any]]]

PREVIEW_CHARS = 4000  # of a message's content or a tool's input/output, per page item
PAGE_ITEMS = 200  # transcript items per page unless asked otherwise
MAX_PAGE_ITEMS = 1000
TIMELINE_TOOLS = 2000  # bars in the waterfall unless asked otherwise
MAX_TIMELINE_TOOLS = 10000

MESSAGE_KIND = 0
TOOL_KIND = 1

_TOOL_TIME = "coalesce(started_at, ended_at, '')"


class BadCursor(ValueError):
    """A cursor the client sent is not one this module made."""


def encode_cursor(key: tuple[str, int, Any] | None) -> str | None:
    return None if key is None else json.dumps(list(key), separators=(",", ":"))


def decode_cursor(text: str | None) -> tuple[str, int, Any] | None:
    if not text:
        return None
    try:
        at, kind, key = json.loads(text)
    except (ValueError, TypeError):
        raise BadCursor("the cursor is not one the server made; start again without it") from None
    if not isinstance(at, str) or kind not in (MESSAGE_KIND, TOOL_KIND):
        raise BadCursor("the cursor is not one the server made; start again without it")
    if kind == MESSAGE_KIND and not isinstance(key, int):
        raise BadCursor("the cursor is not one the server made; start again without it")
    if kind == TOOL_KIND and not isinstance(key, str):
        raise BadCursor("the cursor is not one the server made; start again without it")
    return at, kind, key


def session_row(query: Query, session_id: str) -> dict[str, Any] | None:
    rows = query(
        "SELECT id, agent, status, started_at, ended_at, error, metadata, host, pid,"
        " producer_id, event_count FROM sessions WHERE id = ?",
        (session_id,),
    )
    return rows[0] if rows else None


def counts(query: Query, session_id: str) -> dict[str, Any]:
    """Message and tool counts and the time of the latest activity (index lookups and
    counts, no row is read into memory)."""
    row = query(
        "SELECT (SELECT count(*) FROM messages WHERE session_id = ?) AS message_count,"
        " (SELECT count(*) FROM tool_executions WHERE session_id = ?) AS tool_count,"
        " (SELECT max(created_at) FROM messages WHERE session_id = ?) AS last_message_at,"
        " (SELECT max(started_at) FROM tool_executions WHERE session_id = ?) AS last_tool_at",
        (session_id,) * 4,
    )[0]
    return row


def details(query: Query, session: dict[str, Any]) -> dict[str, Any]:
    """The side panel: model, token usage, host and working directory, from the
    session's metadata and the messages' metadata (``usage`` as the model APIs report
    it: ``input_tokens``/``output_tokens`` or ``prompt_tokens``/``completion_tokens``)."""
    meta = parse_json(session.get("metadata"))
    meta = meta if isinstance(meta, dict) else {}
    sid = session["id"]
    usage = query(
        "SELECT sum(coalesce(json_extract(metadata, '$.usage.input_tokens'),"
        "   json_extract(metadata, '$.usage.prompt_tokens'),"
        "   json_extract(metadata, '$.input_tokens'))) AS input,"
        " sum(coalesce(json_extract(metadata, '$.usage.output_tokens'),"
        "   json_extract(metadata, '$.usage.completion_tokens'),"
        "   json_extract(metadata, '$.output_tokens'))) AS output"
        " FROM messages WHERE session_id = ? AND metadata IS NOT NULL AND json_valid(metadata)",
        (sid,),
    )[0]
    model = meta.get("model")
    if model is None:
        found = query(
            "SELECT json_extract(metadata, '$.model') AS model FROM messages"
            " WHERE session_id = ? AND metadata IS NOT NULL AND json_valid(metadata)"
            " AND json_extract(metadata, '$.model') IS NOT NULL ORDER BY seq DESC LIMIT 1",
            (sid,),
        )
        model = found[0]["model"] if found else None
    tokens = None
    if usage["input"] is not None or usage["output"] is not None:
        tokens = {
            "input": _number(usage["input"]),
            "output": _number(usage["output"]),
            "total": _number(usage["input"]) + _number(usage["output"]),
        }
    return {
        "model": None if model is None else str(model),
        "tokens": tokens,
        "host": session.get("host"),
        "pid": session.get("pid"),
        "cwd": _text_or_none(meta.get("cwd")),
        "metadata": meta if meta else parse_json(session.get("metadata")),
    }


def transcript_page(
    query: Query, session_id: str, after: str | None, limit: int = PAGE_ITEMS
) -> dict[str, Any]:
    """The items after the cursor ``after`` (from the start when None), at most
    ``limit``; ``cursor`` names the last one (pass it back for the next page, or to
    ask what arrived since), ``more`` says whether a full page was cut short."""
    limit = max(1, min(limit, MAX_PAGE_ITEMS))
    start = decode_cursor(after)
    msg_params: tuple[Any, ...]
    tool_params: tuple[Any, ...]
    if start is None:
        msg_where, msg_params = "", ()
        tool_where, tool_params = "", ()
    else:
        at, kind, key = start
        msg_where = " AND (created_at > ? OR (created_at = ? AND ? = 0 AND seq > ?))"
        msg_params = (at, at, kind, key if kind == MESSAGE_KIND else 0)
        tool_where = f" AND ({_TOOL_TIME} > ? OR ({_TOOL_TIME} = ? AND (? = 0 OR call_id > ?)))"
        tool_params = (at, at, kind, key if kind == TOOL_KIND else "")
    messages = query(
        "SELECT seq, role, substr(content, 1, ?) AS content, length(content) AS content_chars,"
        " created_at, metadata FROM messages WHERE session_id = ?" + msg_where + " ORDER BY created_at, seq LIMIT ?",
        (PREVIEW_CHARS, session_id, *msg_params, limit),
    )  # fmt: skip
    tools = query(
        f"SELECT {_tool_preview_columns()}, {_TOOL_TIME} AS at FROM tool_executions"
        " WHERE session_id = ?" + tool_where + f" ORDER BY {_TOOL_TIME}, call_id LIMIT ?",
        (*_tool_preview_params(), session_id, *tool_params, limit),
    )
    entries: list[tuple[tuple[str, int, Any], dict[str, Any]]] = []
    for m in messages:
        entries.append(((m["created_at"] or "", MESSAGE_KIND, m["seq"]), message_item(m)))
    for t in tools:
        entries.append(((t.pop("at"), TOOL_KIND, t["call_id"]), tool_item(t)))
    entries.sort(key=lambda e: (e[0][0], e[0][1], e[0][2]))
    page = entries[:limit]
    more = len(entries) > limit or len(messages) == limit or len(tools) == limit
    return {
        "items": [item for _, item in page],
        "cursor": encode_cursor(page[-1][0]) if page else after,
        "more": more,
    }


def timeline(query: Query, session_id: str, limit: int = TIMELINE_TOOLS) -> list[dict[str, Any]]:
    """The first ``limit`` tool calls by start time, for the waterfall: names, times,
    status and the first line of an error, no inputs or outputs."""
    limit = max(1, min(limit, MAX_TIMELINE_TOOLS))
    return query(
        "SELECT call_id, name, status, started_at, ended_at, duration_ms,"
        " substr(error, 1, 200) AS error FROM tool_executions WHERE session_id = ?"
        f" ORDER BY {_TOOL_TIME}, call_id LIMIT ?",
        (session_id, limit),
    )


def message(query: Query, session_id: str, seq: int, full: bool) -> dict[str, Any] | None:
    content = "content" if full else "substr(content, 1, ?) AS content"
    params: tuple[Any, ...] = () if full else (PREVIEW_CHARS,)
    rows = query(
        f"SELECT seq, role, {content}, length(content) AS content_chars, created_at, metadata"
        " FROM messages WHERE session_id = ? AND seq = ?",
        (*params, session_id, seq),
    )
    return message_item(rows[0]) if rows else None


def tool(query: Query, session_id: str, call_id: str, full: bool) -> dict[str, Any] | None:
    if full:
        columns = (
            "call_id, name, status, started_at, ended_at, duration_ms, input, output, error,"
            " length(input) AS input_chars, length(output) AS output_chars,"
            " length(error) AS error_chars"
        )
        params: tuple[Any, ...] = ()
    else:
        columns, params = _tool_preview_columns(), _tool_preview_params()
    rows = query(
        f"SELECT {columns} FROM tool_executions WHERE session_id = ? AND call_id = ?",
        (*params, session_id, call_id),
    )
    return tool_item(rows[0]) if rows else None


def _tool_preview_columns() -> str:
    return (
        "call_id, name, status, started_at, ended_at, duration_ms,"
        " substr(input, 1, ?) AS input, length(input) AS input_chars,"
        " substr(output, 1, ?) AS output, length(output) AS output_chars,"
        " substr(error, 1, ?) AS error, length(error) AS error_chars"
    )


def _tool_preview_params() -> tuple[int, int, int]:
    return (PREVIEW_CHARS, PREVIEW_CHARS, PREVIEW_CHARS)


def message_item(row: dict[str, Any]) -> dict[str, Any]:
    content = row["content"]
    chars = row["content_chars"] or 0
    return {
        "kind": "message",
        "seq": row["seq"],
        "role": row["role"],
        "created_at": row["created_at"],
        "content": content,
        "content_chars": chars,
        "truncated": content is not None and len(content) < chars,
        "metadata": parse_json(row["metadata"]),
    }


def tool_item(row: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": "tool"} | {
        k: row[k] for k in ("call_id", "name", "status", "started_at", "ended_at", "duration_ms")
    }
    truncated = False
    for field in ("input", "output", "error"):
        text = row[field]
        chars = row[f"{field}_chars"] or 0
        item[field] = text
        item[f"{field}_chars"] = chars
        truncated = truncated or (text is not None and len(text) < chars)
    item["truncated"] = truncated
    return item


def parse_json(text: Any) -> Any:
    """Metadata is JSON text; anything else is shown as the text it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
