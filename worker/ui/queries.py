"""The SQL the viewer reads one session with, the same for a replica and the remote
database (both have schema/001_init.sql).

Nothing here reads a whole session: the transcript comes in pages (keyset
pagination on a cursor), long texts come as previews with their length, and the
full text of one message or tool call is fetched on its own when someone asks.

The transcript is one stream of messages and tool calls in the order they happened,
as ``agentspool show`` prints it: messages in ``seq`` order (the session's own order),
tool calls by time (``started_at``, or ``ended_at`` when the start was never
recorded, then ``call_id``), merged by time, a message first when both have the same
millisecond. Each kind is read along its primary key or index, so a page costs the
same at the start and at the end of a 100,000-message session. A cursor holds where
each kind stopped (the last message's ``seq``, the last tool call's time and id); the
next page is everything after both, which is also how the page of an open session
asks for what arrived since.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentspool.worker.reports.transcript import end_reason

# A query function: SQL with ``?`` parameters -> rows as dicts (sqlite3 or remote).
Query = Callable[[str, Sequence[Any]], list[dict[str, Any]]]

PREVIEW_CHARS = 4000  # of a message's content or a tool's input/output, per page item
PAGE_ITEMS = 200  # transcript items per page unless asked otherwise
MAX_PAGE_ITEMS = 1000
TIMELINE_TOOLS = 2000  # bars in the waterfall unless asked otherwise
MAX_TIMELINE_TOOLS = 10000

_TOOL_TIME = "coalesce(started_at, ended_at, '')"
# A tool's output stored as a JSON string (`"total 8\n-rw..."`, as some tools return
# it) comes as the text it holds, as `show` prints it; any other output as it is. A
# JSON text that starts with a quote is a string, so its first character decides.
_OUTPUT_TEXT = (
    "CASE WHEN substr(output, 1, 1) = '\"' AND json_valid(output)"
    " THEN json_extract(output, '$') ELSE output END"
)


class BadCursor(ValueError):
    """A cursor the client sent is not one this module made."""


@dataclass(frozen=True)
class Cursor:
    last_seq: int = -1  # the last message shown (-1: none yet)
    tool_at: str = ""  # the last tool call shown: its time ...
    tool_id: str = ""  # ... and call_id ("" and "": none yet)


def encode_cursor(cursor: Cursor) -> str:
    return json.dumps([cursor.last_seq, cursor.tool_at, cursor.tool_id], separators=(",", ":"))


def decode_cursor(text: str | None) -> Cursor:
    if not text:
        return Cursor()
    try:
        last_seq, tool_at, tool_id = json.loads(text)
    except (ValueError, TypeError):
        raise BadCursor("the cursor is not one the server made; start again without it") from None
    if not (isinstance(last_seq, int) and isinstance(tool_at, str) and isinstance(tool_id, str)):
        raise BadCursor("the cursor is not one the server made; start again without it")
    return Cursor(last_seq, tool_at, tool_id)


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
        " (SELECT created_at FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT 1)"
        " AS last_message_at,"
        " (SELECT max(started_at) FROM tool_executions WHERE session_id = ?) AS last_tool_at",
        (session_id,) * 4,
    )[0]
    return row


def details(query: Query, session: dict[str, Any]) -> dict[str, Any]:
    """The side panel: model, token usage, cost, host and working directory.

    The model and usage come from the session's version-2 columns (schema/002; the
    worker keeps them as messages arrive); a replica an older worker wrote has no
    such columns, or leaves them empty, and then its messages' metadata is read
    (``usage`` as the model APIs report it: ``input_tokens``/``output_tokens`` or
    ``prompt_tokens``/``completion_tokens``), a pass over every message."""
    meta = parse_json(session.get("metadata"))
    meta = meta if isinstance(meta, dict) else {}
    sid = session["id"]
    # `*`: the version-2 columns where the table has them, nothing where it has not.
    columns = query("SELECT * FROM sessions WHERE id = ?", (sid,))
    totals = columns[0] if columns else {}
    tokens = _column_tokens(totals) or _metadata_tokens(query, sid)
    model = meta.get("model") or totals.get("model")
    if model is None:
        found = query(
            "SELECT json_extract(metadata, '$.model') AS model FROM messages"
            " WHERE session_id = ? AND metadata IS NOT NULL AND json_valid(metadata)"
            " AND json_extract(metadata, '$.model') IS NOT NULL ORDER BY seq DESC LIMIT 1",
            (sid,),
        )
        model = found[0]["model"] if found else None
    cost = totals.get("cost_usd")
    return {
        "model": None if model is None else str(model),
        "tokens": tokens,
        "cost_usd": cost if isinstance(cost, int | float) else None,
        "host": session.get("host"),
        "pid": session.get("pid"),
        "cwd": _text_or_none(meta.get("cwd")),
        "end_reason": end_reason(meta),
        "metadata": meta if meta else parse_json(session.get("metadata")),
    }


def _column_tokens(totals: dict[str, Any]) -> dict[str, Any] | None:
    if totals.get("input_tokens") is None and totals.get("output_tokens") is None:
        return None
    input_tokens = _number(totals.get("input_tokens"))
    output_tokens = _number(totals.get("output_tokens"))
    return {
        "input": input_tokens,
        "output": output_tokens,
        "cache_read": totals.get("cache_read_tokens"),
        "cache_write": totals.get("cache_write_tokens"),
        "total": input_tokens + output_tokens,
    }


def _metadata_tokens(query: Query, session_id: str) -> dict[str, Any] | None:
    usage = query(
        "SELECT sum(coalesce(json_extract(metadata, '$.usage.input_tokens'),"
        "   json_extract(metadata, '$.usage.prompt_tokens'),"
        "   json_extract(metadata, '$.input_tokens'))) AS input,"
        " sum(coalesce(json_extract(metadata, '$.usage.output_tokens'),"
        "   json_extract(metadata, '$.usage.completion_tokens'),"
        "   json_extract(metadata, '$.output_tokens'))) AS output"
        " FROM messages WHERE session_id = ? AND metadata IS NOT NULL AND json_valid(metadata)",
        (session_id,),
    )[0]
    if usage["input"] is None and usage["output"] is None:
        return None
    return {
        "input": _number(usage["input"]),
        "output": _number(usage["output"]),
        "cache_read": None,
        "cache_write": None,
        "total": _number(usage["input"]) + _number(usage["output"]),
    }


def transcript_page(
    query: Query, session_id: str, after: str | None, limit: int = PAGE_ITEMS
) -> dict[str, Any]:
    """The items after the cursor ``after`` (from the start when None), at most
    ``limit``; ``cursor`` says where this page stopped (pass it back for the next
    page, or to ask what arrived since), ``more`` whether a full page was cut short."""
    limit = max(1, min(limit, MAX_PAGE_ITEMS))
    cursor = decode_cursor(after)
    messages = query(
        "SELECT seq, role, substr(content, 1, ?) AS content, length(content) AS content_chars,"
        " created_at, metadata FROM messages WHERE session_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (PREVIEW_CHARS, session_id, cursor.last_seq, limit),
    )
    tools = query(
        f"SELECT {_tool_preview_columns()}, {_TOOL_TIME} AS at FROM tool_executions"
        f" WHERE session_id = ? AND ({_TOOL_TIME} > ? OR ({_TOOL_TIME} = ? AND call_id > ?))"
        f" ORDER BY {_TOOL_TIME}, call_id LIMIT ?",
        (*_tool_preview_params(), session_id, cursor.tool_at, cursor.tool_at, cursor.tool_id,
         limit),
    )  # fmt: skip
    # Merge the two ordered lists, each consumed from its head: the cursor is then a
    # position in each, and no item is skipped or repeated, whatever the clocks did.
    items: list[dict[str, Any]] = []
    m = t = 0
    last_seq, tool_at, tool_id = cursor.last_seq, cursor.tool_at, cursor.tool_id
    while len(items) < limit and (m < len(messages) or t < len(tools)):
        take_message = t >= len(tools) or (
            m < len(messages) and (messages[m]["created_at"] or "") <= tools[t]["at"]
        )
        if take_message:
            row = messages[m]
            m += 1
            last_seq = row["seq"]
            items.append(message_item(row))
        else:
            row = tools[t]
            t += 1
            tool_at, tool_id = row.pop("at"), row["call_id"]
            items.append(tool_item(row))
    more = m < len(messages) or t < len(tools) or len(messages) == limit or len(tools) == limit
    return {
        "items": items,
        "cursor": encode_cursor(Cursor(last_seq, tool_at, tool_id)),
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
            "call_id, name, status, started_at, ended_at, duration_ms, input,"
            f" {_OUTPUT_TEXT} AS output, error, length(input) AS input_chars,"
            f" length({_OUTPUT_TEXT}) AS output_chars, length(error) AS error_chars"
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
        f" substr({_OUTPUT_TEXT}, 1, ?) AS output, length({_OUTPUT_TEXT}) AS output_chars,"
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
