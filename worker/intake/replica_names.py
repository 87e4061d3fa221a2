"""Which file holds a session's replica: ``<spool>/replicas/<name>.db``.

A session id is any text (docs/EVENTS.md), a file name is not: an id that is a safe
file name is its own name, any other id is named by its hash. The two namespaces are
kept apart (see ``replica_path``), so two sessions never share a replica.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

REPLICAS_DIRNAME = "replicas"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}$")
# Hashed names hold a "~", which no safe name has: the namespaces cannot meet.
HASHED_PREFIX = "h~"
LEGACY_HASHED_PREFIX = "h-"  # what they were before; a safe name could equal one


def replica_path(spool_dir: Path, session_id: str) -> Path:
    """A file name for any session id: the id itself when it is a safe file name,
    else ``h~`` and 40 hex digits of its SHA-256.

    Hashed names were ``h-<hex>`` before, which is also a safe name: the session
    ``h-<sha256 of ../../x>`` shared the replica of ``../../x``. A replica an older
    agentspool named so is still used for its session, if it holds that session's row
    (so an upgrade orphans nothing, and a literal id of that shape, which keeps its
    own name, is never handed another session's file)."""
    replicas = spool_dir / REPLICAS_DIRNAME
    if _SAFE_NAME.match(session_id):
        return replicas / f"{session_id}.db"
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    path = replicas / f"{HASHED_PREFIX}{digest}.db"
    if not path.exists():
        legacy = replicas / f"{LEGACY_HASHED_PREFIX}{digest}.db"
        if legacy.exists() and _holds_session(legacy, session_id):
            return legacy
    return path


def _holds_session(path: Path, session_id: str) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return row is not None
