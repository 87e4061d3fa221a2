"""The simulated agent every group uses: complete sessions of messages and tool calls.

Each session is ``session_start``, then ``events - 2`` events (a message with a
400-byte content, and every fifth step a tool call: ``tool_started`` +
``tool_finished`` with a 400-byte output; ``tools=False``: messages only), then ``session_end``. With ``interleave``
> 1, that many sessions are open at once and emitted round-robin (many agents in one
process). Session ids are ``<tag>-s<n>``.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import message_content, ready_and_wait


def session_script(events: int, tools: bool = True) -> list[str]:
    """The middle of a session: 'msg' (1 event) and 'tool' (2 events) steps."""
    steps: list[str] = []
    left = events - 2
    while left > 0:
        if tools and len(steps) % 5 == 3 and left >= 2:
            steps.append("tool")
            left -= 2
        else:
            steps.append("msg")
            left -= 1
    return steps


def expected_rows(events: int, tools: bool = True) -> tuple[int, int]:
    """(messages, tool executions) one session of ``events`` events produces."""
    script = session_script(events, tools)
    return script.count("msg"), script.count("tool")


def produce(
    spool: str,
    sessions: int,
    events: int,
    tag: str,
    interleave: int = 1,
    wait_go: bool = False,
    tools: bool = True,
) -> dict[str, Any]:
    from agentspool import Spool

    sp = Spool(spool)
    content = message_content(salt=tag)
    script = session_script(events, tools)
    if wait_go:
        ready_and_wait({"producer_id": sp.producer_id})
    started = time.monotonic()
    confirmed = True
    for first in range(0, sessions, interleave):
        group = [
            sp.session(agent=f"agent-{tag}", session_id=f"{tag}-s{n}", metadata={"n": n})
            for n in range(first, min(first + interleave, sessions))
        ]
        for i, step in enumerate(script):
            for s in group:
                if step == "msg":
                    s.message("assistant" if i % 2 else "user", content)
                else:
                    call = s.tool_started("search", input={"query": f"step {i}"})
                    s.tool_finished(call, output=content)
        for s in group:
            confirmed = s.end(timeout=120) and confirmed
    done = time.monotonic()
    stats = sp.stats()
    sp.close()
    return {
        "started": started,
        "done": done,
        "emitted": stats.emitted,
        "dropped": stats.dropped,
        "confirmed": confirmed,
    }
