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
- A writer that waited ``lock_wait_s`` for the write lock in vain (a process holds it
  and hangs) does not lose its input: it leaves it in a file of its own,
  ``<spool>/queues/.deferred-<producer_id>/<time>-<pid>-<session hash>.json`` (the
  dot keeps it out of the queue listings; the worker watches ``queues/``). The next
  writer of that session, or the worker, replays it under the lock
  (``replay_deferred``), exactly once: the file's name is recorded in the session's
  state in the same transaction as its events, and the file is deleted after.

Imports stay minimal (no dataclasses, pathlib or typing at run time): this runs in
a fresh interpreter per hook call.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time

from . import events, layout

TYPE_CHECKING = False  # typing costs milliseconds to import; mypy reads this block
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

LOCK_TIMEOUT_S = 10.0
DEFERRED_DONE_KEY = "deferred_done"  # session state: deferred files already replayed
DEFERRED_DONE_KEPT = 32
NEXT_PSEQ = "next_pseq"  # the file's per-producer sequence (queue metadata)


class SharedQueue:
    """The shared queue file of one kind of writer in one spool."""

    def __init__(self, spool_dir: str, kind: str) -> None:
        self.spool_dir = spool_dir
        self.producer_id = f"shared-{kind}"
        self.queue_dir = os.path.join(spool_dir, layout.QUEUES_DIRNAME, self.producer_id)
        self.db_path = os.path.join(self.queue_dir, layout.DB_FILENAME)

        self.deferred_dir = os.path.join(
            spool_dir, layout.QUEUES_DIRNAME, f".deferred-{self.producer_id}"
        )

    def session(self, session_id: str, lock_wait_s: float = layout.BUSY_TIMEOUT_S) -> SessionAppend:
        """A transaction on one session: read its state, add events, commit on exit.
        Entering it waits up to ``lock_wait_s`` for the write lock, then raises
        ``sqlite3.OperationalError`` ("database is locked")."""
        if not os.path.exists(self.db_path):
            self._create()
        return SessionAppend(self, session_id, lock_wait_s)

    # ---- input that could not wait for the lock -------------------------------

    def defer(self, session_id: str, record: dict[str, Any]) -> str:
        """Keep ``record`` (JSON) in a file of its own, durably, for a later
        ``replay_deferred``; returns the file's path."""
        os.makedirs(self.deferred_dir, mode=0o700, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{_session_tag(session_id)}.json"
        data = json.dumps({"session_id": session_id, "record": record}).encode()
        path = os.path.join(self.deferred_dir, name)
        building = os.path.join(self.deferred_dir, f".{name}.new")
        fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(building, path)
        dir_fd = os.open(self.deferred_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the rename survives a power loss
        finally:
            os.close(dir_fd)
        return path

    def deferred(self, session_id: str | None = None) -> list[str]:
        """Names of the deferred files (of one session), oldest first."""
        try:
            names = os.listdir(self.deferred_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = [n for n in names if n.endswith(".json") and not n.startswith(".")]
        if session_id is not None and names:
            tag = f"-{_session_tag(session_id)}.json"
            names = [n for n in names if n.endswith(tag)]
        return sorted(names)

    def replay_deferred(
        self,
        apply: Callable[[SessionAppend, dict[str, Any]], None],
        session_id: str | None = None,
        lock_wait_s: float = layout.BUSY_TIMEOUT_S,
    ) -> int:
        """Apply each deferred file (of one session) in its session's transaction,
        oldest first, and delete it; returns how many were applied. A file that cannot
        be applied is set aside as ``.unusable-<name>`` (kept, never retried)."""
        applied = 0
        for name in self.deferred(session_id):
            path = os.path.join(self.deferred_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    data = os.read(fd, _MAX_DEFERRED_BYTES)
                finally:
                    os.close(fd)
                kept = json.loads(data)
                owner, record = kept["session_id"], kept["record"]
            except FileNotFoundError:
                continue  # another replayer took it
            except (OSError, ValueError, KeyError, TypeError):
                kept = owner = record = None  # set aside below
            try:
                if not isinstance(owner, str) or not isinstance(record, dict):
                    raise ValueError("not a deferred record")
                with self.session(owner, lock_wait_s) as session:
                    done = session.state.get(DEFERRED_DONE_KEY)
                    done = done if isinstance(done, list) else []
                    if name not in done:
                        apply(session, record)
                        session.state[DEFERRED_DONE_KEY] = [*done, name][-DEFERRED_DONE_KEPT:]
                        applied += 1
            except sqlite3.OperationalError:
                raise  # locked, or the disk: the file stays for a later replay
            except Exception:
                # Input this version cannot apply: set aside (a dot-name is never
                # listed), not retried on every pass, not deleted.
                try:
                    os.replace(path, os.path.join(self.deferred_dir, f".unusable-{name}"))
                except FileNotFoundError:
                    pass
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return applied

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

    def __init__(
        self, queue: SharedQueue, session_id: str, lock_wait_s: float = layout.BUSY_TIMEOUT_S
    ) -> None:
        self.queue = queue
        self.session_id = session_id
        self.lock_wait_s = lock_wait_s
        # When the events happened, if not now (input replayed from a deferred file).
        self.at: float | None = None
        self.known = False
        self.state: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._next_seq = 0
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> SessionAppend:
        conn = sqlite3.connect(self.queue.db_path, timeout=self.lock_wait_s, isolation_level=None)
        self._conn = conn
        try:
            conn.execute("PRAGMA synchronous=FULL")  # durable when the commit returns
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: counters stay exact
            row = conn.execute(
                f"SELECT next_seq, state FROM {layout.SESSIONS_TABLE} WHERE session_id = ?",
                (self.session_id,),
            ).fetchone()
        except BaseException:
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


_MAX_DEFERRED_BYTES = 64 << 20  # a hook's input and its transcript reply, with room


def _session_tag(session_id: str) -> str:
    """A short, file-name-safe tag of a session id (to find its deferred files)."""
    import hashlib  # only when a writer defers or finds deferred files

    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
