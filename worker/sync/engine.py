"""The sync engine: schedules batches, keeps a few in flight, records what landed.

The worker's loop calls ``poll()`` on every pass; it never waits. Batches are built
in the loop's thread (local reads, milliseconds) and sent by sender threads, each
with its own connection (httpx releases the GIL while it waits, and every request
has a total deadline and a size cap, so no child process is needed to keep the loop
responsive). At most
``max_in_flight`` batches travel at once, which hides distance; a session is in at
most one of them, and its parts go one after another, so the part that writes its
final status always lands after the others.

What is sent: pending sessions (ended, or sealed abandoned) as soon as they are
due, and, once per checkpoint interval, every open session with something new since
its last checkpoint (one round shares batches; idle sessions cost nothing).

Failures (kinds from hrana.py):
- transient (network, 429/5xx, timeouts): the whole engine pauses for a capped,
  full-jitter backoff (or the server's Retry-After); every session of the batch gets
  the same next attempt time, so they go together again. Any success resets it.
- misconfigured (the URL is not a libSQL server): the same, and it is reported once
  per backoff step; ``--burst`` ends on it, leaving the sessions pending.
- permanent (the token, the schema): the sessions are parked ``failed`` until
  ``agentspool retry``.
- statement (a row the database refuses): the batch is split in halves and resent
  until the session at fault is alone; it alone is parked ``failed``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentspool.worker import state as st
from agentspool.worker.intake.replica import REPLICAS_DIRNAME
from agentspool.worker.sync.batch import (
    BROKEN,
    DEFERRED,
    EMPTY,
    MAX_BATCH_BYTES,
    SENT_ALL,
    Batch,
    BrokenSession,
    SessionCursor,
    build_batch,
)
from agentspool.worker.sync.database import (
    MISCONFIGURED,
    PERMANENT,
    STATEMENT,
    TRANSIENT,
    Database,
    DatabaseError,
    open_database,
)
from agentspool.worker.sync.senders import Job, Senders

log = logging.getLogger("agentspool.worker")

MAX_IN_FLIGHT = 3
MAX_RETRY_AFTER_S = 600.0
DEADLINE_GRACE_S = 5.0  # beyond the request's own deadline, before a sender is given up on
MAX_STUCK_SENDERS = 2  # threads given up on that may still be waiting, beyond max_in_flight


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base*2^n))."""
    return rand() * min(cap, base * (2 ** min(attempt, 30)))


@dataclass
class EngineStats:
    requests: int = 0
    batches: int = 0
    sessions_synced: int = 0
    checkpoints: int = 0
    failures: int = 0


