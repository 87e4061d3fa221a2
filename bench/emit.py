"""Rows 1-2: emit latency on the agent's thread, idle and under disk trouble.

Each sample is ``perf_counter_ns()`` before and after one call, in a fresh producer
process whose writer thread runs as it does in production. Floors are timed the
same way, so the timer's own cost (~0.05 µs) is inside every figure.

- Tight loop: ``Session.message`` with a 400-byte content, back to back. Floor:
  ``SimpleQueue.put`` of a prebuilt event dict. Anchor: persist-queue
  ``SQLiteAckQueue.put`` with its defaults (pickle, an fsync per put).
- Paced at 5,000 events/s, paired in one process: undisturbed, then as long again
  while another process either holds the queue file's write lock (``BEGIN
  IMMEDIATE``, 3 s at a time: the writer thread sits in SQLite's busy wait) or floods
  the disk (1 MiB O_DIRECT writes, an fsync every 8 MiB). Target: p99 within 2x of
  the undisturbed p99 just before. Floor: a ``json.dumps`` of an event of the same
  size timed right after each emit, which needs nothing but the CPU: when it slows
  down too, the machine (preemption), not agentspool, is the cause. Anchor for the
  lock: persist-queue's ``put`` under the same lock.
"""

from __future__ import annotations

import mmap
import os
import resource
import sqlite3
import time
from array import array
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from bench.common import (
    Child,
    Config,
    Ref,
    Row,
    announce,
    message_content,
    summarize,
)

GROUP = "emit"
PACED_RATE = 5000
US = 1e-3  # ns -> µs


def run(cfg: Config) -> list[Row]:
    rows = tight_loop_rows(cfg)
    rows += contention_rows(cfg)
    return rows


# ---- row 1: tight loop --------------------------------------------------------


def tight_loop_rows(cfg: Config) -> list[Row]:
    n = cfg.size(200_000, 5_000)
    anchor_n = cfg.size(2_000, 100)
    r = Child(
        "emit:emit_tight_loop",
        spool=str(cfg.workdir("emit-spool")),
        pq_dir=str(cfg.workdir("emit-pq")),
        n=n,
        anchor_n=anchor_n,
    ).result(timeout=180)
    ours, floor, anchor = r["agentspool"], r["floor"], r["anchor"]
    rows = []
    for q, name, target in (
        ("p50", "p50", 5.0),
        ("p99", "p99", 20.0),
        ("p999", "p99.9", None),
        ("max", "max", None),
    ):
        rows.append(
            Row(
                GROUP,
                f"emit.tight.{q}",
                f"1. emit latency {name}, tight loop ({n:,} messages)",
                ours[q],
                "us",
                floor=Ref(floor[q], "SimpleQueue.put"),
                anchor=Ref(anchor[q], f"persist-queue put ({anchor_n:,})"),
                target=target,
            )
        )
    rows[0].note = (
        f"{ours['n']:,} emits of a message event with a {r['content_bytes']}-byte content "
        f"({r['event_bytes']} bytes of JSON); writer thread running; {r['dropped']} dropped; "
        f"flush after the loop {'confirmed' if r['flushed'] else 'NOT confirmed'}; mean "
        f"{ours['mean']:.2f} µs (SimpleQueue.put {floor['mean']:.2f} µs, persist-queue put "
        f"{anchor['mean']:.0f} µs)"
    )
    if r["dropped"] or not r["flushed"]:
        raise AssertionError(f"tight loop lost events: {r}")
    return rows


def emit_tight_loop(spool: str, pq_dir: str, n: int, anchor_n: int) -> dict[str, Any]:
    """In a fresh producer process: the floor, agentspool and the anchor, in that order."""
    import persistqueue

    from agentspool import Spool

    clock = time.perf_counter_ns
    content = message_content()
    event = {
        "v": 1,
        "type": "message",
        "session_id": "s" * 32,
        "seq": 1,
        "ts": time.time(),
        "producer_id": "p" * 30,
        "pseq": 1,
        "role": "assistant",
        "content": content,
        "metadata": None,
    }

    # Floor: a C-level append of a prebuilt dict, timed the same way.
    handoff: SimpleQueue[Any] = SimpleQueue()
    put = handoff.put
    floor = array("q")
    for _ in range(n):
        t0 = clock()
        put(event)
        floor.append(clock() - t0)
    del handoff

    sp = Spool(spool)
    session = sp.session(agent="bench-emit")
    message = session.message
    for _ in range(1000):  # warm-up: the queue file exists, caches are hot
        message("assistant", content)
    sp.flush(30)
    ours = array("q")
    for _ in range(n):
        t0 = clock()
        message("assistant", content)
        ours.append(clock() - t0)
    flushed = sp.flush(120)
    stats = sp.stats()
    sp.close()

    q = persistqueue.SQLiteAckQueue(pq_dir)  # defaults: pickle, synchronous=FULL
    anchor = array("q")
    for i in range(anchor_n):
        event["seq"] = i
        t0 = clock()
        q.put(event)
        anchor.append(clock() - t0)
    q.close()

    import json

    return {
        "agentspool": summarize(ours, US),
        "floor": summarize(floor, US),
        "anchor": summarize(anchor, US),
        "dropped": stats.dropped,
        "flushed": flushed,
        "content_bytes": len(content),
        "event_bytes": len(json.dumps(event, separators=(",", ":"))),
    }


