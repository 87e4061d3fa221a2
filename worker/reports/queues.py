"""What waits in the producers' queue files: ``agentspool queue ls`` and ``queue peek``.

Read-only: queue files are opened with ``mode=ro``; nothing is taken, acked or changed,
so looking never disturbs the worker or a producer.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agentspool.producer import events as ev
from agentspool.producer import queuefile
from agentspool.worker.intake.redaction import Redactor
from agentspool.worker.intake.replica import iso
from agentspool.worker.reports.status import spool_status


@dataclass
class QueueSummary:
    producer_id: str
    pid: int | None
    host: str | None
    alive: bool | None  # None: unknown (another host, or the file is unreadable)
    started_at: str | None
    closed_at: str | None  # the producer said it will write no more
    ready: int  # items waiting for the worker
    unacked: int
    acked: int  # applied, not yet cleared from the file
    dead: int  # items of this queue in the dead letters
    dropped: int  # events the producer lost before they reached the file
    oldest_pending_age_s: float | None  # how long the oldest waiting item has waited
    error: str | None  # the file could not be read
    # Written by many short-lived processes (the Claude Code hook): pid is the one that
    # created it, and the queue is never "gone".
    shared: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def list_queues(spool_dir: Path, now: float | None = None) -> list[QueueSummary]:
    now = time.time() if now is None else now
    summaries = []
    for p in spool_status(spool_dir).producers:
        info, oldest, error = _read_queue_details(
            spool_dir / queuefile.QUEUES_DIRNAME / p.producer_id
        )
        summaries.append(
            QueueSummary(
                producer_id=p.producer_id,
                pid=p.pid,
                host=info.host if info else None,
                alive=p.alive,
                started_at=iso(info.started_at) if info and info.started_at else None,
                closed_at=iso(info.closed_at) if info and info.closed_at else None,
                ready=p.ready,
                unacked=p.unacked,
                acked=p.acked,
                dead=p.dead,
                dropped=p.dropped,
                oldest_pending_age_s=None if oldest is None else round(max(0.0, now - oldest), 3),
                error=p.error or error,
                shared=bool(info and info.shared),
            )
        )
    return summaries


def _read_queue_details(
    queue_dir: Path,
) -> tuple[queuefile.ProducerInfo | None, float | None, str | None]:
    try:
        with queuefile.reading(queue_dir) as conn:
            return (
                queuefile.read_producer_info(conn),
                queuefile.oldest_pending_timestamp(conn),
                None,
            )
    except sqlite3.Error as exc:
        return None, None, str(exc)


@dataclass
class PendingEvent:
    producer_id: str
    item_id: int
    event: dict[str, Any] | None  # the decoded item (when it is a JSON object)
    error: str | None  # why the worker will dead-letter it, if it will
    raw: str | None  # the item as text, when it is not a JSON object

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def redacted(self, redactor: Redactor) -> PendingEvent:
        """As the worker will store it: every text redacted (docs/RELIABILITY.md)."""
        counts: Counter[str] = Counter()
        return replace(
            self,
            event=None if self.event is None else redactor.value(self.event, counts),
            error=None if self.error is None else redactor.text(self.error, counts),
            raw=None if self.raw is None else redactor.text(self.raw, counts),
        )


def peek(spool_dir: Path, limit: int, producer_id: str | None = None) -> list[PendingEvent]:
    """The first ``limit`` items no worker has taken yet, queue by queue, decoded.
    Raises ``LookupError`` when ``producer_id`` names no queue file."""
    queue_dirs = queuefile.list_queue_dirs(spool_dir)
    if producer_id is not None:
        queue_dirs = [d for d in queue_dirs if d.name == producer_id]
        if not queue_dirs:
            raise LookupError(producer_id)
    found: list[PendingEvent] = []
    for queue_dir in queue_dirs:
        if len(found) >= limit:
            break
        try:
            with queuefile.reading(queue_dir) as conn:
                items = queuefile.read_pending(conn, 0, limit - len(found))
        except sqlite3.Error:
            continue  # `queue ls` reports unreadable files
        found.extend(_decode(queue_dir.name, item) for item in items)
    return found


def _decode(producer_id: str, item: queuefile.QueueItem) -> PendingEvent:
    try:
        value = json.loads(item.data)
    except (ValueError, RecursionError) as exc:
        return PendingEvent(producer_id, item.item_id, None, f"not JSON: {exc}",
                            item.data.decode("utf-8", "replace"))  # fmt: skip
    if not isinstance(value, dict):
        return PendingEvent(producer_id, item.item_id, None, "not a JSON object",
                            item.data.decode("utf-8", "replace"))  # fmt: skip
    try:
        ev.validate(value)
        error = None
    except ev.InvalidEvent as exc:
        error = str(exc)
    return PendingEvent(producer_id, item.item_id, value, error, None)
