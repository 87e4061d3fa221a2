"""Network faults between the worker and sqld, through a loopback TCP proxy
(tests/proxy.py): connections cut mid-request and right after a COMMIT, answers
of 429 and 503, latency, and a proxy that accepts connections but never forwards.

What must hold: a session's final status is in the remote database only with all of
its rows, and a ``running`` session's rows only grow (a watcher polls sqld directly,
bypassing the proxy, during the faults); syncs keep being retried; the request
deadline ends a hung sync while draining and ``status`` go on; and once the network
is healthy everything lands with exact counts. Each fault is driven deterministically
(every connection cut, the next N commits cut), so the assertions hold however busy
the machine is.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_worker_faults import status_json, timed_status, wait_worker_up
from tests.helpers import (
    AGENTSPOOL,
    finish,
    run_python,
    stop_process,
    wait_until,
    worker_db_rows,
    worker_env,
)
from tests.proxy import FaultProxy
from tests.sqld import Sqld

SEED = int(os.environ.get("AGENTSPOOL_FAULT_SEED", "0")) or random.randrange(1, 2**31)

# Sessions with big contents (a 3 MB session is one batch of a few multi-row INSERTs).
PRODUCER = """
import json, os, time
from agentspool import Spool

def run(tag, sessions, events, size, stop=None, pause=0.0):
    # `sessions` sessions, or fewer if the file `stop` appears first.
    spool = Spool(SPOOL)
    expected = {}
    for n in range(sessions):
        if stop is not None and os.path.exists(stop):
            break
        time.sleep(pause)
        sid = f"{tag}-{n}"
        s = spool.session(agent=f"net-{tag}", session_id=sid, metadata={"n": n})
        emitted, messages, tools, i = 1, 0, 0, 0
        while emitted < events - 1:
            body = f"{sid} event {i} " + ("abcdefghij" * (size // 10 + 1))[:size]
            if i % 5 == 4 and emitted + 2 <= events - 1:
                call = s.tool_started("fetch", input={"i": i})
                s.tool_finished(call, output=body)
                emitted += 2
                tools += 1
            else:
                s.message("assistant" if i % 2 else "user", body)
                emitted += 1
                messages += 1
            i += 1
        assert s.end(timeout=60), "end() did not confirm"
        expected[sid] = [events, messages, tools]
    print(json.dumps(expected))
"""

# For every session row: its event/message/tool counts and the rows it really has.
SESSIONS_SQL = (
    "SELECT s.id, s.status, s.event_count, s.message_count, s.tool_count,"
    " (SELECT count(*) FROM messages m WHERE m.session_id = s.id),"
    " (SELECT count(*) FROM tool_executions t WHERE t.session_id = s.id)"
    " FROM sessions s"
)


def produce(
    spool: Path,
    tag: str,
    sessions: int,
    events: int,
    size: int,
    stop: Path | None = None,
    pause: float = 0.0,
) -> subprocess.Popen[str]:
    stop_arg = repr(str(stop)) if stop is not None else "None"
    return run_python(
        PRODUCER + f"run({tag!r}, {sessions}, {events}, {size}, {stop_arg}, {pause})", spool
    )


def expected_of(*producers: subprocess.Popen[str]) -> dict[str, list[int]]:
    expected: dict[str, list[int]] = {}
    for proc in producers:
        expected.update(json.loads(finish(proc, timeout=60)))
    return expected


def remote_sessions(sqld: Sqld) -> dict[str, list[Any]] | None:
    """session id -> [status, event_count, message_count, tool_count, messages, tools];
    {} before the schema exists, None if sqld did not answer."""
    try:
        return {row[0]: row[1:] for row in sqld.query(SESSIONS_SQL)}
    except RuntimeError as exc:
        return {} if "no such table" in str(exc) else None
    except (urllib.error.URLError, OSError):
        return None


def landed(sqld: Sqld, expected: dict[str, list[int]]) -> bool:
    """Every expected session is in sqld whole, and nothing else is."""
    rows = remote_sessions(sqld)
    return rows is not None and rows == {
        sid: ["completed", events, messages, tools, messages, tools]
        for sid, (events, messages, tools) in expected.items()
    }


class HalfLandedWatch:
    """Polls sqld directly (not through the proxy) on a thread. A session row with a
    final status must come with all of its messages and tool executions (every
    session here ended normally: its events are its messages, two per tool
    execution, its start and its end); a ``running`` row (a checkpoint, or a part of
    a session larger than a batch) has exactly the messages it counts, and its rows
    never shrink from one poll to the next."""

    def __init__(self, sqld: Sqld) -> None:
        self.sqld = sqld
        self.polls = 0
        self.session_rows_seen = 0
        self.most_sessions = 0
        self.violations: list[tuple[str, list[Any]]] = []
        self.first_seen: dict[str, float] = {}  # session -> wall clock when first seen
        self._rows_seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="half-landed-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.time()
            rows = remote_sessions(self.sqld)
            if rows is not None:
                for sid in rows:
                    self.first_seen.setdefault(sid, asked)
                self.polls += 1
                self.session_rows_seen += len(rows)
                self.most_sessions = max(self.most_sessions, len(rows))
                for sid, counts in rows.items():
                    if not self._consistent(sid, counts):
                        self.violations.append((sid, counts))
            self._stop.wait(0.02)

    def _consistent(self, sid: str, counts: list[Any]) -> bool:
        status, events, message_count, tool_count, messages, tools = counts
        before = self._rows_seen.get(sid, (0, 0))
        self._rows_seen[sid] = (messages, tools)
        if messages < before[0] or tools < before[1]:
            return False
        if status == "running":
            return messages == message_count and tools >= tool_count
        return (
            messages == message_count
            and tools == tool_count
            and (events == messages + 2 * tools + 2)
        )

    def __enter__(self) -> HalfLandedWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def start_logged_worker(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """A service worker whose output goes to a file (a pipe nobody reads could fill
    up under a stream of retry warnings and block it)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [AGENTSPOOL, "worker", "run"], env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )


@contextmanager
def running_worker(
    env: dict[str, str], sqld: Sqld, log: Path
) -> Iterator[tuple[subprocess.Popen[str], HalfLandedWatch]]:
    """A logged service worker, up, while a HalfLandedWatch polls sqld; the worker is
    stopped on the way out, also when the test fails."""
    worker = start_logged_worker(env, log)
    try:
        with HalfLandedWatch(sqld) as watch:
            wait_worker_up(env, worker)
            yield worker, watch
    finally:
        stop_process(worker)


def sync_attempts(spool: Path) -> dict[str, int]:
    return dict(worker_db_rows(spool, "SELECT session_id, attempts FROM session_state"))


def batch_seconds(log_text: str) -> list[float]:
    """How long each landed batch's request took, from the worker's log."""
    return [
        float(s) for s in re.findall(r"batch landed: .* in one request \(([\d.]+)s\)", log_text)
    ]


def summary(title: str, rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    print(f"\n{title} (seed {SEED})")
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")


@pytest.fixture
def proxy(sqld: Sqld) -> Iterator[FaultProxy]:
    with FaultProxy(sqld.port, seed=SEED) as running:
        yield running


# ---- 1. connections cut mid-request and after COMMIT --------------------------

CONTENT = 1_500  # bytes of content per message / tool output
SESSION_EVENTS = 300  # ~0.4 MB per session: every batch request is far longer than a cut
CUT_MAX_BYTES = 2_000  # phase 1 cuts every connection within this many bytes
MIN_CUTS = 8
COMMIT_CUTS = 2  # phase 2: the next two batches land, their answers are lost
FAST_RETRIES = {"AGENTSPOOL_RETRY_BASE": "0.1", "AGENTSPOOL_RETRY_CAP": "0.5"}


def test_cut_connections_never_land_half_a_session(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    env = worker_env(spool, proxy.url, AGENTSPOOL_SYNC_TIMEOUT="15", **FAST_RETRIES)
    log = tmp_path / "worker.log"
    # The schema first, through a healthy proxy: the faults are about batches.
    started = time.monotonic()
    with running_worker(env, sqld, log) as (worker, watch):
        expected = expected_of(produce(spool, "warm", 1, 50, 100))
        wait_until(lambda: landed(sqld, expected), 30, "the warm-up session", interval=0.05)

        # Phase 1: every connection is cut before its request is complete.
        proxy.set_cuts(1.0, 1, CUT_MAX_BYTES)
        expected_cut = expected_of(produce(spool, "cut", 6, SESSION_EVENTS, CONTENT))
        wait_until(lambda: proxy.counts().cuts >= MIN_CUTS, 60, "the proxy to cut connections")
        during = remote_sessions(sqld) or {}
        report = status_json(env)
        error_during = (report["last_sync_error"] or {}).get("error")
        attempts = sync_attempts(spool)

        # Phase 2: the next batches commit, but their answers never arrive.
        proxy.set_cuts(0.0)
        proxy.set_commit_cuts(1.0, limit=COMMIT_CUTS)
        wait_until(lambda: proxy.counts().commit_cuts >= COMMIT_CUTS, 60, "commits to be cut")
        expected.update(expected_cut)
        # Phase 3: a healthy network; the retries land nothing twice.
        proxy.stop_cuts()
        healed = time.monotonic()
        wait_until(lambda: landed(sqld, expected), 60, "every session to land", interval=0.1)
        landed_after = time.monotonic() - healed
        # The batches whose answers were lost are retried, changing nothing.
        after = wait_until(
            lambda: (s := status_json(env))["sessions"]["synced"] == len(expected) and s,
            60,
            "the worker to record every session synced",
        )
        assert worker.poll() is None, "the worker exited during the faults"
    assert worker.returncode == 0, log.read_text()[-3000:]
    log_text = log.read_text()
    final = proxy.counts()
    summary(
        "connections cut mid-request, then answers lost after COMMIT",
        {
            "sessions / events": f"{len(expected)} / {sum(e[0] for e in expected.values())}",
            "cuts mid-request (bytes forwarded before each)": (
                f"{final.cuts} (N from {min(final.cut_points)} to {max(final.cut_points)})"
            ),
            "answers cut right after a COMMIT": final.commit_cuts,
            "connections / HTTP requests": f"{final.connections} / {final.requests}",
            "failed sync attempts logged": log_text.count("sync failed (attempt"),
            "attempts per cut session during phase 1": sorted(
                v for k, v in attempts.items() if k.startswith("cut-")
            ),
            "status during the cuts": f"last sync error: {error_during}",
            "cut sessions in sqld during phase 1": len([s for s in during if s.startswith("cut")]),
            "watch polls / session rows checked": f"{watch.polls} / {watch.session_rows_seen}",
            "half-landed sessions seen": len(watch.violations),
            "landed after the faults stopped": f"{landed_after:.2f}s",
            "test duration": f"{time.monotonic() - started:.1f}s",
        },
    )
    assert watch.violations == []
    assert watch.polls >= 20
    # Phase 1 landed nothing, and every cut session was retried.
    assert not [s for s in during if s.startswith("cut")]
    assert final.cuts >= MIN_CUTS
    assert all(attempts.get(sid, 0) >= 1 for sid in expected_cut), attempts
    assert error_during is not None
    assert final.commit_cuts == COMMIT_CUTS
    assert log_text.count("sync failed (attempt") >= MIN_CUTS // 2 + COMMIT_CUTS
    assert "synced session" in log_text
    assert report["worker_pid"] == worker.pid
    assert after["sessions"]["synced"] == len(expected)
    assert after["sessions"]["pending"] == after["sessions"]["failed"] == 0
    assert after["last_sync_error"] is None
    assert landed(sqld, expected)
    assert sqld.query("SELECT DISTINCT status FROM sessions") == [["completed"]]


def test_429_and_503_answers_are_retried_after_retry_after(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    env = worker_env(spool, proxy.url, **FAST_RETRIES)
    log = tmp_path / "worker.log"
    worker = start_logged_worker(env, log)
    try:
        wait_worker_up(env, worker)
        warm = expected_of(produce(spool, "warm", 1, 20, 100))
        wait_until(lambda: landed(sqld, warm), 30, "the warm-up session", interval=0.05)
        proxy.answer_next(2, status=429, retry_after=1)
        refused_at = time.monotonic()
        expected = expected_of(produce(spool, "busy", 3, 100, 500))
        wait_until(lambda: proxy.canned_answers >= 2, 30, "two 429 answers")
        expected.update(warm)
        wait_until(lambda: landed(sqld, expected), 60, "the sessions to land after 429s")
        waited = time.monotonic() - refused_at
        proxy.answer_next(1, status=503)
        more = expected_of(produce(spool, "unavailable", 2, 50, 500))
        expected.update(more)
        wait_until(lambda: landed(sqld, expected), 60, "the sessions to land after a 503")
    finally:
        stop_process(worker)
    log_text = log.read_text()
    assert worker.returncode == 0, log_text[-3000:]
    assert log_text.count("HTTP 429") >= 2 and "HTTP 503" in log_text
    # Retry-After (1 s) was honoured: two refusals cost at least a second each.
    assert waited >= 2.0, waited
    assert remote_sessions(sqld) is not None and landed(sqld, expected)


# ---- 2. latency ----------------------------------------------------------------

LATENCY_RTT_S = 0.1  # each chunk waits 50 ms in each direction


def test_latency_sessions_land_exactly(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.set_latency(LATENCY_RTT_S)
    env = worker_env(spool, proxy.url, AGENTSPOOL_SYNC_TIMEOUT="30")
    log = tmp_path / "worker.log"
    started = time.monotonic()
    with running_worker(env, sqld, log) as (worker, watch):
        expected = expected_of(produce(spool, "slow", 3, 2_000, CONTENT))
        produced = time.monotonic()
        wait_until(lambda: landed(sqld, expected), 40, "every session to land", interval=0.1)
        took = time.monotonic() - produced
        report, status_took = timed_status(env)
    assert worker.returncode == 0, log.read_text()[-3000:]
    seconds = batch_seconds(log.read_text())
    counts = proxy.counts()
    summary(
        "latency",
        {
            "round trip added": f"{LATENCY_RTT_S * 1000:.0f} ms",
            "sessions / events": f"{len(expected)} / {sum(e[0] for e in expected.values())}",
            "seconds per batch request": ", ".join(f"{s:.2f}" for s in seconds),
            "HTTP requests / connections": f"{counts.requests} / {counts.connections}",
            "all landed after the producer ended": f"{took:.2f}s",
            "status answered in": f"{status_took:.3f}s",
            "test duration": f"{time.monotonic() - started:.1f}s",
        },
    )
    assert watch.violations == [] and watch.polls >= 10
    assert seconds  # (sessions share batches; checkpoints of open sessions add some)
    assert all(s >= LATENCY_RTT_S for s in seconds)  # the latency was really there
    assert counts.requests <= 2 + len(seconds)  # the schema check, then one per batch
    assert report["sessions"]["synced"] == len(expected)
    assert report["last_sync_error"] is None
    assert status_took < 3.0


# ---- 3. a proxy that accepts but never forwards ---------------------------------

STALL_SYNC_TIMEOUT_S = 2.0


def test_stalled_network_hits_the_sync_deadline_and_the_worker_goes_on(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    env = worker_env(spool, proxy.url, AGENTSPOOL_SYNC_TIMEOUT=f"{STALL_SYNC_TIMEOUT_S:g}")
    log = tmp_path / "worker.log"
    started = time.monotonic()
    with running_worker(env, sqld, log) as (worker, watch):
        try:
            # A first session lands, so a sender holds an open connection.
            expected = expected_of(produce(spool, "warm", 1, 200, CONTENT))
            wait_until(lambda: landed(sqld, expected), 20, "the first session", interval=0.05)

            # Stall the network in the middle of the next session's sync.
            before = proxy.counts().bytes_up
            big = produce(spool, "big", 1, 2_000, CONTENT)
            wait_until(
                lambda: proxy.counts().bytes_up > before + (1 << 20),
                30,
                "the big session's sync to be under way",
                interval=0.001,
            )
            proxy.stall()
            stalled_at = time.monotonic()
            expected.update(expected_of(big))

            # While the sync hangs, the worker drains new sessions and answers status.
            during = produce(spool, "during", 2, 100, 500)
            expected.update(expected_of(during))
            produced = time.monotonic()
            wait_until(
                lambda: _pending_or_synced(spool, ["during-0", "during-1"]),
                10,
                "the sessions produced during the stall to be drained",
                interval=0.01,
            )
            drained_in = time.monotonic() - produced

            def timed_out() -> dict[str, Any] | None:
                report, took = timed_status(env)
                assert took < 3.0, took
                error = report["last_sync_error"]
                hit = error and f"within {STALL_SYNC_TIMEOUT_S:g}s" in error["error"]
                return report if hit else None

            report = wait_until(timed_out, 20, "a sync deadline in status", interval=0.1)
            deadline_seen = time.monotonic() - stalled_at
            # Hold the stall long enough for a second attempt to hit its deadline too.
            time.sleep(max(0.0, stalled_at + 2.5 * STALL_SYNC_TIMEOUT_S + 0.5 - time.monotonic()))
            status_during, status_took = timed_status(env)
            stalled_for = time.monotonic() - stalled_at
            assert worker.poll() is None
            stalled_remote = remote_sessions(sqld)
            proxy.resume()
            resumed = time.monotonic()
            wait_until(lambda: landed(sqld, expected), 40, "every session to land", interval=0.1)
            landed_after = time.monotonic() - resumed
            after = status_json(env)
        finally:
            proxy.resume()
    assert worker.returncode == 0, log.read_text()[-3000:]
    log_text = log.read_text()
    deadlines = log_text.count(f"no answer from the database within {STALL_SYNC_TIMEOUT_S:g}s")
    summary(
        "stalled network",
        {
            "sync timeout": f"{STALL_SYNC_TIMEOUT_S:g}s",
            "stalled for": f"{stalled_for:.1f}s",
            "attempts ended by the deadline": deadlines,
            "first deadline in status after": f"{deadline_seen:.2f}s",
            "sessions produced during the stall drained in": f"{drained_in:.2f}s",
            "status during the stall answered in": f"{status_took:.3f}s",
            "landed after the network came back": f"{landed_after:.2f}s",
            "test duration": f"{time.monotonic() - started:.1f}s",
        },
    )
    assert watch.violations == [] and watch.polls >= 10
    assert stalled_remote is not None and "big-0" not in stalled_remote
    assert deadlines >= 2
    assert deadline_seen >= STALL_SYNC_TIMEOUT_S
    assert report["worker_pid"] == worker.pid
    assert status_during["sessions"]["synced"] == 1
    assert status_took < 3.0
    assert after["sessions"]["synced"] == len(expected) == 4
    assert after["last_sync_error"] is None


def _pending_or_synced(spool: Path, session_ids: list[str]) -> bool:
    states = dict(worker_db_rows(spool, "SELECT session_id, sync_state FROM session_state"))
    return all(states.get(sid) in ("pending", "synced") for sid in session_ids)