# ---- row 2: paced, idle vs write lock vs disk flood ------------------------------


def contention_rows(cfg: Config) -> list[Row]:
    seconds = cfg.seconds(8.0, 1.5)
    hold = cfg.seconds(3.0, 0.5)
    gap = cfg.seconds(0.5, 0.2)
    results = {}
    for disturb in ("lock", "disk"):
        results[disturb] = Child(
            "emit:emit_paced",
            spool=str(cfg.workdir(f"paced-{disturb}")),
            scratch=str(cfg.workdir(f"scratch-{disturb}")),
            seconds=seconds,
            rate=PACED_RATE,
            disturb=disturb,
            hold=hold,
            gap=gap,
        ).result(timeout=2 * seconds + 120)
    pq_lock = Child("emit:pq_put_under_lock", pq_dir=str(cfg.workdir("pq-lock")), hold=hold).result(
        timeout=hold + 60
    )

    first_idle = results["lock"]["idle"]
    rows = [
        Row(
            GROUP,
            "emit.paced.idle.p99",
            f"2. emit p99 at {PACED_RATE:,}/s, idle",
            first_idle["lat"]["p99"],
            "us",
            floor=Ref(first_idle["floor"]["p99"], "json.dumps of the event, same loop"),
            note=_paced_note(first_idle),
        )
    ]
    for disturb, what in (
        ("lock", f"queue file write-locked {hold:g} s at a time"),
        ("disk", "disk flooded by another process"),
    ):
        r = results[disturb]
        idle, busy = r["idle"]["lat"], r["disturbed"]["lat"]
        rows.append(
            Row(
                GROUP,
                f"emit.paced.{disturb}.p99",
                f"2. emit p99 at {PACED_RATE:,}/s, {what} (target 2x idle just before)",
                busy["p99"],
                "us",
                floor=Ref(r["disturbed"]["floor"]["p99"], "json.dumps of the event, same loop"),
                target=2.0 * idle["p99"],
                note=_paced_note(r["disturbed"])
                + f"; disturber: {_describe_disturber(r['disturber'])}; idle just before in the"
                f" same process: p99 {idle['p99']:.1f} µs (json.dumps "
                f"{r['idle']['floor']['p99']:.1f} µs), so {busy['p99'] / idle['p99']:.2f}x idle",
            )
        )
        if disturb == "lock":
            rows.append(
                Row(
                    GROUP,
                    "emit.paced.lock.max",
                    f"2. emit max at {PACED_RATE:,}/s, queue file write-locked",
                    busy["max"],
                    "us",
                    anchor=Ref(pq_lock["max_us"], "persist-queue put, same lock"),
                    note=f"persist-queue: {pq_lock['puts']} puts while a {hold:g} s lock was "
                    f"taken; the slowest waited {pq_lock['max_us'] / 1e6:.2f} s",
                )
            )
    return rows


def _paced_note(phase: dict[str, Any]) -> str:
    lat = phase["lat"]
    return (
        f"{lat['n']:,} emits over {phase['seconds']:.1f} s; p50 {lat['p50']:.2f} µs, p99.9 "
        f"{lat['p999']:.1f} µs, max {lat['max']:.0f} µs; writer: longest stall "
        f"{phase['max_stall_s']:.2f} s, peak buffer {phase['max_buffered']:,} events; "
        f"{phase['preempted']:,} involuntary context switches"
    )


def emit_paced(
    spool: str, scratch: str, seconds: float, rate: int, disturb: str, hold: float, gap: float
) -> dict[str, Any]:
    """Emit at ``rate`` for ``seconds`` undisturbed, then as long again while a sibling
    process disturbs the queue file or the disk: a paired comparison in one process."""
    from agentspool import Spool

    sp = Spool(spool)
    session = sp.session(agent="bench-paced")
    for _ in range(200):
        session.message("assistant", message_content())
    sp.flush(30)
    queue_file = Path(spool) / "queues" / sp.producer_id / "data.db"

    idle = _paced_phase(sp, session, seconds, rate)
    if disturb == "lock":
        disturber = Child(
            "emit:hold_write_lock", path=str(queue_file), hold=hold, gap=gap, seconds=seconds
        )
    else:
        disturber = Child("emit:flood_disk", path=str(Path(scratch) / "flood.bin"), seconds=seconds)
    disturber.expect("READY", timeout=30)
    disturbed = _paced_phase(sp, session, seconds, rate)
    disturbed_by = disturber.result(timeout=seconds + 30)
    flushed = sp.flush(60)
    stats = sp.stats()
    sp.close()
    if stats.dropped or not flushed:
        raise AssertionError(f"paced emit under {disturb}: {stats}, flushed {flushed}")
    return {"idle": idle, "disturbed": disturbed, "disturber": disturbed_by}


