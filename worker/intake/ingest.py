"""Events from outside a Python agent: ``agentspool emit``, ``agentspool ingest`` and
requeued dead letters.

Each writes into the spool as a producer, with the Python producer's guarantees:
every event passes ``events.validate`` (and the stricter input checks below) before
it is written, and it is written with ``queuefile.append_batch(fsync=True)``, so
once the command has reported it, the event survives a crash and a power loss.
The input contract is docs/EVENTS.md.

Who the producer is decides when the worker seals an unfinished session as
``abandoned`` (its producer is gone):

- ``ingest`` and ``dead requeue`` are producers of their own (``OwnQueue``): one
  queue file per invocation, marked closed when it ends. A session ingested whole,
  or streamed through one long-running ``ingest``, behaves like a Python producer's.
- ``emit`` writes one event per invocation on behalf of the process that called it
  (``OwnerQueue``): every emit of one caller appends to one queue file named after
  that process (pid and start time), which ``emit`` never closes. The worker then
  treats the caller as the producer: its sessions stay open while it runs and are
  sealed abandoned if it exits without ending them. (A queue file per emit would
  end "the producer" after every call and seal the session at once.)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agentspool.producer import events as ev
from agentspool.producer import queuefile
from agentspool.producer.usage import COUNT_KEYS

EMIT_LOCK_FILENAME = "emit.lock"  # serializes emits: queue creation and pseq reservation
EMIT_LOCK_TIMEOUT_S = 10.0
# A queue item the worker would refuse to parse (events.MAX_ITEM_BYTES where defined).
MAX_ITEM_BYTES: int = getattr(ev, "MAX_ITEM_BYTES", 8 << 20)
MAX_PID = 2**31
READ_CHUNK = 1 << 20
MAX_BATCH = 5000  # events per fsynced transaction
NEXT_PSEQ = "next_pseq"  # the owner queue's counter (queue metadata)

_ALLOWED_FIELDS = {
    kind: {*ev.ENVELOPE_FIELDS, *ev.REQUIRED_FIELDS[kind], *ev.OPTIONAL_FIELDS[kind]}
    for kind in ev.EVENT_TYPES
}


class EventRejected(ValueError):
    """An input event that cannot be written; the message says why."""


class OwnerNotRunning(RuntimeError):
    """``emit`` was asked to write for a process that does not exist."""


# ---- one event -------------------------------------------------------------------


def decode_json(data: str | bytes) -> Any:
    """Strict JSON: NaN and Infinity are not JSON, and no database column holds them."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise EventRejected(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise EventRejected("not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise EventRejected(f"not JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def prepare_event(
    obj: Any,
    *,
    producer_id: str,
    next_pseq: Callable[[], int],
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """An input event made ready to write, or ``EventRejected``.

    ``ts`` is filled in with ``now()`` when missing; ``producer_id`` and ``pseq`` are
    filled in (``producer_id`` and the next ``next_pseq()``) when both are missing,
    and kept when both are given (an event re-ingested with its identity is then a
    harmless replay). A pseq is taken only for an event that passed every check."""
    if not isinstance(obj, dict):
        raise EventRejected(f"an event is a JSON object, not {_json_kind(obj)}")
    event = dict(obj)
    kind = event.get("type")
    if kind == ev.MESSAGE:
        fold_model_and_usage(event)
    if isinstance(kind, str) and kind in _ALLOWED_FIELDS:
        unknown = sorted(set(event) - _ALLOWED_FIELDS[kind])
        if unknown:
            raise EventRejected(f"unknown field(s) for {kind}: {', '.join(unknown)}")
    if event.get("ts") is None:
        event["ts"] = now()
    given = [name for name in ("producer_id", "pseq") if event.get(name) is not None]
    if len(given) == 1:
        raise EventRejected("give both producer_id and pseq, or neither (then both are filled in)")
    fill_identity = not given
    if fill_identity:
        event["producer_id"] = producer_id
        event["pseq"] = 0  # a placeholder while the event is checked
    try:
        ev.validate(event)
    except ev.InvalidEvent as exc:
        raise EventRejected(str(exc)) from None
    pid = event.get("pid")
    if pid is not None and not 0 < pid < MAX_PID:
        raise EventRejected("pid must be a process id (1 to 2**31-1)")
    if fill_identity:
        event["pseq"] = next_pseq()
    return event


def fold_model_and_usage(event: dict[str, Any]) -> None:
    """A message's ``model``, ``usage`` and ``cost_usd`` fields move into its metadata,
    where the Python producer puts them and the worker reads them (docs/EVENTS.md)."""
    given = {
        name: event.pop(name) for name in (MODEL_FIELD, USAGE_FIELD, COST_FIELD) if name in event
    }
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        return
    model = given.get(MODEL_FIELD)
    if model is not None and not isinstance(model, str):
        raise EventRejected(f"model must be text, not {_json_kind(model)}")
    usage = given.get(USAGE_FIELD)
    if usage is not None:
        if not isinstance(usage, dict):
            raise EventRejected(
                'usage must be a JSON object of token counts, e.g. {"input_tokens": 812,'
                f' "output_tokens": 64}}, not {_json_kind(usage)}'
            )
        for key, count in usage.items():
            # A provider's usage also holds text and objects (Anthropic's service_tier,
            # OpenAI's *_details): kept as they are. What the mapping reads as a count
            # (agentspool.producer.usage) must be one, and no number may be negative.
            number = isinstance(count, int | float) and not isinstance(count, bool)
            if (number and count < 0) or (key in COUNT_KEYS and count is not None and not number):
                raise EventRejected(f"usage.{key} must be a count (a number of 0 or more)")
    cost = given.get(COST_FIELD)
    if cost is not None and (
        isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < 1e12
    ):
        raise EventRejected("cost_usd must be a number of US dollars, 0 or more")
    metadata = event.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise EventRejected("metadata must be a JSON object when model, usage or cost_usd is given")
    event["metadata"] = {**metadata, **given}


MODEL_FIELD = "model"
USAGE_FIELD = "usage"
COST_FIELD = "cost_usd"


def encode_event(event: dict[str, Any]) -> bytes:
    """The queue item for an event: compact JSON, as the Python producer writes it."""
    data = json.dumps(event, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(data) > MAX_ITEM_BYTES:
        raise EventRejected(f"the event is {len(data)} bytes; the limit is {MAX_ITEM_BYTES}")
    return data


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _host_label() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"


# ---- a queue file of our own (ingest, requeue) -----------------------------------


class OwnQueue:
    """A queue file of this process, for one invocation: created on the first write
    (so empty input leaves no file behind), marked closed by ``close``."""

    def __init__(self, spool_dir: Path, kind: str) -> None:
        self.producer_id = f"{kind}-{_host_label()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.queue_dir = spool_dir / queuefile.QUEUES_DIRNAME / self.producer_id
        self.written = 0
        self._next_pseq = 0
        self._conn: sqlite3.Connection | None = None

    def next_pseq(self) -> int:
        pseq = self._next_pseq
        self._next_pseq += 1
        return pseq

    def append(self, items: list[bytes]) -> None:
        """Write ``items`` in one fsynced transaction."""
        if not items:
            return
        if self._conn is None:
            pid = os.getpid()
            info = queuefile.ProducerInfo(
                producer_id=self.producer_id,
                pid=pid,
                host=socket.gethostname(),
                process_start=queuefile.process_start_time(pid),
                started_at=time.time(),
            )
            queuefile.create_queue_file(self.queue_dir, info)
            self._conn = queuefile.connect(self.queue_dir)
        queuefile.append_batch(self._conn, items, fsync=True)
        self.written += len(items)

    def close(self) -> None:
        """Tell the worker this producer will write no more (``closed_at``)."""
        if self._conn is None:
            return
        try:
            queuefile.set_counter(self._conn, "closed_at", time.time())
        finally:
            self._conn.close()
            self._conn = None


# ---- rejected lines: kept, never lost ---------------------------------------------
# ``ingest`` runs without the worker, and the worker alone writes worker.db (its
# dead letters and session index). So a rejected line goes into the same fsynced
# queue file as the good lines around it, wrapped in a record no event validates
# as; the worker dead-letters it (the line's bytes, its number and the reason) and
# marks its session, before it can sync the session's end from the same file.

REJECTED_LINE = "agentspool_rejected_line"
KEPT_LINE_BYTES = 1 << 20  # a rejected line is kept up to this size (a longer one is cut)


def rejected_line_item(number: int, reason: str, line: bytes | None) -> bytes:
    """The queue item that carries a rejected input line to the worker's dead letters."""
    kept = (line or b"")[:KEPT_LINE_BYTES]
    record = {
        REJECTED_LINE: {
            "line": number,
            "reason": reason,
            "text": kept.decode("utf-8", "replace"),
            "cut": line is None or len(line) > len(kept),
        }
    }
    return json.dumps(record, separators=(",", ":")).encode()


def read_rejected_line(obj: Any, producer_id: str) -> tuple[bytes, str] | None:
    """(the line's bytes, the dead letter's reason) if ``obj`` is a rejected-line record."""
    if not isinstance(obj, dict) or not isinstance(obj.get(REJECTED_LINE), dict):
        return None
    record = obj[REJECTED_LINE]
    cut = " (the line was cut to its first MiB)" if record.get("cut") else ""
    reason = f"{producer_id} line {record.get('line')}: rejected: {record.get('reason')}{cut}"
    return str(record.get("text", "")).encode("utf-8", "surrogatepass"), reason


# ---- ingest: JSON Lines ----------------------------------------------------------


@dataclass
class IngestReport:
    producer_id: str
    written: int = 0  # queue items: the events, and a record of each rejected line
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def ingest_lines(
    stream: IO[bytes],
    queue: OwnQueue,
    *,
    on_rejected: Callable[[int, str], None] = lambda line, reason: None,
    now: Callable[[], float] = time.time,
) -> IngestReport:
    """Write every good line of ``stream`` (JSON Lines, one event per line) into
    ``queue``; report each bad one (line number, reason) and go on. Blank lines are
    skipped. What arrives together is written together, so a slow stream (a pipe
    from a live agent) is on disk line by line, a file in large batches."""
    report = IngestReport(queue.producer_id)
    for batch in read_line_batches(stream, MAX_ITEM_BYTES):
        items: list[bytes] = []
        for number, line in batch:
            try:
                if line is None:
                    raise EventRejected(f"the line is longer than {MAX_ITEM_BYTES} bytes")
                if not line.strip():
                    continue
                event = prepare_event(
                    decode_json(line),
                    producer_id=queue.producer_id,
                    next_pseq=queue.next_pseq,
                    now=now,
                )
                items.append(encode_event(event))
            except EventRejected as exc:
                report.rejected.append((number, str(exc)))
                on_rejected(number, str(exc))
                items.append(rejected_line_item(number, str(exc), line))
                continue
            if len(items) >= MAX_BATCH:
                queue.append(items)
                items = []
        queue.append(items)
        report.written = queue.written - len(report.rejected)
    return report


def read_line_batches(
    stream: IO[bytes], max_line_bytes: int
) -> Iterator[list[tuple[int, bytes | None]]]:
    """Lines (numbered from 1, without the newline) in batches of what was available
    at once; ``None`` for a line longer than ``max_line_bytes`` (never held whole)."""
    read = getattr(stream, "read1", stream.read)
    pending = bytearray()
    too_long = False
    number = 0
    while chunk := read(READ_CHUNK):
        lines: list[tuple[int, bytes | None]] = []
        pos = 0
        while (end := chunk.find(b"\n", pos)) != -1:
            number += 1
            if too_long or len(pending) + end - pos > max_line_bytes:
                lines.append((number, None))
            else:
                pending += chunk[pos:end]
                lines.append((number, bytes(pending)))
            pending.clear()
            too_long = False
            pos = end + 1
        if not too_long:
            if len(pending) + len(chunk) - pos > max_line_bytes:
                too_long = True
                pending.clear()
            else:
                pending += chunk[pos:]
        if lines:
            yield lines
    if pending or too_long:
        yield [(number + 1, None if too_long else bytes(pending))]


# ---- emit: one event for the calling process --------------------------------------


class OwnerQueue:
    """The queue file ``emit`` appends to for one caller process (see the module doc)."""

    def __init__(self, spool_dir: Path, owner_pid: int) -> None:
        if owner_pid <= 0:
            raise OwnerNotRunning(f"{owner_pid} is not a process id")
        start = queuefile.process_start_time(owner_pid)
        if not start and not _process_exists(owner_pid):
            raise OwnerNotRunning(f"no process {owner_pid} is running to own these events")
        self.spool_dir = spool_dir
        self.owner_pid = owner_pid
        self.owner_start = start
        self.producer_id = f"emit-{_host_label()}-{owner_pid}-{start or '0'}"
        self.queue_dir = spool_dir / queuefile.QUEUES_DIRNAME / self.producer_id

    def write(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write one prepared event (its pseq is assigned here); return it as written."""
        with _emit_lock(self.spool_dir):
            if not queuefile.queue_db_path(self.queue_dir).exists():
                info = queuefile.ProducerInfo(
                    producer_id=self.producer_id,
                    pid=self.owner_pid,
                    host=socket.gethostname(),
                    process_start=self.owner_start,
                    started_at=time.time(),
                )
                queuefile.create_queue_file(self.queue_dir, info)
            conn = queuefile.connect(self.queue_dir)
            try:
                pseq = int(queuefile.read_counter(conn, NEXT_PSEQ) or 0)
                # Reserved before the write: a crash in between leaves a gap, never a repeat.
                queuefile.set_counter(conn, NEXT_PSEQ, pseq + 1)
                event = dict(event, producer_id=self.producer_id, pseq=pseq)
                queuefile.append_batch(conn, [encode_event(event)], fsync=True)
            finally:
                conn.close()
        return event


def emit_event(
    spool_dir: Path, owner_pid: int, fields: dict[str, Any], now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Check one event and write it on behalf of ``owner_pid``; return it as written."""
    queue = OwnerQueue(spool_dir, owner_pid)
    event = prepare_event(fields, producer_id=queue.producer_id, next_pseq=lambda: 0, now=now)
    return queue.write(event)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


@contextmanager
def _emit_lock(spool_dir: Path) -> Iterator[None]:
    spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = spool_dir / EMIT_LOCK_FILENAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + EMIT_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"another `agentspool emit` has held {path} for"
                        f" {EMIT_LOCK_TIMEOUT_S:g}s; is one stopped or hung?"
                    ) from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)
