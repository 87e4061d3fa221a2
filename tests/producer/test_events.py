"""The event format's gate: ``agentspool.producer.events.validate``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentspool.producer import events as ev
from agentspool.producer.events import InvalidEvent, validate


def envelope(kind: str, seq: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "v": 1,
        "type": kind,
        "session_id": "sess-1",
        "seq": seq,
        "producer_id": "host-123-abcd1234",
        "pseq": 7,
        "ts": 1_764_135_270.123,
    }
    event.update(fields)
    return event


VALID: dict[str, dict[str, Any]] = {
    "session_start": envelope(
        ev.SESSION_START, 0, agent="coder", metadata={"k": 1}, host="box", pid=42
    ),
    "session_start_minimal": envelope(ev.SESSION_START, 0, agent="coder"),
    "message_text": envelope(ev.MESSAGE, 1, role="user", content="hello"),
    "message_structured": envelope(
        ev.MESSAGE, 2, role="assistant", content=[{"type": "text", "text": "hi"}], metadata=None
    ),
    "tool_started": envelope(ev.TOOL_STARTED, 3, call_id="c1", name="grep", input={"q": "x"}),
    "tool_finished": envelope(
        ev.TOOL_FINISHED, 4, call_id="c1", output={"hits": 2}, error=None, duration_ms=12.5
    ),
    "tool_finished_error_int_duration": envelope(
        ev.TOOL_FINISHED, 5, call_id="c2", error="boom", duration_ms=3
    ),
    "session_end_completed": envelope(ev.SESSION_END, 6, status="completed"),
    "session_end_error": envelope(ev.SESSION_END, 6, status="error", error="Crash: x"),
    "int_ts": envelope(ev.MESSAGE, 1, role="user", ts=1_764_135_270),
    "max_seq_minus_one": envelope(ev.MESSAGE, 2**62 - 1, role="user", pseq=2**62 - 1),
    "session_id_200_chars": envelope(ev.SESSION_START, 0, agent="a", session_id="s" * 200),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_events_pass_unchanged(name: str) -> None:
    event = VALID[name]
    before = copy.deepcopy(event)
    assert validate(event) is event
    assert event == before


def test_every_event_type_has_a_valid_example() -> None:
    assert {e["type"] for e in VALID.values()} == set(ev.EVENT_TYPES)


def without(event: dict[str, Any], field: str) -> dict[str, Any]:
    event = dict(event)
    del event[field]
    return event


def changed(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    event = dict(event)
    event.update(fields)
    return event


MSG = VALID["message_text"]
START = VALID["session_start"]

INVALID: list[tuple[str, Any, str]] = [
    # (id, event, substring the message must contain)
    *[(f"missing-{f}", without(MSG, f), f"missing field {f!r}") for f in ev.ENVELOPE_FIELDS],
    ("null-session_id", changed(MSG, session_id=None), "missing field 'session_id'"),
    ("missing-agent", without(START, "agent"), "missing field 'agent'"),
    ("missing-role", without(MSG, "role"), "missing field 'role'"),
    (
        "missing-call_id",
        without(VALID["tool_finished"], "call_id"),
        "missing field 'call_id'",
    ),
    ("missing-tool-name", without(VALID["tool_started"], "name"), "missing field 'name'"),
    (
        "missing-status",
        without(VALID["session_end_completed"], "status"),
        "missing field 'status'",
    ),
    ("v-bool", changed(MSG, v=True), "field 'v' has type bool"),
    ("v-float", changed(MSG, v=1.0), "field 'v' has type float"),
    ("v-string", changed(MSG, v="1"), "field 'v' has type str"),
    ("seq-string", changed(MSG, seq="1"), "field 'seq' has type str"),
    ("seq-bool", changed(MSG, seq=True), "field 'seq' has type bool"),
    ("seq-float", changed(MSG, seq=1.0), "field 'seq' has type float"),
    ("pseq-bool", changed(MSG, pseq=False), "field 'pseq' has type bool"),
    ("pseq-string", changed(MSG, pseq="7"), "field 'pseq' has type str"),
    ("ts-bool", changed(MSG, ts=True), "field 'ts' has type bool"),
    ("ts-string", changed(MSG, ts="2026-01-01"), "field 'ts' has type str"),
    ("type-int", changed(MSG, type=3), "field 'type' has type int"),
    ("session_id-int", changed(MSG, session_id=12), "field 'session_id' has type int"),
    ("producer_id-list", changed(MSG, producer_id=["p"]), "field 'producer_id' has type list"),
    ("role-int", changed(MSG, role=1), "field 'role' has type int"),
    ("agent-dict", changed(START, agent={"a": 1}), "field 'agent' has type dict"),
    ("metadata-list", changed(START, metadata=[1]), "field 'metadata' has type list"),
    ("pid-bool", changed(START, pid=True), "field 'pid' has type bool"),
    ("pid-string", changed(START, pid="42"), "field 'pid' has type str"),
    (
        "duration-bool",
        changed(VALID["tool_finished"], duration_ms=True),
        "field 'duration_ms' has type bool",
    ),
    (
        "tool-error-int",
        changed(VALID["tool_finished"], error=500),
        "field 'error' has type int",
    ),
    ("wrong-version-2", changed(MSG, v=2), "unsupported format version 2"),
    ("wrong-version-0", changed(MSG, v=0), "unsupported format version 0"),
    ("unknown-type", changed(MSG, type="tool_progress"), "unknown event type 'tool_progress'"),
    ("empty-type", changed(MSG, type=""), "unknown event type ''"),
    ("negative-seq", changed(MSG, seq=-1), "between 0 and 2**62"),
    ("negative-pseq", changed(MSG, pseq=-5), "between 0 and 2**62"),
    ("seq-2**62", changed(MSG, seq=2**62), "between 0 and 2**62"),
    ("seq-2**63", changed(MSG, seq=2**63), "between 0 and 2**62"),
    ("pseq-2**62", changed(MSG, pseq=2**62), "between 0 and 2**62"),
    ("pseq-huge", changed(MSG, pseq=10**30), "between 0 and 2**62"),
    ("start-at-seq-1", changed(START, seq=1), "seq 0 is the session_start event"),
    ("message-at-seq-0", changed(MSG, seq=0), "seq 0 is the session_start event"),
    (
        "end-at-seq-0",
        changed(VALID["session_end_completed"], seq=0),
        "seq 0 is the session_start event",
    ),
    (
        "end-status-abandoned",
        changed(VALID["session_end_completed"], status="abandoned"),
        "session_end status must be one of",
    ),
    (
        "end-status-running",
        changed(VALID["session_end_completed"], status="running"),
        "session_end status must be one of",
    ),
    (
        "end-status-int",
        changed(VALID["session_end_completed"], status=1),
        "field 'status' has type int",
    ),
    ("empty-session_id", changed(MSG, session_id=""), "session_id must be 1 to 200 characters"),
    (
        "long-session_id",
        changed(MSG, session_id="x" * 201),
        "session_id must be 1 to 200 characters",
    ),
    ("list-input", [MSG], "event is a list, not a JSON object"),
    ("str-input", '{"v": 1}', "event is a str, not a JSON object"),
    ("none-input", None, "event is a NoneType, not a JSON object"),
    ("int-input", 5, "event is a int, not a JSON object"),
    ("bytes-input", b"{}", "event is a bytes, not a JSON object"),
]


@pytest.mark.parametrize(
    ("event", "message"),
    [pytest.param(event, message, id=name) for name, event, message in INVALID],
)
def test_invalid_events_raise_with_a_reason(event: Any, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate(event)
    assert message in str(info.value)


def test_invalid_event_is_a_value_error() -> None:
    # The drain catches ValueError for dead-lettering: InvalidEvent must be one.
    assert issubclass(InvalidEvent, ValueError)
    with pytest.raises(ValueError):
        validate({})


def test_end_statuses_in_message() -> None:
    with pytest.raises(InvalidEvent, match=r"\['completed', 'error'\]"):
        validate(changed(VALID["session_end_completed"], status="done"))


def test_optional_fields_may_be_null() -> None:
    event = envelope(ev.TOOL_FINISHED, 9, call_id="c", output=None, error=None, duration_ms=None)
    assert validate(event) is event
    start = envelope(ev.SESSION_START, 0, agent="a", metadata=None, host=None, pid=None)
    assert validate(start) is start


def test_unknown_extra_fields_are_allowed() -> None:
    # Forward compatibility: a newer producer may add fields a worker does not know.
    event = changed(MSG, future_field={"x": 1})
    assert validate(event) is event


def test_unrepresentable_timestamps_rejected() -> None:
    # validate() is the worker's gate: an event it accepts must be applicable.
    # json.loads accepts NaN/Infinity, and a ts outside datetime's range makes the
    # worker's iso() raise (ValueError/OverflowError) while it applies the batch.
    accepted = []
    for ts in (float("nan"), float("inf"), float("-inf"), 1e20, -1e20, 253_402_300_800.0):
        try:
            validate(changed(MSG, ts=ts))
        except InvalidEvent as exc:
            assert "ts" in str(exc)
        else:
            accepted.append(ts)
    assert accepted == [], f"validate() accepted ts values the worker cannot store: {accepted}"


def test_a_pid_sqlite_cannot_store_is_rejected() -> None:
    start = envelope(ev.SESSION_START, 0, agent="a", pid=2**63)
    with pytest.raises(InvalidEvent, match="pid must be between"):
        ev.validate(start)
    assert ev.validate(changed(start, pid=4242))["pid"] == 4242
