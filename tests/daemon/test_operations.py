"""Operations: systemd units and notify protocol, Prometheus metrics, `agentspool drain`
as the last step of a CI job, and the example workflow's sequence of commands."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from agentspool.worker import migrations
from tests.helpers import (
    AGENTSPOOL,
    finish,
    hold_open_session,
    produce,
    run_cli,
    start_worker,
    stop_process,
    wait_until,
    worker_env,
)
from tests.sqld import Sqld, free_port

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_units_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of this machine image; it is needed to check the units"
    text = unit.read_text()
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "KillSignal=SIGTERM",
                      "TimeoutStopSec=", "EnvironmentFile=", "NoNewPrivileges=yes",
                      "ProtectSystem=strict", "ReadWritePaths="):  # fmt: skip
        assert directive in text, f"{unit.name} lacks {directive}"
    # Verify with ExecStart pointing at the installed CLI (the unit names the usual
    # /usr/local/bin path, which systemd-analyze checks for existence).
    name = unit.name.replace("@.service", "@demo.service")
    checked = tmp_path / name
    checked.write_text(text.replace("/usr/local/bin/agentspool", AGENTSPOOL))
    result = subprocess.run(
        [analyze, "verify", str(checked)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_worker_speaks_the_notify_protocol(spool: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(60)
    # A 2 s watchdog: the worker pings every second, and systemd would kill it after
    # 2 s without one. That deadline is the guarantee checked, with a second of room
    # for a busy machine (a tighter one would test the scheduler, not the worker).
    env = worker_env(spool, NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000")
    worker = start_worker(env)
    messages: list[tuple[float, str]] = []
    try:
        first = sock.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=")
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            messages.append((time.monotonic(), sock.recv(4096).decode()))
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        assert len(pings) >= 3, messages
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 2.0, f"watchdog pings too far apart: {gaps}"
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: "STOPPING=1" in sock.recv(4096).decode(), 60, "STOPPING=1")
        worker.wait(timeout=60)
        assert worker.returncode == 0
    finally:
        stop_process(worker)
        sock.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def test_metrics_over_http(spool: Path, sqld: Sqld) -> None:
    port = free_port()
    env = worker_env(spool, sqld.url, AGENTSPOOL_METRICS_PORT=str(port))
    worker = start_worker(env)
    try:
        wait_until(lambda: _answers(port), 60, "the metrics endpoint")
        finish(produce(spool, "m", 2, 50))
        wait_until(lambda: metric(scrape(port), 'agentspool_sessions{state="synced"}') == 2, 60,
                   "two synced sessions in the metrics")  # fmt: skip
        text = scrape(port)
        assert metric(text, "agentspool_events_drained_total") == 100
        # One batch or several (checkpoints, how the sessions fell into batches): every
        # request sent is counted once, and with a healthy database each one succeeded.
        attempts = metric(text, "agentspool_sync_attempts_total")
        assert attempts >= 1
        assert metric(text, "agentspool_sync_seconds_count") == attempts
        assert metric(text, "agentspool_last_sync_success_timestamp_seconds") > time.time() - 60
        assert metric(text, "agentspool_dead_letters") == 0
        assert "agentspool_queue_depth" in text and "agentspool_sync_failures_total" in text
    finally:
        stop_process(worker)


def _answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


# The workflow in examples/github-actions.yml, as commands: a background worker,
# agents (one killed, as a cancelled job would), then `agentspool drain`.
def test_ci_sequence_background_worker_then_drain(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_LIVENESS_INTERVAL="30")
    worker = start_worker(env)
    try:
        finish(produce(spool, "ci", 3, 40))
        killed = hold_open_session(spool, "ci-cancelled", 20, agent="cancelled")
        killed.kill()
        killed.wait(timeout=10)
        result = run_cli("drain", "--timeout", "60", env=env, timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "finished" in result.stdout and "synced 4" in result.stdout
        worker.wait(timeout=10)  # the worker has exited
        assert worker.returncode == 0
    finally:
        stop_process(worker)
    assert sqld.scalar("SELECT count(*) FROM sessions WHERE status = 'completed'") == 3
    assert sqld.scalar("SELECT status FROM sessions WHERE id = 'ci-cancelled'") == "abandoned"
    assert sqld.scalar("SELECT count(*) FROM messages WHERE session_id = 'ci-cancelled'") == 20


def test_drain_without_a_worker_does_the_work_itself(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    finish(produce(spool, "nw", 2, 30))
    result = run_cli("drain", "--json", "--timeout", "30", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"finished": true' in result.stdout and '"left": 0' in result.stdout
    assert sqld.scalar("SELECT count(*) FROM sessions") == 2


def test_drain_reports_what_is_left_when_the_database_is_down(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    finish(produce(spool, "down", 1, 30))
    sqld.stop()
    result = run_cli("drain", "--timeout", "2", env=env, timeout=60)
    assert result.returncode == 3
    assert "pending 1" in result.stdout
    assert "last sync error" in result.stderr


def test_example_workflow_uses_these_commands() -> None:
    workflow = (REPO / "examples" / "github-actions.yml").read_text()
    assert "agentspool worker run" in workflow
    assert "agentspool drain --timeout 120" in workflow
    assert "if: always()" in workflow


def test_migrate_shows_then_applies(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    plan = run_cli("migrate", "--dry-run", env=env, check=True).stdout
    assert "-- 001_init.sql" in plan and "CREATE TABLE IF NOT EXISTS sessions" in plan
    assert "-- 005_fill_session_columns.sql\n-- (nothing to fill in a new database)" in plan
    tables = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sessions'"
    assert sqld.scalar(tables) == 0  # a dry run changes nothing
    applied = run_cli("migrate", "--yes", env=env, check=True).stdout
    every = list(range(1, migrations.latest_version() + 1))
    assert f"applied: {every}" in applied
    assert sqld.scalar(tables) == 1
    again = run_cli("migrate", env=env, check=True).stdout
    assert "up to date" in again
    sqld.stop()
    down = run_cli("migrate", "--timeout", "10", env=env)
    assert down.returncode == 1 and "Error:" in down.stderr


def test_prune_deletes_only_synced_replicas(spool: Path) -> None:
    env = worker_env(spool)
    finish(produce(spool, "old", 3, 20))
    keeper = hold_open_session(spool, "open-session", 1, agent="still-running")
    try:
        assert run_cli("worker", "run", "--burst", env=env).returncode == 3  # one session open
        replicas = spool / "replicas"
        assert len(list(replicas.glob("*.db"))) == 4
        dry = run_cli("prune", "--max-bytes", "1", "--dry-run", env=env, check=True).stdout
        assert "would delete 3 replica(s)" in dry and len(list(replicas.glob("*.db"))) == 4
        done = run_cli("prune", "--max-bytes", "1", env=env, check=True).stdout
        assert "deleted 3 replica(s)" in done
        assert [p.name for p in replicas.glob("*.db")] == ["open-session.db"]
        status = run_cli("status", "--json", env=env, check=True).stdout
        assert '"synced": 3' in status and '"open": 1' in status
    finally:
        keeper.kill()
        keeper.wait(timeout=10)


def test_prune_refuses_while_a_worker_runs(spool: Path) -> None:
    env = worker_env(spool)
    worker = start_worker(env)
    try:
        wait_until(lambda: (spool / "worker.db").exists(), 60, "the worker to start")
        wait_until(lambda: run_cli("status", "--json", env=env).stdout.count('"worker_pid": null') == 0,
                   60, "the worker to hold the lock")  # fmt: skip
        result = run_cli("prune", env=env)
        assert result.returncode == 1 and "prunes by itself" in result.stderr
    finally:
        stop_process(worker)
