"""Drain producer queue files into per-session replicas.

For each queue: read a batch of pending items (a primary-key range scan, not
persist-queue's per-item scan), decode and validate them, apply each session's
events to its replica in one transaction, record the session in the state store,
and only then ack the items. A crash anywhere in between replays the items, and
replays are harmless (see replica.py). An item that cannot be decoded or applied
goes to the dead-letter store with the reason; the drain goes on.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentspool.producer import events as ev
from agentspool.producer import queuefile
from agentspool.worker.intake import quarantine
from agentspool.worker.intake.hook_inbox import HookInbox
from agentspool.worker.intake.ingest import read_rejected_line
from agentspool.worker.intake.redaction import BUILTIN_REDACTOR, Redactor
from agentspool.worker.intake.replica import Replica, iso, replica_path
from agentspool.worker.intake.tombstones import DeletedSessions
from agentspool.worker.state import SessionState, StateStore

log = logging.getLogger("agentspool.worker")

MAX_OPEN_REPLICAS = 64  # each open replica costs ~250 KB of SQLite cache
CLEAR_ACKED_EVERY = 10_000  # acked rows deleted from a live producer's file this often
MAX_BATCH_BYTES = 64 << 20  # queue data read per batch (a larger single item is read alone)


@dataclass
class QueueCursor:
    """What the worker knows about one producer's queue file."""

    queue_dir: Path
    conn: sqlite3.Connection
    last_id: int = 0  # every item up to here is acked or dead-lettered
    acked_since_clear: int = 0
    info: queuefile.ProducerInfo | None = None


@dataclass
class DrainResult:
    items: int = 0
    applied: int = 0
    dead_lettered: int = 0
    sessions: set[str] = field(default_factory=set)


