"""Sender threads: the only code that waits on the database.

Each thread owns one connection (``Database``) and runs one job at a time: the
schema check, or one batch (one HTTP request). Answers go back to the engine through
a queue, and a threading.Event wakes the worker's loop. httpx releases the GIL while
it waits, so waiting here never slows the loop.

Every request has a total deadline of its own (deadline_http.py), so a sender
answers in time even when the server dribbles. A sender the engine still gives up on
is aborted (its sockets shut down, which wakes it) and not reused until it answers;
the number of threads is capped, so senders stuck in what no deadline reaches (a
name lookup, say) hold back new batches instead of piling up threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import Empty, SimpleQueue

from agentspool.worker.sync.batch import Batch
from agentspool.worker.sync.database import STATEMENT, TRANSIENT, Database, DatabaseError


@dataclass(frozen=True)
class Job:
    job_id: int
    kind: str  # "schema" | "batch"
    batch: Batch | None = None


@dataclass(frozen=True)
class Reply:
    job_id: int
    error: DatabaseError | None  # None: it succeeded
    seconds: float


class Senders:
    def __init__(
        self, connect: Callable[[], Database], wake: threading.Event, max_threads: int
    ) -> None:
        self._connect = connect
        self._wake = wake
        self._max_threads = max_threads
        self._jobs: SimpleQueue[Job | None] = SimpleQueue()
        self._replies: SimpleQueue[Reply] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # jobs handed out and not answered (given up on or not)
        self._working: dict[int, Database] = {}  # job id -> the connection sending it
        self._lock = threading.Lock()

    def can_send(self) -> bool:
        """A thread is free, or one more may be started."""
        return self._busy < self._max_threads

    def abort(self, job_id: int) -> None:
        """Fail the job's request now (the engine gave up on it): its thread wakes,
        answers (the answer is ignored) and gets a fresh connection."""
        with self._lock:
            database = self._working.get(job_id)
        if database is not None:
            database.abort()

    def send(self, job: Job) -> None:
        if self._busy >= len(self._threads):  # every sender is busy: one more
            thread = threading.Thread(target=self._run, name="agentspool-sync", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._busy += 1
        self._jobs.put(job)

    def replies(self) -> Iterator[Reply]:
        """The answers that arrived (never blocks)."""
        while True:
            try:
                reply = self._replies.get_nowait()
            except Empty:
                return
            self._busy -= 1
            yield reply

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        database: Database | None = None
        while True:
            job = self._jobs.get()
            if job is None:
                break
            started = time.monotonic()
            error: DatabaseError | None = None
            try:
                if database is None:
                    database = self._connect()
                with self._lock:
                    self._working[job.job_id] = database
                if job.kind == "schema":
                    database.ensure_schema()
                else:
                    assert job.batch is not None
                    database.run_atomic(job.batch.statements)
            except DatabaseError as exc:
                error = exc
            except Exception as exc:  # a bug or an odd answer: retried, never fatal
                error = DatabaseError(TRANSIENT, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._working.pop(job.job_id, None)
            if error is not None and error.kind != STATEMENT and database is not None:
                database.close()  # the connection may be broken: a fresh one next time
                database = None
            self._replies.put(Reply(job.job_id, error, time.monotonic() - started))
            self._wake.set()
        if database is not None:
            database.close()
