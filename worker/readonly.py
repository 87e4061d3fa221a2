"""Reading a spool's SQLite files without creating or changing a file in the spool.

``mode=ro`` alone is not enough. A read-only connection to a WAL-mode file whose
``-wal`` is gone creates a ``-shm`` and a ``-wal`` beside it (the viewer once left
5,000 of each in a spool on one listing), and one that shares a live ``-shm`` writes
its read marks into it. The viewer, ``show`` and the other read-only commands open
spool files through ``connect_readonly``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

# A writer may open or close the file between looking at it and opening it; the
# second look sees where it went.
_OPEN_ATTEMPTS = 3


def readonly_uri(path: Path) -> str:
    """The URI that reads a spool's SQLite file without creating or changing a file
    beside it, chosen by the file's state:

    - rollback-journal mode (a closed replica): ``mode=ro``, which takes only locks;
    - WAL mode with its ``-wal`` and ``-shm`` (a writer has it open, or one crashed):
      ``readonly_shm=1`` maps the ``-shm`` read-only, so the reader sees everything
      committed and writes no read mark into it (SQLite 3.22+);
    - WAL mode without a ``-wal``: everything is in the file itself, but ``mode=ro``
      would create a ``-shm`` and a ``-wal``; ``immutable=1`` reads it as it is.

    A ``-wal`` without its ``-shm`` (someone deleted it) is read with ``readonly_shm``
    too: the open fails with "unable to open database file" rather than make one."""
    uri = f"file:{quote(str(path))}?mode=ro"
    if not _in_wal_mode(path):
        return uri
    if os.path.exists(f"{path}-wal"):
        return uri + "&readonly_shm=1"
    return uri + "&immutable=1"


def connect_readonly(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection to ``path`` through ``readonly_uri``, already past the
    open: a file whose state changed between the look and the open is looked at
    again."""
    if not path.exists():
        raise FileNotFoundError(str(path))
    for attempt in range(_OPEN_ATTEMPTS):
        conn = sqlite3.connect(
            readonly_uri(path),
            uri=True,
            isolation_level=None,
            timeout=timeout,
            check_same_thread=False,
        )
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
            if attempt == _OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _in_wal_mode(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2  # the file format's write version
