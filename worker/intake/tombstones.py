"""Events of deleted sessions: dropped at the door.

``agentspool delete`` leaves a tombstone in worker.db for each session it deletes.
A producer may still have the session's events in its queue file (not yet drained,
or acked and replayed to rebuild a replica), or may even go on logging to it: those
events are acked without being applied, so the session is never recreated locally
nor sent to the database again. They are counted on the tombstone
(``dropped_events``) and logged once per session per worker run, not kept as dead
letters (which would keep the text that was meant to be deleted).
"""

from __future__ import annotations

import logging
from typing import Any

from agentspool.worker.state import StateStore

log = logging.getLogger("agentspool.worker")


class DeletedSessions:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._logged: set[str] = set()

    def drop(self, by_session: dict[str, list[tuple[int, dict[str, Any]]]]) -> list[int]:
        """Take the events of deleted sessions out of ``by_session``; return their
        queue item ids (to ack)."""
        dropped: list[int] = []
        for session_id in self.state.tombstoned(list(by_session)):
            events = by_session.pop(session_id)
            self.state.count_dropped(session_id, len(events))
            dropped.extend(item_id for item_id, _ in events)
            if session_id not in self._logged:
                self._logged.add(session_id)
                log.info(
                    "dropping events of session %s: it was deleted (agentspool delete)",
                    session_id,
                )
        return dropped
