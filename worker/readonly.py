"""Reading a spool's SQLite files without creating or changing a file in the spool.

``mode=ro`` alone is not enough: a read-only connection to a WAL-mode file whose
``-wal`` is gone creates a ``-shm`` and a ``-wal`` beside it (the viewer once left
5,000 of each in a spool on one listing). The viewer, ``show`` and the other
read-only commands open spool files through ``readonly_uri``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote


def readonly_uri(path: Path) -> str:
    """The URI that reads a spool's SQLite file without creating or changing a file
    beside it. A file in rollback-journal mode (a closed replica) is read ``mode=ro``.
    A WAL file whose ``-wal`` exists is being written (the worker has it open, with its
    ``-shm``): ``mode=ro`` shares them, the only safe way to read it live. A WAL file
    without ``-wal`` has everything in the file itself, but ``mode=ro`` would still
    create a ``-shm`` (and a ``-wal``): it is read ``immutable=1`` instead."""
    uri = f"file:{quote(str(path))}?mode=ro"
    if not os.path.exists(f"{path}-wal") and _in_wal_mode(path):
        uri += "&immutable=1"
    return uri


def _in_wal_mode(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2  # the file format's write version