def _paced_phase(sp: Any, session: Any, seconds: float, rate: int) -> dict[str, Any]:
    """Each tick: one timed emit, then (the floor) one timed ``json.dumps`` of an event
    of the same size, which needs the CPU and nothing else."""
    import json

    clock = time.perf_counter_ns
    content = message_content()
    message = session.message
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    event = {
        "v": 1,
        "type": "message",
        "session_id": session.id,
        "seq": 1,
        "ts": time.time(),
        "producer_id": sp.producer_id,
        "pseq": 1,
        "role": "assistant",
        "content": content,
        "metadata": None,
    }
    interval_ns = int(1e9 / rate)
    switches0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    lat = array("q")
    floor = array("q")
    max_buffered = 0
    max_stall = 0.0
    last_written = sp.stats().written
    last_progress = time.monotonic()
    start = clock()
    end = start + int(seconds * 1e9)
    next_at = start
    i = 0
    while True:
        now = clock()
        if now >= end:
            break
        if now < next_at:
            time.sleep((next_at - now) / 1e9)
        t0 = clock()
        message("assistant", content)
        t1 = clock()
        dumps(event)
        t2 = clock()
        lat.append(t1 - t0)
        floor.append(t2 - t1)
        next_at += interval_ns
        i += 1
        if i % 50 == 0:  # writer progress, sampled outside the timed calls
            stats = sp.stats()
            max_buffered = max(max_buffered, stats.buffered)
            mono = time.monotonic()
            if stats.written != last_written or stats.buffered == 0:
                last_written = stats.written
                last_progress = mono
            max_stall = max(max_stall, mono - last_progress)
    return {
        "lat": summarize(lat, US),
        "floor": summarize(floor, US),
        "seconds": (clock() - start) / 1e9,
        "max_buffered": max_buffered,
        "max_stall_s": max_stall,
        "preempted": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches0,
    }


def _describe_disturber(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    if "holds" in d:
        return f"{d['holds']} locks held {d['held_s']:.1f} s in total"
    how = "O_DIRECT" if d["direct"] else "buffered"
    return (
        f"wrote {d['mb']:,} MiB ({how}) at {d['mb_per_s']:.0f} MiB/s with an fsync every "
        f"8 MiB, using {d['cpu_share']:.0%} of a CPU"
    )


def hold_write_lock(path: str, hold: float, gap: float, seconds: float) -> dict[str, Any]:
    """Take the SQLite write lock of ``path`` for ``hold`` s at a time, for ``seconds``."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    end = time.monotonic() + seconds
    holds, held = 0, 0.0
    while time.monotonic() < end:
        conn.execute("BEGIN IMMEDIATE")
        taken = time.monotonic()
        if holds == 0:
            announce("READY", None)
        time.sleep(max(0.0, min(hold, end - taken)))
        conn.execute("COMMIT")
        holds += 1
        held += time.monotonic() - taken
        time.sleep(gap)
    conn.close()
    return {"holds": holds, "held_s": held}


def flood_disk(
    path: str, seconds: float, wrap_mib: int = 256, fsync_every_mib: int = 8
) -> dict[str, Any]:
    """Write 1 MiB blocks to ``path`` (wrapping at ``wrap_mib``), fsync every few MiB.

    O_DIRECT where the filesystem allows it: the writes then go to the device instead
    of being memory copies into the page cache, so this floods the disk, not a CPU."""
    block = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT requires
    block.write(os.urandom(1 << 20))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    direct = getattr(os, "O_DIRECT", 0)
    try:
        fd = os.open(path, flags | direct, 0o600)
        os.write(fd, block)
    except OSError:
        direct = 0
        fd = os.open(path, flags, 0o600)
    os.lseek(fd, 0, os.SEEK_SET)
    written = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    try:
        while True:
            os.write(fd, block)
            written += 1
            if written % fsync_every_mib == 0:
                os.fsync(fd)
                if written == fsync_every_mib:
                    announce("READY", None)
                if time.monotonic() - start >= seconds:
                    break
            if written % wrap_mib == 0:
                os.lseek(fd, 0, os.SEEK_SET)
    finally:
        os.close(fd)
        os.unlink(path)
    elapsed = time.monotonic() - start
    return {
        "mb": written,
        "mb_per_s": written / elapsed,
        "cpu_share": (time.process_time() - cpu0) / elapsed,
        "direct": bool(direct),
    }


def pq_put_under_lock(pq_dir: str, hold: float) -> dict[str, Any]:
    """persist-queue ``put`` (defaults) while another process holds its file's write lock."""
    import persistqueue

    q = persistqueue.SQLiteAckQueue(pq_dir)
    event = {"type": "message", "content": message_content()}
    q.put(event)
    locker = Child(
        "emit:hold_write_lock",
        path=str(Path(pq_dir) / "data.db"),
        hold=hold,
        gap=60.0,
        seconds=hold,
    )
    locker.expect("READY", timeout=30)
    lat = []
    end = time.monotonic() + hold + 0.3
    while time.monotonic() < end:
        t0 = time.perf_counter_ns()
        q.put(event)
        lat.append(time.perf_counter_ns() - t0)
    locker.kill()
    q.close()
    return {"puts": len(lat), "max_us": max(lat) * US}
