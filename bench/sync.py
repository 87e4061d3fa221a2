"""Row 7: syncing one 10,000-event session to a real sqld 20 ms away.

A real sqld (tests/sqld.py) behind bench/proxy.py, which adds 20 ms to every
request/response round trip and counts HTTP requests. Sessions of 10,000 events
(session_start, 9,998 messages with 400-byte contents, session_end) are written by a
producer process and drained into replicas by the worker's ``Drainer``; then the
worker's own ``SyncRunner`` pushes them through its sync child process (the code path
the service uses; the bench process never loads libsql). Three syncs, each of its own
session: the first, to the empty database, also creates the schema (info only); the
second, on the same child, is what a running worker pays per session; the third runs
in a new sync child (as after a worker restart or a killed child), which connects and
checks the schema first. Every session is then counted in sqld (exactly once).

Floor: one HTTP request through the same proxy (a Hrana pipeline with ``SELECT 1``).
Anchor: libsql's ``executemany`` (two requests per row), measured on a few rows
through the same proxy and extrapolated linearly to the session's rows (labelled).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    Child,
    Config,
    Ref,
    Row,
    message_content,
    ready_and_wait,
    sqld_server,
)
from bench.proxy import LatencyProxy

GROUP = "sync"
ROUND_TRIP_S = 0.020


def run(cfg: Config) -> list[Row]:
    from agentspool.worker.intake.drain import Drainer
    from agentspool.worker.state import StateStore

    events = cfg.size(10_000, 500)
    anchor_rows = cfg.size(100, 10)
    spool = cfg.workdir("sync-spool")
    produced = Child(
        "workload:produce", spool=str(spool), sessions=3, events=events, tag="sync", tools=False
    ).result(timeout=120)
    if produced["dropped"] or not produced["confirmed"]:
        raise AssertionError(f"sync: the producer lost events: {produced}")
    state = StateStore(spool)
    drainer = Drainer(spool, state)
    try:
        while drainer.drain_all().items:
            pass
    finally:
        drainer.close()
        state.close()
    session_ids = ["sync-s0", "sync-s1", "sync-s2"]
    messages = events - 2

    with sqld_server(cfg.workdir("sync-sqld")) as sqld:
        proxy = LatencyProxy(sqld.port, ROUND_TRIP_S)
        proxy.start()
        runners: list[Any] = []
        try:
            floor_s = _one_round_trip(proxy.url)
            runners.append(_start_runner(proxy.url))
            fresh = _sync(proxy, runners[0], spool, session_ids[0])
            warm = _sync(proxy, runners[0], spool, session_ids[1])
            runners.append(_start_runner(proxy.url))
            restart = _sync(proxy, runners[1], spool, session_ids[2])
            anchor = _executemany(proxy, anchor_rows)
        finally:
            for runner in runners:
                runner.close()
            proxy.stop()
        for sid in session_ids:  # exactly once, straight from sqld (not through the proxy)
            landed = sqld.scalar("SELECT count(*) FROM messages WHERE session_id = ?", (sid,))
            event_count = sqld.scalar("SELECT event_count FROM sessions WHERE id = ?", (sid,))
            if landed != messages or event_count != events:
                raise AssertionError(f"sync: {sid} has {landed} messages / {event_count} events")

    scale = messages / anchor_rows
    anchor_s = Ref(
        anchor["seconds"] * scale, f"executemany ({anchor_rows} rows, x{scale:,.0f} extrapolated)"
    )
    anchor_req = Ref(anchor["requests"] * scale, anchor_s.label)
    floor_s_ref = Ref(floor_s, "1 round trip")
    floor_req = Ref(1, "")
    title = f"{events:,}-event session, 20 ms RTT"
    return [
        Row(
            GROUP,
            "sync.seconds",
            f"7. sync a {title}",
            warm["seconds"],
            "s",
            floor=floor_s_ref,
            anchor=anchor_s,
            target=1.5,
            note=f"{messages:,} messages of 400 bytes, {warm['bytes_up'] / 2**20:.1f} MiB sent, "
            f"through the worker's SyncRunner and sync child (it reported "
            f"{warm['child_seconds']:.3f} s, {warm['statements']} statements); executemany: "
            f"{anchor['seconds']:.2f} s and {anchor['requests']} requests for {anchor_rows} rows",
        ),
        Row(
            GROUP,
            "sync.requests",
            f"7. HTTP requests to sync a {title}",
            warm["requests"],
            "req",
            floor=floor_req,
            anchor=anchor_req,
            target=20,
        ),
        Row(
            GROUP,
            "sync.restart.seconds",
            "7. the same, first sync of a new sync child (connect + schema check)",
            restart["seconds"],
            "s",
            floor=floor_s_ref,
            anchor=anchor_s,
            target=1.5,
        ),
        Row(
            GROUP,
            "sync.restart.requests",
            "7. HTTP requests, first sync of a new sync child",
            restart["requests"],
            "req",
            floor=floor_req,
            anchor=anchor_req,
            target=20,
        ),
        Row(
            GROUP,
            "sync.fresh_db.seconds",
            "7. the same, first sync to an empty database (creates the schema)",
            fresh["seconds"],
            "s",
            floor=floor_s_ref,
            anchor=anchor_s,
            note=f"{fresh['requests']} HTTP requests over {fresh['connections']} connection(s)",
        ),
    ]


def _start_runner(url: str) -> Any:
    """The worker's SyncRunner with its child process already started (as in a running
    worker: the interpreter's start-up is not part of a sync)."""
    from agentspool.worker.sync.syncer import SyncRunner

    runner = SyncRunner(url, None, 120.0, threading.Event())
    start_child = getattr(runner, "_ensure_child", None)  # private: absent, the first sync pays
    if start_child is not None:
        start_child()
        time.sleep(1.0)  # let it import; it connects on its first request
    return runner


