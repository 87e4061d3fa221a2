"""Row 8: end to end, many agents -> spool -> worker --burst -> a real sqld.

32 producer processes (workload.py: 5 sessions of 1,000 events each, messages and
tool calls with 400-byte contents) start emitting on one signal; when they have all
ended their sessions (fsynced), ``agentspool worker run --burst --db <sqld>`` drains,
syncs and exits. The time runs from the signal to the worker's exit. Then sqld is
asked whether every event landed exactly once.
"""

from __future__ import annotations

import re
import time
from typing import Any

from bench.common import AGENTSPOOL_CLI, Child, Config, Row, clean_env, popen, sqld_server
from bench.workload import expected_rows

GROUP = "e2e"
_BATCH = re.compile(r"batch landed: (\d+) session\(s\), .* in one request \(([\d.]+)s\)")


def run(cfg: Config) -> list[Row]:
    producers = cfg.size(32, 4)
    sessions = cfg.size(5, 1)  # per producer
    events = cfg.size(1000, 200)  # per session
    total = producers * sessions * events
    spool = cfg.workdir("e2e-spool")

    with sqld_server(cfg.workdir("e2e-sqld")) as sqld:
        launched = time.monotonic()
        children = [
            Child(
                "workload:produce",
                spool=str(spool),
                sessions=sessions,
                events=events,
                tag=f"e{n}",
                wait_go=True,
            )
            for n in range(producers)
        ]
        for child in children:
            child.expect("READY", timeout=120)
        launch_s = time.monotonic() - launched
        for child in children:
            child.send("GO")
        t0 = time.monotonic()
        results = [child.result(timeout=300) for child in children]
        produced_s = time.monotonic() - t0
        for r in results:
            if r["dropped"] or not r["confirmed"]:
                raise AssertionError(f"e2e: a producer lost events: {r}")

        log_path = cfg.tmp / "e2e-worker.log"
        with open(log_path, "ab") as log:
            worker = popen(
                [AGENTSPOOL_CLI, "worker", "run", "--burst", "--db", sqld.url],
                env=clean_env(AGENTSPOOL_DIR=str(spool)),
                stdout=log,
                stderr=log,
            )
        t1 = time.monotonic()
        code = worker.wait(timeout=300)
        worker_s = time.monotonic() - t1
        elapsed = time.monotonic() - t0
        if code != 0:
            raise AssertionError(f"e2e: worker --burst exited with {code}; see {log_path}")
        check = _exactly_once(sqld, producers * sessions, events)

    batches = _BATCH.findall(log_path.read_text())
    sync_s = sum(float(s) for _, s in batches)
    return [
        Row(
            GROUP,
            "e2e.seconds",
            f"8. end to end: {producers} producers x {sessions * events:,} events -> sqld, time",
            elapsed,
            "s",
            note=f"{total:,} events in {producers * sessions} sessions: producers emitted and "
            f"fsynced in {produced_s:.1f} s (after {launch_s:.1f} s to start {producers} "
            f"interpreters, not counted); worker --burst took {worker_s:.1f} s, with "
            f"{len(batches)} batch requests taking {sync_s:.1f} s in all (on sender threads, "
            f"beside the drain); sqld holds every event exactly once "
            f"({check})",
        ),
        Row(
            GROUP,
            "e2e.events_per_s",
            "8. end to end, events/s",
            total / elapsed,
            "/s",
            higher_is_better=True,
        ),
    ]


def _exactly_once(sqld: Any, sessions: int, events: int) -> str:
    messages_per, tools_per = expected_rows(events)
    got = {
        "sessions": sqld.scalar("SELECT count(*) FROM sessions"),
        "events": sqld.scalar("SELECT coalesce(sum(event_count), 0) FROM sessions"),
        "messages": sqld.scalar("SELECT count(*) FROM messages"),
        "distinct messages": sqld.scalar(
            "SELECT count(*) FROM (SELECT DISTINCT session_id, seq FROM messages)"
        ),
        "tool executions": sqld.scalar(
            "SELECT count(*) FROM tool_executions WHERE status = 'completed'"
        ),
        "completed sessions": sqld.scalar(
            "SELECT count(*) FROM sessions WHERE status = 'completed' AND event_count = ?",
            (events,),
        ),
    }
    want = {
        "sessions": sessions,
        "events": sessions * events,
        "messages": sessions * messages_per,
        "distinct messages": sessions * messages_per,
        "tool executions": sessions * tools_per,
        "completed sessions": sessions,
    }
    if got != want:
        raise AssertionError(f"e2e: sqld holds {got}, expected {want}")
    return f"{want['messages']:,} messages, {want['tool executions']:,} tool executions"