class SyncEngine:
    def __init__(
        self,
        spool_dir: Path,
        state: st.StateStore,
        *,
        db_url: str,
        auth_token: str | None,
        timeout: float,
        retry_base: float,
        retry_cap: float,
        checkpoint_interval: float,
        wake: threading.Event,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        connect: Callable[[], Database] | None = None,
        on_batch: Callable[[Batch, float, DatabaseError | None], None] | None = None,
        on_broken: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.spool_dir = spool_dir
        self.state = state
        self.timeout = timeout
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.checkpoint_interval = checkpoint_interval
        self.wake = wake
        self.max_in_flight = max_in_flight
        self.max_batch_bytes = max_batch_bytes
        self.now = now
        self.monotonic = monotonic
        self.on_batch = on_batch
        self.on_broken = on_broken  # (session, error) -> True if it repaired the replica
        self.stats = EngineStats()
        self.schema_ready = False
        self.misconfigured: str | None = None  # the last "not a libSQL server" error
        self._senders = Senders(
            connect or (lambda: open_database(db_url, auth_token, timeout=timeout)),
            wake,
            max_threads=max_in_flight + MAX_STUCK_SENDERS,
        )
        self._in_flight: dict[int, tuple[Job, float]] = {}  # job id -> (job, deadline)
        self._reserved: set[str] = set()
        self._next_job = 0
        self._failures = 0  # consecutive transient failures: the backoff exponent
        self._paused_until = 0.0  # monotonic
        self._isolate: deque[list[str]] = deque()  # session groups to send on their own
        self._round: deque[str] = deque()  # open sessions of the current checkpoint round
        self._next_round = monotonic()
        self._reported: str | None = None
        self.last_error: str | None = None  # the latest failure, until a request succeeds
        self._since: float | None = None  # worker clock: requests in flight since

    # ---- the loop's interface ------------------------------------------------

    def poll(self) -> None:
        """Record answers that arrived, give up on senders past their deadline, and
        start new batches while there is room. Never blocks."""
        self._collect()
        self._expire()
        if self.monotonic() < self._paused_until:
            return
        if not self.schema_ready:
            if not self._in_flight and self._senders.can_send():
                self._submit(Job(self._job_id(), "schema"))
            return
        self._start_round_if_due()
        while len(self._in_flight) < self.max_in_flight and self._senders.can_send():
            if not self._start_batch():
                break

    def reset_backoff(self) -> None:
        """The cause of the failures was fixed (``agentspool retry``): try now."""
        self._failures = 0
        self._paused_until = 0.0
        self.misconfigured = None

    def busy(self) -> bool:
        return bool(self._in_flight)

    def sending(self, session_id: str) -> bool:
        """A batch with this session is in flight (or about to be resent)."""
        return session_id in self._reserved or any(session_id in g for g in self._isolate)

    def work_left(self, *, include_backoff: bool) -> bool:
        """Something in flight, due now, or (include_backoff) waiting for a retry."""
        if self._in_flight or self._isolate:
            return True
        if include_backoff:
            return bool(self.state.sessions(st.PENDING))
        if self.monotonic() < self._paused_until:
            return False
        return bool(self.state.due_for_sync(self.now(), limit=1))

    def checkpoint_now(self) -> None:
        """Start a checkpoint round at the next poll (a burst does this before it ends)."""
        if self.checkpoint_interval > 0:
            self._next_round = self.monotonic()

    def round_pending(self) -> bool:
        return bool(self._round) or (
            self.checkpoint_interval > 0 and bool(self.state.due_for_checkpoint(limit=1))
        )

    def next_wakeup(self) -> float | None:
        """Seconds until the engine has something to do without a new event."""
        now_mono = self.monotonic()
        times = [deadline for _, deadline in self._in_flight.values()]
        if self._paused_until > now_mono:
            times.append(self._paused_until)
        elif not self._in_flight:
            next_attempt = self.state.next_attempt_time()
            if next_attempt is not None:
                times.append(now_mono + max(0.0, next_attempt - self.now()))
        if self.checkpoint_interval > 0:
            times.append(self._next_round)
        return max(0.0, min(times) - now_mono) if times else None

    def close(self) -> None:
        self._senders.close()

    # ---- building and sending --------------------------------------------------

    def _start_round_if_due(self) -> None:
        if self.checkpoint_interval <= 0 or self.monotonic() < self._next_round:
            return
        self._next_round = self.monotonic() + self.checkpoint_interval
        self._round.extend(s.session_id for s in self.state.due_for_checkpoint(limit=100_000))

    def _candidates(self) -> tuple[list[SessionCursor], str]:
        """The sessions to build the next batch from, and where they come from."""
        if self._isolate:
            group = self._isolate.popleft()
            return [c for c in map(self._cursor, group) if c is not None], "isolate"
        cursors = [
            self._cursor_of(s)
            for s in self.state.due_for_sync(self.now(), limit=10_000)
            if s.session_id not in self._reserved
        ]
        for session_id in self._round:
            cursor = self._cursor(session_id)
            if cursor is not None and not cursor.ended:  # ended ones are in the list above
                cursors.append(cursor)
        return cursors, "due"

    def _is_open(self, session_id: str) -> bool:
        session = self.state.get(session_id)
        return session is not None and session.sync_state == st.OPEN

    def _cursor(self, session_id: str) -> SessionCursor | None:
        if session_id in self._reserved:
            return None
        session = self.state.get(session_id)
        if session is None or session.sync_state in (st.SYNCED, st.FAILED):
            return None
        return self._cursor_of(session)

    def _cursor_of(self, session: st.SessionState) -> SessionCursor:
        return SessionCursor(
            session.session_id,
            self.spool_dir / REPLICAS_DIRNAME / session.replica,
            session.synced_change,
            session.synced_log,
            ended=session.sync_state == st.PENDING,
        )

    def _start_batch(self) -> bool:
        cursors, source = self._candidates()
        broken: list[BrokenSession] = []
        visited: dict[str, str] = {}
        batch = build_batch(
            cursors,
            max_bytes=self.max_batch_bytes,
            broken=broken,
            visited=visited,
            now=self.now(),
        )
        for b in broken:
            if self.on_broken is None or not self.on_broken(b.session_id, str(b)):
                self._park(b.session_id, str(b))
        if source == "isolate":
            # What did not fit stays isolated; it goes in the next batch of its own.
            rest = [
                c.session_id for c in cursors if visited.get(c.session_id, DEFERRED) == DEFERRED
            ]
            if rest:
                self._isolate.appendleft(rest)
        # A round is done with a session once all of it went (or there was nothing).
        done = {sid for sid, how in visited.items() if how in (EMPTY, SENT_ALL, BROKEN)}
        self._round = deque(sid for sid in self._round if sid not in done and self._is_open(sid))
        if batch is None:
            return source == "isolate" and bool(self._isolate)
        for part in batch.parts:
            self._reserved.add(part.session_id)
        self._submit(Job(self._job_id(), "batch", batch))
        return True

    def _submit(self, job: Job) -> None:
        self._in_flight[job.job_id] = (job, self.monotonic() + self.timeout + DEADLINE_GRACE_S)
        self._senders.send(job)
        self._publish()

    def _publish(self) -> None:
        """What ``status`` shows of the sync: requests in flight, and since when."""
        if not self._in_flight:
            self._since = None
        elif self._since is None:
            self._since = self.now()
        self.state.set_meta(
            "sync",
            json.dumps(
                {
                    "in_flight": len(self._in_flight),
                    "in_flight_since": self._since,
                    "batches_landed": self.stats.batches,
                    "sessions_synced": self.stats.sessions_synced,
                    "failures": self.stats.failures,
                    "paused_until": (
                        self.now() + (self._paused_until - self.monotonic())
                        if self._paused_until > self.monotonic()
                        else None
                    ),
                }
            ),
        )

    def _job_id(self) -> int:
        self._next_job += 1
        return self._next_job

    # ---- answers ---------------------------------------------------------------

    def _collect(self) -> None:
        for reply in self._senders.replies():
            entry = self._in_flight.pop(reply.job_id, None)
            if entry is None:
                continue  # given up on already (its deadline passed)
            self.stats.requests += 1
            self._handle(entry[0], reply.error, reply.seconds)

    def _expire(self) -> None:
        now_mono = self.monotonic()
        for job_id, (job, deadline) in list(self._in_flight.items()):
            if now_mono >= deadline:
                del self._in_flight[job_id]
                self._senders.abort(job_id)
                self._handle(
                    job,
                    DatabaseError(
                        TRANSIENT, f"no answer from the database within {self.timeout:g}s"
                    ),
                    self.timeout,
                )

    def _handle(self, job: Job, error: DatabaseError | None, seconds: float) -> None:
        try:
            self._handle_reply(job, error, seconds)
        finally:
            self._publish()

    def _handle_reply(self, job: Job, error: DatabaseError | None, seconds: float) -> None:
        batch = job.batch
        if self.on_batch is not None and batch is not None:
            self.on_batch(batch, seconds, error)
        if batch is not None:
            for part in batch.parts:
                self._reserved.discard(part.session_id)
        if error is None:
            self._failures = 0
            self.last_error = None
            self.misconfigured = None
            self._reported = None
            if batch is None:
                self.schema_ready = True
            else:
                self._landed(batch, seconds)
            return
        self.stats.failures += 1
        self.last_error = str(error)
        if error.kind == STATEMENT and batch is not None:
            self._isolate_poison(batch, error)
        elif error.kind == PERMANENT:
            sessions = [p.session_id for p in batch.parts] if batch else self._due_ids()
            for session_id in sessions:
                self._park(session_id, str(error))
            if batch is None:
                # The schema check: the sessions are parked above (that is the news);
                # it is tried again after a backoff, for sessions that come later.
                self._pause(error, log_it=False)
        else:
            # A failed schema check holds up every due session: they say why.
            self._pause(error, [p.session_id for p in batch.parts] if batch else self._due_ids())

    def _landed(self, batch: Batch, seconds: float) -> None:
        self.stats.batches += 1
        finished = 0
        for part in batch.parts:
            synced = self.state.record_landed(
                part.session_id,
                log_id=part.log_id,
                up_to=part.up_to,
                final=part.final,
                built_at=batch.built_at,
                now=self.now(),
            )
            if synced:
                finished += 1
                log.info("synced session %s", part.session_id)
            elif not part.final:
                self.stats.checkpoints += 1
        self.stats.sessions_synced += finished
        log.info(
            "batch landed: %d session(s), %d finished, %d rows, %.0f KiB in one request (%.3fs)",
            len(batch.parts),
            finished,
            batch.rows,
            batch.size / 1024,
            seconds,
        )

    def _isolate_poison(self, batch: Batch, error: DatabaseError) -> None:
        sessions = [p.session_id for p in batch.parts]
        if len(sessions) == 1:
            self._park(sessions[0], f"the database refused a row of this session: {error}")
            return
        half = len(sessions) // 2
        log.warning(
            "a batch of %d sessions failed on a statement (%s): splitting it to find the row",
            len(sessions),
            error,
        )
        self._isolate.appendleft(sessions[half:])
        self._isolate.appendleft(sessions[:half])

    def _pause(
        self, error: DatabaseError, sessions: list[str] | None = None, *, log_it: bool = True
    ) -> None:
        delay = backoff_delay(self._failures, self.retry_base, self.retry_cap)
        if error.retry_after is not None:  # the server said when: honour it (within reason)
            delay = max(delay, min(error.retry_after, MAX_RETRY_AFTER_S))
        self._failures += 1
        self._paused_until = self.monotonic() + delay
        if error.kind == MISCONFIGURED:
            self.misconfigured = str(error)
        for session_id in sessions or ():
            self.state.mark_retry(session_id, str(error), self.now() + delay)
        message = str(error)
        if not log_it:
            return
        level = logging.ERROR if error.kind == MISCONFIGURED else logging.WARNING
        log.log(
            level, "sync failed (attempt %d): %s; retrying in %.1fs", self._failures, message, delay
        )
        self._reported = message

    def _park(self, session_id: str, reason: str) -> None:
        self.state.mark_failed(session_id, reason)
        log.error(
            "sync of session %s failed: %s; the session is kept. Fix the cause, then: "
            "agentspool retry %s",
            session_id,
            reason,
            session_id,
        )

    def _due_ids(self) -> list[str]:
        return [s.session_id for s in self.state.due_for_sync(self.now(), limit=10_000)]
