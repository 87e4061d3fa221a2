"""One local SQLite replica per session: ``<spool>/replicas/<file>.db``.

Events are applied idempotently: every applied event's ``seq`` is recorded in the
replica-only table ``applied_events`` in the same transaction, so a replayed event
(after a worker crash between apply and ack) changes nothing. The replica has the
remote schema (same migrations), which makes a sync a plain copy of its rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentspool.producer import events as ev
from agentspool.producer.transaction import transaction
from agentspool.producer.usage import TOKEN_COLUMNS
from agentspool.worker.intake.accounting import (
    ACCOUNTING_COLUMNS,
    MODEL_KEY,
    USAGE_KEY,
    accounting_of,
    needs_price,
    sum_usage_into_metadata,
    unpriced,
)
from agentspool.worker.intake.redaction import Redactor, record_redactions
from agentspool.worker.intake.replica_names import REPLICAS_DIRNAME as REPLICAS_DIRNAME
from agentspool.worker.intake.replica_names import replica_path as replica_path
from agentspool.worker.intake.replica_schema import (
    create_from_template,
    upgrade,
)
from agentspool.worker.intake.replica_schema import (
    ensure_local_tables as ensure_local_tables,
)
from agentspool.worker.readonly import connect_readonly
from agentspool.worker.security import refuse_link

ABANDONED_ERROR = "the producer process ended without ending the session"
# Tool calls still running when their session ends never finish: they are closed.
TOOL_OPEN_AT_END_ERROR = "the session ended before the tool call finished"
TOOL_OPEN_AT_ABANDON_ERROR = "the session was abandoned before the tool finished"


def iso(ts: float) -> str:
    """Seconds since the epoch -> ISO-8601 UTC with milliseconds ('...T05:34:30.123Z')."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _when(e: dict[str, Any], field: str) -> str:
    """The time a tool event gives for itself (``started_at``/``ended_at``), else its emit."""
    value = e.get(field)
    return iso(e["ts"] if value is None else value)


def to_text(value: Any, redact: Callable[[Any, str], str] | None = None) -> str | None:
    """Store strings as they are and anything else as JSON; never fail on odd text.

    ``redact`` (value, text) -> text runs first (redaction.py), so that truncation
    never cuts a secret in two. Text over ``MAX_FIELD_BYTES`` is truncated with a
    marker (see events.py). A value nested too deeply to encode raises ``ValueError``
    (its event is dead-lettered)."""
    if value is None:
        return None
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if redact is not None:
            text = redact(value, text)
    except RecursionError:
        raise ValueError("a value is nested too deeply to store") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\udXXX" escapes: keep the rest
        text = text.encode("utf-8", "replace").decode("utf-8")
    return ev.truncate_text(text)


class ConflictingEvent(ValueError):
    """An event whose place in the session is taken by a different event (not a replay)."""


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    agent: str
    status: str  # running | completed | error | abandoned
    producer_id: str | None
    event_count: int
    max_seq: int
    started_at: str | None = None


@dataclass
class SessionRows:
    """Everything a sync sends for one session."""

    session: dict[str, Any]
    messages: list[tuple[Any, ...]]
    tool_executions: list[tuple[Any, ...]]


MESSAGE_COLUMNS = (
    "session_id", "seq", "role", "content", "created_at", "metadata", *ACCOUNTING_COLUMNS,
)  # fmt: skip
TOOL_COLUMNS = (
    "session_id", "call_id", "name", "input", "output", "status", "error",
    "started_at", "ended_at", "duration_ms",
)  # fmt: skip
SESSION_COLUMNS = (
    "id", "agent", "status", "started_at", "ended_at", "error", "metadata", "host", "pid",
    "producer_id", "event_count", "message_count", "tool_count", "parent_id",
    *ACCOUNTING_COLUMNS,
)  # fmt: skip


