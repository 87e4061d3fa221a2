"""What a replica file is made of, beside the remote schema: the replica-only tables
(applied events, the change log the sync reads), the upgrade of an older replica, and
the template new replicas are copied from (page size, indexes, journal mode).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
from pathlib import Path

from agentspool.producer.transaction import transaction
from agentspool.worker import migrations
from agentspool.worker.intake.accounting import fill_accounting_columns

_APPLIED_EVENTS = (
    "CREATE TABLE IF NOT EXISTS applied_events ("
    " seq INTEGER PRIMARY KEY, type TEXT NOT NULL, producer_id TEXT NOT NULL, pseq INTEGER NOT NULL)"
)

# The change log the sync reads (replica-only, like applied_events): every write to a
# message, tool execution or session row appends its key with a new, ever-growing
# change_no (AUTOINCREMENT never reuses one). A sync remembers the last change_no that
# landed remotely (its watermark) and sends only rows changed after it; a tool call that
# was running at a checkpoint moves to a later change_no when it finishes, and is sent
# again. Triggers keep it complete for every writer (apply, sealing, closing calls);
# they delete and insert rather than INSERT OR REPLACE, because the conflict clause of
# the statement that fires a trigger overrides the trigger's own.
CHANGE_MESSAGE, CHANGE_TOOL, CHANGE_SESSION = "m", "t", "s"
_CHANGE_LOG = (
    "CREATE TABLE changes (change_no INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL, ref TEXT NOT NULL, UNIQUE (kind, ref))",
    # Names this log: a watermark taken from another log (a replica rebuilt after
    # damage or recreated after retention) must not be trusted.
    "CREATE TABLE change_log (log_id TEXT NOT NULL)",
    "CREATE TRIGGER message_changed AFTER INSERT ON messages BEGIN"
    " DELETE FROM changes WHERE kind = 'm' AND ref = NEW.seq;"
    " INSERT INTO changes (kind, ref) VALUES ('m', NEW.seq); END",
    "CREATE TRIGGER tool_inserted AFTER INSERT ON tool_executions BEGIN"
    " DELETE FROM changes WHERE kind = 't' AND ref = NEW.call_id;"
    " INSERT INTO changes (kind, ref) VALUES ('t', NEW.call_id); END",
    "CREATE TRIGGER tool_updated AFTER UPDATE ON tool_executions BEGIN"
    " DELETE FROM changes WHERE kind = 't' AND ref = NEW.call_id;"
    " INSERT INTO changes (kind, ref) VALUES ('t', NEW.call_id); END",
    "CREATE TRIGGER session_inserted AFTER INSERT ON sessions BEGIN"
    " DELETE FROM changes WHERE kind = 's' AND ref = NEW.id;"
    " INSERT INTO changes (kind, ref) VALUES ('s', NEW.id); END",
    "CREATE TRIGGER session_updated AFTER UPDATE ON sessions BEGIN"
    " DELETE FROM changes WHERE kind = 's' AND ref = NEW.id;"
    " INSERT INTO changes (kind, ref) VALUES ('s', NEW.id); END",
    # Rows written before the log existed (a replica from an older agentspool).
    "INSERT OR IGNORE INTO changes (kind, ref) SELECT 'm', seq FROM messages ORDER BY seq",
    "INSERT OR IGNORE INTO changes (kind, ref) SELECT 't', call_id FROM tool_executions",
    "INSERT OR IGNORE INTO changes (kind, ref) SELECT 's', id FROM sessions",
)

_LOCAL_TRIGGERS = frozenset(re.findall(r"CREATE TRIGGER (\w+)", " ".join(_CHANGE_LOG)))


def ensure_local_tables(conn: sqlite3.Connection, *, name_log: bool = True) -> None:
    """The replica-only tables: applied events and the change log (created once), and
    a name for this file's change log (``name_log``; the template has none, so every
    copy of it gets its own)."""
    conn.execute(_APPLIED_EVENTS)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'changes'").fetchone():
        with transaction(conn):
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'changes'").fetchone():
                for sql in _CHANGE_LOG:
                    conn.execute(sql)
    if name_log and not conn.execute("SELECT 1 FROM change_log").fetchone():
        conn.execute("INSERT INTO change_log (log_id) VALUES (?)", (secrets.token_hex(8),))


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a replica opened for writing to this agentspool's schema: the pending
    migrations (without the indexes and triggers they create for the remote database,
    as in a new replica), the replica-only tables, and for one a version-1 worker wrote, the
    version-2 columns filled from its messages' metadata. Costs one query when the
    replica is up to date. (Version 5 fills the copies of version 4 on the tool rows
    already here, which the change log sees: the sync sends those rows once more, and
    the database's upsert leaves them as they were.)"""
    applied = migrations.migrate(conn)
    ensure_local_tables(conn)
    if 2 in applied:
        with transaction(conn):
            fill_accounting_columns(conn)
    if applied:  # the new versions' indexes and triggers serve the remote database
        _drop_remote_only_objects(conn)


