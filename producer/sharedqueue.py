"""A queue file shared by many short-lived processes: sessions whose events come
from a new process each (Claude Code runs every hook as a fresh process).

A per-process producer does not fit them: a sequence number kept in memory dies
with each process, a queue file per process would flood the spool (hundreds per
session), and a producer that exits after every event would make the worker seal
the session ``abandoned`` after its first event. So all such processes of one kind
(say ``claude-code``) append to one queue file per spool,
``<spool>/queues/shared-<kind>/data.db``, that no process owns:

- Order and identity: each session's next ``seq`` (and the file's next ``pseq``) is
  kept in the file and advanced in the same ``BEGIN IMMEDIATE`` transaction as the
  insert, so parallel writers are serialized by SQLite's write lock, every event
  gets the next number exactly once, and the queue's ``_id`` order is ``seq`` order.
  The counters live in their own tables: the worker deletes delivered rows, so
  counting rows would not work, and a session resumed later (Claude Code's
  ``--resume`` starts a new process) continues its sequence.
- Durability: each commit is ``synchronous=FULL`` (an fsync of the WAL), so a
  caller's events are durable when ``append`` returns.
- Creation: the first writer builds the file (``queuefile.create_queue_file``:
  built aside, renamed into place whole) under an ``flock``, so parallel first
  writers do not race; everyone else only opens it.
- Liveness: the file's metadata says ``shared``; the worker never treats its
  producer as gone and never removes the file. Its sessions end with their
  ``session_end`` or, failing that, after the worker's silence timeout.
- ``pseq`` starts at the creation time in microseconds: if the file is ever
  replaced (a damaged file is quarantined), the new file's identities cannot repeat
  the old file's, so an event can never be mistaken for a replay of another.
- Exactly once across sources: a writer that learns of the same thing twice (a
  Claude Code hook payload and the transcript line it matches, a transcript imported
  again) marks what it logged with a key (``mark``) and asks before logging
  (``seen``); the keys commit with the events, in a table of their own.

Imports stay minimal (no dataclasses, pathlib or typing at run time): this runs in
a fresh interpreter per hook call.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager

from . import events, layout

TYPE_CHECKING = False  # typing costs milliseconds to import; mypy reads this block
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType
    from typing import Any

LOCK_TIMEOUT_S = 10.0
NEXT_PSEQ = "next_pseq"  # the file's per-producer sequence (queue metadata)


class SharedQueue:
    """The shared queue file of one kind of writer in one spool."""

    def __init__(self, spool_dir: str, kind: str) -> None:
        self.spool_dir = spool_dir
        self.producer_id = f"shared-{kind}"
        self.queue_dir = os.path.join(spool_dir, layout.QUEUES_DIRNAME, self.producer_id)
        self.db_path = os.path.join(self.queue_dir, layout.DB_FILENAME)
        # While ``bulk()`` runs: one connection for every session's transaction.
        self.bulk_conn: sqlite3.Connection | None = None

    def session(self, session_id: str) -> SessionAppend:
        """A transaction on one session: read its state, add events, commit on exit."""
        if not os.path.exists(self.db_path):
            self._create()
        return SessionAppend(self, session_id)

    @contextmanager
    def bulk(self) -> Iterator[SharedQueue]:
        """Many sessions' transactions on one connection, durable together at the end
        (``synchronous=NORMAL``, then a checkpoint that fsyncs): for a writer that can
        redo its work after a crash (an import), not for one that hands work over."""
        if not os.path.exists(self.db_path):
            self._create()
        conn = sqlite3.connect(self.db_path, timeout=layout.BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        self.bulk_conn = conn
        try:
            yield self
            conn.execute("PRAGMA wal_checkpoint(FULL)")  # everything on disk, fsynced
        finally:
            self.bulk_conn = None
            conn.close()

    def states(
        self,
        *,
        session_id: str | None = None,
        having: str | None = None,
        lacking: tuple[str, ...] = (),
    ) -> list[tuple[str, dict[str, Any]]]:
        """Sessions' writer state, read only (no lock): one session's, or those whose
        state has the key ``having`` and none of ``lacking`` (top-level keys)."""
        if not os.path.exists(self.db_path):
            return []
        sql = f"SELECT session_id, state FROM {layout.SESSIONS_TABLE} WHERE 1"
        params: list[Any] = []
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        if having is not None:
            sql += " AND json_extract(state, ?) IS NOT NULL"
            params.append(f"$.{having}")
        for key in lacking:
            sql += " AND json_extract(state, ?) IS NULL"
            params.append(f"$.{key}")
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(sql, params).fetchall()
        finally:
            conn.close()
        return [(sid, _json_object(state)) for sid, state in rows]

    def _create(self) -> None:
        queues = os.path.dirname(self.queue_dir)
        # Only this user may read the logs or forge events (as create_queue_file does).
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        os.makedirs(queues, mode=0o700, exist_ok=True)
        lock_path = os.path.join(queues, f".{self.producer_id}.lock")  # dot: not a queue
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd, lock_path)
            if os.path.exists(self.db_path):
                return  # another writer built it while we waited
            # Only the first call in a spool gets here: the heavier module is fine.
            from pathlib import Path

            from . import queuefile

            pid = os.getpid()
            queuefile.create_queue_file(
                Path(self.queue_dir),
                queuefile.ProducerInfo(
                    producer_id=self.producer_id,
                    pid=pid,
                    host=os.uname().nodename,
                    process_start=queuefile.process_start_time(pid),
                    started_at=time.time(),
                    shared=True,
                ),
            )
        finally:
            os.close(fd)  # releases the lock


class SessionAppend:
    """One writer's transaction on one session (a context manager).

    Inside it, ``known`` says whether the session has had events here before,
    ``state`` is the writer's own JSON object for the session (kept with the
    counter, e.g. open tool calls), and ``add`` queues an event, filling in its
    envelope. On a clean exit the events, the counters and the state commit
    together, fsynced; on an exception nothing is written."""

    def __init__(self, queue: SharedQueue, session_id: str) -> None:
        self.queue = queue
        self.session_id = session_id
        self.known = False
        self.state: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.at: float | None = None  # when the events happened, if not now
        self._next_seq = 0
        self._marked: list[str] = []
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> SessionAppend:
        conn = self.queue.bulk_conn
        if conn is None:
            conn = sqlite3.connect(
                self.queue.db_path, timeout=layout.BUSY_TIMEOUT_S, isolation_level=None
            )
            conn.execute("PRAGMA synchronous=FULL")  # durable when the commit returns
        self._conn = conn
        try:
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: counters stay exact
            conn.execute(layout.SEEN_SQL)  # a file an older agentspool made has none
            row = conn.execute(
                f"SELECT next_seq, state FROM {layout.SESSIONS_TABLE} WHERE session_id = ?",
                (self.session_id,),
            ).fetchone()
        except BaseException:
            if conn is not self.queue.bulk_conn:
                conn.close()
            raise
        if row is not None:
            self.known = True
            self._next_seq = int(row[0])
            self.state = _json_object(row[1])
        return self

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Queue one event of this session; ``seq`` and the envelope are filled in."""
        fields["v"] = events.FORMAT_VERSION
        fields["type"] = kind
        fields["session_id"] = self.session_id
        fields["seq"] = self._next_seq
        fields["ts"] = fields.get("ts") or self.at or time.time()
        self._next_seq += 1
        self.events.append(fields)
        return fields

    def seen(self, key: str) -> bool:
        """Was ``key`` marked in this session (here or in an earlier transaction)?"""
        if key in self._marked:
            return True
        assert self._conn is not None
        return (
            self._conn.execute(
                f"SELECT 1 FROM {layout.SEEN_TABLE} WHERE session_id = ? AND key = ?",
                (self.session_id, key),
            ).fetchone()
            is not None
        )

    def mark(self, key: str) -> None:
        """Remember ``key`` for this session; it commits with the events."""
        self._marked.append(key)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        assert conn is not None
        try:
            if exc is None:
                self._commit(conn)
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            if conn is not self.queue.bulk_conn:
                conn.close()

    def _commit(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute(
                f"SELECT value FROM {layout.META_TABLE} WHERE key = ?", (NEXT_PSEQ,)
            ).fetchone()
            pseq = int(row[0]) if row is not None else time.time_ns() // 1000
            now = time.time()
            items = []
            for event in self.events:
                event["producer_id"] = self.queue.producer_id
                event["pseq"] = pseq
                pseq += 1
                items.append((encode(event), now))
            conn.executemany(
                f"INSERT INTO {layout.TABLE} (data, timestamp, status)"
                f" VALUES (?, ?, {layout.STATUS_INITED})",
                items,
            )
            conn.execute(
                f"INSERT OR REPLACE INTO {layout.META_TABLE} (key, value) VALUES (?, ?)",
                (NEXT_PSEQ, str(pseq)),
            )
            conn.executemany(
                f"INSERT OR IGNORE INTO {layout.SEEN_TABLE} (session_id, key) VALUES (?, ?)",
                [(self.session_id, key) for key in self._marked],
            )
            conn.execute(
                f"INSERT OR REPLACE INTO {layout.SESSIONS_TABLE} (session_id, next_seq, state)"
                " VALUES (?, ?, ?)",
                (self.session_id, self._next_seq, json.dumps(self.state)),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                conn.execute("ROLLBACK")
            raise


_LARGE_FIELDS = ("content", "input", "output", "metadata", "error")


def encode(event: dict[str, Any]) -> bytes:
    """An event as its queue item: compact JSON. An event too large for the worker
    has its large fields cut (with the worker's truncation marker) so it still lands."""
    data = json.dumps(event, separators=(",", ":"), default=str).encode("utf-8", "surrogatepass")
    if len(data) <= events.MAX_ITEM_BYTES:
        return data
    for name in _LARGE_FIELDS:
        value = event.get(name)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        cut = events.truncate_text(text)
        if cut != text:  # metadata must stay an object for the worker's check
            event[name] = {"truncated": cut} if name == "metadata" else cut
    return json.dumps(event, separators=(",", ":"), default=str).encode("utf-8", "surrogatepass")


def _json_object(text: object) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


def _lock(fd: int, path: str) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{path} has been locked for {LOCK_TIMEOUT_S:g}s; is a process hung?"
                ) from None
            time.sleep(0.005)
