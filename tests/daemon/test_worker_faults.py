"""Fault tests for the worker: bad input, a second worker, signals, kill -9 at awkward
moments, a frozen, stopped or auth-rejecting sqld. Real processes, real sqld."""

from __future__ import annotations

import json
import pickle
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
from pathlib import Path
from typing import Any

from agentspool import Spool
from agentspool.producer import queuefile
from tests.helpers import (
    FAST_WORKER_ENV,
    finish,
    produce,
    run_cli,
    run_python,
    start_worker,
    stop_process,
    wait_until,
    worker_db_rows,
    worker_env,
)
from tests.sqld import Sqld, eddsa_jwt, start_auth_sqld

SYNC_TIMEOUT_S = float(FAST_WORKER_ENV["AGENTSPOOL_SYNC_TIMEOUT"])
SHUTDOWN_TIMEOUT_S = float(FAST_WORKER_ENV["AGENTSPOOL_SHUTDOWN_TIMEOUT"])


# ---- helpers -------------------------------------------------------------------


def workload_shape(events: int) -> tuple[int, int]:
    """(messages, tool executions) that PRODUCER_WORKLOAD writes for one session."""
    emitted, i, messages, tools = 1, 0, 0, 0
    while emitted < events - 1:
        if i % 3 == 2 and emitted + 2 <= events - 1:
            tools += 1
            emitted += 2
        else:
            messages += 1
            emitted += 1
        i += 1
    return messages, tools


def remote_counts(sqld: Sqld) -> tuple[int, int, int, int]:
    """(sessions, messages, tool executions, sum of event_count); zeros before the schema."""
    try:
        return (
            sqld.scalar("SELECT count(*) FROM sessions"),
            sqld.scalar("SELECT count(*) FROM messages"),
            sqld.scalar("SELECT count(*) FROM tool_executions"),
            sqld.scalar("SELECT coalesce(sum(event_count), 0) FROM sessions"),
        )
    except RuntimeError as exc:
        if "no such table" in str(exc):
            return (0, 0, 0, 0)
        raise


def remote_counts_or_none(sqld: Sqld) -> tuple[int, int, int, int] | None:
    try:
        return remote_counts(sqld)
    except (urllib.error.URLError, OSError, RuntimeError):
        return None  # down, frozen or busy: ask again


def expected_counts(sessions: int, events: int) -> tuple[int, int, int, int]:
    messages, tools = workload_shape(events)
    return (sessions, sessions * messages, sessions * tools, sessions * events)


