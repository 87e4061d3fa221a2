"""A full disk under the spool: the producer never blocks or raises, counts what it
drops and writes what it held once space returns; the worker keeps running, logs the
error, deletes nothing it has not synced, and drains and syncs everything afterwards.

The disk is a 4 MiB tmpfs mounted for the test and filled with a filler file
(writes fail with ENOSPC). Where mounting is refused (not root, no CAP_SYS_ADMIN),
the same tests run with RLIMIT_FSIZE lowered on the writing process instead (writes
past 4 KiB fail with EFBIG); the ``rlimit`` variants run that path everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentspool.producer import queuefile
from tests.daemon.test_worker_faults import proc_stat, status_json, wait_worker_up
from tests.helpers import (
    AGENTSPOOL,
    run_cli,
    run_python,
    stop_process,
    wait_until,
    worker_db_rows,
    worker_env,
)
from tests.sqld import Sqld

TMPFS_SIZE = "4m"  # mount -o size=
FSIZE_LIMIT = 4096  # RLIMIT_FSIZE while "full": no file may grow past 4 KiB
# What SQLite says: ENOSPC is SQLITE_FULL, EFBIG (and ENOSPC on a -shm) an I/O error.
DISK_ERROR = r"database or disk is full|disk I/O error"


class FullDisk:
    """Makes writes under ``root`` fail, then lets them succeed again.

    ``tmpfs``: ``root`` is a small tmpfs; ``fill()`` writes a filler file until
    ENOSPC and ``free()`` deletes it. ``rlimit``: ``root`` is an ordinary directory;
    ``fill(pid)`` lowers RLIMIT_FSIZE of that process (Python ignores SIGXFSZ, so its
    writes fail with EFBIG) and ``free(pid)`` lifts it."""

    def __init__(self, method: str, root: Path) -> None:
        self.method = method
        self.root = root
        self.filler = root / "filler"
        self.filler_bytes = 0

    def fill(self, pid: int) -> None:
        if self.method == "rlimit":
            _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (FSIZE_LIMIT, hard))
            return
        fd = os.open(self.filler, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 4096, 1):
                while True:
                    try:
                        self.filler_bytes += os.write(fd, b"\0" * chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
        finally:
            os.close(fd)
        assert os.statvfs(self.root).f_bavail == 0

    def free(self, pid: int) -> None:
        if self.method == "rlimit":
            _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
            return
        self.filler.unlink()

    def describe(self) -> str:
        if self.method == "rlimit":
            return f"RLIMIT_FSIZE {FSIZE_LIMIT} bytes on the writing process"
        return f"a {TMPFS_SIZE} tmpfs filled up with a {self.filler_bytes / 1e6:.2f} MB file"


@pytest.fixture(params=["tmpfs", "rlimit"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    if request.param == "tmpfs":
        mountpoint = tmp_path / "tmpfs"
        mountpoint.mkdir()
        options = f"size={TMPFS_SIZE},mode=0700"
        try:
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            refused = mounted.stderr.strip() if mounted.returncode else None
        except OSError as exc:  # no mount(8) at all
            refused = str(exc)
        if refused is None:
            try:
                yield FullDisk("tmpfs", mountpoint)
            finally:
                if subprocess.run(["umount", str(mountpoint)], timeout=30).returncode != 0:
                    subprocess.run(["umount", "-l", str(mountpoint)], timeout=30)
            return
        print(f"mount refused ({refused}): using RLIMIT_FSIZE instead")
    yield FullDisk("rlimit", tmp_path)


class Lines:
    """Reads a process's output on a thread: bounded waits for a line, and no pipe
    that fills up because nobody reads it."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            self._queue.put(line)

    def next(self, timeout: float) -> str:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s; so far: {self.lines}") from None

    def text(self) -> str:
        return "".join(self.lines)


