"""The sync engine v2 against a real sqld: what one request carries, what a reader of
the database can rely on, and what happens to bad rows, wrong URLs, a killed server
and many workers at once.

Requests are counted by the loopback proxy (tests/proxy.py) in front of sqld; the
database is read directly (bypassing the proxy) with ``Sqld.query``.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_worker_faults import (
    add_counts,
    assert_sessions_consistent,
    expected_counts,
    local_sessions,
    produce,
    remote_counts,
    remote_counts_or_none,
    status_json,
    sync_in_flight,
    wait_worker_up,
)
from tests.helpers import (
    finish,
    run_cli,
    run_python,
    start_worker,
    stop_process,
    wait_until,
    worker_env,
)
from tests.proxy import FaultProxy
from tests.sqld import Sqld, free_port
from tests.sync.test_network_faults import HalfLandedWatch, remote_sessions


@pytest.fixture
def proxy(sqld: Sqld) -> Iterator[FaultProxy]:
    with FaultProxy(sqld.port) as running:
        yield running


# ---- many sessions, one request -------------------------------------------------


def test_a_backlog_of_100_sessions_lands_in_one_batch_request(
    spool: Path, sqld: Sqld, proxy: FaultProxy
) -> None:
    finish(produce(spool, "backlog", 100, 14))  # 10 messages + 2 tool calls each
    env = worker_env(spool, proxy.url)
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    counts = proxy.counts()
    # The schema check, the schema itself (an empty database), then one batch.
    assert counts.requests <= 3, counts
    assert "batch landed: 100 session(s), 100 finished" in result.stderr
    assert remote_counts(sqld) == expected_counts(100, 14)
    assert_sessions_consistent(sqld)

    # A second burst over the same backlog sends nothing: everything is synced.
    again = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "batch landed" not in again.stderr
    assert remote_counts(sqld) == expected_counts(100, 14)


def test_a_session_larger_than_a_batch_spans_several_and_only_the_last_is_final(
    spool: Path, sqld: Sqld, proxy: FaultProxy
) -> None:
    finish(produce(spool, "big", 1, 3_000))
    finish(produce(spool, "small", 3, 30))
    env = worker_env(spool, proxy.url, AGENTSPOOL_BATCH_BYTES="32768")
    with HalfLandedWatch(sqld) as watch:
        result = run_cli("worker", "run", "--burst", env=env, timeout=180)
        wait_until(lambda: watch.polls >= 3, 10, "the watch to look a few times")
    assert result.returncode == 0, result.stderr
    batches = result.stderr.count("batch landed")
    assert batches >= 5, result.stderr[-2000:]
    assert proxy.counts().requests <= batches + 2
    assert watch.violations == []
    assert remote_counts(sqld) == add_counts(expected_counts(1, 3_000), expected_counts(3, 30))
    assert_sessions_consistent(sqld)


# ---- a row the database refuses ---------------------------------------------------

POISON = "this row is refused by the database"
# A trigger cannot take parameters: the refused content is spelled out in it.
REFUSE_POISON = (
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages"
    " WHEN NEW.content = 'this row is refused by the database'"
    " BEGIN SELECT RAISE(ABORT, 'poison row refused'); END"
)


def test_a_poison_row_parks_only_its_session(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    # The remote database refuses one message (a trigger, as a CHECK or a quota would).
    assert run_cli("migrate", "--yes", env=env, timeout=60).returncode == 0
    sqld.query(REFUSE_POISON)
    finish(produce(spool, "fine", 7, 20))
    finish(
        run_python(
            "from agentspool import Spool\n"
            "spool = Spool(SPOOL)\n"
            "with spool.session(agent='poisoned', session_id='poisoned-0') as s:\n"
            "    s.message('user', 'before')\n"
            f"    s.message('assistant', {POISON!r})\n",
            spool,
        )
    )
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 3, result.stderr  # one session left failed
    assert "splitting it to find the row" in result.stderr
    assert "poison row refused" in result.stderr
    assert remote_counts(sqld)[0] == 7  # the seven others are all there
    assert sqld.scalar("SELECT count(*) FROM sessions WHERE id = 'poisoned-0'") == 0
    report = status_json(env)
    assert report["sessions"]["synced"] == 7 and report["sessions"]["failed"] == 1
    assert report["last_sync_error"]["session_id"] == "poisoned-0"

    # Fixed remotely, retried: it lands, whole.
    sqld.query("DROP TRIGGER refuse_poison")
    assert run_cli("retry", "poisoned-0", env=env, timeout=30).returncode == 0
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sqld.query("SELECT count(*), max(status) FROM sessions WHERE id = 'poisoned-0'") == [
        [1, "completed"]
    ]
    assert sqld.scalar("SELECT count(*) FROM messages WHERE session_id = 'poisoned-0'") == 2


# ---- a URL that answers HTTP but is not libSQL ------------------------------------


class _NotLibsql(http.server.BaseHTTPRequestHandler):
    status = 501

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        body = b"<html><body>Not Implemented</body></html>"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("status", [501, 404])
def test_a_url_that_is_not_libsql_ends_the_burst_and_loses_nothing(
    spool: Path, sqld: Sqld, status: int
) -> None:
    handler = type("Handler", (_NotLibsql,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        finish(produce(spool, "wrongurl", 2, 10))
        url = f"http://user:secret@127.0.0.1:{server.server_address[1]}/?authToken=abc"
        started = time.monotonic()
        result = run_cli("worker", "run", "--burst", env=worker_env(spool, url), timeout=60)
        took = time.monotonic() - started
    finally:
        server.shutdown()
    assert result.returncode == 3, result.stderr
    assert took < 30, took
    where = f"http://127.0.0.1:{server.server_address[1]}/v2/pipeline"
    assert f"HTTP {status} from {where}: not a libSQL server?" in result.stderr
    assert "secret" not in result.stderr and "authToken" not in result.stderr
    assert "Traceback" not in result.stderr
    assert local_sessions(spool) == {"wrongurl-s0": "pending", "wrongurl-s1": "pending"}

    # With the right URL, the same spool syncs intact.
    result = run_cli("worker", "run", "--burst", env=worker_env(spool, sqld.url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert remote_counts(sqld) == expected_counts(2, 10)


# ---- sqld killed mid-batch -----------------------------------------------------------


def test_sqld_killed_mid_batch_lands_everything_once(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_RETRY_BASE="0.2", AGENTSPOOL_RETRY_CAP="1")
    worker = start_worker(env)
    try:
        wait_worker_up(env, worker)
        finish(produce(spool, "early", 2, 50))
        wait_until(lambda: remote_counts_or_none(sqld) == expected_counts(2, 50), 30, "early")
        sqld.freeze()  # the next batch waits on the server ...
        finish(produce(spool, "late", 5, 400))
        wait_until(lambda: sync_in_flight(env), 30, "a batch in flight")
        assert sqld.proc is not None
        sqld.proc.kill()  # ... which dies with it unanswered
        sqld.proc.wait(timeout=10)
        sqld.start()  # the same database files, a new process
        wait_until(
            lambda: (
                remote_counts_or_none(sqld)
                == add_counts(expected_counts(2, 50), expected_counts(5, 400))
            ),
            60,
            "every session after the restart",
        )
        wait_until(lambda: status_json(env)["sessions"]["synced"] == 7, 30, "7 synced")
    finally:
        out, err = stop_process(worker)
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    assert_sessions_consistent(sqld)


# ---- eight workers at once -------------------------------------------------------------

WORKERS = 8
SESSIONS_PER_WORKER = 40


def test_eight_workers_bursting_at_once_land_every_session_once(tmp_path: Path, sqld: Sqld) -> None:
    spools = []
    for n in range(WORKERS):
        spool = tmp_path / f"job{n}"
        spool.mkdir(mode=0o700)
        spools.append(spool)
    producers = [produce(s, f"j{n}", SESSIONS_PER_WORKER, 14) for n, s in enumerate(spools)]
    for proc in producers:
        finish(proc)
    bursts = [
        subprocess.Popen(
            [*_agentspool(), "worker", "run", "--burst"],
            env=worker_env(s, sqld.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in spools
    ]
    results = [(p.wait(timeout=180), p.communicate()[1]) for p in bursts]
    assert all(code == 0 for code, _ in results), [err[-1500:] for _, err in results]
    assert remote_counts(sqld) == expected_counts(WORKERS * SESSIONS_PER_WORKER, 14)
    assert sqld.scalar("SELECT count(DISTINCT agent) FROM sessions") == WORKERS
    assert_sessions_consistent(sqld)


def _agentspool() -> list[str]:
    from tests.helpers import AGENTSPOOL

    return [AGENTSPOOL]


# ---- retry ------------------------------------------------------------------------------


def test_retry_of_a_pending_session_drops_the_backoff(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_RETRY_BASE="60", AGENTSPOOL_RETRY_CAP="60")
    sqld.stop()
    worker = start_worker(env)
    try:
        wait_worker_up(env, worker)
        finish(produce(spool, "backoff", 1, 10))

        # The database is down: attempts fail and the next waits up to a minute (full
        # jitter). Wait for one whose pause is long, so that only retry can explain
        # an early landing.
        def long_pause() -> float | None:
            sync = status_json(env).get("sync") or {}
            until = sync.get("paused_until")
            return until if until is not None and until - time.time() >= 15 else None

        paused_until = wait_until(long_pause, 120, "a long backoff", interval=0.2)
        sqld.start()
        result = run_cli("retry", "backoff-s0", env=env, timeout=30)
        assert result.returncode == 0, result.stderr
        wait_until(
            lambda: remote_counts_or_none(sqld) == expected_counts(1, 10),
            max(1.0, paused_until - time.time() - 2),
            "the retried session to land before its backoff was over",
        )
    finally:
        stop_process(worker)
    assert remote_sessions(sqld) is not None


# ---- Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_while_syncing_exits_cleanly_and_loses_nothing(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    # A terminal sends SIGINT to its whole foreground process group.
    worker = start_worker(env, new_session=True)
    try:
        wait_worker_up(env, worker)
        sqld.freeze()  # the batch now waits on the server when Ctrl-C comes
        finish(produce(spool, "ctrlc", 3, 40))
        wait_until(lambda: sync_in_flight(env), 30, "a batch in flight")
        # Ctrl-C: the worker drains and tries to sync for AGENTSPOOL_SHUTDOWN_TIMEOUT,
        # then exits. (Two presses in a row may reach it as one signal.)
        os.killpg(worker.pid, signal.SIGINT)
        out, err = worker.communicate(timeout=60)
    finally:
        sqld.thaw()
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=10)
    assert worker.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "stop requested" in err
    # Nothing lost: the next run syncs every session, exactly once.
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert remote_counts(sqld) == expected_counts(3, 40)
    assert_sessions_consistent(sqld)
