"""Fault injection at random moments, with a summary of what was injected and what
survived (the figures in docs/RELIABILITY.md come from these runs).

- 20 producers while the worker is killed with SIGKILL at random moments, 50+ times;
  then a final burst: exact remote counts, no duplicates, every file sound.
- Agents killed with SIGKILL at random moments: nothing that flush() or end()
  confirmed is lost.
- PID reuse and wall-clock jumps: abandoned-session detection does not misfire.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentspool import Spool
from agentspool.producer import queuefile
from agentspool.worker.config import Settings
from agentspool.worker.daemon.service import Worker
from agentspool.worker.state import StateStore
from tests.daemon.test_worker_faults import (
    assert_sessions_consistent,
    expected_counts,
    remote_counts,
)
from tests.helpers import (
    AGENTSPOOL,
    PRODUCER_WORKLOAD,
    run_cli,
    run_python,
    worker_env,
)
from tests.sqld import Sqld

SEED = int(os.environ.get("AGENTSPOOL_FAULT_SEED", "0")) or random.randrange(1, 2**31)


def summary(title: str, rows: dict[str, Any]) -> None:
    """Print a small table (visible with -s, and in the report of a failing test)."""
    width = max(len(k) for k in rows)
    print(f"\n{title} (seed {SEED})")
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")


def start_worker_group(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """A worker in its own process group (killpg takes everything it started); its
    output goes nowhere, so that a killed worker can never block on a full pipe."""
    return subprocess.Popen(
        [AGENTSPOOL, "worker", "run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def integrity_of_replicas(spool: Path) -> dict[str, str]:
    """replica file -> integrity_check verdict, for every replica left in the spool."""
    verdicts = {}
    for path in sorted((spool / "replicas").glob("*.db")):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            verdicts[path.name] = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    return verdicts


def final_burst(env: dict[str, str], attempts: int = 3) -> subprocess.CompletedProcess[str]:
    result = run_cli("worker", "run", "--burst", env=env, timeout=240)
    for _ in range(attempts - 1):
        if result.returncode == 0:
            break
        result = run_cli("worker", "run", "--burst", env=env, timeout=240)
    return result


# ---- 1. the worker killed 50+ times while 20 producers write ---------------------

PRODUCERS = 20
SESSIONS_PER_PRODUCER = 4
EVENTS_PER_SESSION = 60
MIN_WORKER_KILLS = 50

SLOW_WORKLOAD = (
    PRODUCER_WORKLOAD
    + """
import random, time
from agentspool import Spool

class Slow:
    # The same workload, paced so that it spans the kill loop.
    def __init__(self, spool):
        self.spool = spool
    def session(self, **kw):
        return SlowSession(self.spool.session(**kw))

class SlowSession:
    def __init__(self, s):
        self.s = s
    def __getattr__(self, name):
        attr = getattr(self.s, name)
        if name in ("message", "tool_started", "tool_finished"):
            def paced(*a, **kw):
                time.sleep(random.uniform(0, PACE))
                return attr(*a, **kw)
            return paced
        return attr
