"""Where the viewer's rows come from: the spool (default) or the remote database.

- ``SpoolSource`` reads ``<spool>/replicas/*.db`` (one session each) and the worker's
  index ``<spool>/worker.db`` (its sync state), every file opened read-only in the
  way that neither creates a file nor writes one (``agentspool.worker.readonly``), so
  open sessions are live, a running worker is never disturbed, and the viewer
  changes nothing in the spool.
  The sessions list needs a few numbers per replica (its session row, counts, the
  latest activity); they are cached per file and read again only when the file (or
  its WAL) changed, so a list that refreshes every few seconds costs two ``stat``
  calls per replica.
- ``RemoteSource`` (remote_source.py) reads the sessions database (``--remote``:
  Turso, sqld, or a ``file:`` URL) through ``agentspool.worker.sync.database``; a
  teammate's sessions, with open ones visible as the worker checkpoints them.

Both answer the same calls; one session is read with the SQL of ``queries.py``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from agentspool.producer.transaction import transaction
from agentspool.worker import state as st
from agentspool.worker.intake.replica import REPLICAS_DIRNAME, iso
from agentspool.worker.ui.list_order import DEFAULT_SORT, sort_rows
from agentspool.worker.ui.queries import Query
from agentspool.worker.ui.spool_rows import (
    ERROR_PREVIEW_CHARS,
    file_signature,
    read_summary,
    replica_contains,
    stub,
)
from agentspool.worker.ui.spool_rows import connect_readonly as connect_readonly

log = logging.getLogger(__name__)

STATUSES = ("running", "completed", "error", "abandoned")
MAX_LIST = 500


class SessionNotFound(LookupError):
    pass


class AmbiguousSession(LookupError):
    def __init__(self, ref: str, candidates: list[str]) -> None:
        super().__init__(f"{ref!r} is the start of {len(candidates)} or more session ids")
        self.candidates = candidates


class ReplicaGone(LookupError):
    """The worker knows the session but its replica was pruned after it synced."""


class SourceError(RuntimeError):
    """The source cannot be read (the database is unreachable, a file is damaged);
    the message is one line without credentials."""


@dataclass(frozen=True)
class ListFilter:
    agent: str | None = None
    status: str | None = None
    since: str | None = None  # ISO text: sessions active at or after it
    text: str | None = None  # a substring of some message's content
    limit: int = 100
    offset: int = 0
    sort: str = DEFAULT_SORT  # one of list_order.SORTS
    descending: bool = True


@dataclass(frozen=True)
class StatsFilter:
    """The stats page's choice: compute_stats' arguments (``since``: sessions that
    started at or after it)."""

    agent: str | None = None
    status: str | None = None
    since: str | None = None
    by: tuple[str, ...] = ()
    tool_groups: bool = True  # False: tool figures in the totals alone (the charts)

    def arguments(self) -> dict[str, Any]:
        """compute_stats' keyword arguments: the fields, named as it names them."""
        return asdict(self)


