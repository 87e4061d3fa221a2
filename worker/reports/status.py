"""What ``agentspool status`` reports: queues, sessions, dead letters, the worker.

Read-only: it opens the queue files and the worker's state store without taking
any write lock, so it answers while the worker is busy (or not running at all).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentspool.producer import queuefile
from agentspool.worker import state as st
from agentspool.worker.daemon.lock import lock_holder
from agentspool.worker.intake.producers import producer_gone
from agentspool.worker.intake.quarantine import is_damage, list_quarantined


@dataclass
class ProducerStatus:
    producer_id: str
    pid: int | None
    alive: bool | None
    ready: int = 0  # waiting for the worker
    unacked: int = 0  # taken by a consumer but not acked (persist-queue's API only)
    acked: int = 0  # applied, not yet cleared from the file
    dead: int = 0  # dead-lettered items from this producer
    dropped: int = 0  # events the producer could not spool (buffer full, closed)
    error: str | None = None


@dataclass
class SpoolStatus:
    spool: str
    worker_pid: int | None
    producers: list[ProducerStatus] = field(default_factory=list)
    sessions: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    # Sessions missing events that are dead letters (a line `ingest` rejected, ...).
    sessions_with_rejected_events: int = 0
    last_sync_error: dict[str, str] | None = None
    # Damaged files moved to <spool>/quarantine/ (never deleted): name, reason, at.
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    worker_state_error: str | None = None  # worker.db cannot be read
    # The running worker's sync: batches in flight (and since when), landed, failures.
    sync: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def work_left(self) -> int:
        """Sessions not synced (open, pending, failed) plus queue items not drained."""
        s = self.sessions
        ready = sum(p.ready for p in self.producers)
        return s[st.OPEN] + s[st.PENDING] + s[st.FAILED] + ready


def spool_status(spool_dir: Path) -> SpoolStatus:
    pid = lock_holder(spool_dir)
    status = SpoolStatus(
        str(spool_dir), pid, sessions=dict.fromkeys([*st.SYNC_STATES, "abandoned"], 0)
    )
    dead_by_producer: dict[str, int] = {}
    try:
        with st.existing_state(spool_dir) as store:
            if store is not None:
                dead_by_producer = _add_worker_state(status, store)
    except sqlite3.OperationalError as exc:
        # A worker that is starting has created the file but not its tables yet.
        if "no such table" not in str(exc):
            raise
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        # The worker quarantines and rebuilds it when it starts.
        status.worker_state_error = f"{st.STATE_FILENAME} is damaged: {exc}"
    for queue_dir in queuefile.list_queue_dirs(spool_dir):
        status.producers.append(
            _producer_status(queue_dir, dead_by_producer.get(queue_dir.name, 0))
        )
    status.quarantined = [asdict(q) for q in list_quarantined(spool_dir)]
    return status


def _add_worker_state(status: SpoolStatus, store: st.StateStore) -> dict[str, int]:
    """Fill in sessions, dead letters and the last error; return dead letters by producer."""
    status.sessions = store.counts()
    status.dead_letters = store.dead_letter_count()
    status.sessions_with_rejected_events = store.sessions_with_rejected_events()
    last = store.last_error()
    if last is not None:
        status.last_sync_error = {"session_id": last[0], "error": last[1]}
    meta = store.meta()
    if status.worker_pid is not None and "sync" in meta:
        status.sync = json.loads(meta["sync"])
    return store.dead_letters_by_producer()


def _producer_status(queue_dir: Path, dead: int) -> ProducerStatus:
    try:
        with queuefile.reading(queue_dir) as conn:
            info = queuefile.read_producer_info(conn)
            counts = queuefile.count_by_status(conn)
    except sqlite3.Error as exc:
        return ProducerStatus(queue_dir.name, None, None, dead=dead, error=str(exc))
    return ProducerStatus(
        producer_id=queue_dir.name,
        pid=info.pid if info else None,
        alive=None if info is None else not producer_gone(info),
        ready=counts.get(queuefile.STATUS_INITED, 0) + counts.get(queuefile.STATUS_READY, 0),
        unacked=counts.get(queuefile.STATUS_UNACK, 0),
        acked=counts.get(queuefile.STATUS_ACKED, 0),
        dead=dead,
        dropped=info.dropped if info else 0,
    )
