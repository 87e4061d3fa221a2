"""``agentspool status --check``: is the spool healthy, and if not, why?

Unhealthy means something needs a person: a session failed to sync, a dead letter
exists, a damaged file was quarantined, a queue file cannot be read, or work has
waited longer than ``max_age`` seconds (an item in a queue file not yet drained, or
an ended session not yet synced), which is also how a worker that is down or stuck
shows up. Open sessions are not work waiting: they may legitimately last for hours.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentspool.producer import queuefile
from agentspool.worker import state as st
from agentspool.worker.reports.status import SpoolStatus

DEFAULT_MAX_AGE_S = 600.0


@dataclass
class Health:
    worker_alive: bool
    oldest_pending_age_s: float | None  # None: nothing is waiting
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def check_health(
    spool_dir: Path, status: SpoolStatus, max_age: float, now: float | None = None
) -> Health:
    now = time.time() if now is None else now
    oldest = oldest_pending_time(spool_dir)
    age = None if oldest is None else round(max(0.0, now - oldest), 3)
    health = Health(worker_alive=status.worker_pid is not None, oldest_pending_age_s=age)
    failed = status.sessions.get(st.FAILED, 0)
    if failed:
        last = status.last_sync_error
        why = f" (last error: {last['error']})" if last else ""
        health.problems.append(
            f"{failed} session(s) failed to sync{why}; fix the cause, then: agentspool retry --failed"
        )
    if status.dead_letters:
        health.problems.append(f"{status.dead_letters} dead letter(s); see: agentspool dead ls")
    if age is not None and age > max_age:
        hint = (
            "see: agentspool status"
            if health.worker_alive
            else "no worker is running; start one: agentspool worker run"
        )
        health.problems.append(f"work has waited {age:.0f}s, more than {max_age:g}s; {hint}")
    for p in status.producers:
        if p.error:
            health.problems.append(f"queue {p.producer_id} cannot be read: {p.error}")
    state_error = getattr(status, "worker_state_error", None)
    if state_error:
        health.problems.append(f"{state_error}; the worker rebuilds it when it starts")
    quarantined = getattr(status, "quarantined", None) or []
    if quarantined:
        health.problems.append(
            f"{len(quarantined)} damaged file(s) moved to {spool_dir / 'quarantine'};"
            " see: agentspool status --json (remove each once dealt with)"
        )
    return health


def oldest_pending_time(spool_dir: Path) -> float | None:
    """When the oldest waiting work arrived: the oldest queue item not yet drained, or
    the last event of the longest-waiting session that ended but is not synced."""
    times = []
    for queue_dir in queuefile.list_queue_dirs(spool_dir):
        try:
            with queuefile.reading(queue_dir) as conn:
                oldest = queuefile.oldest_pending_timestamp(conn)
        except sqlite3.Error:
            continue  # reported as a problem of its own
        if oldest is not None:
            times.append(oldest)
    try:
        with st.existing_state(spool_dir) as store:
            if store is not None:
                times.extend(s.seen_at for s in store.sessions(st.PENDING))
    except sqlite3.DatabaseError:
        pass  # a worker creating its state right now, or damage status reports
    return min(times) if times else None
