"""Where the spool is, and the names and table formats of the queue files in it.

This module holds only constants and one function, and imports nothing but ``os``:
the Claude Code hook reads it on every call, in a fresh process that must start in
milliseconds. ``queuefile.py`` (which owns the format) re-exports all of it.

A queue file is ``<spool>/queues/<producer_id>/data.db`` holding
- ``ack_queue_default``: persist-queue 1.1.0's ``SQLiteAckQueue`` table (``_id``,
  ``data`` = JSON bytes, ``timestamp``, ``status``), byte for byte, so persist-queue's
  own API can read and consume it;
- ``agentspool_producer``: who wrote the file and the producer's counters;
- in a *shared* queue file only (one written by many short-lived processes, see
  ``sharedqueue.py``): ``agentspool_sessions``, each session's next ``seq`` and the
  writer's own per-session state, advanced in the same transaction as each insert,
  and ``agentspool_seen``, the keys of what a writer logged (exactly once across
  sources).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs milliseconds to import; mypy reads this block
if TYPE_CHECKING:
    from collections.abc import Mapping

QUEUES_DIRNAME = "queues"
DB_FILENAME = "data.db"  # persist-queue's default file name inside the queue dir
QUEUE_NAME = "default"
TABLE = "ack_queue_default"  # persist-queue: f"{_TABLE_NAME}_{name}"
META_TABLE = "agentspool_producer"
SESSIONS_TABLE = "agentspool_sessions"
SEEN_TABLE = "agentspool_seen"

# persist-queue's AckStatus codes.
STATUS_INITED = 0
STATUS_READY = 1
STATUS_UNACK = 2
STATUS_ACKED = 5
STATUS_ACK_FAILED = 9

BUSY_TIMEOUT_S = 5.0

# persist-queue 1.1.0's SQLiteAckQueue._SQL_CREATE for the queue named "default", verbatim.
QUEUE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "_id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "data BLOB, timestamp FLOAT, status INTEGER)"
)
META_SQL = f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT)"
SESSIONS_SQL = (
    f"CREATE TABLE IF NOT EXISTS {SESSIONS_TABLE} ("
    "session_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, state TEXT)"
)
SEEN_SQL = (
    f"CREATE TABLE IF NOT EXISTS {SEEN_TABLE} ("
    "session_id TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (session_id, key)) WITHOUT ROWID"
)


def spool_path(environ: Mapping[str, str] | None = None) -> str:
    """``AGENTSPOOL_DIR``, else ``$XDG_STATE_HOME/agentspool`` (``~/.local/state/agentspool``)."""
    env = os.environ if environ is None else environ
    if env.get("AGENTSPOOL_DIR"):
        return os.path.expanduser(env["AGENTSPOOL_DIR"])
    state_home = env.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state_home, "agentspool")
