"""Tool calls with their real start and end (``started_at``/``ended_at``, ``tool_call``)
and metadata given at a session's end: what the producer writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from agentspool import Spool
from agentspool.producer import events as ev
from tests.producer.test_producer import only_queue

START = 1_764_135_270.0


def written(spool: Path, emit: Any) -> list[dict[str, Any]]:
    producer = Spool(spool)
    session = producer.session("timer", session_id="s1")
    emit(session)
    assert session.end()
    producer.close()
    _, _, found = only_queue(spool)
    for event in found:
        ev.validate(event)  # what the worker accepts
    return found[1:-1]


def test_tool_call_records_the_given_times_and_their_duration(spool: Path) -> None:
    def emit(session: Any) -> None:
        call_id = session.tool_call(
            "search", {"q": "x"}, "3 hits", started_at=START, ended_at=START + 1.25, call_id="c1"
        )
        assert call_id == "c1"

    started, finished = written(spool, emit)
    assert started["type"] == "tool_started" and started["started_at"] == START
    assert started["input"] == {"q": "x"}
    assert finished["type"] == "tool_finished" and finished["ended_at"] == START + 1.25
    assert finished["output"] == "3 hits" and finished["error"] is None
    assert finished["duration_ms"] == pytest.approx(1250.0)


def test_a_given_start_with_an_end_now_measures_from_the_start(spool: Path) -> None:
    def emit(session: Any) -> None:
        import time

        session.tool_started("build", call_id="c1", started_at=time.time() - 2.0)
        session.tool_finished("c1", error="exit 1")

    started, finished = written(spool, emit)
    assert "ended_at" not in finished
    assert 2000.0 <= finished["duration_ms"] < 60_000.0
    assert finished["error"] == "exit 1"


def test_without_times_the_events_are_as_before(spool: Path) -> None:
    def emit(session: Any) -> None:
        session.tool_finished(session.tool_started("ls"))

    started, finished = written(spool, emit)
    assert "started_at" not in started and "ended_at" not in finished
    assert finished["duration_ms"] >= 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 1e300, "soon", True, [1]])
def test_an_unusable_time_is_left_out_not_the_event(spool: Path, bad: Any) -> None:
    def emit(session: Any) -> None:
        session.tool_call("t", started_at=bad, ended_at=bad, call_id="c1")

    started, finished = written(spool, emit)
    assert "started_at" not in started and "ended_at" not in finished
    assert finished["call_id"] == "c1"


def test_end_metadata_is_written_with_the_end(spool: Path) -> None:
    producer = Spool(spool)
    session = producer.session("a", session_id="s1", metadata={"task": "t"})
    assert session.end(metadata={"usage": {"input_tokens": 3}})
    producer.close()
    _, _, found = only_queue(spool)
    assert found[-1]["type"] == "session_end"
    assert found[-1]["metadata"] == {"usage": {"input_tokens": 3}}
    assert "metadata" not in found[0] or found[0]["metadata"] == {"task": "t"}


def test_validate_bounds_the_times() -> None:
    base = {"v": 1, "type": "tool_started", "session_id": "s", "seq": 1, "producer_id": "p",
            "pseq": 1, "ts": START, "call_id": "c", "name": "n"}  # fmt: skip
    assert ev.validate({**base, "started_at": START})
    for bad in (-1, ev.MAX_TS, math.nan):
        with pytest.raises(ev.InvalidEvent, match="started_at"):
            ev.validate({**base, "started_at": bad})
    with pytest.raises(ev.InvalidEvent, match="has type"):
        ev.validate({**base, "started_at": "2026-01-01"})