# A new replica is a copy of a template that already has the schema, the change log
# and WAL mode: creating those in every new file costs several fsyncs (~30 ms on a
# busy disk, for each new session); a copy costs none. One template per schema
# version and layout, in a directory the replicas/*.db listings do not descend into.
TEMPLATE_DIRNAME = ".template"
# The layout of a small replica (measured on a two-event session, closed; issue 26):
# 4 KiB pages and every index of the remote schema: 96 KiB; 4 KiB pages with only the
# primary keys: 52 KiB; 1 KiB pages: 17 KiB; 512-byte pages: 10.5 KiB. Every table and
# index is at least one page, so the page size decides a small replica's size; the
# remote's indexes serve queries across sessions, and a replica holds one session
# (its reads go by primary key, or sort one session's rows). Applying a 20,000-message
# session was no slower with 512-byte pages than with 4 KiB and all the indexes
# (11,200 events/s against 6,800), and its file 0 % larger.
REPLICA_PAGE_SIZE = 512
TEMPLATE_LAYOUT = "p512"  # a new layout gets a new template; old replicas keep theirs


def create_from_template(path: Path) -> None:
    template = (
        path.parent / TEMPLATE_DIRNAME / f"v{migrations.latest_version()}-{TEMPLATE_LAYOUT}.db"
    )
    if not template.exists():
        template.parent.mkdir(mode=0o700, exist_ok=True)
        building = template.with_name(f".{template.name}.{os.getpid()}.new")
        conn = sqlite3.connect(building, isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size={REPLICA_PAGE_SIZE}")  # before the first table
            migrations.migrate(conn)
            ensure_local_tables(conn, name_log=False)
            _drop_remote_only_objects(conn)
            conn.execute("VACUUM")  # the dropped indexes' pages go
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()  # checkpointed: the file alone holds all of it
        os.replace(building, template)
    copying = path.with_name(f".{path.name}.{os.getpid()}.new")
    # Neither end may be a link (a spool's files are its own; see worker/security.py).
    # A copy cut short (a full disk) is removed, so that the next attempt starts anew.
    source = os.open(template, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copying)
        target = os.open(copying, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(source, "rb", closefd=False) as src, os.fdopen(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(copying)
            raise
    finally:
        os.close(source)
    os.replace(copying, path)


def _drop_remote_only_objects(conn: sqlite3.Connection) -> None:
    """A replica keeps its primary keys and unique constraints (automatic indexes) and
    its change log's triggers, and drops the indexes and triggers the migrations
    create for the remote database (schema/004 copies session columns onto tool rows
    for queries across sessions; a replica holds one session, and a trigger there
    would rewrite each tool row the drain writes)."""
    names = [
        (kind, name)
        for kind, name in conn.execute(
            "SELECT type, name FROM sqlite_master"
            " WHERE (type = 'index' AND sql IS NOT NULL) OR type = 'trigger'"
        )
        if name not in _LOCAL_TRIGGERS
    ]
    for kind, name in names:
        conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
