"""Row 12: live sessions (checkpoints of open sessions), side by side with the
end-only sync (``AGENTSPOOL_CHECKPOINT_INTERVAL=0``).

- Visibility: a service worker with default settings; a producer opens sessions one
  after another at uneven moments and emits one message into each; the bench polls
  sqld (directly) until each session is there with status ``running``.
- Many open sessions: 200 sessions in one producer process, each emitting one
  message per second, for a window; sqld behind a proxy adding 50 ms per round trip
  counts the requests the checkpoints cost. Then the sessions end and the worker is
  stopped (SIGTERM: it drains and syncs): every row must be in sqld exactly once.
"""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import time
from typing import Any

from bench.common import (
    AGENTSPOOL_CLI,
    Child,
    Config,
    Ref,
    Row,
    clean_env,
    popen,
    ready_and_wait,
    sqld_server,
)
from tests.helpers import wait_until
from tests.proxy import FaultProxy

GROUP = "live"


def run(cfg: Config) -> list[Row]:
    return [*visibility_rows(cfg), *many_open_rows(cfg)]


def _worker(spool: str, url: str, log: Any, **env: str) -> subprocess.Popen[Any]:
    return popen(
        [AGENTSPOOL_CLI, "worker", "run"],
        env=clean_env(AGENTSPOOL_DIR=spool, TURSO_DATABASE_URL=url, **env),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def _stop(worker: subprocess.Popen[Any]) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


# ---- visibility with default settings ------------------------------------------------


def staggered_producer(spool: str, sessions: int, seed: int) -> dict[str, Any]:
    """Open sessions at uneven moments, one message each, flushed; report when."""
    from agentspool import Spool

    sp = Spool(spool)
    rng = random.Random(seed)
    ready_and_wait()
    emitted: dict[str, float] = {}
    open_sessions = []
    for n in range(sessions):
        time.sleep(rng.uniform(0.3, 2.0))
        s = sp.session(agent="live", session_id=f"vis-{n}")
        s.message("user", f"hello from session {n}")
        sp.flush(timeout=30)
        emitted[s.id] = time.time()
        open_sessions.append(s)
    ready_and_wait(emitted)  # the bench polls; the sessions stay open meanwhile
    for s in open_sessions:
        s.end(timeout=30)
    sp.close()
    return {"emitted": emitted}


def visibility_rows(cfg: Config) -> list[Row]:
    sessions = cfg.size(8, 2)
    spool = cfg.workdir("live-vis")
    log = open(cfg.tmp / "live-vis.log", "ab")
    with sqld_server(cfg.workdir("live-vis-sqld")) as sqld:
        worker = _worker(str(spool), sqld.url, log)
        try:
            producer = Child("live:staggered_producer", spool=str(spool), sessions=sessions, seed=7)
            producer.expect("READY", timeout=60)
            producer.send("GO")
            emitted: dict[str, float] = {}
            seen: dict[str, float] = {}
            emitted = producer.expect("READY", timeout=120)

            def all_visible() -> bool:
                try:
                    rows = sqld.query(
                        "SELECT id FROM sessions WHERE status = 'running' AND message_count = 1"
                    )
                except RuntimeError:
                    return False  # the schema is not there yet
                now = time.time()
                for (sid,) in rows:
                    seen.setdefault(sid, now)
                return len(seen) == sessions

            wait_until(all_visible, 60, "every open session to be visible", interval=0.05)
            producer.send("END")
            producer.result(timeout=60)
        finally:
            _stop(worker)
    lags = sorted(seen[sid] - emitted[sid] for sid in emitted)
    return [
        Row(GROUP, "live.visible.max_s",
            "12. an open session's first event visible remotely (running), default settings: max",
            lags[-1], "s", target=20.0,
            note=f"{sessions} sessions opened at uneven moments; median {statistics.median(lags):.2f} s;"
            " checkpoint interval 5 s (default); end-only sync: never until the end"),
    ]  # fmt: skip


# ---- 200 open sessions, one message per second each, at 50 ms ---------------------------


def steady_producer(spool: str, sessions: int, seconds: float) -> dict[str, Any]:
    """``sessions`` open sessions, each emitting one message per second."""
    from agentspool import Spool

    sp = Spool(spool)
    open_sessions = [sp.session(agent="steady", session_id=f"steady-{n}") for n in range(sessions)]
    sp.flush(timeout=30)
    ready_and_wait()
    gap = 1.0 / sessions
    count = 0
    started = time.monotonic()
    next_at = started
    while time.monotonic() - started < seconds:
        s = open_sessions[count % sessions]
        s.message("assistant", f"step {count // sessions} of {s.id}")
        count += 1
        next_at += gap
        time.sleep(max(0.0, next_at - time.monotonic()))
    sp.flush(timeout=30)
    ready_and_wait({"messages": count})
    for s in open_sessions:
        s.end(timeout=30)
    return {"messages": count}


def _steady(cfg: Config, name: str, sessions: int, seconds: float, interval: str) -> dict[str, Any]:
    spool = cfg.workdir(name)
    log = open(cfg.tmp / f"{name}.log", "ab")
    with sqld_server(cfg.workdir(f"{name}-sqld")) as sqld:
        proxy = FaultProxy(sqld.port)
        proxy.set_latency(0.050)
        proxy.start()
        try:
            worker = _worker(str(spool), proxy.url, log, AGENTSPOOL_CHECKPOINT_INTERVAL=interval)
            try:
                producer = Child(
                    "live:steady_producer", spool=str(spool), sessions=sessions, seconds=seconds
                )
                producer.expect("READY", timeout=120)
                time.sleep(float(interval) + 2 if float(interval) else 2)  # settle
                before = proxy.counts().requests
                t0 = time.monotonic()
                producer.send("GO")
                emitted = producer.expect("READY", timeout=seconds + 120)["messages"]
                window = time.monotonic() - t0
                requests = proxy.counts().requests - before

                def landed() -> int:
                    try:
                        return int(sqld.scalar("SELECT count(*) FROM messages"))
                    except RuntimeError:
                        return 0

                caught_up = None
                if float(interval) > 0:
                    t1 = time.monotonic()
                    wait_until(lambda: landed() == emitted, 60, "the checkpoints to catch up", 0.05)
                    caught_up = time.monotonic() - t1
                remote_during = landed()
                producer.send("END")
                producer.result(timeout=120)
            finally:
                _stop(worker)
        finally:
            proxy.stop()
        total = sqld.scalar("SELECT count(*) FROM messages")
        distinct = sqld.scalar("SELECT count(DISTINCT session_id || ':' || seq) FROM messages")
        final = sqld.scalar("SELECT count(*) FROM sessions WHERE status = 'completed'")
    if total != emitted or distinct != emitted or final != sessions:
        raise AssertionError(
            f"live: {total} rows ({distinct} distinct) of {emitted}, {final}/{sessions} completed"
        )
    return {
        "requests_per_s": requests / window,
        "window": window,
        "emitted": emitted,
        "caught_up": caught_up,
        "remote_during": remote_during,
    }


def many_open_rows(cfg: Config) -> list[Row]:
    sessions = cfg.size(200, 20)
    seconds = cfg.seconds(30.0, 4.0)
    live = _steady(cfg, "steady-live", sessions, seconds, "5")
    end_only = _steady(cfg, "steady-endonly", sessions, seconds, "0")
    return [
        Row(GROUP, "live.many.requests_per_s",
            f"12. {sessions} open sessions, 1 message/s each, 50 ms per request: requests/s",
            live["requests_per_s"], "req/s",
            anchor=Ref(end_only["requests_per_s"], "end-only sync (nothing visible)"), target=1.0,
            note=f"{live['emitted']:,} messages in {live['window']:.1f} s, default interval; "
            f"the last checkpoint caught up {live['caught_up']:.2f} s after the emits stopped; "
            f"end-only: {end_only['remote_during']} of {end_only['emitted']:,} visible before "
            "the end; after the end both hold every row exactly once"),
    ]  # fmt: skip
