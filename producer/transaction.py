"""One SQLite transaction, written the same way everywhere in agentspool.

Every connection runs in autocommit mode (``isolation_level=None``) and says itself
where a transaction starts and ends. ``BEGIN IMMEDIATE`` takes the write lock up
front, so a busy file fails (after the busy timeout) before any work is done, not at
``COMMIT``. It lives in the producer because the worker may import the producer and
never the reverse.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(
    conn: sqlite3.Connection, *, begin: str = "BEGIN IMMEDIATE"
) -> Iterator[sqlite3.Connection]:
    """Run the block in one transaction: committed if it returns, rolled back if it
    raises (or if ``COMMIT`` itself fails: a busy or full file)."""
    conn.execute(begin)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if there still is one. After some errors
    (SQLITE_FULL at COMMIT on a full disk, an I/O error) SQLite has already rolled it
    back, and a ROLLBACK would raise "cannot rollback - no transaction is active" in
    place of the error that says what is wrong."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