class Replica:
    def __init__(self, path: Path, redactor: Redactor | None = None) -> None:
        self.path = path
        # Every text an event brings goes through it before it is written (None: as
        # it is); what it replaced in the current apply() is counted by kind.
        self.redactor = redactor
        self._redacted: Counter[str] = Counter()
        self._text: Callable[[Any], str | None] = (
            to_text
            if redactor is None
            else lambda value: to_text(value, lambda v, t: redactor.stored(v, t, self._redacted))
        )
        # What a log line may quote of an event's text: redacted, not counted.
        self._shown: Callable[[str], str] = (
            str if redactor is None else lambda text: redactor.text(text, Counter())
        )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        refuse_link(path)  # SQLite would follow it
        if not path.exists():
            create_from_template(path)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: a commit survives a crash of the worker; the queue item is
        # acked only after this commit, and replays are harmless.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        upgrade(self.conn)  # a copy of the template: up to date, one query

    def close(self) -> None:
        """Leave the file in rollback-journal mode: one self-contained file (the WAL
        checkpointed into it and removed) that a reader opens without creating a
        ``-wal`` or ``-shm`` beside it. Reopening it for more events turns WAL back on.
        If a reader has it open right now, it stays in WAL mode (see readonly_uri)."""
        try:
            self.conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass
        self.conn.close()

    # ---- applying events ---------------------------------------------------

    def apply(self, events: Iterable[dict[str, Any]]) -> int:
        """Apply validated events of this session in one transaction; return how many
        were new (the others had been applied before)."""
        applied = 0
        self._redacted.clear()
        session_id = None
        metadata_replaced = False  # a start or end writes the session's metadata anew
        with transaction(self.conn):
            for event in events:
                if self._apply_one(event):
                    applied += 1
                    session_id = event["session_id"]
                    metadata_replaced |= event["type"] in (ev.SESSION_START, ev.SESSION_END)
            if session_id is not None and (self._redacted or metadata_replaced):
                record_redactions(self.conn, session_id, self._redacted)
        return applied

    def _apply_one(self, e: dict[str, Any]) -> bool:
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO applied_events (seq, type, producer_id, pseq) VALUES (?, ?, ?, ?)",
            (e["seq"], e["type"], e["producer_id"], e["pseq"]),
        )
        if cur.rowcount == 0:
            self._check_replay(e)
            return False  # a replay
        at = iso(e["ts"])
        kind = e["type"]
        sid = e["session_id"]
        if kind != ev.SESSION_START:
            # Events may arrive without their session_start (dropped by a full buffer):
            # keep them, under a placeholder row that a later session_start completes.
            self.conn.execute(
                "INSERT OR IGNORE INTO sessions (id, agent, status, started_at, producer_id)"
                " VALUES (?, '', 'running', ?, ?)",
                (sid, at, e["producer_id"]),
            )
        if kind == ev.SESSION_START:
            self.conn.execute(
                "INSERT INTO sessions (id, agent, status, started_at, metadata, host, pid,"
                " producer_id, parent_id, model) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET agent = excluded.agent,"
                " started_at = excluded.started_at, metadata = excluded.metadata,"
                " host = excluded.host, pid = excluded.pid, producer_id = excluded.producer_id,"
                " parent_id = excluded.parent_id, model = coalesce(excluded.model, model)",
                (sid, self._text(e["agent"]), at, self._text(e.get("metadata")), self._text(e.get("host")),
                 e.get("pid"), e["producer_id"], to_text(e.get("parent_id")),
                 self._text(e.get("model"))),
            )  # fmt: skip
            if self._ended(sid):  # arrived after the end: its metadata replaced the totals
                sum_usage_into_metadata(self.conn, sid)
        elif kind == ev.MESSAGE:
            metadata = e.get("metadata")
            accounting = accounting_of(metadata, at, self._shown)  # priced by its real name
            if accounting is not None and accounting[0] is not None:  # then kept redacted
                accounting = (self._text(accounting[0]), *accounting[1:])
            inserted = self.conn.execute(
                f"INSERT OR IGNORE INTO messages ({', '.join(MESSAGE_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})",
                (sid, e["seq"], self._text(e["role"]), self._text(e.get("content")), at,
                 self._text(metadata), *(accounting or (None,) * len(ACCOUNTING_COLUMNS))),
            ).rowcount  # fmt: skip
            if inserted and accounting is not None:
                self._add_to_session_totals(sid, accounting)
            if isinstance(metadata, dict) and (USAGE_KEY in metadata or MODEL_KEY in metadata):
                if self._ended_after(sid, e["seq"]):  # a late message of an ended part
                    sum_usage_into_metadata(self.conn, sid)
        elif kind == ev.TOOL_STARTED:
            self.conn.execute(
                "INSERT INTO tool_executions (session_id, call_id, name, input, status, started_at)"
                " VALUES (?, ?, ?, ?, 'running', ?)"
                " ON CONFLICT (session_id, call_id) DO UPDATE SET name = excluded.name,"
                " input = excluded.input, started_at = excluded.started_at",
                (sid, e["call_id"], self._text(e["name"]), self._text(e.get("input")),
                 _when(e, "started_at")),
            )  # fmt: skip
            if self._ended_after(sid, e["seq"]):  # its start arrived after its session's end
                self._close_running_tools(sid, at, TOOL_OPEN_AT_END_ERROR)
        elif kind == ev.TOOL_FINISHED:
            error = e.get("error")
            status = "error" if error else "completed"
            # A finish without a start (its start was dropped) still records the outcome.
            self.conn.execute(
                "INSERT INTO tool_executions"
                " (session_id, call_id, name, output, status, error, ended_at, duration_ms)"
                " VALUES (?, ?, '', ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, call_id) DO UPDATE SET output = excluded.output,"
                " status = excluded.status, error = excluded.error,"
                " ended_at = excluded.ended_at,"
                # A call started by another process has no duration from its producer:
                # take it from the two recorded times.
                " duration_ms = coalesce(excluded.duration_ms, round((julianday(excluded.ended_at)"
                " - julianday(tool_executions.started_at)) * 86400000.0, 3))",
                (sid, e["call_id"], self._text(e.get("output")), status, self._text(error),
                 _when(e, "ended_at"), e.get("duration_ms")),
            )  # fmt: skip
        elif kind == ev.SESSION_END:
            # A session may go on after it ended (a resumed agent) and end again: the
            # end with the highest seq decides its status and end; an earlier end that
            # arrives after it (from another process) changes neither.
            earlier_end = self._last_end_seq(excluding=e["seq"])
            latest = earlier_end is None or e["seq"] > earlier_end
            if latest:
                self.conn.execute(
                    "UPDATE sessions SET status = ?, ended_at = ?, error = ? WHERE id = ?",
                    (e["status"], at, self._text(e.get("error")), sid),
                )
                self._close_running_tools(sid, at, TOOL_OPEN_AT_END_ERROR)
            if e.get("metadata"):
                # What a producer learns only at the end is merged into the start's
                # metadata (before the messages' usage is summed into it, which wins);
                # the latest end's keys win over an earlier one's; metadata cut to size
                # is no JSON: kept as is.
                patch = (
                    "json_patch(coalesce(metadata, '{}'), ?1)"
                    if latest
                    else "json_patch(?1, coalesce(metadata, '{}'))"
                )
                self.conn.execute(
                    f"UPDATE sessions SET metadata = {patch}"
                    " WHERE id = ?2 AND json_valid(coalesce(metadata, '{}')) AND json_valid(?1)",
                    (self._text(e["metadata"]), sid),
                )
            sum_usage_into_metadata(self.conn, sid)
        return True

    def _ended(self, session_id: str) -> bool:
        row = self.conn.execute(
            "SELECT status FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return row is not None and row[0] != "running"

    def _ended_after(self, session_id: str, seq: int) -> bool:
        """Has the session ended after the event at ``seq`` (a late event of a part
        that ended, not the first event of a continuation)? Sealing it abandoned counts."""
        if not self._ended(session_id):
            return False
        last_end = self._last_end_seq()
        return last_end is None or last_end > seq  # sealed without an end: abandoned

    def _last_end_seq(self, excluding: int | None = None) -> int | None:
        row = self.conn.execute(
            "SELECT max(seq) FROM applied_events WHERE type = ? AND seq != ?",
            (ev.SESSION_END, -1 if excluding is None else excluding),
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def _add_to_session_totals(self, session_id: str, accounting: tuple[Any, ...]) -> None:
        """A new message's tokens and cost are added to its session's (NULL stays NULL
        until some message knows the count); the first model named is the session's.
        A message that counted tokens without a cost makes the session's cost NULL for
        good (accounting.py): while the session's cost is known, no such message exists,
        so only a NULL cost needs the look for one."""
        model, *amounts = accounting
        *tokens, cost = amounts
        sums = ", ".join(
            f"{c} = CASE WHEN ?{n} IS NULL THEN {c} ELSE coalesce({c}, 0) + ?{n} END"
            for n, c in enumerate(TOKEN_COLUMNS, start=1)
        )
        n = len(tokens)
        if needs_price(accounting):
            cost_sql = "NULL"
        else:  # a cost, or no tokens (nothing to price): ?{n + 1} IS NULL adds nothing
            cost_sql = (
                f"CASE WHEN ?{n + 1} IS NULL THEN cost_usd"
                f" WHEN cost_usd IS NOT NULL THEN cost_usd + ?{n + 1}"
                f" WHEN EXISTS (SELECT 1 FROM messages m WHERE m.session_id = ?{n + 3}"
                f" AND {unpriced('m')}) THEN NULL ELSE ?{n + 1} END"
            )
        self.conn.execute(
            f"UPDATE sessions SET {sums}, cost_usd = {cost_sql}, model = coalesce(model, ?{n + 2})"
            f" WHERE id = ?{n + 3}",
            (*tokens, cost, model, session_id),
        )

    def _close_running_tools(self, session_id: str, ended_at: str | None, error: str) -> None:
        """Tool calls still running are closed: status error, an end time (the
        session's), a duration where the start is known, and why."""
        self.conn.execute(
            "UPDATE tool_executions SET status = 'error', error = ?,"
            " ended_at = coalesce(?, started_at),"
            " duration_ms = CASE WHEN started_at IS NULL OR ? IS NULL THEN NULL"
            "  ELSE max(0.0, (julianday(?) - julianday(started_at)) * 86400000.0) END"
            " WHERE session_id = ? AND status = 'running'",
            (error, ended_at, ended_at, ended_at, session_id),
        )

    def _check_replay(self, e: dict[str, Any]) -> None:
        """A replay has the identity of the event applied at its seq; anything else
        claims a place that is taken, and is rejected (dead-lettered), not dropped."""
        row = self.conn.execute(
            "SELECT type, producer_id, pseq FROM applied_events WHERE seq = ?", (e["seq"],)
        ).fetchone()
        if row is not None and tuple(row) != (e["type"], e["producer_id"], e["pseq"]):
            raise ConflictingEvent(
                f"seq {e['seq']} of session {e['session_id']!r} already holds another event"
                f" ({row[0]} from producer {row[1]} pseq {row[2]})"
            )

    def seal_abandoned(self, session_id: str) -> None:
        """Close a session whose producer is gone: status ``abandoned``, and tool calls
        still running marked failed (they will never finish)."""
        with transaction(self.conn):
            last = self.last_activity(session_id)
            self.conn.execute(
                "UPDATE sessions SET status = 'abandoned', ended_at = ?, error = ?"
                " WHERE id = ? AND status = 'running'",
                (last, ABANDONED_ERROR, session_id),
            )
            self._close_running_tools(session_id, last, TOOL_OPEN_AT_ABANDON_ERROR)
            sum_usage_into_metadata(self.conn, session_id)

    # ---- reading -----------------------------------------------------------

    def summary(self, session_id: str) -> SessionSummary | None:
        row = self.conn.execute(
            "SELECT agent, status, producer_id, started_at FROM sessions WHERE id = ?",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        count, max_seq = self.conn.execute(
            "SELECT count(*), coalesce(max(seq), -1) FROM applied_events"
        ).fetchone()
        return SessionSummary(session_id, row[0], row[1], row[2], count, max_seq, row[3])

    def last_activity(self, session_id: str) -> str | None:
        """When the session's latest event happened (a full scan: used when sealing)."""
        return self.conn.execute(
            "SELECT max(at) FROM (SELECT max(created_at) AS at FROM messages"
            " UNION ALL SELECT max(coalesce(ended_at, started_at)) FROM tool_executions"
            " UNION ALL SELECT started_at FROM sessions WHERE id = ?)",
            (session_id,),
        ).fetchone()[0]


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open a replica for reading only (transcripts and reports do this)."""
    if not path.exists():
        raise FileNotFoundError(f"replica {path} does not exist")
    return connect_readonly(path, timeout=10)


def read_session_rows(conn: sqlite3.Connection, session_id: str) -> SessionRows:
    """Everything a sync sends for one session, read in one snapshot."""
    with transaction(conn, begin="BEGIN"):  # deferred: a read takes no write lock
        return _read_session_rows(conn, session_id)


def _read_session_rows(conn: sqlite3.Connection, session_id: str) -> SessionRows:
    # A replica a version-1 worker wrote and no worker has upgraded yet (readers never
    # write) has no version-2 columns: they read as NULL.
    session_row = conn.execute(
        f"SELECT {_existing(conn, 'sessions', SESSION_COLUMNS)} FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    if session_row is None:
        raise LookupError(f"session {session_id} has no session row in the replica")
    session = dict(zip(SESSION_COLUMNS, session_row, strict=True))
    messages = conn.execute(
        f"SELECT {_existing(conn, 'messages', MESSAGE_COLUMNS)} FROM messages"
        " WHERE session_id = ? ORDER BY seq",
        (session_id,),
    ).fetchall()
    tools = conn.execute(
        f"SELECT {', '.join(TOOL_COLUMNS)} FROM tool_executions WHERE session_id = ?"
        " ORDER BY started_at, call_id",
        (session_id,),
    ).fetchall()
    session["event_count"] = conn.execute("SELECT count(*) FROM applied_events").fetchone()[0]
    session["message_count"] = len(messages)
    session["tool_count"] = len(tools)
    return SessionRows(session, messages, tools)


def _existing(conn: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> str:
    """``columns`` as a select list, ``NULL`` for those the table does not have."""
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    return ", ".join(c if c in have else f"NULL AS {c}" for c in columns)