"""
)


@pytest.mark.slow
def test_20_producers_and_50_worker_kills_lose_and_duplicate_nothing(
    spool: Path, sqld: Sqld
) -> None:
    rng = random.Random(SEED)
    env = worker_env(spool, sqld.url)
    producers = [
        run_python(
            SLOW_WORKLOAD.replace("PACE", "0.12")
            + f"run(Slow(Spool(SPOOL)), {SESSIONS_PER_PRODUCER}, {EVENTS_PER_SESSION}, 'p{n}')",
            spool,
            timeout=300,
        )
        for n in range(PRODUCERS)
    ]
    kills = 0
    kills_while_syncing = 0
    started = time.monotonic()
    try:
        while kills < MIN_WORKER_KILLS or any(p.poll() is None for p in producers):
            worker = start_worker_group(env)
            time.sleep(rng.uniform(0.05, 0.5))
            syncing = _batch_in_flight(spool)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            kills += 1
            kills_while_syncing += syncing
            assert time.monotonic() - started < 180, "the producers did not finish in time"
    finally:
        for p in producers:
            if p.poll() is None:
                p.kill()
    outputs = [p.communicate(timeout=30) for p in producers]
    failed = [(p.returncode, err[-500:]) for p, (_, err) in zip(producers, outputs, strict=True)]
    assert all(code == 0 for code, _ in failed), failed
    produced_for = time.monotonic() - started

    before_burst = remote_counts(sqld)
    result = final_burst(env)
    assert result.returncode == 0, result.stderr[-3000:]

    expected = expected_counts(PRODUCERS * SESSIONS_PER_PRODUCER, EVENTS_PER_SESSION)
    got = remote_counts(sqld)
    duplicates = sqld.scalar(
        "SELECT count(*) - count(DISTINCT session_id || '/' || seq) FROM messages"
    )
    verdicts = integrity_of_replicas(spool)
    verify = run_cli("verify", "--full", env=env, timeout=120)
    summary(
        "worker kill -9 fault run",
        {
            "producers": PRODUCERS,
            "sessions": expected[0],
            "events": expected[3],
            "worker SIGKILLs": kills,
            "  of them with a batch in flight": kills_while_syncing,
            "producing took": f"{produced_for:.1f}s",
            "synced before the final burst": f"{before_burst[0]} sessions",
            "remote (sessions, messages, tools, events)": got,
            "expected": expected,
            "lost events": expected[3] - got[3],
            "duplicate messages": duplicates,
            "replicas checked": f"{len(verdicts)}, all ok: {set(verdicts.values()) <= {'ok'}}",
        },
    )
    assert kills >= MIN_WORKER_KILLS
    assert got == expected
    assert duplicates == 0
    assert_sessions_consistent(sqld)
    assert set(verdicts.values()) <= {"ok"}, verdicts
    assert verify.returncode == 0, verify.stdout + verify.stderr
    status = json.loads(run_cli("status", "--json", env=env, check=True).stdout)
    assert status["dead_letters"] == 0 and status["quarantined"] == []
    assert status["sessions"]["synced"] == expected[0]


def _batch_in_flight(spool: Path) -> bool:
    """Whether the worker has a batch request out (what it publishes for status)."""
    try:
        conn = sqlite3.connect(f"file:{spool / 'worker.db'}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT value FROM worker_meta WHERE key = 'sync'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False  # not created yet, or busy: count it as not syncing
    return bool(row and json.loads(row[0]).get("in_flight"))


# ---- 2. agents killed at random moments ------------------------------------------

CONFIRMING_AGENT = """
import sys, time, random
from agentspool import Spool

spool = Spool(SPOOL)
rng = random.Random(SEED_VALUE)
n = 0
while True:
    sid = f"{TAG}-s{n}"
    s = spool.session(agent=TAG, session_id=sid)
    if n == 0:
        print(f"S {sid} 0", flush=True)  # started: its lifetime counts from here
    seq = 0
    for i in range(rng.randint(5, 60)):
        s.message("user", f"{sid} {i} " + "x" * rng.randint(0, 300))
        seq += 1
        if rng.random() < 0.15 and spool.flush(timeout=60):
            print(f"F {sid} {seq}", flush=True)  # everything up to seq is durable
        time.sleep(rng.uniform(0, 0.004))
    if s.end(timeout=60):
        print(f"E {sid} {seq}", flush=True)
    n += 1
