"""Sealing abandoned sessions: open sessions whose producer will write no more.

A producer is gone when its process is (its queue file says which, producers.py),
when its queue file is, when a Claude Code session's Claude Code process is (the
hook inbox knows it), or when it has been silent for ``AGENTSPOOL_ABANDON_AFTER``.
A sealed session is ``abandoned`` and pending sync; a later end still completes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agentspool.producer import queuefile
from agentspool.worker import state as st
from agentspool.worker.intake.drain import Drainer, ReplicaRebuilt
from agentspool.worker.intake.producers import producer_gone

log = logging.getLogger("agentspool.worker")


def gone_producers(spool_dir: Path, drainer: Drainer, host: str) -> set[str]:
    """Producers that will write no more and whose queues are fully drained."""
    gone = set()
    live_dirs = {p.name: p for p in queuefile.list_queue_dirs(spool_dir)}
    for producer_id, queue_dir in live_dirs.items():
        cursor = drainer.cursor(queue_dir)
        if cursor is None or cursor.info is None:
            continue
        if producer_gone(cursor.info, host):
            pending = queuefile.read_pending(cursor.conn, cursor.last_id, 1)
            if not pending:
                gone.add(producer_id)
    return gone


def seal_abandoned(
    spool_dir: Path, state: st.StateStore, drainer: Drainer, *, host: str, now: float,
    abandon_after: float,
) -> int:  # fmt: skip
    """Seal the open sessions whose producer is gone (its process, its queue file, or
    for Claude Code its Claude Code process) or silent too long; returns how many."""
    # Sessions of the shared Claude Code queue end with their Claude Code process.
    claude_code_gone = set(drainer.hook_inbox.sessions_gone())
    if claude_code_gone:  # their transcripts' last lines were just queued: apply them
        drainer.drain_all()
    open_sessions = state.sessions(st.OPEN)
    if not open_sessions:
        return 0
    sealed = 0
    gone = gone_producers(spool_dir, drainer, host)
    live_dirs = {p.name for p in queuefile.list_queue_dirs(spool_dir)}
    for session in open_sessions:
        producer_missing = session.producer_id is not None and session.producer_id not in live_dirs
        silent = drainer.silent(session, now, abandon_after)
        owner_gone = session.session_id in claude_code_gone
        if session.producer_id in gone or producer_missing or silent or owner_gone:
            try:
                replica = drainer.replica(session.session_id)
            except ReplicaRebuilt:
                continue  # its replica was gone: sealed once it is rebuilt
            replica.seal_abandoned(session.session_id)
            state.mark_sealed(session.session_id)
            sealed += 1
            log.info("session %s abandoned by its producer: sealed for sync", session.session_id)
    return sealed
