"""Sessions as people read them: ``agentspool sessions`` and ``agentspool show``.

The list comes from the worker's index of sessions (``worker.db``); a transcript
from the session's replica, read-only. Replicas of synced sessions are deleted by
retention: their rows then live only in the remote database, and ``show`` says so.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentspool.worker import state as st
from agentspool.worker.durations import parse_duration
from agentspool.worker.intake.replica import (
    MESSAGE_COLUMNS,
    REPLICAS_DIRNAME,
    TOOL_COLUMNS,
    iso,
    open_readonly,
    read_session_rows,
    replica_path,
)


def since_to_iso(text: str, now: float | None = None) -> str:
    """``2h``, ``30m``, ``7d`` ... ago, or an ISO-8601 time (UTC unless it says
    otherwise), as the ISO text the spool stores times in. Raises ``ValueError``."""
    now = time.time() if now is None else now
    try:
        return iso(max(0.0, now - parse_duration(text)))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30s, 15m, 2h, 7d, 1w) nor an ISO-8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso(moment.timestamp())


def list_sessions(
    spool_dir: Path,
    *,
    sync_state: str | None = None,
    agent: str | None = None,
    since: str | None = None,
    limit: int | None = None,
) -> list[st.SessionState]:
    """Sessions the worker has seen, most recently active first. ``since`` is ISO
    text: sessions whose last event is at or after it."""
    try:
        with st.existing_state(spool_dir) as store:
            sessions = [] if store is None else store.sessions(sync_state)
    except sqlite3.OperationalError:
        return []  # a worker creating its state right now
    if agent is not None:
        sessions = [s for s in sessions if s.agent == agent]
    if since is not None:
        sessions = [s for s in sessions if (s.last_event_at or "") >= since]
    sessions.sort(key=lambda s: (s.last_event_at or "", s.seen_at), reverse=True)
    return sessions if limit is None else sessions[:limit]


def session_json(s: st.SessionState, spool_dir: Path) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "agent": s.agent,
        "status": s.status,
        "sync_state": s.sync_state,
        "event_count": s.event_count,
        "last_event_at": s.last_event_at,
        "attempts": s.attempts,
        "last_error": s.last_error,
        "synced_at": iso(s.synced_at) if s.synced_at else None,
        "rejected_events": s.rejected_events,
        "replica": (spool_dir / REPLICAS_DIRNAME / s.replica).exists(),
    }


class SessionNotFound(LookupError):
    pass


class ReplicaGone(LookupError):
    """The session is known, but its replica was deleted (retention, or by hand)."""


@dataclass
class Transcript:
    session: dict[str, Any]  # the sessions row, as the remote schema has it
    messages: list[dict[str, Any]]
    tool_executions: list[dict[str, Any]]
    sync_state: str | None  # None: the worker's index does not know the session
    replica: Path | None  # None: read from the remote database
    database: str | None = None  # the database it was read from (redacted URL)
    # Local only: events of the session kept as dead letters, and the seqs below the
    # highest one that never reached the replica (rejected, dropped, or still queued).
    rejected_events: int = 0
    missing_seqs: list[int] | None = None

    def timeline(self) -> list[tuple[str, dict[str, Any]]]:
        """Messages and tool calls in the order they happened: ("message", row) and
        ("tool", row). Tool calls have no seq in the schema: they are placed by
        their start time, after a message of the same millisecond."""
        entries: list[tuple[tuple[str, int, int], str, dict[str, Any]]] = []
        for m in self.messages:
            entries.append(((m["created_at"] or "", 0, m["seq"]), "message", m))
        for n, t in enumerate(self.tool_executions):
            entries.append(((t["started_at"] or t["ended_at"] or "", 1, n), "tool", t))
        entries.sort(key=lambda e: e[0])
        return [(kind, row) for _, kind, row in entries]

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session | {"sync_state": self.sync_state},
            "messages": self.messages,
            "tool_executions": self.tool_executions,
            "replica": None if self.replica is None else str(self.replica),
            "database": self.database,
            "rejected_events": self.rejected_events,
            "missing_seqs": self.missing_seqs,
        }


def load_transcript(spool_dir: Path, session_id: str) -> Transcript:
    known = _known_session(spool_dir, session_id)
    path = (
        spool_dir / REPLICAS_DIRNAME / known.replica
        if known is not None
        else replica_path(spool_dir, session_id)
    )
    if not path.exists():
        if known is None:
            raise SessionNotFound(session_id)
        raise ReplicaGone(
            f"the replica of session {session_id} is gone"
            + (
                f" (pruned after it synced at {iso(known.synced_at)}); its rows are in the"
                " remote database"
                if known.sync_state == st.SYNCED and known.synced_at
                else f" (sync state {known.sync_state})"
            )
        )
    conn = open_readonly(path)
    try:
        rows = read_session_rows(conn, session_id)
        applied = [r[0] for r in conn.execute("SELECT DISTINCT seq FROM applied_events")]
    except LookupError:
        raise SessionNotFound(session_id) from None
    finally:
        conn.close()
    highest = max(applied, default=-1)
    missing = sorted(set(range(highest + 1)) - set(applied))[:MAX_MISSING_SHOWN]
    return Transcript(
        session=rows.session,
        messages=[_row(MESSAGE_COLUMNS, r) for r in rows.messages],
        tool_executions=[_row(TOOL_COLUMNS, r) for r in rows.tool_executions],
        sync_state=known.sync_state if known else None,
        replica=path,
        rejected_events=known.rejected_events if known else 0,
        missing_seqs=missing,
    )


MAX_MISSING_SHOWN = 100


def _row(columns: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    return {c: v for c, v in zip(columns, values, strict=True) if c != "session_id"}


def _known_session(spool_dir: Path, session_id: str) -> st.SessionState | None:
    try:
        with st.existing_state(spool_dir) as store:
            return None if store is None else store.get(session_id)
    except sqlite3.OperationalError:
        return None  # a worker creating its state right now


# ---- how the text of a transcript reads -------------------------------------------


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def unquoted(text: str) -> str:
    """Text stored as a JSON string (``"total 8\\n-rw..."``, as some tools return
    their output) shown as the text it holds; anything else as it is."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, str):
            return value
    return text


def end_reason(metadata: Any) -> str | None:
    """Why the session ended, where its integration said (Claude Code's SessionEnd)."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    reason = metadata.get("end_reason") if isinstance(metadata, dict) else None
    return reason if isinstance(reason, str) else None
