"""Live sessions: open sessions reach the database while they run (checkpoints).

A producer process holds one session open and emits on command (stdin), so each
test decides exactly what is in the session when. The database is read directly;
requests go through the counting/fault proxy where the test needs it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_worker_faults import wait_worker_up
from tests.helpers import stop_process, wait_until, worker_db_rows, worker_env
from tests.proxy import FaultProxy
from tests.sqld import Sqld
from tests.sync.test_network_faults import HalfLandedWatch, start_logged_worker

SESSION = "live-0"

# Commands on stdin, one per line: "m N" (N messages), "ts ID" / "tf ID" (a tool call
# starts / finishes), "end"; each is answered "ok" once it is on disk (flushed).
LIVE_PRODUCER = """
import sys
from agentspool import Spool

spool = Spool(sys.argv[1])
session = spool.session(agent="live", session_id=sys.argv[2])
count = 0
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "m":
        for _ in range(int(args[0])):
            session.message("user" if count % 2 else "assistant", f"message {count}")
            count += 1
    elif cmd == "ts":
        session.tool_started("search", input={"q": args[0]}, call_id=args[0])
    elif cmd == "tf":
        session.tool_finished(args[0], output=f"found {args[0]}")
    elif cmd == "end":
        print("ok" if session.end(timeout=30) else "not flushed", flush=True)
        break
    print("ok" if spool.flush(timeout=30) else "not flushed", flush=True)
