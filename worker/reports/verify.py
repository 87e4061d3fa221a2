"""SQLite's own check of every file in the spool (the library of ``agentspool verify``).

Runs ``PRAGMA quick_check`` (``--full``: ``integrity_check``) on every producer queue
file, every session replica, the worker's ``worker.db`` and the embedded database,
on read-only connections (safe while the worker runs). Files already in
``quarantine/`` are not checked: they are known to be bad (``list_quarantined``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agentspool.producer import queuefile
from agentspool.worker.config import EMBEDDED_DB_FILENAME
from agentspool.worker.intake.quarantine import check_database
from agentspool.worker.intake.replica import REPLICAS_DIRNAME
from agentspool.worker.state import STATE_FILENAME


@dataclass(frozen=True)
class FileCheck:
    path: str  # relative to the spool
    ok: bool
    problem: str | None = None


def spool_files(spool_dir: Path) -> list[Path]:
    """Every SQLite file the spool holds (queue files, replicas, worker.db, embedded db)."""
    files = [queuefile.queue_db_path(q) for q in queuefile.list_queue_dirs(spool_dir)]
    replicas = spool_dir / REPLICAS_DIRNAME
    if replicas.is_dir():
        files += sorted(p for p in replicas.iterdir() if p.suffix == ".db" and p.is_file())
    for name in (STATE_FILENAME, EMBEDDED_DB_FILENAME):
        if (spool_dir / name).is_file():
            files.append(spool_dir / name)
    return files


def verify_spool(spool_dir: Path, *, full: bool = False) -> list[FileCheck]:
    checks = []
    for path in spool_files(spool_dir):
        try:
            problem = check_database(path, full=full)
        except sqlite3.Error as exc:  # locked or busy for 10 s: say so, do not guess
            problem = f"could not be checked: {exc}"
        checks.append(FileCheck(str(path.relative_to(spool_dir)), problem is None, problem))
    return checks
