"""Row 6: how soon the running worker notices a commit, and what it costs when idle.

The real service (``agentspool worker run``, default settings, embedded database) and
one producer process. Two kinds of commit:

- plain: single message events at random gaps of 50-150 ms (the writer commits each
  one with synchronous=NORMAL);
- fsynced: one message followed by ``flush()``, as ``Session.end()`` does, then
  silence until the worker has applied it (an agent that ends a session and idles).

One poller in the bench process, every 0.5 ms, with one read-only connection each,
reads the producer's queue file (an event is committed when its row appears) and
the worker's state store (it is applied when the session's event count, recorded
right after the replica commit, reaches it). Both ends are seen by the same poller,
so each figure is exact to within one poll period (reported). Its reads raise no
inotify event the worker listens for, so they cannot wake it.

Then the worker and the (idle, still open) producer sit for 30 s (3 s in smoke):
CPU = utime + stime from /proc/<pid>/stat, worker and its children.

Anchor: persist-queue's blocking ``get()`` in one process while another process
``put``s: the getter only sees it at its next 10 s tick (in smoke a 2 s timeout
stands in for the tick).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    AGENTSPOOL_CLI,
    CLK_TCK,
    Child,
    Config,
    Ref,
    Row,
    announce,
    child_pids,
    clean_env,
    message_content,
    popen,
    proc_cpu_seconds,
    ready_and_wait,
    sqlite_ro,
    stop,
    summarize,
)
from tests.helpers import wait_until

GROUP = "wake"
WARMUP = 3
POLL_S = 0.0005
LIVENESS_S = 5.0  # the worker's default AGENTSPOOL_LIVENESS_INTERVAL
FSYNCED_WAIT_S = 40.0  # above the worker's 30 s safety-net rescan


def run(cfg: Config) -> list[Row]:
    samples = cfg.size(100, 10)
    fsynced_samples = cfg.size(5, 1)
    idle_s = cfg.seconds(30.0, 3.0)
    spool = cfg.workdir("wake-spool")
    log_path = cfg.tmp / "wake-worker.log"
    with open(log_path, "ab") as log:
        worker = popen(
            [AGENTSPOOL_CLI, "worker", "run"],
            env=clean_env(AGENTSPOOL_DIR=str(spool)),
            stdout=log,
            stderr=log,
        )
    producer: Child | None = None
    poll: _Poller | None = None
    try:
        state_db = spool / "worker.db"
        wait_until(lambda: _worker_ready(state_db), 30, "the worker to start")
        producer = Child("wake:spaced_producer", spool=str(spool), samples=samples)
        info = producer.expect("READY", timeout=60)
        poll = _Poller(state_db, Path(info["queue_file"]), info["session_id"])
        producer.send("GO")
        last_plain = WARMUP + samples
        poll.run_until(last_plain, timeout=samples + 60)
        producer.expect("EMITTED", timeout=60)
        for _ in range(fsynced_samples):
            time.sleep(random.uniform(0.2, 0.5))
            producer.send("FLUSHED")
            seq = producer.expect("EMITTED", timeout=30)["seq"]
            poll.run_until(seq, timeout=FSYNCED_WAIT_S)
        poll.close()

        # idle: nothing to do for anyone; the anchor runs meanwhile in its own processes
        pq = Child(
            "wake:pq_cross_process_get",
            pq_dir=str(cfg.workdir("wake-pq")),
            put_after=cfg.seconds(1.0, 0.5),
            timeout=cfg.seconds(15.0, 2.0),
        )
        time.sleep(1.0)
        worker_cpu0 = _cpu_with_children(worker.pid)
        producer_cpu0 = proc_cpu_seconds(producer.pid)
        t0 = time.monotonic()
        time.sleep(idle_s)
        idle_wall = time.monotonic() - t0
        worker_cpu = _cpu_with_children(worker.pid) - worker_cpu0
        producer_cpu = proc_cpu_seconds(producer.pid) - producer_cpu0
        anchor = pq.result(timeout=60)
        producer.send("STOP")
        producer.result(timeout=30)
    finally:
        if poll is not None:
            poll.close()
        if producer is not None:
            producer.kill()
        stop(worker, timeout=30)
    if worker.returncode != 0:
        raise AssertionError(f"the worker exited with {worker.returncode}; see {log_path}")

    # message k has seq k + 1; the first WARMUP messages are left out
    plain = summarize(poll.latencies(range(WARMUP + 1, last_plain + 1)), 1e-6)
    fsynced = summarize(
        poll.latencies(range(last_plain + 1, last_plain + fsynced_samples + 1)), 1e-6
    )
    first = poll.latencies([1])[0] / 1e6
    anchor_ref = Ref(
        anchor["latency_ms"],
        "persist-queue blocking get" + (" (2 s timeout)" if cfg.smoke else ""),
    )
    precision = (
        f"the poller ran every {poll.mean_period_ms:.2f} ms on average, {poll.max_gap_ms:.1f} ms "
        f"at most"
    )
    return [
        Row(
            GROUP,
            "wake.plain.p99",
            f"6. wake: commit -> applied by the running worker, p99 ({plain['n']} events)",
            plain["p99"],
            "ms",
            anchor=anchor_ref,
            target=100.0,
            note=f"single events 50-150 ms apart, after {WARMUP} warm-up events (the first took "
            f"{first:.1f} ms); p50 {plain['p50']:.2f} ms, max {plain['max']:.2f} ms; {precision};"
            f" persist-queue: put {anchor['put_after']:g} s into the getter's wait, seen "
            f"{anchor['latency_ms'] / 1e3:.2f} s later",
        ),
        Row(
            GROUP,
            "wake.plain.max",
            "6. wake: the same, max",
            plain["max"],
            "ms",
            anchor=anchor_ref,
        ),
        Row(
            GROUP,
            "wake.fsynced.max",
            f"6. wake: fsynced commit (flush(), end()) -> applied, max of {fsynced['n']}",
            fsynced["max"],
            "ms",
            anchor=anchor_ref,
            target=100.0,
            note=f"one message + flush(), then silence until applied; p50 {fsynced['p50']:.0f} ms;"
            f" the worker's liveness timer ({LIVENESS_S:g} s by default) bounds it",
        ),
        Row(
            GROUP,
            "wake.idle_cpu",
            f"6. worker CPU while idle ({idle_wall:.0f} s, a producer open)",
            worker_cpu / idle_wall * 100.0,
            "%",
            target=1.0,
            note=f"{worker_cpu:.2f} s of CPU in {idle_wall:.1f} s (clock tick "
            f"{1000 / CLK_TCK:.0f} ms); the idle producer used {producer_cpu:.2f} s",
        ),
    ]


def _worker_ready(state_db: Path) -> bool:
    if not state_db.exists():
        return False
    try:
        conn = sqlite_ro(state_db)
        try:
            return bool(
                conn.execute("SELECT 1 FROM worker_meta WHERE key = 'worker_pid'").fetchone()
            )
        finally:
            conn.close()
    except Exception:
        return False


def _cpu_with_children(pid: int) -> float:
    total = proc_cpu_seconds(pid)
    for child in child_pids(pid):
        try:
            total += proc_cpu_seconds(child)
        except OSError:
            pass
    return total


class _Poller:
    """Polls, with one read-only connection each, the producer's queue file (when each
    event is committed: its row appears) and the worker's state store (when it is
    applied: the session's event count reaches it)."""

    def __init__(self, state_db: Path, queue_file: Path, session_id: str) -> None:
        self.state = sqlite_ro(state_db)
        self.queue = sqlite_ro(queue_file)
        self.session_id = session_id
        self.committed: dict[int, int] = {}  # seq -> first seen (ns)
        self.applied: dict[int, int] = {}
        self._last_id = 0
        self._applied_count = 0
        self._polls = 0
        self._polling_ns = 0
        self.max_gap_ms = 0.0

    @property
    def mean_period_ms(self) -> float:
        return self._polling_ns / 1e6 / max(1, self._polls)

    def latencies(self, seqs: Any) -> list[int]:
        return [self.applied[q] - self.committed[q] for q in seqs]

    def run_until(self, final_seq: int, timeout: float) -> None:
        """Poll until event ``final_seq`` is applied (bounded)."""
        previous = time.monotonic_ns()
        deadline = time.monotonic() + timeout
        while self._applied_count <= final_seq:
            rows = self.queue.execute(
                "SELECT _id, data FROM ack_queue_default WHERE _id > ? ORDER BY _id",
                (self._last_id,),
            ).fetchall()
            now = time.monotonic_ns()
            for item_id, data in rows:
                self._last_id = item_id
                self.committed.setdefault(json.loads(data)["seq"], now)
            row = self.state.execute(
                "SELECT event_count FROM session_state WHERE session_id = ?", (self.session_id,)
            ).fetchone()
            now = time.monotonic_ns()
            if row is not None:
                for seq in range(self._applied_count, row[0]):
                    self.applied.setdefault(seq, now)
                self._applied_count = max(self._applied_count, row[0])
            self._polls += 1
            self._polling_ns += now - previous
            self.max_gap_ms = max(self.max_gap_ms, (now - previous) / 1e6)
            previous = now
            if time.monotonic() > deadline:
                raise TimeoutError(f"wake: event {final_seq} not applied within {timeout:g}s")
            time.sleep(POLL_S)

    def close(self) -> None:
        self.state.close()
        self.queue.close()


