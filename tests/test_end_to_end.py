"""8 producer processes x 1,000 events -> worker --burst -> a real sqld, exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import finish, produce, run_cli, worker_env
from tests.sqld import Sqld

PRODUCERS = 8
EVENTS_PER_PRODUCER = 1000
SESSIONS_PER_PRODUCER = 4  # 250 events each


def remote_counts(sqld: Sqld) -> tuple[int, int, int, int]:
    return (
        sqld.scalar("SELECT count(*) FROM sessions"),
        sqld.scalar("SELECT count(*) FROM messages"),
        sqld.scalar("SELECT count(*) FROM tool_executions"),
        sqld.scalar("SELECT coalesce(sum(event_count), 0) FROM sessions"),
    )


def test_eight_producers_to_sqld_exactly_once(spool: Path, sqld: Sqld) -> None:
    started = time.monotonic()
    producers = [
        produce(spool, f"p{n}", SESSIONS_PER_PRODUCER, EVENTS_PER_PRODUCER // SESSIONS_PER_PRODUCER)
        for n in range(PRODUCERS)
    ]
    for proc in producers:
        finish(proc)

    env = worker_env(spool, sqld.url)
    result = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    elapsed = time.monotonic() - started
    print(f"8x1000 end to end: {elapsed:.2f}s")

    sessions, messages, tools, events = remote_counts(sqld)
    assert sessions == PRODUCERS * SESSIONS_PER_PRODUCER
    assert events == PRODUCERS * EVENTS_PER_PRODUCER
    # every event is a session start/end, a message, or one half of a tool execution
    assert messages + 2 * tools + 2 * sessions == PRODUCERS * EVENTS_PER_PRODUCER
    assert tools > 0 and messages > 0
    assert sqld.query("SELECT DISTINCT status FROM sessions") == [["completed"]]
    assert sqld.scalar("SELECT count(*) FROM tool_executions WHERE status != 'completed'") == 0
    assert sqld.scalar("SELECT count(*) FROM tool_executions WHERE duration_ms IS NULL") == 0
    assert sqld.scalar("SELECT min(duration_ms) FROM tool_executions") >= 0
    # gapless per-session order: seqs 1..n-2 split between messages and tool events
    assert sqld.scalar("SELECT count(*) FROM sessions WHERE event_count != 250") == 0

    # Running the worker again changes nothing.
    again = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert remote_counts(sqld) == (sessions, messages, tools, events)
