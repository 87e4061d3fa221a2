"""Session ids as people type them: the whole id, or a unique prefix of it.

People copy the first 8 characters of an id from a listing. A prefix that matches
one session means that session; one that matches several is an error listing them
(never a guess). The same rule holds locally (the worker's index of sessions) and
remotely (the database's ``sessions`` table).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentspool.worker import state as st

CANDIDATES_SHOWN = 10

# Above every character SQLite can hold: ``id >= p AND id < p + _TOP`` is "starts
# with p", and it uses the primary key index (LIKE would scan the table).
_TOP = "\U0010ffff"


class AmbiguousSessionId(LookupError):
    """A prefix that matches several sessions; ``candidates`` are some of them."""

    def __init__(self, prefix: str, candidates: Sequence[str]) -> None:
        self.prefix = prefix
        self.candidates = list(candidates)
        shown = ", ".join(self.candidates[:CANDIDATES_SHOWN])
        more = "" if len(self.candidates) <= CANDIDATES_SHOWN else ", ..."
        super().__init__(
            f"{prefix!r} is the start of several sessions ({shown}{more}); give more of the id"
        )


Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def resolve_prefix(prefix: str, query: Query, table: str) -> str | None:
    """The one session id that is ``prefix`` or starts with it, or None if none does.
    ``table`` is ``session_state`` (column ``session_id``) or ``sessions`` (``id``)."""
    sql = {
        "session_state": "SELECT session_id FROM session_state"
        " WHERE session_id >= ? AND session_id < ? ORDER BY session_id LIMIT ?",
        "sessions": "SELECT id FROM sessions WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
    }[table]
    found = [row[0] for row in query(sql, (prefix, prefix + _TOP, CANDIDATES_SHOWN + 1))]
    if prefix in found or len(found) == 1:
        return prefix if prefix in found else found[0]
    if found:
        raise AmbiguousSessionId(prefix, found)
    return None


def resolve_local(spool_dir: Path, prefix: str) -> str | None:
    """A local session id from a prefix, through the worker's index (None: unknown)."""
    if not prefix:
        return None
    try:
        with st.existing_state(spool_dir) as store:
            if store is None:
                return None
            conn = store.conn

            def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                return conn.execute(sql, tuple(params)).fetchall()

            return resolve_prefix(prefix, query, "session_state")
    except sqlite3.OperationalError:
        return None  # a worker creating its state right now
