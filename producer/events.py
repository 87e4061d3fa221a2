"""The event format: what a producer writes into its queue and the worker applies.

Every event is one JSON object (never pickle) with a common envelope:

    v            format version (1)
    type         session_start | message | tool_started | tool_finished | session_end
    session_id   the session it belongs to
    seq          per-session sequence number, gapless from 0 (session_start)
    producer_id  the producer process (queue file) that wrote it
    pseq         per-producer sequence number
    ts           wall-clock time of the emit, seconds since the epoch (float)

and type-specific fields (see ``REQUIRED_FIELDS``). (session_id, seq) is the
event's natural identity: applying the same event twice changes nothing.

``validate`` is the worker's gate; it is also cheap enough for the producer, but
the producer never raises into the agent: it coerces instead (see spool.py).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds to import (the hook path reads this
if TYPE_CHECKING:  # module in a fresh process per call); the annotations are strings
    from typing import Any, Final

FORMAT_VERSION: Final = 1

SESSION_START: Final = "session_start"
MESSAGE: Final = "message"
TOOL_STARTED: Final = "tool_started"
TOOL_FINISHED: Final = "tool_finished"
SESSION_END: Final = "session_end"

EVENT_TYPES: Final = frozenset({SESSION_START, MESSAGE, TOOL_STARTED, TOOL_FINISHED, SESSION_END})

# Final statuses a producer may report for a session; the worker adds "abandoned".
END_STATUSES: Final = frozenset({"completed", "error"})

ENVELOPE_FIELDS: Final = {
    "v": int,
    "type": str,
    "session_id": str,
    "seq": int,
    "producer_id": str,
    "pseq": int,
    "ts": (int, float),
}

# Type-specific fields that must be present, with the types they may have.
REQUIRED_FIELDS: Final[dict[str, dict[str, Any]]] = {
    SESSION_START: {"agent": str},
    MESSAGE: {"role": str},
    TOOL_STARTED: {"call_id": str, "name": str},
    TOOL_FINISHED: {"call_id": str},
    SESSION_END: {"status": str},
}

# Optional fields and the types they may have when present and not null.
OPTIONAL_FIELDS: Final[dict[str, dict[str, Any]]] = {
    # parent_id: the session that started this one (a subagent's parent); model: the
    # model the session runs, when the producer knows it at the start.
    SESSION_START: {"metadata": dict, "host": str, "pid": int, "parent_id": str, "model": str},
    MESSAGE: {"content": object, "metadata": dict},
    TOOL_STARTED: {"input": object, "started_at": (int, float)},
    TOOL_FINISHED: {
        "output": object,
        "error": str,
        "duration_ms": (int, float),
        "ended_at": (int, float),
    },
    SESSION_END: {"error": str, "metadata": dict},
}

# Optional times a producer may give instead of the emit's ``ts`` (a tool call that an
# integration learns about only when it ended): seconds since the epoch, like ``ts``.
TIME_FIELDS: Final = ("started_at", "ended_at")

MAX_SESSION_ID_LENGTH: Final = 200
MAX_SEQ: Final = 2**62  # fits SQLite's 64-bit integers with room to spare
MAX_TS: Final = 253_402_300_800.0  # 10000-01-01: what ISO-8601 timestamps can hold

# Size limits (docs/RELIABILITY.md), both applied by the worker. A text field
# (content, metadata, tool input or output, error, ...) longer than MAX_FIELD_BYTES
# of UTF-8 is stored truncated in the replica, with a marker naming how much was cut
# (truncate_text); a whole queue item longer than MAX_ITEM_BYTES is never parsed: it
# is dead-lettered, kept whole, with the reason. The producer does not truncate (that
# would cost the agent's thread an encoding of every field): it writes what it was
# given, and nothing is lost either way.
MAX_FIELD_BYTES: Final = 1 << 20  # 1 MiB
MAX_ITEM_BYTES: Final = 8 << 20  # 8 MiB
TRUNCATION_MARKER: Final = "…[truncated {} bytes]"


def truncate_text(text: str, limit: int = MAX_FIELD_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), followed
    by a marker that says how many bytes were cut; unchanged if it fits."""
    if len(text) <= limit // 4:  # cannot exceed the limit: skip the encoding
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # never cut a character in half
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass") + TRUNCATION_MARKER.format(len(data) - end)


