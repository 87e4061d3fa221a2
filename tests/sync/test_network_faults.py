"""Network faults between the worker and sqld, through a loopback TCP proxy
(tests/proxy.py): connections cut at random points mid-request and right after a
COMMIT, latency, and a proxy that accepts connections but never forwards.

What must hold: a session is in the remote database whole or not at all (a watcher
polls sqld directly, bypassing the proxy, during the faults), syncs keep being
retried, the worker's deadline ends a hung sync while draining and ``status`` go on,
and once the network is healthy everything lands with exact counts.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_worker_faults import status_json, timed_status, wait_worker_up
from tests.helpers import AGENTSPOOL, finish, run_python, stop_process, wait_until, worker_env
from tests.proxy import FaultProxy
from tests.sqld import Sqld

SEED = int(os.environ.get("AGENTSPOOL_FAULT_SEED", "0")) or random.randrange(1, 2**31)

# Sessions with big contents, so that one sync spans several requests (the worker
# sends multi-row INSERTs of up to 1 MiB each: a 3 MB session is 4-5 statements).
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
    "SELECT s.id, s.event_count, s.message_count, s.tool_count,"
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


def remote_sessions(sqld: Sqld) -> dict[str, list[int]] | None:
    """session id -> [event_count, message_count, tool_count, messages, tools];
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
        sid: [events, messages, tools, messages, tools]
        for sid, (events, messages, tools) in expected.items()
    }


class HalfLandedWatch:
    """Polls sqld directly (not through the proxy) on a thread: every session row it
    ever sees must come with all of its messages and tool executions. (The session
    row is the first statement of the sync's transaction, so a half-landed session
    would show as a row with too few messages.) Every session here ended normally:
    its events are its messages, two per tool execution, its start and its end."""

    def __init__(self, sqld: Sqld) -> None:
        self.sqld = sqld
        self.polls = 0
        self.session_rows_seen = 0
        self.most_sessions = 0
        self.violations: list[tuple[str, list[int]]] = []
        self.first_seen: dict[str, float] = {}  # session -> wall clock when first seen
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
                    events, message_count, tool_count, messages, tools = counts
                    if (
                        messages != message_count
                        or tools != tool_count
                        or events != messages + 2 * tools + 2
                    ):
                        self.violations.append((sid, counts))
            self._stop.wait(0.02)

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


