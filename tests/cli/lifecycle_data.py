"""Sessions for the lifecycle tests (prune --remote, delete, export), written through
the real `agentspool ingest` with times in the past where a test needs old sessions,
and synced to a real sqld (or the embedded file) by the real worker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.helpers import run_cli, worker_env
from tests.sqld import Sqld

DAY = 86400.0


def session_lines(
    session_id: str,
    *,
    agent: str = "coder",
    ended_days_ago: float = 0.0,
    messages: int = 3,
    tools: int = 1,
    end: bool = True,
) -> list[dict[str, Any]]:
    """A session of ``messages`` messages and ``tools`` tool calls that ended
    ``ended_days_ago`` days ago (its events a second apart, before that)."""
    count = 1 + messages + 2 * tools + 1
    t = time.time() - ended_days_ago * DAY - count
    events: list[dict[str, Any]] = [
        {"v": 1, "type": "session_start", "session_id": session_id, "seq": 0, "ts": t,
         "agent": agent, "metadata": {"task": session_id}},
    ]  # fmt: skip
    seq = 1
    for i in range(messages):
        role = "user" if i % 2 == 0 else "assistant"
        events.append({"v": 1, "type": "message", "session_id": session_id, "seq": seq,
                       "ts": t + seq, "role": role, "content": f"message {i} of {session_id}"})  # fmt: skip
        seq += 1
        if i < tools:
            call = f"call-{i}"
            events.append({"v": 1, "type": "tool_started", "session_id": session_id,
                           "seq": seq, "ts": t + seq, "call_id": call, "name": "search",
                           "input": {"q": i}})  # fmt: skip
            events.append({"v": 1, "type": "tool_finished", "session_id": session_id,
                           "seq": seq + 1, "ts": t + seq + 1, "call_id": call,
                           "output": {"hits": i}})  # fmt: skip
            seq += 2
    if end:
        events.append({"v": 1, "type": "session_end", "session_id": session_id, "seq": seq,
                       "ts": t + seq, "status": "completed"})  # fmt: skip
    return events


def ingest(spool: Path, tmp_path: Path, events: list[dict[str, Any]], name: str = "in") -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    run_cli("ingest", str(path), env=worker_env(spool), check=True)


def sync(spool: Path, db_url: str | None) -> None:
    run_cli("worker", "run", "--burst", env=worker_env(spool, db_url), check=True, timeout=300)


def rows_of(sqld: Sqld, session_id: str) -> tuple[int, int, int]:
    """(session rows, messages, tool executions) the database holds of a session."""
    return (
        sqld.scalar("SELECT count(*) FROM sessions WHERE id = ?", (session_id,)),
        sqld.scalar("SELECT count(*) FROM messages WHERE session_id = ?", (session_id,)),
        sqld.scalar("SELECT count(*) FROM tool_executions WHERE session_id = ?", (session_id,)),
    )