def spaced_producer(spool: str, samples: int) -> dict[str, Any]:
    from agentspool import Spool

    sp = Spool(spool)
    session = sp.session(agent="bench-wake")
    content = message_content()
    rng = random.Random(6)
    sp.flush(10)
    queue_file = Path(spool) / "queues" / sp.producer_id / "data.db"
    ready_and_wait({"session_id": session.id, "queue_file": str(queue_file)})
    times = []
    for _ in range(WARMUP + samples):
        time.sleep(rng.uniform(0.05, 0.15))
        times.append(time.monotonic_ns())
        session.message("assistant", content)
    announce("EMITTED", {"times": times})  # no flush here: these were plain commits
    seq = WARMUP + samples
    while sys.stdin.readline().strip() == "FLUSHED":  # anything else: stop
        session.message("assistant", content)
        sp.flush(10)
        seq += 1
        announce("EMITTED", {"seq": seq})
    sp.close()
    return {}


def pq_cross_process_get(pq_dir: str, put_after: float, timeout: float) -> dict[str, Any]:
    """Block in persist-queue's get() while another process puts an item."""
    import persistqueue
    import persistqueue.serializers.json
    from persistqueue.exceptions import Empty

    q = persistqueue.SQLiteAckQueue(
        pq_dir, serializer=persistqueue.serializers.json, auto_resume=False, multithreading=True
    )
    putter = Child("wake:pq_put_one", pq_dir=pq_dir, delay=put_after)
    putter.expect("READY", timeout=30)
    putter.send("GO")
    try:
        q.get(block=True, timeout=timeout)
    except Empty:
        pass
    woke = time.monotonic_ns()
    put_done = putter.result(timeout=30)["put_done"]
    return {"latency_ms": (woke - put_done) / 1e6, "put_after": put_after}


def pq_put_one(pq_dir: str, delay: float) -> dict[str, Any]:
    import persistqueue
    import persistqueue.serializers.json

    q = persistqueue.SQLiteAckQueue(
        pq_dir, serializer=persistqueue.serializers.json, auto_resume=False, multithreading=True
    )
    ready_and_wait()
    time.sleep(delay)
    q.put({"type": "message", "content": message_content()})
    put_done = time.monotonic_ns()
    q.close()
    return {"put_done": put_done}
