"""Run syncs in a child process with a deadline, and schedule retries.

The worker's own loop never waits on the network: it hands a session to the sync
child (sync_child.py), keeps draining, and picks up the answer when it arrives. If
the answer does not arrive within ``sync_timeout`` the child is killed (a libsql
call to a hung server never returns) and the attempt counts as a transient failure.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import IO, Any

from agentspool.worker.sync.remote import TRANSIENT

log = logging.getLogger("agentspool.worker")


@dataclass(frozen=True)
class SyncOutcome:
    session_id: str
    ok: bool
    kind: str = ""  # for failures: transient | permanent
    error: str = ""
    statements: int = 0
    seconds: float = 0.0


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base*2^n))."""
    return rand() * min(cap, base * (2 ** min(attempt, 30)))


class SyncRunner:
    def __init__(
        self,
        db_url: str,
        auth_token: str | None,
        timeout: float,
        wake: threading.Event,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db_url = db_url
        self.auth_token = auth_token
        self.timeout = timeout
        self.wake = wake
        self.now = now
        self._proc: subprocess.Popen[str] | None = None
        self._replies: SimpleQueue[dict[str, Any] | None] = SimpleQueue()
        self._next_id = 0
        self._in_flight: tuple[int, str, float] | None = None  # (request id, session, deadline)

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    @property
    def in_flight_session(self) -> str | None:
        return self._in_flight[1] if self._in_flight else None

    def deadline(self) -> float | None:
        return self._in_flight[2] if self._in_flight else None

    def submit(self, session_id: str, replica: Path) -> None:
        assert self._in_flight is None, "one sync at a time"
        proc = self._ensure_child()
        self._next_id += 1
        request = {"id": self._next_id, "session_id": session_id, "replica": str(replica)}
        self._in_flight = (self._next_id, session_id, self.now() + self.timeout)
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except OSError:
            pass  # the child died; poll() reports it as a failed attempt

    def poll(self) -> SyncOutcome | None:
        """The outcome of the sync in flight, if it has one by now (never blocks)."""
        if self._in_flight is None:
            return None
        request_id, session_id, deadline = self._in_flight
        while True:
            try:
                reply = self._replies.get_nowait()
            except Empty:
                break
            if reply is None:  # the child's pipe closed: it died
                self._reap()
                self._in_flight = None
                return SyncOutcome(session_id, False, TRANSIENT, "the sync process died")
            if reply.get("id") == request_id:
                self._in_flight = None
                return SyncOutcome(
                    session_id,
                    bool(reply["ok"]),
                    reply.get("kind", ""),
                    reply.get("error", ""),
                    int(reply.get("statements", 0)),
                    float(reply.get("seconds", 0.0)),
                )
        if self.now() >= deadline:
            self.kill()
            self._in_flight = None
            return SyncOutcome(
                session_id,
                False,
                TRANSIENT,
                f"no answer from the database within {self.timeout:g}s",
            )
        return None

    def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its answer (for the CLI, never the loop)."""
        assert self._in_flight is None
        proc = self._ensure_child()
        self._next_id += 1
        request = dict(request, id=self._next_id)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        deadline = self.now() + timeout
        while True:
            try:
                reply = self._replies.get(timeout=max(0.0, deadline - self.now()))
            except Empty:
                self.kill()
                raise TimeoutError(f"no answer from the database within {timeout:g}s") from None
            if reply is None:
                raise ConnectionError("the database process died")
            if reply.get("id") == request["id"]:
                return reply

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._reap()

    def close(self) -> None:
        if self._proc is not None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.kill()

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._proc = None
            self._replies = SimpleQueue()

    def _ensure_child(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._reap()
        env = dict(os.environ)
        env["TURSO_DATABASE_URL"] = self.db_url
        env.pop("TURSO_AUTH_TOKEN", None)
        if self.auth_token:
            env["TURSO_AUTH_TOKEN"] = self.auth_token
        env.setdefault("RUST_LOG", "error")  # the Rust core is chatty on stdout otherwise
        # fork+exec of a fresh interpreter: the worker never imports libsql, and the
        # child never inherits a libsql runtime (DESIGN.md: libsql is not fork-safe).
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "agentspool.worker.sync.sync_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            close_fds=True,
        )
        replies = self._replies
        assert self._proc.stdout is not None
        threading.Thread(
            target=_read_replies, args=(self._proc.stdout, replies, self.wake), daemon=True
        ).start()
        return self._proc


def _read_replies(
    stream: IO[str], replies: SimpleQueue[dict[str, Any] | None], wake: threading.Event
) -> None:
    """Reader thread: forwards each reply line to the main loop and wakes it."""
    try:
        for line in stream:
            try:
                replies.put(json.loads(line))
            except ValueError:
                log.warning("unexpected output from the sync process: %.200s", line)
                continue
            wake.set()
    finally:
        replies.put(None)
        wake.set()