class Drainer:
    def __init__(
        self,
        spool_dir: Path,
        state: StateStore,
        *,
        batch_size: int = 2000,
        redactor: Redactor | None = BUILTIN_REDACTOR,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool_dir = spool_dir
        self.state = state
        self.batch_size = batch_size
        self.redactor = redactor  # secrets in events are replaced before a replica keeps them
        self.now = now
        self.monotonic = monotonic
        self._started = monotonic()
        self._seen: dict[str, float] = {}  # session -> monotonic time of its latest event
        self.cursors: dict[Path, QueueCursor] = {}
        self._rewind: dict[Path, int] = {}  # queue -> read again from after this id
        self._replicas: OrderedDict[str, Replica] = OrderedDict()
        self._inodes: dict[str, tuple[int, int]] = {}  # session -> its open replica's file
        self.hook_inbox = HookInbox(spool_dir, state)  # Claude Code's, before each pass
        self.deleted = DeletedSessions(state)  # tombstones: `agentspool delete`
        # Attempts that failed and will be retried (a file that cannot be opened, read
        # or written: a full disk, an I/O error); the loop pauses when this grows.
        self.failures = 0

    # ---- queues ------------------------------------------------------------

    def cursor(self, queue_dir: Path) -> QueueCursor | None:
        cursor = self.cursors.get(queue_dir)
        if cursor is None:
            try:
                conn = queuefile.connect(queue_dir)
                try:
                    info = queuefile.read_producer_info(conn)
                except BaseException:
                    conn.close()
                    raise
            except sqlite3.Error as exc:
                if quarantine.is_damage(exc):
                    self._quarantine_queue(queue_dir, exc)
                else:
                    log.error("cannot open queue %s: %s", queue_dir.name, exc)
                    self.failures += 1
                return None
            cursor = self.cursors[queue_dir] = QueueCursor(queue_dir, conn, info=info)
        elif cursor.info is None:
            cursor.info = queuefile.read_producer_info(cursor.conn)
        return cursor

    def forget(self, queue_dir: Path) -> None:
        cursor = self.cursors.pop(queue_dir, None)
        if cursor is not None:
            cursor.conn.close()

    def drain_all(self, max_batches_per_queue: int = 50) -> DrainResult:
        """One pass over every queue file; returns what it did."""
        total = DrainResult()
        self.hook_inbox.collect()
        for queue_dir in queuefile.list_queue_dirs(self.spool_dir):
            cursor = self.cursor(queue_dir)
            if cursor is None:
                continue
            for _ in range(max_batches_per_queue):
                try:
                    result = self.drain_batch(cursor)
                except Exception:  # one queue's surprise must not stop the others
                    log.exception("cannot drain queue %s (will retry)", queue_dir.name)
                    self.failures += 1
                    break
                total.items += result.items
                total.applied += result.applied
                total.dead_lettered += result.dead_lettered
                total.sessions |= result.sessions
                if result.items < self.batch_size:
                    break
        return total

    def drain_batch(self, cursor: QueueCursor) -> DrainResult:
        result = DrainResult()
        if cursor.queue_dir in self._rewind:
            cursor.last_id = min(cursor.last_id, self._rewind.pop(cursor.queue_dir))
        try:
            items = queuefile.read_pending_within(
                cursor.conn, cursor.last_id, self.batch_size, MAX_BATCH_BYTES
            )
        except sqlite3.Error as exc:
            if quarantine.is_damage(exc):
                self._quarantine_queue(cursor.queue_dir, exc)
            else:
                log.error("cannot read queue %s: %s", cursor.queue_dir.name, exc)
                self.failures += 1
            return result
        if not items:
            return result
        producer_id = cursor.queue_dir.name
        by_session: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        dead: list[tuple[int, bytes, str]] = []
        raw: dict[int, bytes] = {}
        for item in items:
            if len(item.data) > ev.MAX_ITEM_BYTES:
                reason = f"queue item of {len(item.data)} bytes is over the {ev.MAX_ITEM_BYTES} byte limit"
                dead.append((item.item_id, item.data, reason))
                continue
            try:
                decoded = json.loads(item.data)
                rejected = read_rejected_line(decoded, producer_id)
                if rejected is not None:  # a line `ingest` refused: kept as a dead letter
                    dead.append((item.item_id, *rejected))
                    continue
                event = ev.validate(decoded)
            except (ValueError, TypeError, RecursionError) as exc:
                dead.append((item.item_id, item.data, f"invalid event: {exc}"))
                continue
            raw[item.item_id] = item.data
            by_session.setdefault(event["session_id"], []).append((item.item_id, event))

        done_ids = [item_id for item_id, _, _ in dead] + self.deleted.drop(by_session)
        first_blocked: int | None = None
        for session_id, session_events in by_session.items():
            applied, failed_dead, blocked_at = self._apply_session_guarded(
                session_id, session_events, raw
            )
            result.applied += applied
            dead.extend(failed_dead)
            done_ids.extend(i for i, _ in session_events if blocked_at is None or i < blocked_at)
            if blocked_at is not None:
                first_blocked = (
                    blocked_at if first_blocked is None else min(first_blocked, blocked_at)
                )
            result.sessions.add(session_id)

        for item_id, data, reason in dead:
            log.warning("dead-lettered item %d of %s: %s", item_id, producer_id, reason)
            session = _session_of(data)
            self.state.add_dead_letter(
                producer_id, item_id, data, reason, session if isinstance(session, str) else None
            )
        try:
            queuefile.ack(cursor.conn, done_ids)
        except sqlite3.Error as exc:  # acks are retried by replaying: harmless
            log.warning("cannot ack in %s: %s", cursor.queue_dir.name, exc)
            self.failures += 1
            return result
        result.items = len(done_ids)
        result.dead_lettered = len(dead)
        cursor.last_id = items[-1].item_id if first_blocked is None else first_blocked - 1
        cursor.acked_since_clear += len(done_ids)
        if cursor.acked_since_clear >= CLEAR_ACKED_EVERY:
            self._clear_acked(cursor)
        if first_blocked is not None:
            result.items = 0  # stop this queue for now; the next pass retries
        return result

    def _apply_session_guarded(
        self,
        session_id: str,
        session_events: list[tuple[int, dict[str, Any]]],
        raw: dict[int, bytes],
    ) -> tuple[int, list[tuple[int, bytes, str]], int | None]:
        """``_apply_session``, with every failure kept to this session's items: a file
        that cannot be written now (a full disk, a lock) blocks them until a later pass;
        anything else is about the items themselves, and they are dead-lettered with the
        reason. Nothing a session's events hold may stall the rest of the queue."""
        try:
            return self._apply_session(session_id, session_events, raw)
        except (sqlite3.OperationalError, OSError) as exc:
            log.error("cannot record session %r: %s (will retry)", session_id, exc)
            self.failures += 1
            self._drop_replica(session_id)
            return 0, [], session_events[0][0]
        except Exception as exc:
            log.exception("cannot record session %r: its events are dead-lettered", session_id)
            self._drop_replica(session_id)
            reason = f"cannot record: {type(exc).__name__}: {exc}"
            return 0, [(item_id, raw[item_id], reason) for item_id, _ in session_events], None

    def _apply_session(
        self,
        session_id: str,
        session_events: list[tuple[int, dict[str, Any]]],
        raw: dict[int, bytes],
    ) -> tuple[int, list[tuple[int, bytes, str]], int | None]:
        """Apply one session's events; returns (applied, dead letters, first blocked id).

        The whole group goes in one transaction. If it fails, events are applied one
        by one: an event the database rejects is dead-lettered; a failure of the file
        itself (disk full, I/O error) blocks the rest until a later pass. A replica
        SQLite reports as damaged is quarantined and the events go to a new one."""
        dead: list[tuple[int, bytes, str]] = []
        try:
            replica = self.replica(session_id)
        except ReplicaRebuilt:  # the next pass applies all of the session, in order
            return 0, dead, session_events[0][0]
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            log.error("cannot open replica of session %s: %s (will retry)", session_id, exc)
            self.failures += 1
            return 0, dead, session_events[0][0]
        try:
            applied = replica.apply(e for _, e in session_events)
        except sqlite3.OperationalError as exc:
            log.error("cannot write replica of session %s: %s (will retry)", session_id, exc)
            self.failures += 1
            self._drop_replica(session_id)
            return 0, dead, session_events[0][0]
        except (sqlite3.Error, ValueError, TypeError, OverflowError, RecursionError) as exc:
            if quarantine.is_damage(exc):
                self.quarantine_replica(session_id, exc)
                return 0, dead, session_events[0][0]  # the next pass uses a new replica
            applied = 0
            for item_id, event in session_events:
                try:
                    applied += replica.apply([event])
                except sqlite3.OperationalError as exc:
                    log.error("cannot write replica of session %s: %s", session_id, exc)
                    self.failures += 1
                    self._drop_replica(session_id)
                    return applied, dead, item_id
                except (sqlite3.Error, ValueError, TypeError, OverflowError, RecursionError) as exc:
                    if quarantine.is_damage(exc):
                        self.quarantine_replica(session_id, exc)
                        return 0, dead, session_events[0][0]  # all again, in a new replica
                    dead.append((item_id, raw[item_id], f"cannot apply: {exc}"))
        last_event_at = iso(max(e["ts"] for _, e in session_events))
        if self._record(session_id, replica, last_event_at) not in (None, "running"):
            # Ended: closing it leaves one small self-contained file (replica.close),
            # which readers open without creating anything beside it. Events that
            # still come (from another producer, replays) reopen it.
            self._drop_replica(session_id)
        return applied, dead, None

    def _record(self, session_id: str, replica: Replica, last_event_at: str) -> str | None:
        """Record what the replica now holds in the worker's index; return the
        session's status (None: no session row yet)."""
        summary = replica.summary(session_id)
        if summary is None:
            return None
        known = self.state.get(session_id)
        if known is not None and known.event_count == summary.event_count:
            return summary.status  # only replays: nothing changed
        self._seen[session_id] = self.monotonic()
        self.state.record_drained(
            session_id=session_id,
            replica=replica.path.name,
            agent=summary.agent,
            status=summary.status,
            producer_id=summary.producer_id,
            event_count=summary.event_count,
            max_seq=summary.max_seq,
            last_event_at=last_event_at,
            now=self.now(),
            started_at=summary.started_at,
        )
        return summary.status

    def silent(self, session: SessionState, now: float, abandon_after: float) -> bool:
        """Has the session been quiet for longer than ``abandon_after`` seconds?

        Both clocks must say so: the wall clock (``seen_at`` is persisted, so silence
        survives a restart) and this worker's monotonic clock since it last saw an
        event of the session, or since it started. A step of the wall clock (NTP, a
        resumed VM) therefore never abandons a live session; after a restart a silent
        session is sealed at most ``abandon_after`` later than it would have been."""
        if abandon_after <= 0:
            return False
        quiet_since = self._seen.get(session.session_id, self._started)
        return (
            now - session.seen_at > abandon_after and self.monotonic() - quiet_since > abandon_after
        )

    def _clear_acked(self, cursor: QueueCursor) -> None:
        try:
            queuefile.clear_acked(cursor.conn, cursor.last_id)
        except sqlite3.Error as exc:  # the rows stay acked; the next clear takes them
            log.warning("cannot clear acked items in %s: %s", cursor.queue_dir.name, exc)
            return
        cursor.acked_since_clear = 0

    # ---- replicas ----------------------------------------------------------

    def replica(self, session_id: str) -> Replica:
        """The session's open replica. One that SQLite reports as damaged when it is
        opened is quarantined, and a new, empty one takes its place."""
        replica = self._replicas.get(session_id)
        if replica is not None:
            if self._still_in_place(session_id, replica):
                self._replicas.move_to_end(session_id)
                return replica
            self.rebuild_replica(session_id, "was deleted or replaced while the worker had it open")
            raise ReplicaRebuilt(session_id)
        path = replica_path(self.spool_dir, session_id)
        try:
            replica = Replica(path, self.redactor)
        except sqlite3.DatabaseError as exc:
            if not quarantine.is_damage(exc):
                raise
            self.quarantine_replica(session_id, exc)
            replica = Replica(path, self.redactor)
        self._replicas[session_id] = replica
        self._inodes[session_id] = _identity(path)
        while len(self._replicas) > MAX_OPEN_REPLICAS:
            _, oldest = self._replicas.popitem(last=False)
            oldest.close()
        return replica

    def _still_in_place(self, session_id: str, replica: Replica) -> bool:
        """Is the open replica still the file at its path? A file deleted (or replaced)
        under the worker would take the rest of the session into an unlinked inode."""
        return _identity(replica.path) == self._inodes.get(session_id, (-1, -1))

    def rebuild_replica(self, session_id: str, why: str) -> int:
        """A replica that is gone (or not the worker's any more) is rebuilt from the
        session's events still in queue files: what is left at its path (a stranger's
        file, a stale ``-wal``) is quarantined, the session's acked items are marked
        ready again, and the next pass applies them all to a new replica. Returns how
        many items were marked."""
        self._drop_replica(session_id)
        path = replica_path(self.spool_dir, session_id)
        reason = f"replica of session {session_id!r} {why}"
        if any(f.exists() for f in quarantine.sqlite_files(path)):
            quarantine.quarantine(
                self.spool_dir, path.name, reason, files=quarantine.sqlite_files(path)
            )
        replayed = self._replay_acked(session_id)
        log.warning("%s: %d acked events queued again to rebuild it", reason, replayed)
        return replayed

    def forget_replica(self, session_id: str) -> None:
        """Close a cached replica before its file is deleted (retention)."""
        self._drop_replica(session_id)

    def recover_if_damaged(self, session_id: str, error: str) -> bool:
        """After a failed sync whose error sounds like a damaged replica: check the
        file; if it is damaged, quarantine it and rebuild it from the queue files at
        once (so the retry finds it). Returns whether it did."""
        path = replica_path(self.spool_dir, session_id)
        if not path.exists():  # deleted: every event of an unsynced session is still queued
            self.rebuild_replica(session_id, "does not exist")
            self.drain_all()
            return path.exists()
        if not quarantine.mentions_damage(error):
            return False
        try:
            verdict = quarantine.check_database(path)
        except sqlite3.Error as exc:  # busy, locked: not a verdict; the retry will tell
            log.warning("cannot check the replica of session %s: %s", session_id, exc)
            return False
        if verdict is None:
            return False
        self.quarantine_replica(session_id, verdict)
        self.drain_all()
        return True

    def quarantine_replica(self, session_id: str, exc: BaseException | str) -> None:
        """Move a damaged replica aside (never deleted). A new replica is rebuilt from
        the session's events still in queue files (acked items stay in a file until it
        is cleared or removed); events no longer there remain in the quarantined copy."""
        self._drop_replica(session_id)
        path = replica_path(self.spool_dir, session_id)
        quarantine.quarantine(
            self.spool_dir,
            path.name,
            f"replica of session {session_id!r} is damaged: {exc}",
            files=quarantine.sqlite_files(path),
        )
        replayed = self._replay_acked(session_id)
        log.warning("session %s: %d acked events queued again to rebuild it", session_id, replayed)

    def _replay_acked(self, session_id: str) -> int:
        """Mark the session's acked items in every queue file ready again; return how many."""
        total = 0
        for queue_dir in queuefile.list_queue_dirs(self.spool_dir):
            cursor = self.cursor(queue_dir)
            if cursor is None:
                continue
            try:
                ids = queuefile.requeue_acked(
                    cursor.conn, lambda data: _session_of(data) == session_id
                )
            except sqlite3.Error as exc:
                log.error("cannot replay session %s from %s: %s", session_id, queue_dir.name, exc)
                continue
            if ids:
                rewind = min(self._rewind.get(queue_dir, ids[0] - 1), ids[0] - 1)
                self._rewind[queue_dir] = rewind
                total += len(ids)
        return total

    def _quarantine_queue(self, queue_dir: Path, exc: BaseException) -> None:
        """Move a damaged queue file aside (never deleted); the other queues go on. A
        live producer whose next write fails starts a new file in its place."""
        self.forget(queue_dir)
        quarantine.quarantine(
            self.spool_dir,
            queue_dir.name,
            f"queue file of producer {queue_dir.name} is damaged: {exc}",
            directory=queue_dir,
        )

    def _drop_replica(self, session_id: str) -> None:
        self._inodes.pop(session_id, None)
        replica = self._replicas.pop(session_id, None)
        if replica is not None:
            try:
                replica.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        for replica in self._replicas.values():
            replica.close()
        self._replicas.clear()
        for queue_dir in list(self.cursors):
            self.forget(queue_dir)


class ReplicaRebuilt(Exception):
    """The session's open replica was gone: it is being rebuilt from the queue files."""


def _identity(path: Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (-2, -2)
    return (info.st_dev, info.st_ino)


def _session_of(data: bytes) -> object:
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return event.get("session_id") if isinstance(event, dict) else None