"""

AGENTS = 12


@pytest.mark.slow
def test_agents_killed_at_random_moments_lose_nothing_they_confirmed(
    spool: Path, sqld: Sqld
) -> None:
    rng = random.Random(SEED + 1)
    env = worker_env(spool, sqld.url)
    worker = start_worker_group(env)
    agents = [
        run_python(
            CONFIRMING_AGENT.replace("SEED_VALUE", str(rng.randrange(2**31))).replace(
                "TAG", repr(f"a{n}")
            ),
            spool,
        )
        for n in range(AGENTS)
    ]
    lifetimes = []
    confirmed: dict[str, int] = {}
    ended: set[str] = set()
    try:
        # Lifetimes count from each agent's first session, not from its start: on a
        # busy machine an agent killed before it began would test nothing.
        first_lines = []
        for agent in agents:
            assert agent.stdout is not None
            first_lines.append(agent.stdout.readline())  # EOF ("") if it died: bounded
            assert first_lines[-1].startswith("S "), first_lines[-1]
        lifetimes = [rng.uniform(0.3, 3.0) for _ in agents]
        deadline_order = sorted(zip(lifetimes, agents, strict=True), key=lambda x: x[0])
        t0 = time.monotonic()
        for lifetime, agent in deadline_order:
            time.sleep(max(0.0, t0 + lifetime - time.monotonic()))
            agent.send_signal(signal.SIGKILL)
        for agent in agents:
            out, _ = agent.communicate(timeout=60)
            for line in out.splitlines():
                kind, sid, seq = line.split()
                confirmed[sid] = max(confirmed.get(sid, 0), int(seq))
                if kind == "E":
                    ended.add(sid)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    result = final_burst(env)
    assert result.returncode == 0, result.stderr[-3000:]

    remote = {
        sid: (status, count, max_seq)
        for sid, status, count, max_seq in sqld.query(
            "SELECT s.id, s.status, count(m.seq), coalesce(max(m.seq), 0) FROM sessions s"
            " LEFT JOIN messages m ON m.session_id = s.id GROUP BY s.id"
        )
    }
    lost = []
    for sid, seq in confirmed.items():
        status, count, max_seq = remote.get(sid, (None, 0, 0))
        if count < seq or max_seq < seq:
            lost.append((sid, seq, count))
        if sid in ended and status != "completed":
            lost.append((sid, "end", status))
    gaps = sqld.scalar(
        "SELECT count(*) FROM (SELECT session_id, count(*) AS n, max(seq) AS top"
        " FROM messages GROUP BY session_id) WHERE n != top"
    )
    statuses: dict[str, int] = {}
    for status, _, _ in remote.values():
        statuses[status] = statuses.get(status, 0) + 1
    summary(
        "agent kill -9 fault run",
        {
            "agents killed (SIGKILL)": AGENTS,
            "lifetimes": f"{min(lifetimes):.2f}s .. {max(lifetimes):.2f}s",
            "sessions with a confirmed flush or end": len(confirmed),
            "sessions confirmed ended": len(ended),
            "remote sessions by status": statuses,
            "confirmed events lost": len(lost),
            "sessions with a seq gap": gaps,
        },
    )
    assert lost == []
    assert gaps == 0  # what arrived is a gapless prefix of each session
    assert statuses.get("running", 0) == 0  # every unfinished session was sealed
    assert statuses.get("abandoned", 0) >= 1


# ---- 3. PID reuse and clock jumps must not fool abandoned-session detection -------


def fake_queue(spool: Path, producer_id: str, pid: int, process_start: str) -> None:
    """A producer's queue file with one open session, as a process `pid` started at
    `process_start` would have written it."""
    queue_dir = spool / queuefile.QUEUES_DIRNAME / producer_id
    queuefile.create_queue_file(
        queue_dir,
        queuefile.ProducerInfo(producer_id, pid, socket.gethostname(), process_start, time.time()),
    )
    events = [
        {"v": 1, "type": "session_start", "session_id": f"{producer_id}-s", "seq": 0,
         "producer_id": producer_id, "pseq": 0, "ts": time.time(), "agent": "pid"},
        {"v": 1, "type": "message", "session_id": f"{producer_id}-s", "seq": 1,
         "producer_id": producer_id, "pseq": 1, "ts": time.time(), "role": "user",
         "content": "hello"},
    ]  # fmt: skip
    conn = queuefile.connect(queue_dir)
    queuefile.append_batch(conn, [json.dumps(e).encode() for e in events], fsync=True)
    conn.close()


def sync_states(spool: Path) -> dict[str, tuple[str, str]]:
    store = StateStore(spool, readonly=True)
    try:
        return {s.session_id: (s.status, s.sync_state) for s in store.sessions()}
    finally:
        store.close()


def test_a_reused_pid_does_not_keep_a_dead_producer_alive(spool: Path) -> None:
    me = os.getpid()
    real_start = queuefile.process_start_time(me)
    assert real_start
    fake_queue(spool, "reused-pid", me, str(int(real_start) + 12345))  # same pid, other process
    fake_queue(spool, "alive", me, real_start)  # this very process: alive
    fake_queue(spool, "dead-pid", 2**22 + 7, "1")  # no such process
    env = worker_env(spool)
    result = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert result.returncode == 3, result.stderr  # one session rightly left open
    states = sync_states(spool)
    assert states["reused-pid-s"] == ("abandoned", "synced")
    assert states["dead-pid-s"] == ("abandoned", "synced")
    assert states["alive-s"] == ("running", "open")


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def run_burst_in_process(spool: Path, now: float, monotonic: float, **settings: Any) -> int:
    worker = Worker(
        Settings(spool_dir=spool, sync_timeout=30, burst_timeout=120, **settings),
        burst=True,
        now=lambda: time.time() + now,
        monotonic=lambda: time.monotonic() + monotonic,
    )
    return worker.run()


DAY = 86400.0


def test_a_wall_clock_jump_does_not_abandon_a_live_session(
    spool: Path, restore_signals: None
) -> None:
    producer = Spool(spool)  # this process: alive for the whole test
    session = producer.session(agent="clock", session_id="live")
    session.message("user", "before the jump")
    assert producer.flush(timeout=30)
    assert run_burst_in_process(spool, now=0, monotonic=0) == 3
    assert sync_states(spool)["live"] == ("running", "open")

    # The wall clock jumps 3 days ahead (NTP, a VM resumed): the session looks
    # silent for longer than AGENTSPOOL_ABANDON_AFTER (1 day) by the wall clock only.
    assert run_burst_in_process(spool, now=3 * DAY, monotonic=0) == 3
    assert sync_states(spool)["live"] == ("running", "open"), "a clock jump abandoned it"

    # And backwards: nothing is sealed either, and new events still count.
    session.message("user", "after the jump")
    assert producer.flush(timeout=30)
    assert run_burst_in_process(spool, now=-3 * DAY, monotonic=0) == 3
    assert sync_states(spool)["live"] == ("running", "open")

    session.end()
    producer.close()
    assert run_burst_in_process(spool, now=0, monotonic=0) == 0
    assert sync_states(spool)["live"] == ("completed", "synced")


def test_abandon_after_zero_never_seals_a_live_session(spool: Path, restore_signals: None) -> None:
    producer = Spool(spool)
    session = producer.session(agent="clock", session_id="forever")
    assert producer.flush(timeout=30)
    assert run_burst_in_process(spool, now=0, monotonic=0, abandon_after=0) == 3
    assert run_burst_in_process(spool, now=30 * DAY, monotonic=30 * DAY, abandon_after=0) == 3
    assert sync_states(spool)["forever"] == ("running", "open")
    session.end()
    producer.close()


def test_silence_needs_both_clocks_to_agree(spool: Path) -> None:
    """The unit under the two tests above: a session is silent only when the wall
    clock (persisted, survives restarts) and this worker's monotonic clock (immune to
    clock steps) both say it has been quiet for longer than the timeout."""
    from agentspool.worker.intake.drain import Drainer

    wall = [1_800_000_000.0]
    mono = [500.0]
    state = StateStore(spool)
    drainer = Drainer(spool, state, now=lambda: wall[0], monotonic=lambda: mono[0])
    try:
        producer = Spool(spool)
        producer.session(agent="clock", session_id="quiet")
        assert producer.flush(timeout=30)
        drainer.drain_all()
        (session,) = state.sessions()
        assert not drainer.silent(session, wall[0], DAY)
        wall[0] += 2 * DAY  # a wall-clock step only
        assert not drainer.silent(session, wall[0], DAY)
        mono[0] += 2 * DAY  # now real time has passed too
        assert drainer.silent(session, wall[0], DAY)
        assert not drainer.silent(session, wall[0], 0)  # 0: never by silence
        wall[0] -= 10 * DAY  # a step back: not silent by the wall clock
        assert not drainer.silent(session, wall[0], DAY)
        producer.close()
    finally:
        drainer.close()
        state.close()
