"""The worker's own bookkeeping: ``<spool>/worker.db``.

It indexes every session the worker has seen (so ``status`` need not open every
replica), holds the sync state machine, the dead letters, and who runs the worker
and how its sync goes (``worker_meta``). The index and the sync states can be
rebuilt from the replicas (``intake.quarantine.rebuild_state``, when the file is
damaged). The dead letters
cannot: the drain acks a dead-lettered item, so once its queue file is cleared this
is the only copy (a damaged file is quarantined, never deleted, so they stay there).

Sync states: ``open`` (no end marker yet) -> ``pending`` (ended or sealed as
abandoned; waiting to sync) -> ``synced``; a permanent remote error parks a session
as ``failed`` until ``agentspool retry``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentspool.producer.transaction import transaction
from agentspool.worker.readonly import connect_readonly

STATE_FILENAME = "worker.db"

OPEN = "open"
PENDING = "pending"
SYNCED = "synced"
FAILED = "failed"
SYNC_STATES = (OPEN, PENDING, SYNCED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS session_state (
    session_id      TEXT PRIMARY KEY,
    replica         TEXT NOT NULL,
    agent           TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,          -- the session's own: running, completed, ...
    sync_state      TEXT NOT NULL,          -- open, pending, synced, failed
    producer_id     TEXT,
    event_count     INTEGER NOT NULL DEFAULT 0,
    max_seq         INTEGER NOT NULL DEFAULT -1,
    last_event_at   TEXT,
    seen_at         REAL NOT NULL,          -- worker clock: last time an event arrived
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    synced_at       REAL,
    synced_change   INTEGER NOT NULL DEFAULT 0, -- watermark: the replica change landed last
    synced_log      TEXT,                       -- the replica change log it refers to
    checkpointed_at REAL NOT NULL DEFAULT 0,    -- worker clock: last checkpoint sent
    error_at        REAL,                       -- when last_error was recorded
    rejected_events INTEGER NOT NULL DEFAULT 0, -- its events kept as dead letters
    started_at      TEXT                        -- the session's start (the viewer's list)
);
CREATE INDEX IF NOT EXISTS session_state_by_sync_state ON session_state (sync_state, next_attempt_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    producer_id TEXT NOT NULL,
    item_id     INTEGER NOT NULL,
    data        BLOB,
    reason      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    session_id  TEXT,                   -- the session it belonged to, when it says
    UNIQUE (producer_id, item_id)
);
CREATE TABLE IF NOT EXISTS worker_meta (key TEXT PRIMARY KEY, value TEXT);
-- Sessions deleted on request (`agentspool delete`): their events are dropped, never
-- applied or sent again. applied_at: when the local copy (replica, rows) was removed.
CREATE TABLE IF NOT EXISTS tombstones (
    session_id     TEXT PRIMARY KEY,
    deleted_at     REAL NOT NULL,
    applied_at     REAL,
    dropped_events INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class SessionState:
    session_id: str
    replica: str
    agent: str
    status: str
    sync_state: str
    producer_id: str | None
    event_count: int
    max_seq: int
    last_event_at: str | None
    seen_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None
    synced_at: float | None
    synced_change: int = 0
    synced_log: str | None = None
    checkpointed_at: float = 0.0
    error_at: float | None = None
    # Events of this session that are dead letters (rejected by `ingest`'s checks or
    # by the worker): the session is missing them until they are requeued.
    rejected_events: int = 0


# Columns added after the first release, for a worker.db an older worker created.
_ADDED_COLUMNS = (
    ("synced_change", "INTEGER NOT NULL DEFAULT 0"),
    ("synced_log", "TEXT"),
    ("checkpointed_at", "REAL NOT NULL DEFAULT 0"),
    ("error_at", "REAL"),
    ("rejected_events", "INTEGER NOT NULL DEFAULT 0"),
    # Not in SessionState (a read-only store of an older worker.db has no such column):
    # only the viewer's list reads it, so it needs no replica per session.
    ("started_at", "TEXT"),
)


_COLUMNS = ", ".join(SessionState.__dataclass_fields__)


@contextmanager
def existing_state(spool_dir: Path, *, readonly: bool = True) -> Iterator[StateStore | None]:
    """The spool's ``worker.db`` for the block, closed after; None when no worker has run
    on this spool yet (a command that only reads must not create the file)."""
    if not (spool_dir / STATE_FILENAME).exists():
        yield None
        return
    store = StateStore(spool_dir, readonly=readonly)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def created_state(spool_dir: Path) -> Iterator[StateStore]:
    """The spool's ``worker.db`` for writing, created if no worker has run yet
    (``delete`` leaves tombstones that a first worker must find)."""
    store = StateStore(spool_dir)
    try:
        yield store
    finally:
        store.close()


class StateStore:
    def __init__(self, spool_dir: Path, *, readonly: bool = False) -> None:
        path = spool_dir / STATE_FILENAME
        if readonly:
            self.conn = connect_readonly(path)
        else:
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=5)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(session_state)")}
            for name, decl in _ADDED_COLUMNS:
                if name not in have:
                    self.conn.execute(f"ALTER TABLE session_state ADD COLUMN {name} {decl}")
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(dead_letters)")}
            if "session_id" not in have:
                self.conn.execute("ALTER TABLE dead_letters ADD COLUMN session_id TEXT")
            self.conn.execute(
                "CREATE INDEX IF NOT EXISTS dead_letters_by_session ON dead_letters (session_id)"
            )

    def close(self) -> None:
        self.conn.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.conn)

    # ---- sessions ----------------------------------------------------------

    def record_drained(
        self,
        *,
        session_id: str,
        replica: str,
        agent: str,
        status: str,
        producer_id: str | None,
        event_count: int,
        max_seq: int,
        last_event_at: str | None,
        now: float,
        started_at: str | None = None,
    ) -> None:
        """Record what the replica holds after a drain; an end marker makes it pending.

        A session that was synced or failed and receives events again (e.g. late
        events of an abandoned session) goes back to pending: the sync is idempotent."""
        sync_state = OPEN if status == "running" else PENDING
        self.conn.execute(
            "INSERT INTO session_state (session_id, replica, agent, status, sync_state,"
            " producer_id, event_count, max_seq, last_event_at, seen_at, rejected_events,"
            " started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            "  (SELECT count(*) FROM dead_letters WHERE session_id = ?1), ?11)"
            " ON CONFLICT (session_id) DO UPDATE SET agent = excluded.agent,"
            " started_at = coalesce(excluded.started_at, session_state.started_at),"
            " status = excluded.status, producer_id = excluded.producer_id,"
            " event_count = excluded.event_count, max_seq = excluded.max_seq,"
            " last_event_at = max(coalesce(session_state.last_event_at, ''), excluded.last_event_at),"
            " seen_at = excluded.seen_at,"
            " sync_state = CASE"
            "   WHEN session_state.sync_state = 'failed' AND excluded.sync_state = 'pending'"
            "     THEN 'failed'"  # stays parked until `agentspool retry`
            "   ELSE excluded.sync_state END",
            (session_id, replica, agent, status, sync_state, producer_id, event_count,
             max_seq, last_event_at, now, started_at),
        )  # fmt: skip

    def mark_sealed(self, session_id: str) -> None:
        self.conn.execute(
            "UPDATE session_state SET status = 'abandoned', sync_state = ?,"
            " next_attempt_at = 0 WHERE session_id = ?",
            (PENDING, session_id),
        )

    def mark_synced(self, session_id: str, now: float) -> None:
        self.conn.execute(
            "UPDATE session_state SET sync_state = ?, synced_at = ?, last_error = NULL"
            " WHERE session_id = ?",
            (SYNCED, now, session_id),
        )

    def record_landed(
        self,
        session_id: str,
        *,
        log_id: str,
        up_to: int,
        final: bool,
        built_at: float,
        now: float,
    ) -> bool:
        """A batch with a part of this session committed remotely: move its watermark.
        A final part makes it synced, unless events arrived after the batch was built
        (then it stays pending and the next batch sends them). Returns whether it is
        now synced."""
        self.conn.execute(
            "UPDATE session_state SET synced_change = ?, synced_log = ?, checkpointed_at = ?,"
            " attempts = 0, next_attempt_at = 0, last_error = NULL,"
            " sync_state = CASE WHEN ? AND sync_state = ? AND seen_at < ? THEN ? ELSE sync_state END,"
            " synced_at = CASE WHEN ? AND sync_state = ? AND seen_at < ? THEN ? ELSE synced_at END"
            " WHERE session_id = ?",
            (up_to, log_id, built_at, final, PENDING, built_at, SYNCED,
             final, PENDING, built_at, now, session_id),
        )  # fmt: skip
        row = self.conn.execute(
            "SELECT sync_state FROM session_state WHERE session_id = ?", (session_id,)
        ).fetchone()
        return bool(final and row is not None and row[0] == SYNCED)

    def due_for_checkpoint(self, limit: int = 100_000) -> list[SessionState]:
        """Open sessions with events the database has not seen yet (idle ones are not)."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM session_state"
            " WHERE sync_state = ? AND seen_at > checkpointed_at ORDER BY seen_at LIMIT ?",
            (OPEN, limit),
        )
        return [SessionState(*r) for r in rows]

    def mark_retry(self, session_id: str, error: str, next_attempt_at: float) -> None:
        self.conn.execute(
            "UPDATE session_state SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_at = ?, error_at = ? WHERE session_id = ?",
            (error, next_attempt_at, time.time(), session_id),
        )

    def mark_failed(self, session_id: str, error: str) -> None:
        self.conn.execute(
            "UPDATE session_state SET sync_state = ?, attempts = attempts + 1, last_error = ?,"
            " error_at = ? WHERE session_id = ?",
            (FAILED, error, time.time(), session_id),
        )

    def retry_failed(self, session_id: str | None = None) -> int:
        """Move failed sessions (one, or all) back to pending, and give a pending one
        (when named) a fresh backoff: due now, attempts from 0. Returns how many."""
        sql = "UPDATE session_state SET sync_state = ?, attempts = 0, next_attempt_at = 0"
        if session_id is None:
            sql += " WHERE sync_state = ?"
            params: tuple[Any, ...] = (PENDING, FAILED)
        else:
            sql += " WHERE sync_state IN (?, ?) AND session_id = ?"
            params = (PENDING, FAILED, PENDING, session_id)
        return int(self.conn.execute(sql, params).rowcount)

    def get(self, session_id: str) -> SessionState | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM session_state WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        return SessionState(*row) if row else None

    def sessions(self, sync_state: str | None = None) -> list[SessionState]:
        if sync_state is None:
            rows = self.conn.execute(f"SELECT {_COLUMNS} FROM session_state ORDER BY seen_at")
        else:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM session_state WHERE sync_state = ? ORDER BY seen_at",
                (sync_state,),
            )
        return [SessionState(*r) for r in rows]

    def due_for_sync(self, now: float, limit: int = 100) -> list[SessionState]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM session_state"
            " WHERE sync_state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at, seen_at LIMIT ?",
            (PENDING, now, limit),
        )
        return [SessionState(*r) for r in rows]

    def next_attempt_time(self) -> float | None:
        row = self.conn.execute(
            "SELECT min(next_attempt_at) FROM session_state WHERE sync_state = ?", (PENDING,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SYNC_STATES, 0)
        for state, n in self.conn.execute(
            "SELECT sync_state, count(*) FROM session_state GROUP BY sync_state"
        ):
            counts[state] = n
        counts["abandoned"] = self.conn.execute(
            "SELECT count(*) FROM session_state WHERE status = 'abandoned'"
        ).fetchone()[0]
        return counts

    def last_error(self) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT session_id, last_error FROM session_state WHERE last_error IS NOT NULL"
            # The newest error, whichever session it is of (not the newest session's).
            " AND sync_state IN (?, ?) ORDER BY coalesce(error_at, 0) DESC, seen_at DESC LIMIT 1",
            (PENDING, FAILED),
        ).fetchone()
        return (row[0], row[1]) if row else None

    # ---- dead letters ------------------------------------------------------

    def add_dead_letter(
        self,
        producer_id: str,
        item_id: int,
        data: bytes,
        reason: str,
        session_id: str | None = None,
    ) -> None:
        """Keep an item the worker could not apply; the session it names is marked."""
        self.conn.execute(
            "INSERT OR IGNORE INTO dead_letters"
            " (producer_id, item_id, data, reason, created_at, session_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            # Text from a queue (a file name, a reason quoting an event) may not be
            # UTF-8; a dead letter must be recordable whatever it holds.
            (
                _storable(producer_id),
                item_id,
                data,
                _storable(reason),
                time.time(),
                None if session_id is None else _storable(session_id),
            ),
        )
        if session_id is not None and _storable(session_id) == session_id:  # a real id
            self._count_rejected([session_id])

    def _count_rejected(self, session_ids: list[str]) -> None:
        for session_id in session_ids:
            self.conn.execute(
                "UPDATE session_state SET rejected_events ="
                " (SELECT count(*) FROM dead_letters WHERE session_id = ?1) WHERE session_id = ?1",
                (session_id,),
            )

    def sessions_with_rejected_events(self) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM session_state WHERE rejected_events > 0"
            ).fetchone()[0]
        )

    def dead_letters(self, limit: int = 100) -> Iterator[tuple[int, str, int, bytes, str, float]]:
        yield from self.conn.execute(
            "SELECT id, producer_id, item_id, data, reason, created_at FROM dead_letters"
            " ORDER BY id LIMIT ?",
            (limit,),
        )

    def dead_letter_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def dead_letters_by_producer(self) -> dict[str, int]:
        return dict(
            self.conn.execute("SELECT producer_id, count(*) FROM dead_letters GROUP BY producer_id")
        )

    def dead_letter(self, dead_id: int) -> tuple[int, str, int, bytes, str, float] | None:
        row: tuple[int, str, int, bytes, str, float] | None = self.conn.execute(
            "SELECT id, producer_id, item_id, data, reason, created_at FROM dead_letters"
            " WHERE id = ?",
            (dead_id,),
        ).fetchone()
        return row

    def dead_letter_ids(self) -> list[int]:
        return [int(r[0]) for r in self.conn.execute("SELECT id FROM dead_letters ORDER BY id")]

    def delete_dead_letters(self, dead_ids: list[int]) -> int:
        """Delete dead letters by id (after a requeue or a purge); return how many."""
        with self.transaction() as conn:
            sessions = [
                row[0]
                for i in dead_ids
                for row in conn.execute(
                    "SELECT session_id FROM dead_letters WHERE id = ? AND session_id IS NOT NULL",
                    (i,),
                )
            ]
            deleted = sum(
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (i,)).rowcount
                for i in dead_ids
            )
            self._count_rejected(sorted(set(sessions)))
            return deleted

    # ---- tombstones (deleted sessions) -------------------------------------

    def add_tombstones(self, session_ids: list[str], now: float) -> None:
        """Mark sessions deleted; the worker (or ``delete`` itself) removes the local copy."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO tombstones (session_id, deleted_at) VALUES (?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET applied_at = NULL",
                [(session_id, now) for session_id in session_ids],
            )

    def tombstoned(self, session_ids: list[str]) -> set[str]:
        if not session_ids:
            return set()
        marks = ", ".join("?" * len(session_ids))
        return {
            row[0]
            for row in self.conn.execute(
                f"SELECT session_id FROM tombstones WHERE session_id IN ({marks})", session_ids
            )
        }

    def tombstones_to_apply(self) -> list[str]:
        rows = self.conn.execute("SELECT session_id FROM tombstones WHERE applied_at IS NULL")
        return [row[0] for row in rows]

    def remove_session(self, session_id: str, now: float) -> None:
        """Forget a deleted session: its index row and dead letters; the tombstone stays."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM session_state WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM dead_letters WHERE session_id = ?", (session_id,))
            conn.execute(
                "UPDATE tombstones SET applied_at = ? WHERE session_id = ?", (now, session_id)
            )

    def count_dropped(self, session_id: str, events: int) -> None:
        self.conn.execute(
            "UPDATE tombstones SET dropped_events = dropped_events + ? WHERE session_id = ?",
            (events, session_id),
        )

    # ---- meta --------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO worker_meta (key, value) VALUES (?, ?)", (key, value)
        )

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM worker_meta").fetchall())


def _storable(text: str) -> str:
    """``text`` with anything UTF-8 cannot hold (lone surrogates) as visible escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