def is_utf8_text(text: str) -> bool:
    """Can ``text`` be written as UTF-8? Not if it holds a lone surrogate (from a JSON
    ``"\\udc80"`` escape, or bytes a shell argument could not decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def session_id_problem(session_id: object) -> str | None:
    """Why ``session_id`` cannot name a session, or None. An id is a key in SQL, a
    file name's source and a line in logs: it must be 1 to 200 characters of text
    that UTF-8 can hold (every other character is allowed, escaped where shown)."""
    if not isinstance(session_id, str):
        return f"field 'session_id' has type {type(session_id).__name__}"
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return "session_id must be 1 to 200 characters"
    if not is_utf8_text(session_id):
        return "session_id is not valid UTF-8 text (it holds a lone surrogate)"
    return None


# Text fields that are keys (bound to SQL as they are, compared, shown in logs): the
# worker cannot store one that is not UTF-8, so such an event is refused whole. Other
# text (content, names, metadata) is stored with a lone surrogate replaced by '?'.
KEY_FIELDS: Final = ("session_id", "producer_id", "call_id")


class InvalidEvent(ValueError):
    """An event that cannot be applied; the message says why (it is recorded)."""


def validate(event: object) -> dict[str, Any]:
    """Return ``event`` if it is a well-formed event, else raise ``InvalidEvent``."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"event is a {type(event).__name__}, not a JSON object")
    for name, types in ENVELOPE_FIELDS.items():
        _check_field(event, name, types, required=True)
    if event["v"] != FORMAT_VERSION:
        raise InvalidEvent(f"unsupported format version {event['v']!r} (this worker reads 1)")
    kind = event["type"]
    if kind not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {kind!r}")
    problem = session_id_problem(event["session_id"])
    if problem is not None:
        raise InvalidEvent(problem)
    if not 0 <= event["ts"] < MAX_TS:  # also false for NaN
        raise InvalidEvent("ts must be seconds since 1970 before the year 10000")
    if not (0 <= event["seq"] < MAX_SEQ and 0 <= event["pseq"] < MAX_SEQ):
        raise InvalidEvent("seq and pseq must be between 0 and 2**62")
    if (kind == SESSION_START) != (event["seq"] == 0):
        raise InvalidEvent("seq 0 is the session_start event and only it")
    for name, types in REQUIRED_FIELDS[kind].items():
        _check_field(event, name, types, required=True)
    fields_of_kind = ENVELOPE_FIELDS.keys() | REQUIRED_FIELDS[kind].keys()
    for name, types in OPTIONAL_FIELDS[kind].items():
        _check_field(event, name, types, required=False)
    parent_id = event.get("parent_id")
    if parent_id is not None and kind == SESSION_START:
        if not parent_id or len(parent_id) > MAX_SESSION_ID_LENGTH:
            raise InvalidEvent("parent_id must be 1 to 200 characters (a session id)")
    for name in KEY_FIELDS:
        value = event.get(name)
        if name in fields_of_kind and isinstance(value, str) and not is_utf8_text(value):
            raise InvalidEvent(f"{name} is not valid UTF-8 text (it holds a lone surrogate)")
    for name in TIME_FIELDS:
        value = event.get(name)
        if value is not None and name in OPTIONAL_FIELDS[kind] and not 0 <= value < MAX_TS:
            raise InvalidEvent(f"{name} must be seconds since 1970 before the year 10000")
    if kind == SESSION_START and event.get("pid") is not None and not 0 <= event["pid"] < MAX_SEQ:
        raise InvalidEvent("pid must be between 0 and 2**62")
    if kind == SESSION_END and event["status"] not in END_STATUSES:
        raise InvalidEvent(f"session_end status must be one of {sorted(END_STATUSES)}")
    return event


def _check_field(event: dict[str, Any], name: str, types: Any, *, required: bool) -> None:
    if name not in event or event[name] is None:
        if required:
            raise InvalidEvent(f"missing field {name!r}")
        return
    value = event[name]
    # bool is an int in Python but never a valid number here.
    if types is not object and (isinstance(value, bool) or not isinstance(value, types)):
        raise InvalidEvent(f"field {name!r} has type {type(value).__name__}")