def sync_attempts(spool: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{spool / 'worker.db'}?mode=ro", uri=True, timeout=5)
    try:
        return dict(conn.execute("SELECT session_id, attempts FROM session_state"))
    finally:
        conn.close()


def failed_after_landing(log_text: str, first_seen: dict[str, float]) -> set[str]:
    """Sessions whose sync the worker logged as failed although sqld already held
    them: the COMMIT went through, its answer was lost (then a retry pushed them
    again, changing nothing)."""
    found = set()
    for stamp, sid in re.findall(
        r"^(\S+ \S+) WARNING agentspool.worker: sync of session (\S+) failed", log_text, re.M
    ):
        logged = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if sid in first_seen and first_seen[sid] < logged:
            found.add(sid)
    return found


def synced_seconds(log_text: str) -> list[float]:
    return [
        float(s) for s in re.findall(r"synced session \S+ \(\d+ statements, ([\d.]+)s\)", log_text)
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
BIG_EVENTS = 2_000  # ~3 MB per session: 4-5 INSERTs of up to 1 MiB
SMALL_EVENTS = 400  # ~0.6 MB: these often get as far as their COMMIT
CUT_MAX_BYTES = 3_500_000  # every connection is cut within this many bytes
MIN_CUTS = 12
MIN_COMMIT_CUTS = 2
MIN_FAULT_S = 3.0
MAX_SESSIONS = 40  # per producer; they stop (a file appears) once the faults did enough


def test_cut_connections_never_land_half_a_session(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    # A sync attempt may have to wait out sqld's 5 s lock on a transaction whose
    # client vanished between two requests: give it room.
    env = worker_env(spool, proxy.url, AGENTSPOOL_SYNC_TIMEOUT="15")
    proxy.set_cuts(1.0, 1, CUT_MAX_BYTES)
    proxy.set_commit_cuts(0.5)
    log = tmp_path / "worker.log"
    worker = start_logged_worker(env, log)
    started = time.monotonic()
    try:
        with HalfLandedWatch(sqld) as watch:
            wait_worker_up(env, worker)
            faults_from = time.monotonic()
            # Sessions keep coming while the proxy cuts, until it has cut enough.
            stop = tmp_path / "stop-producing"
            producers = [
                produce(spool, "big", MAX_SESSIONS, BIG_EVENTS, CONTENT, stop, pause=0.2),
                produce(spool, "small", MAX_SESSIONS, SMALL_EVENTS, CONTENT, stop, pause=0.2),
            ]

            def enough_faults() -> bool:
                counts = proxy.counts()
                return (
                    counts.cuts >= MIN_CUTS
                    and counts.commit_cuts >= MIN_COMMIT_CUTS
                    and time.monotonic() - faults_from >= MIN_FAULT_S
                ) or any(p.poll() is not None for p in producers)

            wait_until(enough_faults, 45, "the proxy to cut connections", interval=0.1)
            stop.touch()
            expected = expected_of(*producers)
            faults = proxy.counts()
            during = remote_sessions(sqld) or {}
            report = status_json(env)
            error_during = (report["last_sync_error"] or {}).get("error")
            proxy.stop_cuts()
            healed = time.monotonic()
            wait_until(lambda: landed(sqld, expected), 30, "every session to land", interval=0.1)
            landed_after = time.monotonic() - healed
            after = status_json(env)
            attempts = sync_attempts(spool)
        assert worker.poll() is None, "the worker exited during the faults"
    finally:
        stop_process(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    log_text = log.read_text()
    final = proxy.counts()
    summary(
        "connections cut at random points",
        {
            "sessions / events / MB of content": (
                f"{len(expected)} / {sum(e[0] for e in expected.values())}"
                f" / {sum(e[1] + e[2] for e in expected.values()) * CONTENT / 1e6:.0f}"
            ),
            "cuts mid-request (bytes forwarded before each)": (
                f"{faults.cuts} (N from {min(faults.cut_points)} to {max(faults.cut_points)})"
            ),
            "cuts right after a COMMIT": faults.commit_cuts,
            "… the COMMIT had landed (the answer was lost)": len(
                failed_after_landing(log_text, watch.first_seen)
            ),
            "connections / HTTP requests": f"{final.connections} / {final.requests}",
            "failed sync attempts logged": log_text.count("failed (attempt"),
            "most attempts of one session": max(attempts.values()),
            "status during the cuts": f"last sync error: {error_during}",
            "sessions landed while cutting": len(during),
            "watch polls / session rows checked": f"{watch.polls} / {watch.session_rows_seen}",
            "half-landed sessions seen": len(watch.violations),
            "landed after the cuts stopped": f"{landed_after:.2f}s",
            "test duration": f"{time.monotonic() - started:.1f}s",
        },
    )
    assert watch.violations == []
    assert watch.polls >= 20
    assert faults.cuts >= MIN_CUTS and faults.commit_cuts >= MIN_COMMIT_CUTS
    # Retries went on: attempts failed and were retried, and the status said why.
    assert log_text.count("failed (attempt") >= MIN_CUTS // 2
    assert max(attempts.values()) >= 2
    assert "synced session" in log_text
    assert report["worker_pid"] == worker.pid
    assert after["sessions"]["synced"] == len(expected)
    assert after["sessions"]["pending"] == after["sessions"]["failed"] == 0
    assert after["last_sync_error"] is None
    assert landed(sqld, expected)
    assert sqld.query("SELECT DISTINCT status FROM sessions") == [["completed"]]


# ---- 2. latency ----------------------------------------------------------------

LATENCY_RTT_S = 0.1  # each chunk waits 50 ms in each direction


def test_latency_sessions_land_exactly(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.set_latency(LATENCY_RTT_S)
    env = worker_env(spool, proxy.url, AGENTSPOOL_SYNC_TIMEOUT="30")
    log = tmp_path / "worker.log"
    worker = start_logged_worker(env, log)
    started = time.monotonic()
    try:
        with HalfLandedWatch(sqld) as watch:
            wait_worker_up(env, worker)
            expected = expected_of(produce(spool, "slow", 3, 2_000, CONTENT))
            produced = time.monotonic()
            wait_until(lambda: landed(sqld, expected), 40, "every session to land", interval=0.1)
            took = time.monotonic() - produced
            report, status_took = timed_status(env)
    finally:
        stop_process(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    seconds = synced_seconds(log.read_text())
    counts = proxy.counts()
    summary(
        "latency",
        {
            "round trip added": f"{LATENCY_RTT_S * 1000:.0f} ms",
            "sessions / events": f"{len(expected)} / {sum(e[0] for e in expected.values())}",
            "sync seconds per session": ", ".join(f"{s:.2f}" for s in seconds),
            "HTTP requests / connections": f"{counts.requests} / {counts.connections}",
            "all landed after the producer ended": f"{took:.2f}s",
            "status answered in": f"{status_took:.3f}s",
            "test duration": f"{time.monotonic() - started:.1f}s",
        },
    )
    assert watch.violations == [] and watch.polls >= 10
    assert len(seconds) == len(expected)
    assert all(s >= LATENCY_RTT_S for s in seconds)  # the latency was really there
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
    worker = start_logged_worker(env, log)
    started = time.monotonic()
    try:
        with HalfLandedWatch(sqld) as watch:
            wait_worker_up(env, worker)
            # A first session lands, so the sync child holds an open connection.
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
        stop_process(worker)
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
    conn = sqlite3.connect(f"file:{spool / 'worker.db'}?mode=ro", uri=True, timeout=5)
    try:
        states = dict(conn.execute("SELECT session_id, sync_state FROM session_state"))
    finally:
        conn.close()
    return all(states.get(sid) in ("pending", "synced") for sid in session_ids)