def add_counts(*counts: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return tuple(sum(c[i] for c in counts) for i in range(4))  # type: ignore[return-value]


def assert_sessions_consistent(sqld: Sqld) -> None:
    """Every session's event_count matches the rows it has, and it ended completed."""
    bad = sqld.scalar(
        "SELECT count(*) FROM sessions s WHERE event_count !="
        " (SELECT count(*) FROM messages m WHERE m.session_id = s.id)"
        " + 2 * (SELECT count(*) FROM tool_executions t WHERE t.session_id = s.id) + 2"
    )
    assert bad == 0
    assert sqld.query("SELECT DISTINCT status FROM sessions") == [["completed"]]
    assert sqld.scalar("SELECT count(*) FROM tool_executions WHERE status != 'completed'") == 0


def status_json(env: dict[str, str], timeout: float = 30) -> dict[str, Any]:
    result = run_cli("status", "--json", env=env, timeout=timeout, check=True)
    return json.loads(result.stdout)


def timed_status(env: dict[str, str]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    report = status_json(env, timeout=10)
    return report, time.monotonic() - started


def local_sessions(spool: Path) -> dict[str, str]:
    """session_id -> sync_state from the worker's state db (read-only)."""
    path = spool / "worker.db"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return dict(conn.execute("SELECT session_id, sync_state FROM session_state"))
    except sqlite3.OperationalError:
        return {}  # the worker has not created its tables yet
    finally:
        conn.close()


def undrained(spool: Path) -> int | None:
    """Queue items the worker has not applied yet, over all producer files (None: unsure)."""
    total = 0
    for queue_dir in queuefile.list_queue_dirs(spool):
        try:
            conn = queuefile.connect(queue_dir, readonly=True)
            try:
                counts = queuefile.count_by_status(conn)
            finally:
                conn.close()
        except sqlite3.Error:
            if queue_dir.exists():
                return None
            continue  # removed after everything in it was synced
        total += counts.get(queuefile.STATUS_INITED, 0) + counts.get(queuefile.STATUS_READY, 0)
    return total


def proc_stat(pid: int) -> list[bytes] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def sync_in_flight(env: dict[str, str]) -> int:
    """Batches the running worker has sent and not yet heard back about (status --json)."""
    return int((status_json(env).get("sync") or {}).get("in_flight", 0))


def worker_meta(spool: Path) -> dict[str, str]:
    path = spool / "worker.db"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return dict(conn.execute("SELECT key, value FROM worker_meta"))
    except sqlite3.OperationalError:
        return {}  # not created yet
    finally:
        conn.close()


def wait_worker_up(env: dict[str, str], proc: subprocess.Popen[str]) -> None:
    """Wait until the worker has set up its state (it records its pid last), then
    check that status names it. (Asking status earlier can hit the bug covered by
    test_status_answers_while_the_worker_state_is_being_created.)"""
    spool = Path(env["AGENTSPOOL_DIR"])

    def up() -> bool:
        assert proc.poll() is None, f"worker exited {proc.returncode}: {proc.communicate()}"
        return worker_meta(spool).get("worker_pid") == str(proc.pid)

    wait_until(up, 60, "the worker to start", interval=0.05)
    assert status_json(env)["worker_pid"] == proc.pid


def sigkill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


# ---- 1. dead letters -----------------------------------------------------------


class _Exploit:
    """Unpickling this creates `path`: proof that a payload would have run code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_invalid_items_are_dead_lettered_and_never_executed(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-was-executed"
    payloads = [pickle.dumps(_Exploit(marker)), pickle.dumps(_Exploit(marker), protocol=0)]
    # The payloads are live: unpickling the same construction does create its file.
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(_Exploit(canary)))  # noqa: S301 - the point of the test
    assert canary.exists()

    producer = Spool(spool)
    first = producer.session(agent="good", session_id="good-1")
    for i in range(10):
        first.message("user", f"first {i}")
    call = first.tool_started("search", input={"q": 1})
    first.tool_finished(call, output="ok")
    assert first.end(timeout=30)

    bad: list[bytes] = [
        b"\x00\xff\xfe\x80 not json at all",
        b"[1, 2, 3]",
        b'"just a string"',
        json.dumps(
            {
                "v": 1,
                "type": "teleport",
                "session_id": "good-1",
                "seq": 1000,
                "producer_id": producer.producer_id,
                "pseq": 10**6,
                "ts": time.time(),
            }
        ).encode(),
        json.dumps({"v": 1, "type": "message", "session_id": "good-1"}).encode(),
        *payloads,
    ]
    queue_db = queuefile.queue_db_path(spool / queuefile.QUEUES_DIRNAME / producer.producer_id)
    conn = sqlite3.connect(queue_db, timeout=10)
    with conn:
        conn.executemany(
            f"INSERT INTO {queuefile.TABLE} (data, timestamp, status) VALUES (?, ?, 0)",  # noqa: S608
            [(item, time.time()) for item in bad],
        )
    conn.close()

    second = producer.session(agent="good", session_id="good-2", metadata={"after": "bad"})
    for i in range(5):
        second.message("assistant", {"parts": [i]})
    assert second.end(timeout=30)
    assert producer.close()

    env = worker_env(spool, sqld.url)
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr

    assert remote_counts(sqld) == (2, 15, 1, (1 + 10 + 2 + 1) + (1 + 5 + 1))
    assert sqld.query("SELECT id, event_count FROM sessions ORDER BY id") == [
        ["good-1", 14],
        ["good-2", 7],
    ]
    assert_sessions_consistent(sqld)

    report = status_json(env)
    assert report["dead_letters"] == len(bad)
    assert report["sessions"]["synced"] == 2
    assert report["sessions"]["pending"] == report["sessions"]["failed"] == 0

    stored = worker_db_rows(spool, "SELECT data, reason FROM dead_letters")
    assert sorted(bytes(d) for d, _ in stored) == sorted(bad)  # kept verbatim, inert
    assert all(reason for _, reason in stored)
    reasons = " | ".join(r for _, r in stored)
    assert "teleport" in reasons and "not a JSON object" in reasons

    assert not marker.exists(), "a pickle payload in a queue file was executed"


# ---- 2. one worker per spool ---------------------------------------------------


def test_second_worker_refused_and_stale_lock_ignored(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    first = start_worker(env)
    try:
        wait_worker_up(env, first)

        second = run_cli("worker", "run", env=env, timeout=30)
        assert second.returncode == 1, (second.returncode, second.stderr)
        assert f"pid {first.pid}" in second.stderr
        assert "already running" in second.stderr

        # The first one is unharmed and still works.
        assert first.poll() is None
        assert status_json(env)["worker_pid"] == first.pid
        finish(produce(spool, "before-kill", 1, 40))
        wait_until(
            lambda: remote_counts_or_none(sqld) == expected_counts(1, 40),
            60,
            "the first worker to sync a session",
        )
    finally:
        sigkill(first)

    # kill -9 leaves the lock file behind, naming a dead pid; it must not block.
    assert (spool / "worker.lock").read_text().strip() == str(first.pid)
    assert status_json(env)["worker_pid"] is None

    finish(produce(spool, "after-kill", 1, 60))
    third = start_worker(env)
    try:
        wait_worker_up(env, third)
        wait_until(
            lambda: (
                remote_counts_or_none(sqld)
                == add_counts(expected_counts(1, 40), expected_counts(1, 60))
            ),
            60,
            "the new worker to sync",
        )
    finally:
        out, err = stop_process(third)
    assert third.returncode == 0, err
    assert_sessions_consistent(sqld)


# ---- 3. SIGTERM ----------------------------------------------------------------


def test_sigterm_drains_syncs_and_exits_zero(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    worker = start_worker(env)
    try:
        wait_worker_up(env, worker)
        finish(produce(spool, "a", 1, 120))
        wait_until(
            lambda: remote_counts_or_none(sqld) == expected_counts(1, 120), 30, "session a to sync"
        )
        # Freeze the worker so that session b arrives while it cannot look: then the
        # SIGTERM, not normal operation, is what must drain and sync b.
        worker.send_signal(signal.SIGSTOP)
        try:
            finish(produce(spool, "b", 2, 150))
            worker.send_signal(signal.SIGTERM)
        finally:
            worker.send_signal(signal.SIGCONT)
        signalled = time.monotonic()
        out, err = worker.communicate(timeout=SHUTDOWN_TIMEOUT_S + 10)
        elapsed = time.monotonic() - signalled
    finally:
        if worker.poll() is None:
            sigkill(worker)
    assert worker.returncode == 0, err
    assert elapsed < SHUTDOWN_TIMEOUT_S, elapsed
    assert "stop requested" in err
    assert "Traceback" not in err

    assert remote_counts(sqld) == add_counts(expected_counts(1, 120), expected_counts(2, 150))
    assert_sessions_consistent(sqld)


def test_second_sigterm_stops_at_once(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    worker = start_worker(env)
    try:
        wait_worker_up(env, worker)
        sqld.freeze()  # every sync now hangs until its deadline, then retries
        finish(produce(spool, "stuck", 1, 30))
        wait_until(lambda: sync_in_flight(env), 10, "a sync in flight")
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.poll() is None  # still trying within its shutdown deadline
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=SHUTDOWN_TIMEOUT_S + 10)
        elapsed = time.monotonic() - signalled
    finally:
        sqld.thaw()
        if worker.poll() is None:
            sigkill(worker)
    assert worker.returncode == 0, err
    assert elapsed < 3.0, elapsed
    assert "second stop signal" in err
    assert local_sessions(spool) == {"stuck-s0": "pending"}  # kept for the next run


# ---- 4. kill -9 mid-drain ------------------------------------------------------

DRAIN_PRODUCERS = 8
DRAIN_SESSIONS = 6
DRAIN_EVENTS = 500  # 8 x 3,000 events


def test_kill_9_mid_drain_loses_and_duplicates_nothing(spool: Path, sqld: Sqld) -> None:
    producers = [
        produce(spool, f"p{n}", DRAIN_SESSIONS, DRAIN_EVENTS) for n in range(DRAIN_PRODUCERS)
    ]
    for proc in producers:
        finish(proc)
    total = DRAIN_PRODUCERS * DRAIN_SESSIONS * DRAIN_EVENTS
    assert undrained(spool) == total

    env = worker_env(spool, sqld.url, AGENTSPOOL_DRAIN_BATCH="500")
    killed_at: list[int] = []
    for fraction in (0.8, 0.55, 0.3):
        worker = start_worker(env)
        try:

            def reached(
                threshold: float = fraction * total, proc: subprocess.Popen[str] = worker
            ) -> bool:
                assert proc.poll() is None, proc.communicate()
                left = undrained(spool)
                return left is not None and left <= threshold

            wait_until(reached, 60, f"the drain to pass {fraction:.0%}", interval=0.005)
        finally:
            sigkill(worker)
        left = undrained(spool)
        assert left is not None and left > 0, f"round {fraction}: drained everything first"
        killed_at.append(left)
    print(f"killed with {killed_at} of {total} items undrained")
    assert killed_at == sorted(killed_at, reverse=True)

    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert remote_counts(sqld) == expected_counts(DRAIN_PRODUCERS * DRAIN_SESSIONS, DRAIN_EVENTS)
    assert sqld.scalar("SELECT count(*) FROM sessions WHERE event_count != ?", (DRAIN_EVENTS,)) == 0
    assert_sessions_consistent(sqld)
    report = status_json(env)
    assert report["sessions"]["synced"] == DRAIN_PRODUCERS * DRAIN_SESSIONS
    assert report["dead_letters"] == 0
    assert undrained(spool) == 0


# ---- 5. kill -9 mid-sync -------------------------------------------------------


def test_kill_9_mid_sync_then_burst_completes(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    finish(produce(spool, "early", 2, 80))
    worker = start_worker(env)
    try:
        wait_until(
            lambda: remote_counts_or_none(sqld) == expected_counts(2, 80), 30, "the early sessions"
        )
        sqld.freeze()
        finish(produce(spool, "late", 3, 300))
        wait_until(
            lambda: [local_sessions(spool).get(f"late-s{n}") for n in range(3)] == ["pending"] * 3,
            10,
            "the late sessions to be drained",
        )
        # The batch is sent and waits on the frozen server: kill -9 the worker now.
        wait_until(lambda: sync_in_flight(env), 10, "a batch in flight")
        assert all(local_sessions(spool)[f"late-s{n}"] == "pending" for n in range(3))
        worker.kill()
        worker.communicate(timeout=10)
    finally:
        sqld.thaw()
        if worker.poll() is None:
            sigkill(worker)

    started = time.monotonic()
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    print(f"burst after kill -9 mid-sync: {time.monotonic() - started:.2f}s")
    assert result.returncode == 0, result.stderr
    assert remote_counts(sqld) == add_counts(expected_counts(2, 80), expected_counts(3, 300))
    assert_sessions_consistent(sqld)
    report = status_json(env)
    assert report["sessions"] == {
        "open": 0, "pending": 0, "synced": 5, "failed": 0, "abandoned": 0,
    }  # fmt: skip


# ---- 6. sqld frozen ------------------------------------------------------------


def test_frozen_database_does_not_freeze_the_worker(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    worker = start_worker(env)
    try:
        wait_worker_up(env, worker)
        sqld.freeze()
        try:
            frozen_at = time.monotonic()
            finish(produce(spool, "a", 1, 100))
            wait_until(lambda: sync_in_flight(env), 10, "the sync of a to start")

            # While the sync hangs, status answers at once and shows a pending.
            report, took = timed_status(env)
            assert took < 3.0, took
            assert report["worker_pid"] == worker.pid
            assert report["sessions"]["pending"] == 1 and report["sessions"]["synced"] == 0

            # Other work goes on: b is drained while the sync of a is still hanging.
            finish(produce(spool, "b", 1, 50))
            b_done = time.monotonic()
            wait_until(
                lambda: local_sessions(spool).get("b-s0") == "pending", 10, "b to be drained"
            )
            b_latency = time.monotonic() - b_done
            assert sync_in_flight(env), "a's sync ended before b was drained"
            assert b_latency < 10.0, b_latency

            # After the deadline the attempt is reported as a timeout.
            def timed_out() -> dict[str, Any] | None:
                report, took = timed_status(env)
                assert took < 3.0, took
                error = report["last_sync_error"]
                return report if error and f"within {SYNC_TIMEOUT_S:g}s" in error["error"] else None

            report = wait_until(timed_out, 20, "a sync timeout in status", interval=0.2)
            assert time.monotonic() - frozen_at >= SYNC_TIMEOUT_S
            assert report["sessions"]["pending"] == 2 and report["sessions"]["synced"] == 0
            assert report["last_sync_error"]["session_id"] in ("a-s0", "b-s0")
            assert local_sessions(spool) == {"a-s0": "pending", "b-s0": "pending"}
            assert worker.poll() is None
        finally:
            sqld.thaw()
        thawed = time.monotonic()
        wait_until(
            lambda: (
                remote_counts_or_none(sqld)
                == add_counts(expected_counts(1, 100), expected_counts(1, 50))
            ),
            60,
            "a and b to land after the thaw",
            interval=0.2,
        )
        print(f"a and b landed {time.monotonic() - thawed:.2f}s after the thaw")
        thawed_report = status_json(env)
    finally:
        out, err = stop_process(worker)
    assert worker.returncode == 0, err
    assert_sessions_consistent(sqld)
    assert thawed_report["sessions"]["synced"] == 2
    assert thawed_report["last_sync_error"] is None


# ---- 7. sqld stopped -----------------------------------------------------------

LATENCY_PRODUCER = """
import json, time
from agentspool import Spool

spool = Spool(SPOOL)
latencies = []
t0 = time.perf_counter()
session = spool.session(agent="latency", session_id="latency-0")
latencies.append(time.perf_counter() - t0)
for i in range(4998):  # + session_start + session_end = 5,000 events
    t0 = time.perf_counter()
    session.message("user" if i % 2 else "assistant", f"message {i} " + "x" * 200)
    latencies.append(time.perf_counter() - t0)
ended = session.end(timeout=30)
flushed = spool.flush(timeout=30)
latencies.sort()
print(json.dumps({
    "n": len(latencies),
    "p50": latencies[len(latencies) // 2],
    "p99": latencies[int(len(latencies) * 0.99)],
    "max": latencies[-1],
    "ended": ended,
    "flushed": flushed,
    "dropped": spool.stats().dropped,
}))
"""


def test_stopped_database_retries_and_producers_stay_fast(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    sqld.stop()
    worker = start_worker(env)
    try:
        wait_worker_up(env, worker)
        finish(produce(spool, "down", 2, 100))

        def retrying() -> dict[str, Any] | None:
            report = status_json(env)
            return report if report["last_sync_error"] else None

        report = wait_until(retrying, 20, "a sync error in status", interval=0.2)
        assert report["sessions"]["pending"] == 2
        print("sync error while the database is down:", report["last_sync_error"]["error"])

        latency = json.loads(finish(run_python(LATENCY_PRODUCER, spool)))
        print(
            f"emit latency with the database down: p50 {latency['p50'] * 1e6:.1f}us,"
            f" p99 {latency['p99'] * 1e6:.1f}us, max {latency['max'] * 1e3:.2f}ms"
        )
        assert latency["n"] == 4999
        assert latency["flushed"] is True and latency["ended"] is True
        assert latency["dropped"] == 0
        assert latency["p99"] < 1e-3

        wait_until(lambda: status_json(env)["sessions"]["pending"] == 3, 20, "the latency session")

        def most_attempts() -> int:
            return int(worker_db_rows(spool, "SELECT max(attempts) FROM session_state")[0][0])

        # It keeps retrying (backoff capped at 0.5 s; a busy machine may take longer).
        wait_until(lambda: most_attempts() >= 2, 30, "a second sync attempt", interval=0.2)
        assert worker.poll() is None

        sqld.start()  # same port, same database directory
        wait_until(
            lambda: (
                remote_counts_or_none(sqld)
                == add_counts(expected_counts(2, 100), (1, 4998, 0, 5000))
            ),
            60,
            "everything to land after the restart",
            interval=0.2,
        )
        report = status_json(env)
    finally:
        out, err = stop_process(worker)
    assert worker.returncode == 0, err
    assert_sessions_consistent(sqld)
    assert report["sessions"]["synced"] == 3 and report["sessions"]["pending"] == 0
    assert report["last_sync_error"] is None


# ---- 8. permanent error: a bad token -------------------------------------------


def test_bad_token_parks_session_until_retry(spool: Path, sqld_bin: Path, tmp_path: Path) -> None:
    server, key = start_auth_sqld(sqld_bin, tmp_path / "sqld-auth")
    try:
        token = eddsa_jwt(key, {"a": "rw"})
        server.auth_token = token
        assert server.scalar("SELECT 1") == 1  # the valid token works...
        server.auth_token = "not-a-token"
        try:
            server.scalar("SELECT 1")
            raise AssertionError("sqld accepted a bad token: auth is not on")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        server.auth_token = token

        finish(produce(spool, "auth", 1, 60))
        garbage = "garbage-token-" + secrets.token_hex(12)
        bad_env = worker_env(
            spool, server.url, TURSO_AUTH_TOKEN=garbage, AGENTSPOOL_BURST_TIMEOUT="15"
        )
        first = run_cli("worker", "run", "--burst", env=bad_env, timeout=60)
        assert first.returncode == 3, (first.returncode, first.stderr)

        report_text = run_cli("status", env=bad_env, timeout=30, check=True)
        report = status_json(bad_env)
        assert report["sessions"]["failed"] == 1 and report["sessions"]["synced"] == 0
        error = report["last_sync_error"]
        assert error["session_id"] == "auth-s0"
        assert "TURSO_AUTH_TOKEN" in error["error"], error
        assert "TURSO_AUTH_TOKEN" in report_text.stdout
        outputs = [first.stdout, first.stderr, report_text.stdout, report_text.stderr]
        outputs.append(json.dumps(report))
        assert not any(garbage in text for text in outputs), "the token leaked into output"
        for path in spool.rglob("*"):
            if path.is_file():
                assert garbage.encode() not in path.read_bytes(), f"the token is stored in {path}"
        assert remote_counts(server) == (0, 0, 0, 0)

        # A failed session stays parked: another burst with the bad token does not retry.
        again = run_cli("worker", "run", "--burst", env=bad_env, timeout=60)
        assert again.returncode == 3 and garbage not in again.stderr + again.stdout

        retried = run_cli("retry", "--failed", env=bad_env, timeout=30, check=True)
        assert retried.stdout.startswith("1 session")
        good_env = worker_env(spool, server.url, TURSO_AUTH_TOKEN=token)
        second = run_cli("worker", "run", "--burst", env=good_env, timeout=60)
        assert second.returncode == 0, second.stderr
        assert token not in second.stdout + second.stderr
        assert remote_counts(server) == expected_counts(1, 60)
        assert_sessions_consistent(server)
        report = status_json(good_env)
        assert report["sessions"]["synced"] == 1 and report["sessions"]["failed"] == 0
        assert report["last_sync_error"] is None
    finally:
        server.stop()


# ---- 9. a queue file the worker opens while its producer is creating it ---------

RACE_ROUNDS = 200  # the race hits in roughly 1 of 40 rounds here


def test_producer_survives_the_worker_opening_its_new_queue_file(spool: Path) -> None:
    """The worker opens a producer's queue file as soon as inotify reports it, which
    can be while the producer is still setting the file up. The producer must still
    get its events on disk: a session it ended must never be lost to that race."""
    from agentspool.worker.intake.drain import Drainer
    from agentspool.worker.state import StateStore

    state = StateStore(spool)
    drainer = Drainer(spool, state)
    try:
        for n in range(RACE_ROUNDS):
            producer = Spool(spool)
            queue_dir = spool / queuefile.QUEUES_DIRNAME / producer.producer_id
            session = producer.session(agent="race", session_id=f"race-{n}")
            session.message("user", "hello")
            db = queuefile.queue_db_path(queue_dir)
            deadline = time.monotonic() + 5
            while not db.exists() and time.monotonic() < deadline:
                pass  # open it the moment it appears, as the worker's inotify wake-up does
            drainer.cursor(queue_dir)
            drainer.forget(queue_dir)
            ended = session.end(timeout=30)
            stats = producer.stats()
            producer.close(timeout=30)
            assert ended, (
                f"round {n}: the producer could not write its queue file after the worker"
                f" opened it during creation: {stats.last_error}"
            )
    finally:
        drainer.close()
        state.close()

    env = worker_env(spool)
    result = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    report = status_json(env)
    assert report["sessions"]["synced"] == RACE_ROUNDS


# ---- 10. --burst must not report success with events left in a queue ------------


def test_burst_exit_code_counts_undrained_events(spool: Path, sqld: Sqld) -> None:
    finish(produce(spool, "blocked", 1, 30))
    # The session's replica cannot be opened (a directory is in the way): its events
    # are not dead-lettered (the file is at fault, not the events); they stay queued.
    blocker = spool / "replicas" / "blocked-s0.db"
    blocker.mkdir(parents=True)
    env = worker_env(spool, sqld.url, AGENTSPOOL_BURST_TIMEOUT="5")
    first = run_cli("worker", "run", "--burst", env=env, timeout=60)
    report = status_json(env)
    assert sum(p["ready"] for p in report["producers"]) == 30  # nothing lost...
    assert report["dead_letters"] == 0
    assert remote_counts(sqld) == (0, 0, 0, 0)
    # ...and nothing synced, so --burst must not say "all synced".
    assert first.returncode == 3, (
        f"--burst exited {first.returncode} with 30 events undrained\n{first.stderr}"
    )

    blocker.rmdir()
    # The usual bound now: this run must finish its work, which a busy machine slows.
    second = run_cli("worker", "run", "--burst", env=worker_env(spool, sqld.url), timeout=120)
    assert second.returncode == 0, second.stderr
    assert remote_counts(sqld) == expected_counts(1, 30)
    assert status_json(env)["sessions"]["synced"] == 1


# ---- 11. status while the worker's state store is being created -----------------


def test_status_answers_while_the_worker_state_is_being_created(spool: Path) -> None:
    """A worker creates worker.db, then its tables. `status` run in between (or after
    a worker was killed in between) must answer, not crash with a traceback."""
    conn = sqlite3.connect(spool / "worker.db")  # what StateStore does before its schema
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    env = worker_env(spool)
    result = run_cli("status", "--json", env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["worker_pid"] is None
    assert set(report["sessions"].values()) == {0} and report["dead_letters"] == 0

    text = run_cli("status", env=env, timeout=30)
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
