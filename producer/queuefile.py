"""The on-disk queue format: one persist-queue ``SQLiteAckQueue`` file per producer.

This module is the single owner of that format, on both sides. The file has
persist-queue 1.1.0's exact table, so persist-queue's own API can read and consume
it, but writes and reads go through batched SQL here because persist-queue's
per-item API costs an fsync per put and a full scan per get (see DESIGN.md). The
producer does not import persist-queue at all (its package pulls in asyncio and ssl:
8.5 MB in every agent process); a contract test checks that persist-queue's own API
sees exactly the queue state these functions produce.

Layout: ``<spool>/queues/<producer_id>/data.db`` holding
- ``ack_queue_default``: persist-queue's table (``_id``, ``data`` = JSON bytes,
  ``timestamp``, ``status``), and
- ``agentspool_producer``: who wrote the file (pid, host, process start time) and
  the producer's counters (events dropped), for liveness and reporting;
- in a shared queue file (``sharedqueue.py``) also ``agentspool_sessions``.
The names and SQL are constants in ``layout.py``, re-exported here.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The names and table formats live in layout.py (the hook path imports only that).
from .layout import (  # noqa: F401  (re-exported: the format's one public home is here)
    BUSY_TIMEOUT_S,
    DB_FILENAME,
    META_TABLE,
    QUEUE_NAME,
    QUEUES_DIRNAME,
    SESSIONS_SQL,
    SESSIONS_TABLE,
    STATUS_ACK_FAILED,
    STATUS_ACKED,
    STATUS_INITED,
    STATUS_READY,
    STATUS_UNACK,
    TABLE,
)
from .layout import META_SQL as _META_SQL
from .layout import QUEUE_SQL as _QUEUE_SQL
from .transaction import transaction


@dataclass(frozen=True)
class ProducerInfo:
    producer_id: str
    pid: int
    host: str
    process_start: str  # /proc/<pid>/stat start time; guards against PID reuse
    started_at: float
    closed_at: float | None = None
    dropped: int = 0
    # A shared queue file (sharedqueue.py) outlives every process that writes to it:
    # its producer is never "gone", and its sessions end only by their end marker
    # or the silence timeout.
    shared: bool = False


@dataclass(frozen=True)
class QueueItem:
    item_id: int
    data: bytes


def queue_db_path(queue_dir: Path) -> Path:
    return queue_dir / DB_FILENAME


def process_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), or "" if unknown.

    A PID can be reused by an unrelated process; the pair (pid, start time) cannot.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else ""


def create_queue_file(queue_dir: Path, info: ProducerInfo) -> None:
    """Create the queue file: persist-queue's table plus our metadata table.

    The file is built in a hidden directory and renamed into place whole, so the
    worker (which watches ``queues/``) never opens a half-made file: a reader holding
    a new file open makes a ``journal_mode`` pragma fail at once."""
    # Only this user may read the logs or forge events: 0700 directories, 0600 files.
    queues = queue_dir.parent
    queues.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    queues.mkdir(mode=0o700, exist_ok=True)
    building = queues / f".new-{queue_dir.name}"
    shutil.rmtree(building, ignore_errors=True)  # a previous attempt that failed
    building.mkdir(mode=0o700)
    # Created 0600 before SQLite opens it: SQLite gives -wal and -shm the same mode.
    os.close(os.open(queue_db_path(building), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(queue_db_path(building), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: stays WAL for every opener
        conn.execute(_QUEUE_SQL)
        conn.execute(_META_SQL)
        with transaction(conn):
            conn.executemany(
                f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)",
                [
                    ("producer_id", info.producer_id),
                    ("pid", str(info.pid)),
                    ("host", info.host),
                    ("process_start", info.process_start),
                    ("started_at", repr(info.started_at)),
                    ("dropped", "0"),
                ],
            )
    finally:
        conn.close()  # the last connection: checkpoints, so the file is complete alone
    if info.shared:
        _make_shared(queue_db_path(building))
    _fsync_path(queue_db_path(building))
    os.rename(building, queue_dir)
    _fsync_path(queues)


def _make_shared(path: Path) -> None:
    """Mark a queue file being built as shared (sharedqueue.py) and add its sessions
    table; done before the file is renamed into place, so no reader sees it unmarked
    (the worker would take the creating process's exit for the producer's)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(SESSIONS_SQL)
        conn.execute(f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES ('shared', '1')")
    finally:
        conn.close()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def connect(queue_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    path = queue_db_path(queue_dir)
    if queue_dir.is_symlink() or path.is_symlink():
        # SQLite would follow it (into another user's file, for a worker run as root).
        raise OSError(errno.ELOOP, "a symbolic link in the spool; not followed", str(path))
    if readonly:
        # mode=ro still takes part in WAL locking, so readers see committed data only.
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
    else:
        # No journal_mode pragma: the file is WAL since its creation, and the pragma
        # can fail at once (not after the busy timeout) while another process writes.
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        # NORMAL: a commit survives a crash of the process; FULL is set per commit
        # when a caller waits for durability (see append_batch).
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.isolation_level = None  # we issue BEGIN/COMMIT ourselves
    return conn


@contextmanager
def reading(queue_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a queue file (``status``, ``queue ls``), closed after."""
    conn = connect(queue_dir, readonly=True)
    try:
        yield conn
    finally:
        conn.close()


def append_batch(conn: sqlite3.Connection, items: Sequence[bytes], *, fsync: bool) -> None:
    """Append serialized events in one transaction.

    ``fsync=True`` makes this commit durable against power loss too, not only
    against a crash of the process.
    """
    now = time.time()
    if fsync:
        conn.execute("PRAGMA synchronous=FULL")
    try:
        with transaction(conn):
            conn.executemany(
                f"INSERT INTO {TABLE} (data, timestamp, status) VALUES (?, ?, {STATUS_INITED})",
                [(item, now) for item in items],
            )
    finally:
        if fsync:
            conn.execute("PRAGMA synchronous=NORMAL")


def live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the queue file in use (pages minus free pages; deleted rows free theirs)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def sync_to_disk(conn: sqlite3.Connection) -> None:
    """Make every earlier commit durable against power loss: one small commit with
    ``synchronous=FULL`` fsyncs the WAL, and with it every frame written before."""
    conn.execute("PRAGMA synchronous=FULL")
    try:
        set_counter(conn, "flushed_at", time.time())
    finally:
        conn.execute("PRAGMA synchronous=NORMAL")


def set_counter(conn: sqlite3.Connection, key: str, value: int | float) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)", (key, repr(value))
    )


# ---- consumer side (the worker) -------------------------------------------------


def read_pending(conn: sqlite3.Connection, after_id: int, limit: int) -> list[QueueItem]:
    """Items not yet acked, in order, after ``after_id`` (a primary-key range scan)."""
    rows = conn.execute(
        f"SELECT _id, data FROM {TABLE} WHERE _id > ? AND status < {STATUS_UNACK}"
        " ORDER BY _id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    return [QueueItem(int(r[0]), _as_bytes(r[1])) for r in rows]


def read_pending_within(
    conn: sqlite3.Connection, after_id: int, limit: int, max_bytes: int
) -> list[QueueItem]:
    """Like ``read_pending``, but the items' data add up to at most ``max_bytes``
    (always at least one item, however large): the worker's memory stays bounded."""
    sizes = conn.execute(
        f"SELECT _id, length(data) FROM {TABLE}"
        f" WHERE _id > ? AND status < {STATUS_UNACK} ORDER BY _id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    total, last = 0, after_id
    for n, (item_id, size) in enumerate(sizes):
        total += int(size or 0)
        if n and total > max_bytes:
            break
        last = int(item_id)
    if last == after_id:
        return []
    rows = conn.execute(
        f"SELECT _id, data FROM {TABLE}"
        f" WHERE _id > ? AND _id <= ? AND status < {STATUS_UNACK} ORDER BY _id",
        (after_id, last),
    ).fetchall()
    return [QueueItem(int(r[0]), _as_bytes(r[1])) for r in rows]


def ack(conn: sqlite3.Connection, item_ids: Iterable[int], status: int = STATUS_ACKED) -> None:
    ids = list(item_ids)
    if not ids:
        return
    with transaction(conn):
        conn.executemany(f"UPDATE {TABLE} SET status = ? WHERE _id = ?", [(status, i) for i in ids])


def clear_acked(conn: sqlite3.Connection, up_to_id: int) -> int:
    """Delete acked rows up to ``up_to_id`` in a transaction of its own (as persist-queue's
    ``clear_acked_data`` does), keeping the file small; returns how many."""
    with transaction(conn):
        cur = conn.execute(
            f"DELETE FROM {TABLE} WHERE _id <= ? AND status = {STATUS_ACKED}", (up_to_id,)
        )
    return cur.rowcount


def requeue_acked(conn: sqlite3.Connection, wanted: Callable[[bytes], bool]) -> list[int]:
    """Mark ready again every acked item whose data ``wanted`` accepts (the worker
    rebuilds a quarantined replica from them); returns their ids, in order."""
    rows = conn.execute(
        f"SELECT _id, data FROM {TABLE} WHERE status = {STATUS_ACKED} ORDER BY _id"
    ).fetchall()
    ids = [int(item_id) for item_id, data in rows if wanted(_as_bytes(data))]
    ack(conn, ids, status=STATUS_READY)
    return ids


def count_by_status(conn: sqlite3.Connection) -> dict[int, int]:
    return {
        int(status): int(n)
        for status, n in conn.execute(f"SELECT status, COUNT(*) FROM {TABLE} GROUP BY status")
    }


def oldest_pending_timestamp(conn: sqlite3.Connection) -> float | None:
    """When the oldest item not yet acked was appended (seconds since the epoch), or None."""
    row = conn.execute(
        f"SELECT min(timestamp) FROM {TABLE} WHERE status < {STATUS_UNACK}"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def read_counter(conn: sqlite3.Connection, key: str) -> float | None:
    """A value stored with ``set_counter``, or None if it was never set."""
    try:
        row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:
        return None  # no metadata table yet
    return None if row is None else float(row[0])


def read_producer_info(conn: sqlite3.Connection) -> ProducerInfo | None:
    try:
        meta = dict(conn.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
    except sqlite3.OperationalError:
        return None  # not created yet (the producer is between the two steps)
    if "producer_id" not in meta:
        return None
    return ProducerInfo(
        producer_id=meta["producer_id"],
        pid=int(meta.get("pid", "0")),
        host=meta.get("host", ""),
        process_start=meta.get("process_start", ""),
        started_at=float(meta.get("started_at", "0")),
        closed_at=float(meta["closed_at"]) if meta.get("closed_at") else None,
        dropped=int(float(meta.get("dropped", "0"))),
        shared=meta.get("shared") == "1",
    )


def list_queue_dirs(spool_dir: Path) -> list[Path]:
    root = spool_dir / QUEUES_DIRNAME
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    # Dot-names are queue files still being built (see create_queue_file).
    return [root / n for n in names if not n.startswith(".") and (root / n / DB_FILENAME).exists()]


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return repr(value).encode()
