"""Deleting sessions on request, locally: the replica and every row worker.db holds.

``agentspool delete`` first leaves a tombstone per session in worker.db
(``StateStore.add_tombstones``); the tombstone is what makes the deletion stick,
since the drain drops every later event of the session (intake/tombstones.py).
Then the local copy is removed here, by whoever holds the spool: the running worker
on its next pass (the command wakes it and waits), or the command itself, holding
the worker's lock, when no worker runs. The worker waits for a batch in flight
with the session to be answered before it removes it, so that a deletion in the
database that follows (``delete --remote``) comes after the last write of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agentspool.worker import state as st
from agentspool.worker.daemon.retention import replica_files
from agentspool.worker.intake.replica import REPLICAS_DIRNAME
from agentspool.worker.intake.replica_names import replica_path


def apply_tombstones(
    spool_dir: Path,
    state: st.StateStore,
    *,
    now: float,
    sending: Callable[[str], bool] = lambda session_id: False,
    forget_replica: Callable[[str], None] = lambda session_id: None,
) -> list[str]:
    """Remove the local copy of every session deleted since the last call (unless a
    batch with it is in flight: then on a later call); return their ids."""
    removed = []
    for session_id in state.tombstones_to_apply():
        if sending(session_id):
            continue
        forget_replica(session_id)  # the drain's open connection to it
        known = state.get(session_id)
        path = (
            spool_dir / REPLICAS_DIRNAME / known.replica
            if known is not None
            else replica_path(spool_dir, session_id)
        )
        for part in replica_files(path):
            part.unlink(missing_ok=True)
        state.remove_session(session_id, now)
        removed.append(session_id)
    return removed
