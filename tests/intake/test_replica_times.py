"""Replicas: a tool event's own times, durations derived from them, end metadata."""

from __future__ import annotations

import json

import pytest

from agentspool.worker.intake.replica import Replica, iso
from tests.intake.test_replica import T0, Events, session_row, tool_row


def test_given_times_are_the_rows_times(replica: Replica) -> None:
    e = Events()
    replica.apply(
        [
            e.start(),
            e.make("tool_started", 10.0, call_id="c1", name="t", started_at=T0 + 1.0),
            e.make("tool_finished", 10.0, call_id="c1", ended_at=T0 + 3.5, duration_ms=2500.0),
        ]
    )
    row = tool_row(replica, "c1")
    assert row["started_at"] == iso(T0 + 1.0) and row["ended_at"] == iso(T0 + 3.5)
    assert row["duration_ms"] == 2500.0


def test_a_missing_duration_is_taken_from_the_two_times(replica: Replica) -> None:
    """A call started by one process and finished by another has no duration from
    its producer: the worker takes it from the recorded start and end."""
    e = Events()
    replica.apply(
        [
            e.start(),
            e.tool_started(1.0, "c1", "build"),
            e.tool_finished(2.25, "c1", output="ok"),
        ]
    )
    assert tool_row(replica, "c1")["duration_ms"] == pytest.approx(1250.0, abs=1.0)


def test_end_metadata_is_merged_into_the_sessions(replica: Replica) -> None:
    e = Events()
    replica.apply(
        [
            e.start(metadata={"task": "t", "usage": None}),
            e.make("session_end", 5.0, status="completed", metadata={"usage": {"input_tokens": 7}}),
        ]
    )
    row = session_row(replica)
    assert json.loads(row["metadata"]) == {"task": "t", "usage": {"input_tokens": 7}}
    assert row["status"] == "completed"


def test_end_metadata_without_start_metadata(replica: Replica) -> None:
    e = Events()
    replica.apply([e.start(), e.make("session_end", 5.0, status="error", metadata={"k": 1})])
    assert json.loads(session_row(replica)["metadata"]) == {"k": 1}
