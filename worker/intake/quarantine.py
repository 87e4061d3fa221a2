"""Damaged files are moved aside, never deleted: ``<spool>/quarantine/<name>.<timestamp>/``.

When SQLite says a queue file or a replica is not a database or is malformed, the
worker moves that file (with its ``-wal`` and ``-shm``) into a new directory under
``quarantine/``, writes the reason next to it in ``REASON``, logs it, and goes on
draining everything else. The quarantine directory is the record: ``status`` lists
it, and an operator can try ``sqlite3 FILE .recover`` on what it holds.

A transient failure (a locked file, a full disk, an I/O error) is never taken for
damage: only SQLite's own "corrupt" and "not a database" verdicts are.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agentspool.worker.intake.replica import REPLICAS_DIRNAME
from agentspool.worker.state import STATE_FILENAME, StateStore

log = logging.getLogger("agentspool.worker")

QUARANTINE_DIRNAME = "quarantine"
REASON_FILENAME = "REASON"

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_DAMAGE_WORDS = ("malformed", "not a database", "database corrupt")


@dataclass(frozen=True)
class Quarantined:
    name: str  # the directory under quarantine/
    reason: str
    at: float  # when it was moved there (seconds since the epoch)


def is_damage(exc: BaseException) -> bool:
    """Did SQLite report the file itself as damaged (not busy, locked or out of space)?"""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return any(word in text for word in _DAMAGE_WORDS)


def sqlite_files(db_path: Path) -> list[Path]:
    """A database file and the journal files SQLite keeps beside it."""
    return [db_path] + [db_path.with_name(db_path.name + s) for s in ("-wal", "-shm", "-journal")]


def quarantine(
    spool_dir: Path,
    name: str,
    reason: str,
    *,
    directory: Path | None = None,
    files: Iterable[Path] = (),
    now: Callable[[], float] = time.time,
) -> Path:
    """Move ``directory`` (whole) or ``files`` into ``quarantine/<name>.<timestamp>/``
    with a ``REASON`` file; return where they went. Missing files are skipped."""
    root = spool_dir / QUARANTINE_DIRNAME
    root.mkdir(mode=0o700, exist_ok=True)
    at = now()
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = root / f"{name}.{stamp}"
    n = 1
    while target.exists():  # two in the same microsecond: keep both
        n += 1
        target = root / f"{name}.{stamp}-{n}"
    if directory is not None:
        os.rename(directory, target)  # same file system: atomic, nothing copied
    else:
        target.mkdir(mode=0o700)
        for path in files:
            try:
                os.rename(path, target / path.name)
            except FileNotFoundError:
                continue
    (target / REASON_FILENAME).write_text(f"{at!r}\n{reason}\n", encoding="utf-8")
    _fsync_dir(root)
    log.error(
        "quarantined %s: %s; moved to %s (never deleted; try `sqlite3 FILE .recover`)",
        name,
        reason,
        target,
    )
    return target


def list_quarantined(spool_dir: Path) -> list[Quarantined]:
    """Everything in ``quarantine/``, oldest first."""
    root = spool_dir / QUARANTINE_DIRNAME
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            first, _, rest = (root / name / REASON_FILENAME).read_text("utf-8").partition("\n")
            found.append(Quarantined(name, rest.strip(), float(first)))
        except (OSError, ValueError):
            found.append(Quarantined(name, "", 0.0))
    return sorted(found, key=lambda q: (q.at, q.name))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mentions_damage(message: str) -> bool:
    """Does an error message (e.g. from reading a replica to sync it) sound like a
    damaged file?"""
    lowered = message.lower()
    return any(word in lowered for word in _DAMAGE_WORDS)


def check_database(path: Path, *, full: bool = False) -> str | None:
    """``None`` if SQLite finds ``path`` sound, else what is wrong with it.

    ``PRAGMA quick_check`` (or ``integrity_check`` with ``full``) on a read-only
    connection; a file that is not a database at all says so."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = conn.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return str(exc)
        raise
    finally:
        conn.close()
    problems = [str(r[0]) for r in rows if r[0] != "ok"]
    return "; ".join(problems[:5]) if problems else None


def open_state_store(spool_dir: Path) -> StateStore:
    """The worker's state store; a damaged ``worker.db`` is quarantined and rebuilt.

    ``worker.db`` is an index: everything in it but the dead letters can be rebuilt
    from the replicas (the dead letters stay readable in the quarantined copy)."""
    path = spool_dir / STATE_FILENAME
    problem: str | None = None
    if path.exists():
        try:
            problem = check_database(path)
        except sqlite3.Error as exc:
            log.warning("cannot check %s: %s", path, exc)
    if problem is None:
        try:
            return StateStore(spool_dir)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            problem = str(exc)
    quarantine(
        spool_dir, STATE_FILENAME, f"worker state is damaged: {problem}", files=sqlite_files(path)
    )
    store = StateStore(spool_dir)
    rebuilt = rebuild_state(store, spool_dir)
    log.warning("rebuilt the worker state from %d replica(s)", rebuilt)
    return store


def rebuild_state(store: StateStore, spool_dir: Path, now: Callable[[], float] = time.time) -> int:
    """Index every readable replica again; ended sessions become pending (a sync is
    idempotent, so one that was synced before is only written again). Returns how
    many sessions it indexed; a damaged replica is quarantined instead."""
    count = 0
    replicas = spool_dir / REPLICAS_DIRNAME
    for path in sorted(replicas.glob("*.db")) if replicas.is_dir() else []:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                sessions = conn.execute(
                    "SELECT id, agent, status, producer_id, started_at FROM sessions"
                )
                rows = sessions.fetchall()
                events, max_seq = conn.execute(
                    "SELECT count(*), coalesce(max(seq), -1) FROM applied_events"
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                quarantine(
                    spool_dir, path.name, f"replica is damaged: {exc}", files=sqlite_files(path)
                )
            else:
                log.error("cannot index replica %s: %s", path.name, exc)
            continue
        for session_id, agent, status, producer_id, started_at in rows:
            store.record_drained(
                session_id=session_id,
                replica=path.name,
                agent=agent,
                status=status,
                producer_id=producer_id,
                event_count=events,
                max_seq=max_seq,
                last_event_at=None,
                now=now(),
                started_at=started_at,
            )
            count += 1
    return count
