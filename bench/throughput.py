"""Rows 3-4: how fast and how soon events reach the producer's queue file.

- Sustained rate: one producer process emits N message events as fast as it can,
  then ``flush()``; rate = N / (first emit .. flush confirmed), and the rows in the
  queue file are counted. Floor: raw SQLite inserts into a table of the same shape
  (WAL, synchronous=NORMAL, 100 rows per transaction, prebuilt bytes). Anchor: a
  persist-queue ``put`` loop with its defaults.
- Durability lag at 1,000 events/s: each event carries its emit time
  (CLOCK_MONOTONIC, shared by all processes). A separate reader process polls the
  queue file every 0.5 ms (read-only, WAL snapshot: it sees committed rows only)
  and records when each row first appears. Lag = first seen - emitted; it
  overstates the true lag by at most one poll period plus the query (reported).
  "Committed" means in the WAL: it survives a kill -9 of the agent, not a power
  loss. The extra row times ``message(); flush()``: a commit with an fsync.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Child,
    Config,
    Ref,
    Row,
    message_content,
    ready_and_wait,
    sqlite_ro,
    summarize,
)

GROUP = "throughput"
LAG_RATE = 1000
POLL_S = 0.0005
CONTENT_PAD = 379  # 20 digits of emit time + a space + this = 400 bytes of content


def run(cfg: Config) -> list[Row]:
    return sustained_rows(cfg) + lag_rows(cfg)


# ---- row 3 ----------------------------------------------------------------------


def sustained_rows(cfg: Config) -> list[Row]:
    n = cfg.size(200_000, 5_000)
    floor_n = cfg.size(200_000, 5_000)
    anchor_n = cfg.size(2_000, 100)
    ours = Child("throughput:sustained_emit", spool=str(cfg.workdir("tp-spool")), n=n).result(
        timeout=300
    )
    floor = Child(
        "throughput:raw_sqlite_inserts", path=str(cfg.workdir("tp-raw") / "raw.db"), n=floor_n
    ).result(timeout=120)
    anchor = Child("throughput:pq_put_loop", pq_dir=str(cfg.workdir("tp-pq")), n=anchor_n).result(
        timeout=120
    )
    if ours["rows"] != ours["expected_rows"] or not ours["flushed"]:
        raise AssertionError(f"sustained emit: {ours}")
    return [
        Row(
            GROUP,
            "throughput.events_per_s",
            f"3. events/s into one producer's queue file ({n:,} emitted, then flush)",
            ours["rate"],
            "/s",
            higher_is_better=True,
            floor=Ref(floor["rate"], "raw SQLite WAL, 100 rows/txn"),
            anchor=Ref(anchor["rate"], f"persist-queue put loop ({anchor_n:,})"),
            target=30_000,
            note=f"{ours['rows']:,} rows counted in the queue file after flush() returned True "
            f"({ours['seconds']:.2f} s: emitting took {ours['emit_seconds']:.2f} s, the flush "
            f"{ours['flush_seconds']:.2f} s); the writer committed {ours['commits']} batches",
        )
    ]


def sustained_emit(spool: str, n: int) -> dict[str, Any]:
    from agentspool import Spool

    content = message_content()
    sp = Spool(spool)
    session = sp.session(agent="bench-throughput")
    sp.flush(30)
    queue_file = Path(spool) / "queues" / sp.producer_id / "data.db"
    before = _wal_commits(queue_file)
    message = session.message
    t0 = time.perf_counter()
    for _ in range(n):
        message("assistant", content)
    t1 = time.perf_counter()
    flushed = sp.flush(240)
    t2 = time.perf_counter()
    commits = _wal_commits(queue_file) - before
    sp.close()
    conn = sqlite_ro(queue_file)
    rows = conn.execute("SELECT count(*) FROM ack_queue_default").fetchone()[0]
    conn.close()
    return {
        "rate": n / (t2 - t0),
        "seconds": t2 - t0,
        "emit_seconds": t1 - t0,
        "flush_seconds": t2 - t1,
        "flushed": flushed,
        "rows": rows,
        "expected_rows": n + 1,  # + session_start
        "commits": commits,
    }


def _wal_commits(queue_file: Path) -> int:
    """Transactions the writer committed so far: ``queuefile.append_batch`` stamps all
    rows of one batch with one ``time.time()``, so distinct timestamps count batches."""
    conn = sqlite_ro(queue_file)
    try:
        return int(
            conn.execute("SELECT count(DISTINCT timestamp) FROM ack_queue_default").fetchone()[0]
        )
    finally:
        conn.close()


def raw_sqlite_inserts(path: str, n: int, per_txn: int = 100) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE q (_id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB, timestamp FLOAT,"
        " status INTEGER)"
    )
    data = json.dumps({"type": "message", "content": message_content()}).encode()
    batch = [(data, time.time()) for _ in range(per_txn)]
    t0 = time.perf_counter()
    for _ in range(n // per_txn):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO q (data, timestamp, status) VALUES (?, ?, 0)", batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return {"rate": (n // per_txn) * per_txn / elapsed}


def pq_put_loop(pq_dir: str, n: int) -> dict[str, Any]:
    import persistqueue

    q = persistqueue.SQLiteAckQueue(pq_dir)  # defaults: pickle, an fsync per put
    event = {"type": "message", "content": message_content()}
    q.put(event)
    t0 = time.perf_counter()
    for _ in range(n):
        q.put(event)
    elapsed = time.perf_counter() - t0
    q.close()
    return {"rate": n / elapsed}


# ---- row 4 ----------------------------------------------------------------------


def lag_rows(cfg: Config) -> list[Row]:
    seconds = cfg.seconds(10.0, 1.0)
    spool = cfg.workdir("lag-spool")
    producer = Child("throughput:paced_producer", spool=str(spool), seconds=seconds, rate=LAG_RATE)
    queue_file = producer.expect("READY", timeout=60)["queue_file"]
    reader = Child(
        "throughput:poll_queue_file", queue_file=queue_file, seconds=seconds + 2.0, poll_s=POLL_S
    )
    reader.expect("READY", timeout=60)
    reader.send("GO")
    producer.send("GO")
    produced = producer.result(timeout=seconds + 60)
    seen = reader.result(timeout=seconds + 60)
    lag = seen["lag"]
    flush = produced["flush"]
    if seen["rows"] != produced["emitted"]:
        raise AssertionError(f"lag: reader saw {seen['rows']} of {produced['emitted']} events")
    return [
        Row(
            GROUP,
            "lag.commit.p99",
            f"4. emit -> committed in the queue file, p99, at {LAG_RATE:,}/s",
            lag["p99"],
            "ms",
            target=10.0,
            note=f"{lag['n']:,} events; p50 {lag['p50']:.2f} ms, max {lag['max']:.2f} ms; "
            f"measured by a reader process polling every {seen['mean_poll_ms']:.2f} ms "
            f"(the figures overstate the lag by up to that much)",
        ),
        Row(
            GROUP,
            "lag.flush.p99",
            "4. message + flush() -> True, p99",
            flush["p99"],
            "ms",
            note=f"{flush['n']} times a message then flush() at once, 5 ms apart (the message "
            f"and the barrier reach the writer together, so the commit is fsynced); p50 "
            f"{flush['p50']:.2f} ms, max {flush['max']:.2f} ms",
        ),
    ]


def paced_producer(spool: str, seconds: float, rate: int) -> dict[str, Any]:
    """Emit one event every 1/rate s, each carrying its CLOCK_MONOTONIC emit time."""
    from agentspool import Spool

    sp = Spool(spool)
    session = sp.session(agent="bench-lag")
    sp.flush(30)
    ready_and_wait({"queue_file": str(Path(spool) / "queues" / sp.producer_id / "data.db")})
    pad = message_content(CONTENT_PAD)
    interval = 1e9 / rate
    start = time.monotonic_ns()
    emitted = 0
    while True:
        due = start + emitted * interval
        now = time.monotonic_ns()
        if now - start >= seconds * 1e9:
            break
        if now < due:
            time.sleep((due - now) / 1e9)
        session.message("assistant", f"{time.monotonic_ns():020d} {pad}")
        emitted += 1
    time.sleep(0.5)  # let the reader see the last ones before we flush anything
    flush = []
    for _ in range(200 if seconds >= 5 else 20):
        session.message("assistant", "flush probe")
        t0 = time.perf_counter_ns()
        sp.flush(10)
        flush.append(time.perf_counter_ns() - t0)
        time.sleep(0.005)
    sp.close()
    return {"emitted": emitted, "flush": summarize(flush, 1e-6)}


def poll_queue_file(queue_file: str, seconds: float, poll_s: float) -> dict[str, Any]:
    conn = sqlite_ro(Path(queue_file))
    last_id = conn.execute("SELECT coalesce(max(_id), 0) FROM ack_queue_default").fetchone()[0]
    ready_and_wait()
    lags = []
    polls = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        rows = conn.execute(
            "SELECT _id, data FROM ack_queue_default WHERE _id > ? ORDER BY _id", (last_id,)
        ).fetchall()
        seen_ns = time.monotonic_ns()
        polls += 1
        for item_id, data in rows:
            last_id = item_id
            content = json.loads(data)["content"]
            if content[:20].isdigit():
                lags.append(seen_ns - int(content[:20]))
        time.sleep(poll_s)
    elapsed = time.monotonic() - start
    conn.close()
    return {"lag": summarize(lags, 1e-6), "rows": len(lags), "mean_poll_ms": elapsed / polls * 1e3}
