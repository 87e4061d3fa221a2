"""Claude Code's hook inbox, taken before each drain pass.

The hooks leave their payloads in ``<spool>/inbox/claude-code/`` as Claude Code sent
them (integrations/claude_code/inbox.py); the collector maps them, with each
session's transcript, into the shared queue that the pass then drains. Input that is
no payload becomes a dead letter. The service asks which sessions' Claude Code is
gone, to seal them ``abandoned``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from agentspool.integrations.claude_code import collector
from agentspool.worker.state import StateStore

log = logging.getLogger("agentspool.worker")

INBOX_PRODUCER = "inbox-claude-code"  # the dead letters' producer


class HookInbox:
    def __init__(self, spool_dir: Path, state: StateStore) -> None:
        self.spool_dir = spool_dir
        self.state = state
        self.final = False  # take an end at once: the agents have exited (burst, drain)
        self.waiting = 0  # files the last pass left (being written, an end's grace)
        self.failures = 0

    def collect(self) -> None:
        try:
            collected = collector.collect(str(self.spool_dir), final=self.final)
        except Exception as exc:  # a locked or full disk: the files wait for a later pass
            log.warning("cannot collect Claude Code hook calls yet: %s", exc)
            self.failures += 1
            return
        self.waiting = collected.waiting
        for n, (name, data, reason) in enumerate(collected.unreadable):
            log.warning("dead-lettered Claude Code hook input %s: %s", name, reason)
            self.state.add_dead_letter(
                INBOX_PRODUCER, time.time_ns() + n, data, f"hook input {name}: {reason}"
            )
        for warning in collected.warnings:
            log.warning("%s", warning)

    def sessions_gone(self) -> list[str]:
        """Open Claude Code sessions whose Claude Code process is gone (to seal)."""
        try:
            return collector.gone_sessions(str(self.spool_dir))
        except Exception as exc:
            log.warning("cannot check Claude Code sessions' processes: %s", exc)
            return []
