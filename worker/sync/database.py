"""The database sessions are synced to: one small interface, two implementations.

    open_database(url, token, timeout) -> Database
    Database.run_atomic(statements)    one atomic batch: all of it lands, or none
    Database.query(sql, params)        rows as dicts (``sessions --remote``, the viewer)
    Database.query_many(statements)    several queries in one request (``stats --remote``)
    Database.ensure_schema()           apply pending migrations, return what was applied
    Database.abort()                   from another thread: fail the request in progress

``RemoteDatabase`` speaks Hrana over HTTP (sqld, Turso: ``http(s)://``, ``libsql://``);
``LocalDatabase`` is the embedded default, a local libSQL/SQLite file (``file:``),
written with the standard library's sqlite3. Both run a batch the same way (BEGIN
IMMEDIATE, the statements, COMMIT; ROLLBACK on any failure) and report a failed
statement by its index, so the sync engine has one code path for both.

Errors are ``DatabaseError`` with a kind (see hrana.py: transient, permanent,
misconfigured, statement) and a one-line message without credentials.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from agentspool.producer.transaction import transaction
from agentspool.worker import migrations
from agentspool.worker.sync import hrana
from agentspool.worker.sync.hrana import (
    MISCONFIGURED,
    PERMANENT,
    STATEMENT,
    TRANSIENT,
    HranaError,
    Statement,
    StepError,
    redact_url,
)

__all__ = [
    "MISCONFIGURED",
    "PERMANENT",
    "STATEMENT",
    "TRANSIENT",
    "Database",
    "DatabaseError",
    "LocalDatabase",
    "RemoteDatabase",
    "StepError",
    "open_database",
    "redact_url",
]

DatabaseError = HranaError  # one error type for both implementations


class Database(Protocol):
    url: str  # redacted: safe to print

    def run_atomic(self, statements: Sequence[Statement]) -> None: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
    def query_many(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]: ...
    def ensure_schema(self) -> list[int]: ...
    def schema_plan(self) -> tuple[list[int], list[migrations.Migration]]: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...  # from another thread: fail the request in progress
    def __enter__(self) -> Database: ...
    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def open_database(url: str, auth_token: str | None, *, timeout: float = 10.0) -> Database:
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return LocalDatabase(local_path(url))
    if scheme in ("http", "https", "libsql", "ws", "wss"):
        return RemoteDatabase(url, auth_token, timeout)
    raise DatabaseError(
        MISCONFIGURED,
        f"unsupported database URL {redact_url(url)!r}: use libsql://, https://, http:// or file:",
    )


def local_path(url: str) -> Path:
    """``file:/abs/path.db``, ``file:///abs/path.db`` or ``file:relative.db``."""
    parts = urlsplit(url)
    return Path(unquote(parts.netloc + parts.path))


class _Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RemoteDatabase(_Closing):
    def __init__(self, url: str, auth_token: str | None, timeout: float) -> None:
        try:
            self.client = hrana.HranaClient(url, auth_token, timeout)
        except ValueError as exc:
            raise DatabaseError(MISCONFIGURED, str(exc)) from None
        self.url = redact_url(url)

    def run_atomic(self, statements: Sequence[Statement]) -> None:
        self.client.run_atomic(statements)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        result = self.client.execute(sql, params)
        return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

    def query_many(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        return [
            [dict(zip(result.columns, row, strict=True)) for row in result.rows]
            for result in self.client.execute_many(statements)
        ]

    def ensure_schema(self) -> list[int]:
        try:
            return migrations.migrate_atomically(
                self.client.run_atomic, self._applied_versions, self._run_step
            )
        except migrations.SchemaError as exc:
            raise DatabaseError(PERMANENT, str(exc)) from None

    def _run_step(self, sql: str) -> int:
        """One statement in its own transaction; the rows it changed."""
        return self.client.execute(sql).affected

    def _applied_versions(self) -> migrations.AppliedVersions:
        try:
            return migrations.applied_versions(self)
        except DatabaseError as exc:
            if "no such table" in str(exc).lower():
                return {}
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> hrana.Cursor:
        """One statement in one request, DB-API-like (``migrations.applied_versions``)."""
        return hrana.Cursor(self.client.execute(sql, params).rows)

    def schema_plan(self) -> tuple[list[int], list[migrations.Migration]]:
        stream = hrana.Stream(self.client)
        try:
            return _plan(stream)
        finally:
            stream.close()

    def close(self) -> None:
        self.client.close()

    def abort(self) -> None:
        self.client.abort()


class LocalDatabase(_Closing):
    def __init__(self, path: Path) -> None:
        self.url = f"file:{path}"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(PERMANENT, f"cannot open {self.url}: {exc}") from None

    def run_atomic(self, statements: Sequence[Statement]) -> None:
        step = -1  # the statement running: -1 is BEGIN, len(statements) is COMMIT
        try:
            with transaction(self.conn):  # rolled back on any error, COMMIT's included
                for step, (sql, args) in enumerate(statements):  # noqa: B007 - read below
                    self.conn.execute(sql, tuple(args))
                step = len(statements)
        except sqlite3.Error as exc:
            message = f"{exc} (statement {step + 1} of the batch)"
            kind = hrana.classify_sql_error(str(exc))
            if isinstance(exc, sqlite3.OperationalError) and kind == STATEMENT:
                kind = TRANSIENT  # disk full, I/O error, locked: not the rows' fault
            if 0 <= step < len(statements):
                raise StepError(kind, message, step) from None
            raise DatabaseError(TRANSIENT if kind == STATEMENT else kind, message) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            cursor = self.conn.execute(sql, tuple(params))
            columns = [d[0] for d in cursor.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        except sqlite3.Error as exc:
            raise DatabaseError(hrana.classify_sql_error(str(exc)), str(exc)) from None

    def query_many(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        return [self.query(sql, params) for sql, params in statements]

    def ensure_schema(self) -> list[int]:
        return _migrate(self.conn)

    def schema_plan(self) -> tuple[list[int], list[migrations.Migration]]:
        return _plan(self.conn)

    def close(self) -> None:
        self.conn.close()

    def abort(self) -> None:
        self.conn.interrupt()  # sqlite3 allows this one call from another thread


def _migrate(conn: sqlite3.Connection) -> list[int]:
    try:
        return migrations.migrate(conn)
    except migrations.SchemaError as exc:
        raise DatabaseError(PERMANENT, str(exc)) from None
    except sqlite3.Error as exc:
        raise DatabaseError(TRANSIENT, f"migrating the schema: {exc}") from None


def _plan(conn: migrations.Connection) -> tuple[list[int], list[migrations.Migration]]:
    pending = migrations.pending_migrations(conn)
    return sorted(migrations.applied_versions(conn)), pending
