"""Apply the numbered migrations in ``agentspool/schema`` to a database.

``migrate`` works on any DB-API-like connection in autocommit mode
(``isolation_level=None``): ``sqlite3`` for replicas and the embedded database, or an
interactive Hrana stream; ``migrate_atomically`` sends each migration as one atomic
batch (the remote database, one request each). Each migration and its
``schema_version`` row commit in one transaction; the version check is repeated
inside that transaction (after ``BEGIN IMMEDIATE`` has taken the write lock), so two
processes migrating at once apply each migration exactly once.

Compatibility with newer versions: each migration file may say, in a
``-- compatible_from: N`` line, the oldest schema version a worker must know to go on
writing to a database at that version (an additive migration -- nullable columns,
indexes, new tables -- leaves older workers working, because every statement they
send names its columns). The line is recorded in the version's ``schema_version`` row
(column ``compatible_from``, from version 2 on). A worker that meets versions it does
not know goes on when every one of them declares it compatible, and stops with
``SchemaError`` otherwise (no line: a version only workers that know it can write).

Migrations in steps: a file with a ``-- repeat: until it changes no row`` line holds
one statement that changes a bounded number of rows (a backfill); it is run again and
again, each run its own transaction against a remote (Turso gives a transaction 5 s,
and a backfill grows with the database), until it changes no row, and only then is
its version recorded. A process stopped halfway goes on at its next migration.
"""

from __future__ import annotations

import functools
import itertools
import re
import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol

from agentspool.producer.transaction import transaction

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_COMPATIBLE_FROM = re.compile(r"^--\s*compatible_from:\s*(\d+)\s*$", re.MULTILINE)
_REPEAT = re.compile(r"^--\s*repeat:\s*until it changes no row\s*$", re.MULTILINE)
# The schema version that added ``schema_version.compatible_from``: rows of this
# version and later record it.
COMPATIBILITY_COLUMN_SINCE = 2


class Connection(Protocol):
    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: list[str]
    compatible_from: int | None = None  # None: only workers that know this version
    repeat: bool = False  # run in steps until no row changes (see the module's docstring)


class SchemaError(RuntimeError):
    """The database's schema is newer than this agentspool or otherwise unusable."""


@functools.cache  # the package's files do not change while it runs; every replica asks
def available_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("agentspool.schema").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            text = entry.read_text()
            compatible = _COMPATIBLE_FROM.search(text)
            migration = Migration(
                int(match.group(1)),
                entry.name,
                split_statements(text),
                int(compatible.group(1)) if compatible else None,
                repeat=bool(_REPEAT.search(text)),
            )
            if migration.repeat and len(migration.statements) != 1:
                raise SchemaError(f"{entry.name}: a migration in steps holds one statement")
            found.append(migration)
    return tuple(sorted(found, key=lambda m: m.version))


def latest_version() -> int:
    return max(m.version for m in available_migrations())


def split_statements(sql: str) -> list[str]:
    """Split a migration file into statements (one per ';' at the end of a line)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return [p.strip() for p in parts if p.strip()]


# version -> compatible_from (None where the row has none) of every applied migration
AppliedVersions = dict[int, int | None]


def applied_versions(conn: Connection) -> AppliedVersions:
    try:
        rows = conn.execute("SELECT version, compatible_from FROM schema_version").fetchall()
    except Exception as exc:
        if "no such column" not in str(exc).lower():
            raise
        rows = [(r[0], None) for r in conn.execute("SELECT version FROM schema_version").fetchall()]
    return {int(r[0]): None if r[1] is None else int(r[1]) for r in rows}


def pending_migrations(conn: Connection) -> list[Migration]:
    _ensure_version_table(conn)
    done = applied_versions(conn)
    return [m for m in available_migrations() if m.version not in done]


def version_row(migration: Migration) -> tuple[str, tuple[Any, ...]]:
    """The ``schema_version`` row that records ``migration`` (in its transaction)."""
    applied_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    if migration.version < COMPATIBILITY_COLUMN_SINCE:
        return (
            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
            (migration.version, applied_at),
        )
    return (
        "INSERT INTO schema_version (version, applied_at, compatible_from) VALUES (?, ?, ?)",
        (migration.version, applied_at, migration.compatible_from),
    )


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
        done = {}
    if not _to_apply(done):
        return []
    applied = []
    with transaction(conn):  # all pending ones at once, as migrate_atomically does
        for migration in _to_apply(applied_versions(conn)):  # another process may have won
            for statement in migration.statements:
                changed = conn.execute(statement).rowcount
                # A local file has no transaction deadline: the steps share this one.
                while migration.repeat and changed > 0:
                    changed = conn.execute(statement).rowcount
            conn.execute(*version_row(migration))
            applied.append(migration.version)
    return applied


def migrate_atomically(
    run_atomic: Callable[[list[tuple[str, Sequence[Any]]]], None],
    applied_versions: Callable[[], AppliedVersions],
    run_step: Callable[[str], int],
) -> list[int]:
    """Apply every pending migration, for a remote database: the ones in a row that
    are not in steps as one atomic batch (one request, instead of a round trip per
    statement), each with its ``schema_version`` row; a migration in steps by
    ``run_step`` (one statement in its own transaction; returns the rows it changed)
    until it changes none, then its version row. A batch that fails because another
    process applied some of them first (a conflicting version row, a column that
    exists) is not an error: what is still pending is tried again. Returns the
    versions this call applied."""
    done = applied_versions()
    applied: list[int] = []
    for _ in range(2 * len(available_migrations()) + 2):  # each turn means progress
        pending = _to_apply(done)
        if not pending:
            return applied
        new_database = steps_are_empty(done)  # its version row goes in the same batch
        batch = (
            pending
            if new_database
            else list(itertools.takewhile(lambda m: not m.repeat, pending)) or pending[:1]
        )
        statements: list[tuple[str, Sequence[Any]]] = [(VERSION_TABLE, ())]
        for migration in batch:
            if migration.repeat:
                while not new_database and run_step(migration.statements[0]) > 0:
                    pass
            else:
                statements += [(s, ()) for s in migration.statements]
            statements.append(version_row(migration))
        try:
            run_atomic(statements)
        except Exception:
            now_done = applied_versions()
            if set(now_done) == set(done):  # nobody else migrated: a real failure
                raise
            done = now_done  # another process won the race for some of them
            continue
        applied += [m.version for m in batch]
        done = done | {m.version: m.compatible_from for m in batch}
    raise SchemaError("the schema kept changing while it was being migrated")


def steps_are_empty(done: Collection[int]) -> bool:
    """Whether a migration in steps has nothing to change: a new database (no version
    yet: the batch that applies it creates the tables) has no rows."""
    return not done


VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"


def _to_apply(done: AppliedVersions) -> list[Migration]:
    """The migrations not yet in ``done``, in order; refuses a database at a newer
    version unless every version it does not know declares this one compatible."""
    newest_known = latest_version()
    for version in sorted(done, reverse=True):
        if version <= newest_known:
            break
        compatible_from = done[version]
        if compatible_from is None or compatible_from > newest_known:
            raise SchemaError(
                f"database schema version {version} is newer than this agentspool "
                f"(knows up to {newest_known}) and not compatible with it; upgrade agentspool"
            )
    return [m for m in available_migrations() if m.version not in done]


def _ensure_version_table(conn: Connection) -> None:
    conn.execute(VERSION_TABLE)
