"""Remote retention: with ``AGENTSPOOL_REMOTE_RETENTION`` set, the worker deletes from
the database, once a day, every session that ended longer ago than that (the
service does; ``--burst``, a CI job's worker, does not).

It is ``agentspool prune --remote --older-than ...`` (sync/remote_delete.py), run on
a thread of its own: the worker's loop never waits on the network, and each request
has the sync's deadline. The first run comes at the worker's first periodic check
after it starts; when a run finishes, its time is kept in worker.db
(``worker_meta``), so a worker that restarts does not run it again within the day.
A run that fails (the network, the database) is tried again an hour later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agentspool.worker import state as st
from agentspool.worker.config import Settings
from agentspool.worker.intake.replica import iso
from agentspool.worker.sync.database import DatabaseError, open_database
from agentspool.worker.sync.remote_delete import DeletionCounts, delete_expired

log = logging.getLogger("agentspool.worker")

RUN_EVERY_S = 86400.0
RETRY_AFTER_S = 3600.0
LAST_RUN_KEY = "remote_retention_at"


class RemoteRetention:
    def __init__(
        self, settings: Settings, state: st.StateStore, *, now: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.state = state  # used on the loop's thread only
        self.now = now
        self._thread: threading.Thread | None = None
        self._outcome: tuple[float, DeletionCounts | None, str | None] | None = None
        self._retry_at = 0.0

    def poll(self) -> None:
        """On the loop's thread: record a finished run, start one when it is due."""
        if self.settings.remote_retention <= 0:
            return
        if self._thread is not None:
            if self._thread.is_alive():
                return
            self._thread = None
            self._record()
        now = self.now()
        last = float(self.state.meta().get(LAST_RUN_KEY, "0") or 0)
        if now - last < RUN_EVERY_S or now < self._retry_at:
            return
        cutoff = iso(now - self.settings.remote_retention)
        self._thread = threading.Thread(
            target=self._run, args=(cutoff,), name="agentspool-retention", daemon=True
        )
        self._thread.start()

    def _run(self, cutoff: str) -> None:
        s = self.settings
        try:
            with open_database(s.effective_db_url, s.auth_token, timeout=s.sync_timeout) as db:
                counts = delete_expired(db, cutoff)
            self._outcome = (self.now(), counts, None)
        except DatabaseError as exc:
            if "no such table" in str(exc).lower():  # nothing was synced there yet
                self._outcome = (self.now(), DeletionCounts(), None)
            else:
                self._outcome = (self.now(), None, str(exc))
        except Exception as exc:  # a bug or an odd answer: tried again, never fatal
            self._outcome = (self.now(), None, f"{type(exc).__name__}: {exc}")

    def _record(self) -> None:
        if self._outcome is None:
            return
        finished, counts, error = self._outcome
        self._outcome = None
        if counts is None:
            self._retry_at = finished + RETRY_AFTER_S
            log.warning("remote retention failed: %s; trying again in an hour", error)
            return
        self.state.set_meta(LAST_RUN_KEY, repr(finished))
        log.info(
            "remote retention: deleted %d session(s) that ended more than %gs ago"
            " (%d messages, %d tool executions)",
            counts.sessions,
            self.settings.remote_retention,
            counts.messages,
            counts.tool_executions,
        )