def summary(title: str, rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    print(f"\n{title}")
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")


def remote_messages(sqld: Sqld, session_id: str) -> list[int]:
    return [
        r[0]
        for r in sqld.query(
            "SELECT seq FROM messages WHERE session_id = ? ORDER BY seq", (session_id,)
        )
    ]


# ---- (a) the producer ---------------------------------------------------------

MAX_BUFFERED = 2_000
FULL_EMITS = 5_000
PAD = "x" * 100

PRODUCER = f"""
import dataclasses, json, sys, time
from agentspool import Spool

def say(**kw):
    print(json.dumps(kw), flush=True)

spool = Spool(SPOOL, max_buffered={MAX_BUFFERED})
s = spool.session(agent="disk", session_id="disk-0")
for i in range(100):  # seq 1..100
    s.message("user", f"before {{i}} {PAD}")
say(flushed=spool.flush(60), stats=dataclasses.asdict(spool.stats()))
sys.stdin.readline()  # the disk is full now

dropped_seqs, worst = [], 0.0
started = time.perf_counter()
for i in range({FULL_EMITS}):  # seq 101..5100
    dropped = spool.stats().dropped
    t0 = time.perf_counter()
    s.message("assistant", f"during {{i}} {PAD}")
    worst = max(worst, time.perf_counter() - t0)
    if spool.stats().dropped != dropped:
        dropped_seqs.append(101 + i)
emit_seconds = time.perf_counter() - started
t0 = time.perf_counter()
flushed = spool.flush(1.0)
say(emit_seconds=emit_seconds, worst_emit=worst, dropped_seqs=dropped_seqs, flushed=flushed,
    flush_seconds=time.perf_counter() - t0, stats=dataclasses.asdict(spool.stats()))
sys.stdin.readline()  # space is back

t0 = time.perf_counter()
flushed = spool.flush(60)
recovered = time.perf_counter() - t0
for i in range(100):  # seq 5101..5200
    s.message("user", f"after {{i}}")
ended = s.end(timeout=60)  # seq 5201
say(flushed=flushed, recovered_seconds=recovered, ended=ended,
    stats=dataclasses.asdict(spool.stats()))
sys.stdin.readline()  # status checked: exit
"""


def test_producer_on_a_full_disk_never_blocks_and_writes_what_it_held(
    disk: FullDisk, sqld: Sqld
) -> None:
    spool = disk.root / "spool"
    spool.mkdir(mode=0o700)
    env = worker_env(spool, sqld.url)
    producer = run_python(PRODUCER, spool, stdin=subprocess.PIPE)
    assert producer.stdin is not None
    out = Lines(producer.stdout)
    err = Lines(producer.stderr)
    try:
        before = json.loads(out.next(60))
        assert before["flushed"] is True and before["stats"]["written"] == 101

        disk.fill(producer.pid)
        producer.stdin.write("full\n")
        producer.stdin.flush()
        full = json.loads(out.next(60))
        status_full = status_json(env)

        disk.free(producer.pid)
        producer.stdin.write("freed\n")
        producer.stdin.flush()
        after = json.loads(out.next(120))
        status_after = status_json(env)
        producer.stdin.write("exit\n")
        producer.stdin.flush()
        producer.wait(timeout=30)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait(timeout=10)
    assert producer.returncode == 0, err.text()

    # While full: 5,000 emits returned at once and never raised; flush said False.
    stats = full["stats"]
    dropped = stats["dropped"]
    # (An emit that waited for the disk would wait for ever: these bounds only catch
    # that, with room for a busy machine; the real figures are in the summary.)
    assert full["emit_seconds"] < 10, full["emit_seconds"]
    assert full["flushed"] is False and full["flush_seconds"] < 10
    assert stats["written"] == 101  # nothing more reached the disk
    assert stats["write_errors"] >= 1 and re.search(DISK_ERROR, stats["last_error"])
    assert "cannot rollback" not in err.text()
    assert dropped == len(full["dropped_seqs"]) and dropped > 0
    # The writer holds what fits in its buffer; the rest was dropped and counted.
    assert stats["buffered"] + dropped == FULL_EMITS
    assert stats["buffered"] >= MAX_BUFFERED
    # status reads the queue file: the drop counter is recorded there with the next
    # successful write, so while the disk is full it still says 0.
    [producer_full] = status_full["producers"]
    assert producer_full["ready"] == 101 and producer_full["dropped"] == 0

    # Space is back: everything held is written, flush() and end() confirm.
    final = after["stats"]
    assert after["flushed"] is True and after["ended"] is True
    assert final["dropped"] == dropped and final["buffered"] == 0
    assert final["emitted"] == 1 + 100 + FULL_EMITS + 100 + 1
    assert final["written"] == final["emitted"] - dropped
    [producer_after] = status_after["producers"]
    assert producer_after["dropped"] == dropped
    assert producer_after["ready"] == final["written"]

    # A burst worker (spool on the small disk, sqld elsewhere) syncs the session.
    burst = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert burst.returncode == 0, burst.stderr
    row = sqld.query("SELECT event_count, message_count, status FROM sessions WHERE id = 'disk-0'")
    assert row == [[final["written"], final["written"] - 2, "completed"]]
    seqs = remote_messages(sqld, "disk-0")
    assert seqs == sorted(set(range(1, 5201)) - set(full["dropped_seqs"]))
    summary(
        f"producer on a full disk ({disk.method})",
        {
            "fault": disk.describe(),
            "emits while full": FULL_EMITS,
            "time for those emits": f"{full['emit_seconds'] * 1e3:.1f} ms",
            "slowest emit": f"{full['worst_emit'] * 1e6:.0f} us",
            "flush() while full": f"{full['flushed']} after {full['flush_seconds']:.2f}s",
            "failed writes (retried) / last error": f"{stats['write_errors']} / {stats['last_error']}",
            "dropped (buffer full) / held and written later": f"{dropped} / {stats['buffered']}",
            "dropped seqs": f"{full['dropped_seqs'][0]}..{full['dropped_seqs'][-1]}",
            "flush() after space returned": f"True after {after['recovered_seconds']:.2f}s",
            "remote events / messages": f"{final['written']} / {len(seqs)}",
            "lost besides the counted drops": 0,
            "producer warnings": err.text().strip().splitlines()[:2],
        },
    )


# ---- (b) the worker -----------------------------------------------------------

OPEN_SESSION = f"""
import sys
from agentspool import Spool
spool = Spool(SPOOL)
s = spool.session(agent="disk", session_id="early-0")
for i in range(200):
    s.message("user", f"early {{i}} {PAD}")
assert spool.flush(60)
print("ready", flush=True)
sys.stdin.readline()
for i in range(300):
    s.message("assistant", f"late {{i}} {PAD}")
assert s.end(timeout=60)
"""

CLOSED_SESSIONS = f"""
from agentspool import Spool
spool = Spool(SPOOL)
for n in range(2):
    s = spool.session(agent="disk", session_id=f"late-{{n}}")
    for i in range(298):
        s.message("user", f"{{n}} {{i}} {PAD}")
    assert s.end(timeout=60)
"""

EXPECTED = {"early-0": 502, "late-0": 300, "late-1": 300}  # events per session


def local_state(spool: Path) -> dict[str, tuple[str, int]]:
    rows = worker_db_rows(spool, "SELECT session_id, sync_state, event_count FROM session_state")
    return {sid: (state, count) for sid, state, count in rows}


def queued_items(spool: Path) -> int:
    """Items not yet applied in every queue file (read-only)."""
    total = 0
    for queue_dir in queuefile.list_queue_dirs(spool):
        conn = queuefile.connect(queue_dir, readonly=True)
        try:
            counts = queuefile.count_by_status(conn)
        finally:
            conn.close()
        total += counts.get(queuefile.STATUS_INITED, 0) + counts.get(queuefile.STATUS_READY, 0)
    return total


def database_files(spool: Path) -> dict[str, int]:
    """Size of every queue file and replica (SQLite never shrinks a database file
    unless it is vacuumed: a smaller or missing one means deleted data). Reading them
    would need room on the full disk for a -shm file, so only their sizes are taken."""
    files = [*spool.glob("queues/*/data.db"), *spool.glob("replicas/*.db")]
    return {str(p.relative_to(spool)): p.stat().st_size for p in files}


def remote_sessions(sqld: Sqld) -> dict[str, list[int]]:
    try:
        rows = sqld.query(
            "SELECT s.id, s.event_count, (SELECT count(*) FROM messages m WHERE m.session_id = s.id)"
            " FROM sessions s"
        )
    except RuntimeError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    return {r[0]: [r[1], r[2]] for r in rows}


FULL_FOR_S = 3.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = proc_stat(pid)
    assert fields is not None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_worker_on_a_full_disk_keeps_running_and_loses_nothing(disk: FullDisk, sqld: Sqld) -> None:
    spool = disk.root / "spool"
    spool.mkdir(mode=0o700)
    # End-only sync: what reaches sqld while the disk is full is then exactly nothing.
    env = worker_env(spool, sqld.url, AGENTSPOOL_CHECKPOINT_INTERVAL="0")
    worker = subprocess.Popen(
        [AGENTSPOOL, "worker", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = Lines(worker.stdout)
    early = run_python(OPEN_SESSION, spool, stdin=subprocess.PIPE)
    assert early.stdin is not None
    early_out = Lines(early.stdout)
    started = time.monotonic()
    try:
        wait_worker_up(env, worker)
        assert early_out.next(60) == "ready\n"
        wait_until(
            lambda: local_state(spool).get("early-0") == ("open", 201),
            60,
            "the open session to be drained",
        )
        # Acked too (the ack is the drain's last write): a worker stopped now holds no
        # write lock on the producer's queue file, so the producer can go on writing.
        wait_until(lambda: queued_items(spool) == 0, 60, "the drained items to be acked")

        # Producers write while the worker is stopped; then the disk fills up.
        worker.send_signal(signal.SIGSTOP)
        try:
            early.stdin.write("go\n")
            early.stdin.flush()
            assert early.wait(timeout=30) == 0
            late = run_python(CLOSED_SESSIONS, spool)
            _, late_err = late.communicate(timeout=30)
            assert late.returncode == 0, late_err
            waiting = queued_items(spool)
            assert waiting == 1 + 300 + 2 * 300  # the early session's end + the late sessions
            disk.fill(worker.pid)
            files_before = database_files(spool)
        finally:
            worker.send_signal(signal.SIGCONT)
        full_at = time.monotonic()
        lines_before = len(log.lines)
        cpu_before = cpu_seconds(worker.pid)

        # Full: the worker keeps running and says why; nothing is deleted or lost.
        observations = 0
        while time.monotonic() - full_at < FULL_FOR_S:
            assert worker.poll() is None, log.text()[-3000:]
            report = status_json(env, timeout=60)
            assert report["worker_pid"] == worker.pid
            assert report["dead_letters"] == 0 and report["quarantined"] == []
            assert len(report["producers"]) == 2
            files = database_files(spool)
            assert all(files.get(name, -1) >= size for name, size in files_before.items())
            assert local_state(spool).get("early-0") == ("open", 201)
            observations += 1
            time.sleep(0.2)
        full_log = "".join(log.lines[lines_before:])
        full_seconds = time.monotonic() - full_at
        cpu_while_full = cpu_seconds(worker.pid) - cpu_before
        producer_errors = [p["error"] for p in report["producers"] if p["error"]]
        remote_while_full = remote_sessions(sqld)

        disk.free(worker.pid)
        freed_at = time.monotonic()
        wait_until(
            lambda: remote_sessions(sqld) == {sid: [n, n - 2] for sid, n in EXPECTED.items()},
            120,
            "every session to land after space returned",
            interval=0.1,
        )
        landed_after = time.monotonic() - freed_at
        report = status_json(env)
        assert worker.poll() is None
    finally:
        if early.poll() is None:
            early.kill()
        worker.send_signal(signal.SIGCONT)
        stop_process(worker)
    assert worker.returncode == 0, log.text()[-3000:]

    error_lines = [line for line in full_log.splitlines() if "ERROR" in line or "WARNING" in line]
    summary(
        f"worker on a full disk ({disk.method})",
        {
            "fault": disk.describe(),
            "full for": f"{FULL_FOR_S:g}s ({observations} checks: alive, status, files intact)",
            "events waiting in queue files while full": waiting,
            "files (queue files, replicas) before / during": (
                f"{len(files_before)} / {len(files)}, none smaller"
            ),
            "error lines logged while full": (
                f"{len(error_lines)} ({len(error_lines) / full_seconds:.1f}/s)"
            ),
            "first error": error_lines[0][24:220] if error_lines else None,
            "worker CPU while full": f"{cpu_while_full:.2f}s in {full_seconds:.1f}s",
            "status while full: producer errors": producer_errors or None,
            "sessions landed after space returned": f"{len(EXPECTED)} in {landed_after:.2f}s",
            "remote events": sum(EXPECTED.values()),
            "lost / dead-lettered / quarantined": "0 / 0 / 0",
            "test duration": f"{time.monotonic() - started:.1f}s",
        },
    )
    assert error_lines, full_log
    # The log names the cause (not "cannot rollback - no transaction is active").
    assert re.search(DISK_ERROR, full_log) and "cannot rollback" not in full_log, full_log
    # Retried about once a second, not in a loop woken by its own failed attempts.
    assert len(error_lines) / full_seconds < 10, error_lines
    assert remote_while_full == {}
    assert report["sessions"]["synced"] == 3 and report["sessions"]["pending"] == 0
    assert report["dead_letters"] == 0 and report["quarantined"] == []
    assert report["last_sync_error"] is None
    messages = remote_messages(sqld, "early-0")
    assert messages == list(range(1, 501))