def _one_round_trip(url: str, tries: int = 5) -> float:
    """The median time of one Hrana pipeline request through the proxy."""
    body = json.dumps(
        {"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1"}}, {"type": "close"}]}
    ).encode()
    times = []
    for _ in range(tries):
        request = urllib.request.Request(
            f"{url}/v2/pipeline", data=body, headers={"Content-Type": "application/json"}
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sync(proxy: LatencyProxy, runner: Any, spool: Path, session_id: str) -> dict[str, Any]:
    """One sync through the worker's SyncRunner (and so its sync child)."""
    from agentspool.worker.intake.replica import replica_path

    before = proxy.counts()
    t0 = time.perf_counter()
    runner.submit(session_id, replica_path(spool, session_id))
    deadline = time.monotonic() + 125
    outcome = None
    while outcome is None:
        runner.wake.wait(0.001)
        runner.wake.clear()
        outcome = runner.poll()
        if time.monotonic() > deadline:
            raise TimeoutError("sync: no outcome")
    elapsed = time.perf_counter() - t0
    after = proxy.counts()
    if not outcome.ok:
        raise AssertionError(f"sync of {session_id} failed: {outcome.kind}: {outcome.error}")
    if after.http2:
        raise AssertionError("the client spoke HTTP/2: the request count is meaningless")
    return {
        "seconds": elapsed,
        "child_seconds": outcome.seconds,
        "statements": outcome.statements,
        "requests": after.requests - before.requests,
        "connections": after.connections - before.connections,
        "bytes_up": after.bytes_up - before.bytes_up,
    }


def _executemany(proxy: LatencyProxy, rows: int) -> dict[str, Any]:
    child = Child("sync:executemany_child", url=proxy.url, rows=rows)
    child.expect("READY", timeout=60)  # connected, table created: not counted
    before = proxy.counts()
    child.send("GO")
    result = child.result(timeout=rows * 2 + 60)
    result["requests"] = proxy.counts().requests - before.requests
    return dict(result)


def executemany_child(url: str, rows: int) -> dict[str, Any]:
    """libsql's executemany in its own process (the bench process never loads libsql)."""
    import libsql

    conn = libsql.connect(url, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_executemany (session_id TEXT, seq INTEGER, role TEXT,"
        " content TEXT, created_at TEXT, metadata TEXT, PRIMARY KEY (session_id, seq))"
    )
    content = message_content()
    data = [("s", i, "assistant", content, "2025-01-01T00:00:00.000Z", None) for i in range(rows)]
    ready_and_wait()
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT OR IGNORE INTO bench_executemany VALUES (?, ?, ?, ?, ?, ?)", data)
    conn.execute("COMMIT")
    return {"seconds": time.perf_counter() - t0}
