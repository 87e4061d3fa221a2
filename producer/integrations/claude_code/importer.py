"""Claude Code transcripts on disk -> the spool (``agentspool import claude-code``).

Claude Code deletes transcripts after ``cleanupPeriodDays`` (30 by default); this
keeps them. Each main transcript (``~/.claude/projects/<project>/<session>.jsonl``) is
one session, each of its subagent transcripts (``<session>/subagents/agent-<id>.jsonl``)
a child session, mapped by the same rules as live sessions (mapping.py) into the same
shared queue, through the same keys: importing twice, or importing a session the hooks
captured live, logs nothing twice and adds what was missing (replies a hook-less run
never sent, tool calls whose hooks did not run). A session the hooks did not end is
ended at its last record, unless its Claude Code still runs.

Standard library only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agentspool.producer.sharedqueue import SessionAppend, SharedQueue

from . import AGENT, mapping
from .collector import owner_gone
from .transcript import (
    AssistantResponse,
    Record,
    UserPrompt,
    read_chunks,
    subagent_transcripts,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@dataclass
class ImportSummary:
    files: int = 0
    sessions: int = 0  # sessions that got events
    new_sessions: int = 0
    entries: int = 0  # transcript records read
    messages: int = 0
    tools: int = 0
    skipped: int = 0  # records already logged
    bad_lines: int = 0
    problems: list[str] = field(default_factory=list)  # files that could not be read


def find_transcripts(paths: Iterable[Path]) -> list[Path]:
    """Main transcripts under ``paths`` (files or folders); subagents come with them."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p for p in path.rglob("*.jsonl") if "subagents" not in p.parts)
        elif path.suffix == ".jsonl" and "subagents" not in path.parts:
            found.add(path)
    return sorted(found)


def import_transcripts(
    spool_dir: str,
    transcripts: list[Path],
    *,
    progress: Callable[[Path], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    queue = SharedQueue(spool_dir, AGENT)
    host = socket.gethostname()
    # Durable at the end, not per session: an import cut short is simply run again.
    with queue.bulk():
        for path in transcripts:
            session_id = path.stem
            if _import_one(queue, path, session_id, None, host, summary):
                for sub in subagent_transcripts(path):
                    child = mapping.subagent_session_id(session_id, sub.agent_id)
                    _import_one(queue, sub.path, child, (session_id, sub), host, summary)
            if progress is not None:
                progress(path)
    return summary


def _import_one(
    queue: SharedQueue,
    path: Path,
    session_id: str,
    parent: tuple[str, Any] | None,
    host: str,
    summary: ImportSummary,
) -> bool:
    summary.files += 1
    try:
        records, bad = _read_whole(path)
    except OSError as exc:
        summary.problems.append(f"{path}: {exc}")
        return False
    summary.entries += len(records)
    summary.bad_lines += bad
    if not records:
        return True
    with queue.session(session_id) as session:
        new = not session.known
        session.at = mapping.epoch(_timestamp(records[0]))
        if parent is None:
            mapping.start(session, {"hook_event_name": "import", "transcript_path": str(path),
                                    "source": "import"}, None)  # fmt: skip
            session.state.setdefault("transcript", {"path": str(path), "offset": 0})
        else:
            parent_id, sub = parent
            mapping.start_subagent(session, parent_id, sub.agent_id,
                                   sub.meta.get("agentType"), None)  # fmt: skip
            session.state.setdefault("path", str(path))
        for record in records:
            before = len(session.events)
            if not mapping.transcript_records(session, [record], final=True):
                summary.skipped += 1  # logged before (live, or by an earlier import)
            added = session.events[before:]
            summary.messages += sum(1 for e in added if e["type"] == "message")
            summary.tools += sum(1 for e in added if e["type"] == "tool_started")
        if _should_end(session, host):
            session.at = mapping.epoch(_timestamp(records[-1]))
            mapping.end(session, {"reason": "imported"})
        if len(session.events) > 0:
            summary.sessions += 1
            summary.new_sessions += new
    return True


def _should_end(session: SessionAppend, host: str) -> bool:
    if session.state.get("ended"):
        return False
    owner = session.state.get("owner")
    return not isinstance(owner, dict) or owner_gone(owner, host)


def _read_whole(path: Path) -> tuple[list[Record], int]:
    """Every record of a transcript and its count of unreadable lines (a file that is
    not a regular one raises ``NotATranscript``, an ``OSError``)."""
    records: list[Record] = []
    bad = offset = 0
    for read in read_chunks(path, final=True):
        records += read.records
        bad += read.bad_lines
        offset = read.offset
    if offset < os.stat(path).st_size:  # a last line without its newline: a cut file
        bad += 1
    return records, bad


def _timestamp(record: Record) -> str | None:
    if isinstance(record, AssistantResponse):
        return record.started_at
    if isinstance(record, UserPrompt):
        return record.timestamp
    return getattr(record, "timestamp", None)