class Source(Protocol):
    def describe(self) -> dict[str, Any]: ...

    def list_sessions(self, f: ListFilter) -> dict[str, Any]: ...

    def resolve(self, ref: str) -> str: ...

    def reader(self, session_id: str) -> Any:  # a context manager giving a Query
        ...

    def sync_state(self, session_id: str) -> dict[str, Any] | None: ...

    def family_rows(
        self, session_id: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
        """The session's row, its parent's (None: none, or not here) and rows that
        include its descendants (each with ``parent_id``), for family.tree."""
        ...

    def stats(self, f: StatsFilter) -> dict[str, Any]:
        """reports.stats.compute_stats over this source (the ``stats --json`` dict)."""
        ...

    def numbers(self, session_id: str, query: Query) -> dict[str, Any]:
        """message_count, tool_count, event_count, last_activity_at of one session."""
        ...

    def close(self) -> None: ...


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def duration_ms(started_at: str | None, ended_at: str | None, now: float) -> float | None:
    """From start to end, or to now for a session still running."""
    start = _parse_time(started_at)
    if start is None:
        return None
    end = _parse_time(ended_at) if ended_at else now
    return None if end is None else round(max(0.0, end - start) * 1000.0, 1)


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _sqlite_query(conn: sqlite3.Connection) -> Query:
    def query(sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(conn.execute(sql, tuple(params)).fetchall())

    return query


def _page(
    sessions: list[dict[str, Any]],
    f: ListFilter,
    now: float,
    source: dict[str, Any],
    fill: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Counts per status over everything the other filters kept, then the status
    filter, in the filter's order, and one page of it (``fill`` completes its rows)."""
    counts = dict.fromkeys(STATUSES, 0)
    for s in sessions:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    if f.status:
        sessions = [s for s in sessions if s["status"] == f.status]
    sessions = sort_rows(sessions, f.sort, f.descending)
    page = sessions[f.offset : f.offset + f.limit]
    if fill is not None:
        fill(page)
    for s in page:
        s["open"] = s["status"] == "running"
        # A running session lasts until now; an ended one without an end time (a
        # sealed replica of an older worker) until its last activity.
        ended = s["ended_at"] or (None if s["open"] else s["last_activity_at"])
        s["duration_ms"] = duration_ms(s["started_at"], ended, now)
    return {
        "sessions": page,
        "total": len(sessions),
        "counts": counts,
        "offset": f.offset,
        "limit": f.limit,
        "now": iso(now),
        "source": source,
    }


# ---- the spool --------------------------------------------------------------


@dataclass
class _Cached:
    signature: tuple[int, ...]
    summary: dict[str, Any] | None  # None: not a readable session replica (yet)


class SpoolSource:
    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.replicas_dir = spool_dir / REPLICAS_DIRNAME
        self._cache: dict[str, _Cached] = {}  # replica path -> its summary
        self._paths: dict[str, str] = {}  # session id -> replica path
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"kind": "spool", "where": str(self.spool_dir)}

    def close(self) -> None:
        pass

    # ---- the index of replicas ---------------------------------------------

    def _replica_files(self) -> list[str]:
        try:
            return [
                e.path
                for e in os.scandir(self.replicas_dir)
                if e.name.endswith(".db") and e.is_file(follow_symlinks=False)
            ]
        except FileNotFoundError:
            return []

    def _replica_summaries(
        self, known: dict[str, dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """A row per replica. One the worker's index describes (``known``: replica file
        name -> its state row, with a start time) is listed from that row alone, as a
        stub that ``_fill`` completes if it lands on the page: a first listing of
        5,000 sessions then reads one table, not 5,000 files. Any other replica (no
        worker has indexed it yet) is read, and its summary cached."""
        entries = self._replica_files()
        found: list[dict[str, Any]] = []
        stubs: dict[str, str] = {}
        for path in entries:
            state = (known or {}).get(os.path.basename(path))
            with self._lock:
                cached = self._cache.get(path)
            if state is not None and (cached is None or cached.summary is None):
                found.append(stub(state, path))
                stubs[state["session_id"]] = path
                continue
            summary = self._summary(path)
            if summary is not None:
                found.append(dict(summary))
        with self._lock:
            for gone in set(self._cache) - set(entries):
                del self._cache[gone]
            self._paths = {
                c.summary["id"]: p for p, c in self._cache.items() if c.summary is not None
            } | stubs
        return found

    def _fill(self, rows: list[dict[str, Any]]) -> None:
        """Complete the stubs among ``rows`` (one page) from their replicas."""
        for i, row in enumerate(rows):
            if row.get("stub"):
                summary = self._summary(row["path"])
                if summary is not None:
                    rows[i] = dict(summary) | {
                        "sync_state": row["sync_state"],
                        "sync_error": row["sync_error"],
                    }
                else:
                    row.pop("stub")

    def _summary(self, path: str) -> dict[str, Any] | None:
        """The replica's cached summary, read again (outside the lock: other requests
        go on meanwhile) when the file or its WAL changed."""
        signature = file_signature(path)
        with self._lock:
            cached = self._cache.get(path)
        if cached is None or cached.signature != signature:
            cached = _Cached(signature, read_summary(Path(path)))
            with self._lock:
                self._cache[path] = cached
                if cached.summary is not None:
                    self._paths[cached.summary["id"]] = path
        return cached.summary

    def _state_rows(self) -> dict[str, dict[str, Any]]:
        path = self.spool_dir / st.STATE_FILENAME
        if not path.exists():
            return {}
        try:
            conn = connect_readonly(path)
        except (OSError, sqlite3.Error):
            return {}
        columns = (
            "session_id, replica, agent, status, sync_state, event_count,"
            " last_event_at, last_error, synced_at"
        )
        try:
            try:
                rows = conn.execute(f"SELECT {columns}, started_at FROM session_state").fetchall()
            except sqlite3.OperationalError:  # a worker.db an older worker wrote
                rows = conn.execute(f"SELECT {columns} FROM session_state").fetchall()
        except sqlite3.Error:
            return {}  # a worker creating its state right now, or a damaged file
        finally:
            conn.close()
        return {r["session_id"]: r for r in rows}

    def _known(self, states: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Replica file name -> the worker's row for it, where the row can stand in."""
        rows = (self._state_rows() if states is None else states).values()
        return {r["replica"]: r for r in rows if r.get("started_at")}

    def _sessions(self) -> list[dict[str, Any]]:
        states = self._state_rows()
        sessions = self._replica_summaries(self._known(states))
        have = set()
        for s in sessions:
            have.add(s["id"])
            state = states.get(s["id"])
            s["sync_state"] = state["sync_state"] if state else None
            s["sync_error"] = _short(state["last_error"]) if state else None
        for sid, state in states.items():
            if sid in have:
                continue
            # Pruned after its sync: the worker's index still knows it.
            row = stub(state, path="")  # its replica is gone: no path, no start time
            del row["stub"]
            row.update(started_at=None, replica=False, path=None,
                       sync_state=state["sync_state"], sync_error=_short(state["last_error"]))  # fmt: skip
            sessions.append(row)
        return sessions

    # ---- the calls ----------------------------------------------------------

    def list_sessions(self, f: ListFilter) -> dict[str, Any]:
        now = time.time()
        sessions = self._sessions()
        agents = sorted({s["agent"] for s in sessions})
        if f.agent:
            sessions = [s for s in sessions if s["agent"] == f.agent]
        if f.since:
            since = f.since
            sessions = [
                s
                for s in sessions
                if s["status"] == "running" or (s["last_activity_at"] or "") >= since
            ]
        if f.text:
            pattern = like_pattern(f.text)
            sessions = [s for s in sessions if s["replica"] and replica_contains(s, pattern)]
        if f.sort != DEFAULT_SORT:
            # The worker's index has no model, tokens or cost: sorting by them reads
            # every replica's summary once (cached by file signature afterwards).
            self._fill(sessions)
        result = _page(sessions, f, now, self.describe(), fill=self._fill)
        for s in result["sessions"]:
            s.pop("path", None)
            s.pop("stub", None)
        result["agents"] = agents
        return result

    def resolve(self, ref: str) -> str:
        with self._lock:  # the common case: a full id the page already had
            if ref in self._paths:
                return ref
        ids = {s["id"] for s in self._sessions()}
        if ref in ids:
            return ref
        matches = sorted(i for i in ids if i.startswith(ref))
        if not matches:
            raise SessionNotFound(ref)
        if len(matches) > 1:
            raise AmbiguousSession(ref, matches[:10])
        return matches[0]

    def _replica_path(self, session_id: str) -> str:
        with self._lock:
            path = self._paths.get(session_id)
        if path is None:
            self._replica_summaries(self._known())  # a session new since the last list
            with self._lock:
                path = self._paths.get(session_id)
        if path is not None:
            return path
        state = self._state_rows().get(session_id)
        if state is not None:
            raise ReplicaGone(
                f"the replica of session {session_id} was pruned after it synced"
                f" (sync state {state['sync_state']}); its rows are in the remote database:"
                " agentspool ui --remote"
            )
        raise SessionNotFound(session_id)

    def numbers(self, session_id: str, query: Query) -> dict[str, Any]:
        """From the cached summary of the replica, read again only if it changed:
        counting a 100,000-message replica on every poll of an open page would cost
        more than everything else the poll does."""
        summary = self._summary(self._replica_path(session_id))
        if summary is None:
            raise SessionNotFound(session_id)
        return {k: summary[k] for k in _NUMBERS}

    @contextmanager
    def reader(self, session_id: str) -> Iterator[Query]:
        path = Path(self._replica_path(session_id))
        try:
            conn = connect_readonly(path)
        except FileNotFoundError:
            raise SessionNotFound(session_id) from None
        try:
            with transaction(conn, begin="BEGIN"):  # one snapshot for one request's queries
                yield _sqlite_query(conn)
        except sqlite3.DatabaseError as exc:
            raise SourceError(f"cannot read the replica {path.name}: {exc}") from None
        finally:
            conn.close()

    def family_rows(
        self, session_id: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
        """Every replica's summary (each replica read once, then cached by its file
        signature): a replica holds one session, so its children are found by
        reading the others. A child whose replica was pruned after its sync is not
        here (its row is in the remote database: ``--remote``)."""
        sessions = self._sessions()
        self._fill(sessions)
        by_id = {s["id"]: s for s in sessions}
        own = by_id.get(session_id)
        if own is None:
            raise SessionNotFound(session_id)
        parent = by_id.get(own["parent_id"]) if own.get("parent_id") else None
        return own, parent, sessions

    def stats(self, f: StatsFilter) -> dict[str, Any]:
        """Over the replicas still in the spool, each read-only (reports/stats.py)."""
        from agentspool.worker.reports.stats import compute_stats

        return compute_stats(self.spool_dir, **f.arguments())

    def sync_state(self, session_id: str) -> dict[str, Any] | None:
        state = self._state_rows().get(session_id)
        if state is None:
            return None
        return {
            "sync_state": state["sync_state"],
            "sync_error": _short(state["last_error"]),
            "synced_at": iso(state["synced_at"]) if state["synced_at"] else None,
        }


_NUMBERS = ("message_count", "tool_count", "event_count", "last_activity_at")


def _short(text: str | None) -> str | None:
    return None if text is None else text[:ERROR_PREVIEW_CHARS]
