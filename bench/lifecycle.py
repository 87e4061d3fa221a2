"""Row 20 (issue 24): export and remote retention rates.

Sessions of 100 messages and 5 tool calls each, ended 100 days ago, are written with
the real ``agentspool ingest`` and synced to a real sqld with the real worker. Then,
each through the real CLI (its whole run, interpreter start included):

- ``agentspool export`` from the replicas, and ``export --remote`` from sqld over
  loopback: messages per second (the session lines nested, streamed);
- ``agentspool prune --remote --older-than 90d``: sessions deleted per second (atomic
  batches of up to 100 whole sessions, one request each).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench import common
from bench.common import Config, Row, clean_env, sqld_server

GROUP = "lifecycle"
MESSAGES = 100
TOOLS = 5


def _events(session_id: str, ended_at: float) -> list[dict[str, Any]]:
    count = 1 + MESSAGES + 2 * TOOLS + 1
    t = ended_at - count
    events: list[dict[str, Any]] = [
        {"v": 1, "type": "session_start", "session_id": session_id, "seq": 0, "ts": t,
         "agent": "bench"}
    ]  # fmt: skip
    seq = 1
    for i in range(MESSAGES):
        events.append({"v": 1, "type": "message", "session_id": session_id, "seq": seq,
                       "ts": t + seq, "role": "assistant" if i % 2 else "user",
                       "content": common.message_content(salt=f"{i} ")})  # fmt: skip
        seq += 1
        if i % (MESSAGES // TOOLS) == 0:
            call = f"c{i}"
            events.append({"v": 1, "type": "tool_started", "session_id": session_id,
                           "seq": seq, "ts": t + seq, "call_id": call, "name": "search",
                           "input": {"q": i}})  # fmt: skip
            events.append({"v": 1, "type": "tool_finished", "session_id": session_id,
                           "seq": seq + 1, "ts": t + seq + 1, "call_id": call,
                           "output": {"hits": i}})  # fmt: skip
            seq += 2
    events.append({"v": 1, "type": "session_end", "session_id": session_id, "seq": seq,
                   "ts": t + seq, "status": "completed"})  # fmt: skip
    return events


def _cli(env: dict[str, str], *args: str) -> float:
    """Seconds one ``agentspool`` command took (it must succeed)."""
    started = time.perf_counter()
    subprocess.run([common.AGENTSPOOL_CLI, *args], env=env, check=True, capture_output=True,
                   timeout=1800)  # fmt: skip
    return time.perf_counter() - started


def run(cfg: Config) -> list[Row]:
    sessions = cfg.size(1_000, 20)
    work = cfg.workdir("lifecycle")
    spool = work / "spool"
    ended = time.time() - 100 * 86400
    with open(work / "in.jsonl", "w") as f:
        for n in range(sessions):
            for event in _events(f"life-{n:05d}", ended + n):
                f.write(json.dumps(event) + "\n")
    (work / "sqld").mkdir()
    with sqld_server(work / "sqld") as sqld:
        env = clean_env(AGENTSPOOL_DIR=str(spool), TURSO_DATABASE_URL=sqld.url)
        _cli(env, "ingest", str(work / "in.jsonl"))
        _cli(env, "worker", "run", "--burst")
        messages = sessions * MESSAGES
        if sqld.scalar("SELECT count(*) FROM messages") != messages:
            raise AssertionError("lifecycle: the sessions did not all land in sqld")
        local = _cli(env, "export", "-o", str(work / "local.jsonl"))
        remote = _cli(env, "export", "--remote", "-o", str(work / "remote.jsonl"))
        if (work / "local.jsonl").read_bytes() != (work / "remote.jsonl").read_bytes():
            raise AssertionError("lifecycle: export --remote differs from the local export")
        size_mb = (work / "local.jsonl").stat().st_size / 1e6
        prune = _cli(env, "prune", "--remote", "--older-than", "90d")
        if sqld.scalar("SELECT count(*) FROM sessions") != 0:
            raise AssertionError("lifecycle: prune --remote left sessions behind")
    what = f"{sessions:,} sessions x ({MESSAGES} messages + {TOOLS} tool calls)"
    return [
        Row(GROUP, "lifecycle.export_local_per_s", "20. export from the replicas, messages/s",
            messages / local, "/s", higher_is_better=True,
            note=f"{what}, {size_mb:.0f} MB of JSON Lines, {local:.2f} s for the whole command"),
        Row(GROUP, "lifecycle.export_remote_per_s", "20. export --remote from sqld (loopback), messages/s",
            messages / remote, "/s", higher_is_better=True,
            note=f"the same lines, byte for byte; {remote:.2f} s"),
        Row(GROUP, "lifecycle.prune_remote_per_s", "20. prune --remote in sqld (loopback), sessions/s",
            sessions / prune, "/s", higher_is_better=True,
            note=f"{what}: every row deleted in atomic batches of whole sessions; {prune:.2f} s"),
    ]  # fmt: skip