"""


class LiveProducer:
    def __init__(self, spool: Path, session_id: str = SESSION) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LIVE_PRODUCER, str(spool), session_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok", command

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def remote_session(sqld: Sqld, session_id: str = SESSION) -> dict[str, Any] | None:
    """The session as the database shows it: status, counts, rows; None if absent."""
    try:
        rows = sqld.query(
            "SELECT status, message_count, tool_count, event_count,"
            " (SELECT count(*) FROM messages WHERE session_id = ?),"
            " (SELECT group_concat(call_id || ':' || status) FROM tool_executions"
            "  WHERE session_id = ?)"
            " FROM sessions WHERE id = ?",
            (session_id, session_id, session_id),
        )
    except (RuntimeError, OSError):
        return None  # no schema yet, or busy
    if not rows:
        return None
    status, message_count, tool_count, event_count, messages, tools = rows[0]
    return {
        "status": status,
        "message_count": message_count,
        "tool_count": tool_count,
        "event_count": event_count,
        "messages": messages,
        "tools": tools,
    }


def shows(sqld: Sqld, **expected: Any) -> dict[str, Any] | None:
    """The remote session if it has all the expected values, else None."""
    seen = remote_session(sqld)
    if seen is not None and all(seen[k] == v for k, v in expected.items()):
        return seen
    return None


@pytest.fixture
def proxy(sqld: Sqld) -> Iterator[FaultProxy]:
    with FaultProxy(sqld.port) as running:
        yield running


def test_an_open_session_is_visible_running_grows_and_completes(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    # Default settings: no AGENTSPOOL_CHECKPOINT_INTERVAL (the default is 5 s).
    env = worker_env(spool, sqld.url)
    worker = start_logged_worker(env, tmp_path / "worker.log")
    producer = LiveProducer(spool)
    try:
        with HalfLandedWatch(sqld) as watch:
            wait_worker_up(env, worker)
            started = time.monotonic()
            producer.send("m 5")
            wait_until(lambda: shows(sqld, status="running", messages=5), 20, "5 messages")
            visible_after = time.monotonic() - started
            producer.send("ts call-1")
            wait_until(lambda: shows(sqld, tools="call-1:running"), 20, "the running tool call")
            producer.send("m 5")
            producer.send("tf call-1")
            # The call that was running at the last checkpoint is updated in place.
            seen = wait_until(
                lambda: shows(sqld, status="running", messages=10, tools="call-1:completed"),
                20,
                "10 messages and the finished call",
            )
            assert seen["message_count"] == 10
            producer.send("end")
            final = wait_until(lambda: shows(sqld, status="completed"), 20, "the final status")
    finally:
        producer.close()
        stop_process(worker)
    print(f"open session visible remotely {visible_after:.2f}s after its first events")
    assert visible_after < 20
    assert final == {
        "status": "completed",
        "message_count": 10,
        "tool_count": 1,
        "event_count": 14,  # start, 10 messages, the call's start and finish, end
        "messages": 10,
        "tools": "call-1:completed",
    }
    assert watch.violations == []


def checkpoint_recorded(spool: Path, session_id: str = SESSION) -> bool:
    """worker.db says everything the worker has seen of the session is checkpointed."""
    rows = worker_db_rows(
        spool,
        "SELECT seen_at, checkpointed_at FROM session_state WHERE session_id = ?",
        (session_id,),
    )
    return bool(rows) and rows[0][1] >= rows[0][0]


def test_checkpoints_survive_a_worker_kill_9_exactly_once(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_CHECKPOINT_INTERVAL="0.3")
    producer = LiveProducer(spool)
    try:
        worker = start_logged_worker(env, tmp_path / "first.log")
        try:
            wait_worker_up(env, worker)
            producer.send("m 20")
            producer.send("ts call-a")
            wait_until(lambda: shows(sqld, messages=20, tools="call-a:running"), 20, "a checkpoint")
            # Kill it between checkpoints, not between a landing and its watermark (that
            # would only cost idempotent resends, which the row count below would see).
            wait_until(lambda: checkpoint_recorded(spool), 20, "the checkpoint's watermark")
        finally:
            worker.kill()
            worker.communicate(timeout=10)
        # Between checkpoints, with the worker dead: more events.
        producer.send("m 7")
        producer.send("tf call-a")
        log = tmp_path / "second.log"
        worker = start_logged_worker(env, log)
        try:
            wait_worker_up(env, worker)
            wait_until(
                lambda: shows(sqld, status="running", messages=27, tools="call-a:completed"),
                20,
                "the checkpoint after the restart",
            )
            producer.send("end")
            final = wait_until(lambda: shows(sqld, status="completed"), 20, "the final status")
        finally:
            stop_process(worker)
    finally:
        producer.close()
    assert final["messages"] == final["message_count"] == 27
    assert final["tools"] == "call-a:completed" and final["tool_count"] == 1
    assert final["event_count"] == 31
    # The restarted worker resent nothing the first one had landed: its batches carried
    # the 7 new messages, the finished call and the session row (+1 for the end).
    rows = [int(n) for n in re.findall(r"batch landed: .*?, (\d+) rows", log.read_text())]
    assert sum(rows) <= 7 + 1 + 1 + 2, rows


def test_checkpoints_through_cut_connections_land_exactly_once(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    env = worker_env(spool, proxy.url, AGENTSPOOL_CHECKPOINT_INTERVAL="0.3")
    worker = start_logged_worker(env, tmp_path / "worker.log")
    producer = LiveProducer(spool)
    try:
        with HalfLandedWatch(sqld) as watch:
            wait_worker_up(env, worker)
            producer.send("m 10")
            wait_until(lambda: shows(sqld, messages=10), 20, "the first checkpoint")
            proxy.set_cuts(1.0, 1, 300)  # every connection cut within 300 bytes
            producer.send("m 10")
            producer.send("ts call-c")
            wait_until(lambda: proxy.counts().cuts >= 4, 30, "checkpoints cut")
            assert shows(sqld, messages=10) is not None  # nothing of them landed
            proxy.set_cuts(0.0)
            proxy.set_commit_cuts(1.0, limit=1)  # one checkpoint lands, unanswered
            producer.send("tf call-c")
            wait_until(lambda: proxy.counts().commit_cuts >= 1, 30, "a commit cut")
            proxy.stop_cuts()
            producer.send("end")
            final = wait_until(lambda: shows(sqld, status="completed"), 30, "the final status")
    finally:
        producer.close()
        stop_process(worker)
    assert final["messages"] == final["message_count"] == 20
    assert final["tools"] == "call-c:completed"
    assert final["event_count"] == 24
    assert watch.violations == []


def test_idle_open_sessions_cost_no_requests(
    spool: Path, sqld: Sqld, proxy: FaultProxy, tmp_path: Path
) -> None:
    interval = 0.2
    env = worker_env(spool, proxy.url, AGENTSPOOL_CHECKPOINT_INTERVAL=f"{interval}")
    worker = start_logged_worker(env, tmp_path / "worker.log")
    producer = LiveProducer(spool)
    try:
        wait_worker_up(env, worker)
        producer.send("m 3")
        wait_until(lambda: shows(sqld, messages=3), 20, "the checkpoint")
        wait_until(
            lambda: (s := _status_sync(env)) and s["in_flight"] == 0, 10, "no request in flight"
        )
        before = proxy.counts().requests
        time.sleep(10 * interval)  # ten checkpoint intervals in which nothing happens
        idle_requests = proxy.counts().requests - before
        producer.send("m 1")
        wait_until(lambda: shows(sqld, messages=4), 20, "the next checkpoint")
    finally:
        producer.close()
        stop_process(worker)
    assert idle_requests == 0


def test_an_abandoned_session_replaces_running_remotely(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_CHECKPOINT_INTERVAL="0.3")
    worker = start_logged_worker(env, tmp_path / "worker.log")
    producer = LiveProducer(spool)
    try:
        wait_worker_up(env, worker)
        producer.send("m 4")
        producer.send("ts call-x")
        wait_until(lambda: shows(sqld, status="running", messages=4), 20, "a checkpoint")
        producer.proc.kill()  # the agent dies with its session open
        producer.proc.communicate(timeout=10)
        final = wait_until(lambda: shows(sqld, status="abandoned"), 30, "the abandoned status")
    finally:
        producer.close()
        stop_process(worker)
    assert final["messages"] == 4
    assert final["tools"] == "call-x:error"  # it never finished
    ended = sqld.query("SELECT ended_at, error FROM sessions WHERE id = ?", (SESSION,))[0]
    assert ended[0] is not None and "ended without ending the session" in ended[1]


def _status_sync(env: dict[str, str]) -> dict[str, Any] | None:
    from tests.daemon.test_worker_faults import status_json

    sync: dict[str, Any] | None = status_json(env).get("sync")
    return sync
