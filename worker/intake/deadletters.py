"""Dead letters: queue items the worker could not apply, kept with the reason.

The worker records them in ``<spool>/worker.db`` (state.py) and drains on. An
operator lists and reads them, requeues them once the cause is fixed, or purges them.

A requeue checks the event again and writes it into the spool through a queue file
of its own (``requeue-<host>-<pid>-<id>``, closed at once, fsynced), and only then
deletes the dead letter: a crash in between leaves both, and the event applied twice
is a harmless replay, because the stored bytes go back unchanged and keep their
``producer_id`` and ``pseq``. A corrected event given in place of the stored bytes
follows the input contract of ``agentspool ingest`` (docs/EVENTS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentspool.producer import events as ev
from agentspool.worker import state as st
from agentspool.worker.intake.ingest import (
    MAX_ITEM_BYTES,
    EventRejected,
    OwnQueue,
    decode_json,
    encode_event,
    prepare_event,
)
from agentspool.worker.intake.replica import iso


@dataclass(frozen=True)
class DeadLetter:
    id: int
    producer_id: str  # the queue file the item came from
    item_id: int  # its id in that queue file
    data: bytes  # the item exactly as it was queued
    reason: str
    created_at: float

    def event(self) -> dict[str, Any] | None:
        """The item decoded, when it is a JSON object; else None."""
        try:
            value = json.loads(self.data)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None

    def to_json(self, *, with_data: bool = False) -> dict[str, Any]:
        event = self.event() or {}
        out: dict[str, Any] = {
            "id": self.id,
            "producer_id": self.producer_id,
            "item_id": self.item_id,
            "created_at": iso(self.created_at),
            "reason": self.reason,
            "bytes": len(self.data),
            "session_id": _text_or_none(event.get("session_id")),
            "type": _text_or_none(event.get("type")),
            "seq": event.get("seq") if isinstance(event.get("seq"), int) else None,
        }
        if with_data:
            out["data"] = self.data.decode("utf-8", "replace")
            out["event"] = self.event()
        return out


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _letter(row: tuple[Any, ...]) -> DeadLetter:
    dead_id, producer_id, item_id, data, reason, created_at = row
    if data is None:
        data = b""
    elif isinstance(data, str | int | float):  # SQLite's column holds whatever it was given
        data = str(data).encode("utf-8", "surrogatepass")
    return DeadLetter(int(dead_id), producer_id, int(item_id), bytes(data), reason,
                      float(created_at))  # fmt: skip


def list_dead_letters(spool_dir: Path, limit: int) -> tuple[list[DeadLetter], int]:
    """The first ``limit`` dead letters (oldest first) and how many there are in all."""
    with st.existing_state(spool_dir) as store:
        if store is None:
            return [], 0
        return [_letter(r) for r in store.dead_letters(limit)], store.dead_letter_count()


def get_dead_letters(spool_dir: Path, dead_ids: list[int] | None) -> list[DeadLetter]:
    """The dead letters with these ids (all of them for None); raises ``LookupError``
    naming an id that does not exist."""
    with st.existing_state(spool_dir) as store:
        if store is None:
            if dead_ids:
                raise LookupError(dead_ids[0])
            return []
        ids = store.dead_letter_ids() if dead_ids is None else dead_ids
        letters = []
        for dead_id in ids:
            row = store.dead_letter(dead_id)
            if row is None:
                raise LookupError(dead_id)
            letters.append(_letter(row))
        return letters


@dataclass
class RequeueReport:
    producer_id: str | None = None  # the queue file the events went into (None: none did)
    requeued: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (dead letter id, reason)


def check_stored(data: bytes) -> bytes:
    """The stored bytes, if the worker would accept them now; else ``EventRejected``."""
    if len(data) > MAX_ITEM_BYTES:
        raise EventRejected(f"the item is {len(data)} bytes; the limit is {MAX_ITEM_BYTES}")
    try:
        ev.validate(decode_json(data))
    except ev.InvalidEvent as exc:
        raise EventRejected(str(exc)) from None
    return data


def requeue(
    spool_dir: Path, letters: list[DeadLetter], replacement: bytes | None = None
) -> RequeueReport:
    """Queue each dead letter's event again and delete the dead letters that were.

    ``replacement`` (for one dead letter) is a corrected event to queue instead of the
    stored bytes. A dead letter whose event is still invalid is kept and reported."""
    report = RequeueReport()
    queue = OwnQueue(spool_dir, "requeue")
    items: list[bytes] = []
    for letter in letters:
        try:
            if replacement is None:
                items.append(check_stored(letter.data))
            else:
                event = prepare_event(
                    decode_json(replacement),
                    producer_id=queue.producer_id,
                    next_pseq=queue.next_pseq,
                )
                items.append(encode_event(event))
        except EventRejected as exc:
            report.refused.append((letter.id, str(exc)))
            continue
        report.requeued.append(letter.id)
    if not items:
        return report
    try:
        queue.append(items)
    finally:
        queue.close()
    report.producer_id = queue.producer_id
    delete_dead_letters(spool_dir, report.requeued)
    return report


def delete_dead_letters(spool_dir: Path, dead_ids: list[int]) -> int:
    with st.existing_state(spool_dir, readonly=False) as store:
        return 0 if store is None else store.delete_dead_letters(dead_ids)
