"""Shared helpers: run the real CLI and real producer processes, wait with bounds."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
AGENTSPOOL = str(BIN / "agentspool")

# Worker settings that keep tests quick: short deadlines and backoff, frequent checks.
FAST_WORKER_ENV = {
    "AGENTSPOOL_SYNC_TIMEOUT": "3",
    "AGENTSPOOL_RETRY_BASE": "0.1",
    "AGENTSPOOL_RETRY_CAP": "0.5",
    "AGENTSPOOL_LIVENESS_INTERVAL": "0.2",
    "AGENTSPOOL_RESCAN_INTERVAL": "2",
    "AGENTSPOOL_SHUTDOWN_TIMEOUT": "10",
    "AGENTSPOOL_BURST_TIMEOUT": "60",
}


def worker_env(spool: Path, db_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSPOOL_", "TURSO_"))}
    env.update(FAST_WORKER_ENV)
    env["AGENTSPOOL_DIR"] = str(spool)
    if db_url:
        env["TURSO_DATABASE_URL"] = db_url
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [AGENTSPOOL, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"agentspool {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def start_worker(
    env: dict[str, str], *args: str, new_session: bool = False
) -> subprocess.Popen[str]:
    """A service worker; ``new_session`` puts it in its own process group (and
    session), as a service manager would start it."""
    return subprocess.Popen(
        [AGENTSPOOL, "worker", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> tuple[str, str]:
    """SIGTERM, bounded wait, SIGKILL if needed; returns (stdout, stderr)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    return out or "", err or ""


def communicate_or_fail(proc: subprocess.Popen[str], timeout: float, name: str) -> tuple[str, str]:
    """Wait (bounded) for ``proc`` to exit; return (stdout, stderr). When it does not
    exit in time, SIGKILL it and fail the test with what it wrote."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        sigkill(proc)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"{name} did not finish within {timeout}s:\n{out}\n{err}") from None


def sigkill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc`` unless it has exited, and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def run_python(code: str, spool: Path, timeout: float = 120, **popen: Any) -> subprocess.Popen[str]:
    """Start a producer process running ``code`` (``SPOOL`` is the spool path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSPOOL_", "TURSO_"))}
    env["AGENTSPOOL_DIR"] = str(spool)
    prelude = f"SPOOL = {str(spool)!r}\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait (bounded) for a process that must succeed; return its stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def worker_db_rows(
    spool: Path, sql: str, params: tuple[Any, ...] = (), timeout: float = 5
) -> list[tuple[Any, ...]]:
    """Rows of one query on the worker's worker.db, opened read-only (never in the
    worker's way) and closed again."""
    conn = sqlite3.connect(f"file:{spool / 'worker.db'}?mode=ro", uri=True, timeout=timeout)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# A producer that logs `sessions` complete sessions of `events` events each:
# messages and tool calls (started + finished) with real durations.
PRODUCER_WORKLOAD = """
import sys
from agentspool import Spool

def run(spool, sessions, events, tag):
    ids = []
    for n in range(sessions):
        s = spool.session(agent=f"agent-{tag}", session_id=f"{tag}-s{n}", metadata={"n": n})
        emitted = 1
        i = 0
        while emitted < events - 1:
            if i % 3 == 2 and emitted + 2 <= events - 1:
                call = s.tool_started("search", input={"q": i})
                s.tool_finished(call, output={"hits": i}, error=None if i % 2 else None)
                emitted += 2
            else:
                s.message("assistant" if i % 2 else "user", f"message {i} of {tag}")
                emitted += 1
            i += 1
        assert s.end(timeout=60), "end() did not confirm"
        ids.append(s.id)
    return ids
"""


def produce(spool: Path, tag: str, sessions: int, events: int) -> subprocess.Popen[str]:
    """A producer process that ends ``sessions`` sessions of ``events`` events each
    (PRODUCER_WORKLOAD; session ids ``<tag>-s<n>``)."""
    return run_python(
        PRODUCER_WORKLOAD + f"run(Spool(SPOOL), {sessions}, {events}, {tag!r})", spool
    )


def hold_open_session(
    spool: Path, session_id: str, messages: int, agent: str = "open"
) -> subprocess.Popen[str]:
    """A producer process with an open session of ``messages`` messages, fsynced to
    its queue file before this returns; it then waits (10 minutes at most) to be
    killed, as an agent that is still working or was cancelled."""
    proc = run_python(
        f"""
        import time
        from agentspool import Spool
        spool = Spool(SPOOL)
        s = spool.session(agent={agent!r}, session_id={session_id!r})
        for i in range({messages}):
            s.message("assistant", f"step {{i}}")
        assert spool.flush(60)
        print("ready", flush=True)
        time.sleep(600)
        """,
        spool,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # EOF if it failed: flush() is bounded
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"the producer holding {session_id} failed: {line!r}\n{err}")
    return proc
