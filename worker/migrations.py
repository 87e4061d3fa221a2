"""Apply the numbered migrations in ``agentspool/schema`` to a database.

``migrate`` works on any DB-API-like connection in autocommit mode
(``isolation_level=None``): ``sqlite3`` for replicas and the embedded database, or an
interactive Hrana stream; ``migrate_atomically`` sends each migration as one atomic
batch (the remote database, one request each). Each migration and its
``schema_version`` row commit in one transaction; the version check is repeated
inside that transaction (after ``BEGIN IMMEDIATE`` has taken the write lock), so two
processes migrating at once apply each migration exactly once.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol

from agentspool.producer.transaction import transaction

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class Connection(Protocol):
    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: list[str]


class SchemaError(RuntimeError):
    """The database's schema is newer than this agentspool or otherwise unusable."""


@functools.cache  # the package's files do not change while it runs; every replica asks
def available_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("agentspool.schema").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(
                Migration(int(match.group(1)), entry.name, split_statements(entry.read_text()))
            )
    return tuple(sorted(found, key=lambda m: m.version))


def latest_version() -> int:
    return max(m.version for m in available_migrations())


def split_statements(sql: str) -> list[str]:
    """Split a migration file into statements (one per ';' at the end of a line)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return [p.strip() for p in parts if p.strip()]


def applied_versions(conn: Connection) -> set[int]:
    rows = conn.execute("SELECT version FROM schema_version").fetchall()
    return {int(r[0]) for r in rows}


def pending_migrations(conn: Connection) -> list[Migration]:
    _ensure_version_table(conn)
    done = applied_versions(conn)
    return [m for m in available_migrations() if m.version not in done]


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending migration to a local SQLite file (a replica, the embedded
    database); return the versions this call applied."""
    try:
        # One statement when up to date: against a remote each costs round trips.
        done = applied_versions(conn)
    except Exception as exc:
        if "no such table" not in str(exc).lower():
            raise
        _ensure_version_table(conn)
        done = set()
    applied = []
    for migration in _to_apply(done):
        with transaction(conn):
            if migration.version in applied_versions(conn):  # another process won the race
                continue  # (an empty transaction: committing it changes nothing)
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (migration.version, datetime.now(UTC).isoformat(timespec="milliseconds")),
            )
        applied.append(migration.version)
    return applied


def migrate_atomically(
    run_atomic: Callable[[list[tuple[str, Sequence[Any]]]], None],
    applied_versions: Callable[[], set[int]],
) -> list[int]:
    """Apply every pending migration as one atomic batch each (for a remote database:
    one request per migration, instead of a round trip per statement). A batch that
    fails because another process applied the migration first (its schema_version row
    conflicts) is not an error. Returns the versions this call applied."""
    done = applied_versions()
    applied = []
    for migration in _to_apply(done):
        statements: list[tuple[str, Sequence[Any]]] = [(VERSION_TABLE, ())]
        statements += [(s, ()) for s in migration.statements]
        statements.append(
            (
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (migration.version, datetime.now(UTC).isoformat(timespec="milliseconds")),
            )
        )
        try:
            run_atomic(statements)
        except Exception:
            if migration.version in applied_versions():  # another process won the race
                continue
            raise
        applied.append(migration.version)
    return applied


VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"


def _to_apply(done: set[int]) -> list[Migration]:
    """The migrations not yet in ``done``, in order; refuses a database whose schema is
    newer than this agentspool knows."""
    newest_known = latest_version()
    if done and max(done) > newest_known:
        raise SchemaError(
            f"database schema version {max(done)} is newer than this agentspool "
            f"(knows up to {newest_known}); upgrade agentspool"
        )
    return [m for m in available_migrations() if m.version not in done]


def _ensure_version_table(conn: Connection) -> None:
    conn.execute(VERSION_TABLE)
