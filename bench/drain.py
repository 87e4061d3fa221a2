"""Row 5: the worker's drain (queue files -> per-session replicas), events/s.

Eight producer processes (workload.py: sessions of 1,000 events) and the worker's
``Drainer`` (agentspool.worker.intake.drain, driven here in a loop as the worker's service
loop drives it, without the file-system wake-ups) measured two ways:

- while the 8 producers write: all start on one signal; the clock runs from that
  signal until every event is applied to a replica (so it includes waiting for the
  producers on 2 CPUs that all of them share);
- a backlog: the 8 producers finish first, then the drain alone is timed.

Anchor: persist-queue's own consumer API, ``get`` + ``ack`` per item, in a separate
process from the one that filled the queue (JSON serializer; the backlog is scaled
down because that loop is slow and gets slower with the backlog).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import Child, Config, Ref, Row, message_content

GROUP = "drain"
PRODUCERS = 8
EVENTS_PER_SESSION = 1000


def run(cfg: Config) -> list[Row]:
    sessions = cfg.size(20, 1)  # per producer
    events = cfg.size(EVENTS_PER_SESSION, 250)
    total = PRODUCERS * sessions * events
    anchor_n = cfg.size(2_000, 200)

    concurrent = drain_while_producing(cfg, sessions, events)
    backlog = drain_backlog(cfg, sessions, events)
    anchor = Child("drain:pq_get_ack_loop", pq_dir=str(cfg.workdir("drain-pq")), n=anchor_n).result(
        timeout=300
    )
    anchor_ref = Ref(anchor["rate"], f"persist-queue get+ack ({anchor_n:,} backlog)")
    shape = f"{PRODUCERS} producers x {sessions * events:,} events"
    from bench import drain_redaction

    return [
        Row(
            GROUP,
            "drain.concurrent.events_per_s",
            f"5. drain into replicas, events/s, {shape}, producers writing at once",
            concurrent["rate"],
            "/s",
            higher_is_better=True,
            anchor=anchor_ref,
            target=20_000,
            note=f"{total:,} events applied {concurrent['seconds']:.2f} s after the start "
            f"signal; the producers had finished emitting after {concurrent['producing_s']:.2f} s "
            f"(the drain trailed them by {concurrent['seconds'] - concurrent['producing_s']:.2f} s); "
            f"{concurrent['passes']} drain passes, {concurrent['sessions']} sessions",
        ),
        Row(
            GROUP,
            "drain.backlog.events_per_s",
            f"5. drain into replicas, events/s, a backlog of {shape}",
            backlog["rate"],
            "/s",
            higher_is_better=True,
            anchor=anchor_ref,
            target=20_000,
            note=f"{total:,} events applied in {backlog['seconds']:.2f} s once all 8 producers "
            f"had finished; {backlog['sessions']} sessions",
        ),
        *drain_redaction.measure(cfg),
    ]


def _start_producers(spool: Path, sessions: int, events: int, wait_go: bool) -> list[Child]:
    return [
        Child(
            "workload:produce",
            spool=str(spool),
            sessions=sessions,
            events=events,
            tag=f"p{n}",
            wait_go=wait_go,
        )
        for n in range(PRODUCERS)
    ]


def _check_producers(results: list[dict[str, Any]]) -> None:
    for r in results:
        if r["dropped"] or not r["confirmed"]:
            raise AssertionError(f"a producer lost events: {r}")


def _drain_until(drainer: Any, expected: int, timeout: float) -> int:
    """Call drain_all until ``expected`` events are applied; returns the passes made."""
    applied = 0
    passes = 0
    deadline = time.monotonic() + timeout
    while applied < expected:
        result = drainer.drain_all()
        passes += 1
        applied += result.applied
        if result.dead_lettered:
            raise AssertionError(f"{result.dead_lettered} events dead-lettered")
        if result.items == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain: {applied:,} of {expected:,} applied after {timeout}s")
            time.sleep(0.002)  # the service waits for inotify here
    return passes


def _verify(state: Any, expected: int, sessions: int) -> int:
    count, events = state.conn.execute(
        "SELECT count(*), coalesce(sum(event_count), 0) FROM session_state"
    ).fetchone()
    if events != expected or count != sessions or state.dead_letter_count():
        raise AssertionError(f"drain: {count} sessions / {events} events in the state store")
    return int(count)


def drain_while_producing(cfg: Config, sessions: int, events: int) -> dict[str, Any]:
    from agentspool.worker.intake.drain import Drainer
    from agentspool.worker.state import StateStore

    spool = cfg.workdir("drain-concurrent")
    expected = PRODUCERS * sessions * events
    producers = _start_producers(spool, sessions, events, wait_go=True)
    for p in producers:
        p.expect("READY", timeout=60)
    state = StateStore(spool)
    drainer = Drainer(spool, state)
    try:
        for p in producers:
            p.send("GO")
        t0 = time.monotonic()
        passes = _drain_until(drainer, expected, timeout=300)
        elapsed = time.monotonic() - t0
        results = [p.result(timeout=60) for p in producers]
        _check_producers(results)
        n_sessions = _verify(state, expected, PRODUCERS * sessions)
    finally:
        drainer.close()
        state.close()
    return {
        "rate": expected / elapsed,
        "seconds": elapsed,
        "producing_s": max(r["done"] for r in results) - t0,
        "passes": passes,
        "sessions": n_sessions,
    }


def drain_backlog(cfg: Config, sessions: int, events: int) -> dict[str, Any]:
    from agentspool.worker.intake.drain import Drainer
    from agentspool.worker.state import StateStore

    spool = cfg.workdir("drain-backlog")
    expected = PRODUCERS * sessions * events
    _check_producers(
        [p.result(timeout=300) for p in _start_producers(spool, sessions, events, False)]
    )
    state = StateStore(spool)
    drainer = Drainer(spool, state)
    try:
        t0 = time.monotonic()
        _drain_until(drainer, expected, timeout=300)
        elapsed = time.monotonic() - t0
        n_sessions = _verify(state, expected, PRODUCERS * sessions)
    finally:
        drainer.close()
        state.close()
    return {"rate": expected / elapsed, "seconds": elapsed, "sessions": n_sessions}


def pq_fill(pq_dir: str, n: int) -> dict[str, Any]:
    import persistqueue
    import persistqueue.serializers.json

    q = persistqueue.SQLiteAckQueue(pq_dir, serializer=persistqueue.serializers.json)
    content = message_content()
    for i in range(n):
        q.put(
            {
                "v": 1,
                "type": "message",
                "session_id": "s1",
                "seq": i + 1,
                "ts": time.time(),
                "producer_id": "p1",
                "pseq": i,
                "role": "assistant",
                "content": content,
            }
        )
    q.close()
    return {"items": n}


def pq_get_ack_loop(pq_dir: str, n: int) -> dict[str, Any]:
    """persist-queue's consumer API over a backlog another process wrote."""
    import persistqueue
    import persistqueue.serializers.json
    from persistqueue.exceptions import Empty

    Child("drain:pq_fill", pq_dir=pq_dir, n=n).result(timeout=300)
    q = persistqueue.SQLiteAckQueue(
        pq_dir, serializer=persistqueue.serializers.json, auto_resume=False, multithreading=True
    )
    got = 0
    t0 = time.perf_counter()
    while True:
        try:
            item = q.get(block=False)
        except Empty:
            break
        q.ack(item)
        got += 1
    elapsed = time.perf_counter() - t0
    q.close()
    if got != n:
        raise AssertionError(f"persist-queue consumer got {got} of {n}")
    return {"rate": got / elapsed}
