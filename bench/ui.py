"""Row 10: the web viewer (``agentspool ui``) over a 100,000-message session.

A replica of one session with 100,000 messages (400-byte contents, each with token
usage metadata) and 1,000 tool calls is built with the worker's own
``Replica.apply`` (the same rows the drain writes), then the real CLI,
``agentspool ui --spool``, serves it. Time to first byte is measured from a new
loopback connection's request to the first byte of the response, for

- ``/api/sessions``: the first request (it reads the replica's summary: counts and
  latest times) and then the median of repeated ones (a stat per replica);
- the session page's first transcript page (``/api/sessions/ID/events``, 200 items)
  and a page from the middle of the transcript (keyset pagination: the same cost);
- the session's row and counts (``/api/sessions/ID``) and its side panel's details
  (``/api/sessions/ID/details``: token usage summed over every message's metadata,
  the one full pass over the messages the page makes, requested beside the
  transcript so it never delays it).

Then the server's RSS (VmRSS and VmHWM) after serving all of them.

Row 18 (issue 26): a spool of 5,000 two-event sessions (built with ``Replica.apply``
and indexed with ``StateStore.record_drained``, as the drain does; each replica
closed, as the drain closes an ended session's): a replica's size per session, the
first ``/api/sessions`` of a new server, and that the server created or changed no
file in the spool. Issue 25 over the same spool: the list sorted by cost (every
replica's row read once, then cached), a session's tree, and the stats page's two
``/api/stats`` requests.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    AGENTSPOOL_CLI,
    Config,
    Row,
    clean_env,
    message_content,
    popen,
    proc_status_kb,
    stop,
)
from tests.helpers import wait_until

GROUP = "ui"
SESSION = "ui-bench-session"


def build_replica(spool: Path, messages: int, tools: int) -> None:
    from agentspool.worker.intake.replica import Replica, replica_path

    replica = Replica(replica_path(spool, SESSION))
    t0 = time.time() - messages * 0.01
    seq = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {"type": kind, "session_id": SESSION, "seq": seq, "producer_id": "bench",
                "pseq": seq, "ts": t0 + seq * 0.005, **fields}  # fmt: skip

    batch = [event("session_start", agent="bench", metadata={"model": "m", "cwd": "/w"})]
    every = max(1, messages // max(1, tools))
    for n in range(messages):
        batch.append(
            event("message", role="assistant" if n % 2 else "user",
                  content=message_content(salt=f"{n} "),
                  metadata={"usage": {"input_tokens": 100, "output_tokens": 10}})
        )  # fmt: skip
        if n % every == 0 and n // every < tools:
            call = f"call-{n}"
            batch.append(event("tool_started", call_id=call, name="search", input={"q": n}))
            batch.append(event("tool_finished", call_id=call, output={"hits": n}, duration_ms=4.2))
        if len(batch) >= 5000:
            replica.apply(batch)
            batch = []
    batch.append(event("session_end", status="completed"))
    replica.apply(batch)
    replica.close()


def ttfb_ms(port: int, path: str) -> float:
    """Request sent on a new connection -> first byte of the response."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        started = time.perf_counter()
        s.sendall(request.encode())
        first = s.recv(1)
        elapsed = time.perf_counter() - started
        if not first:
            raise ConnectionError(f"ui: no answer to {path}")
        rest = first
        while chunk := s.recv(1 << 16):
            rest += chunk
    if not rest.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"ui: {path} answered {rest[:80]!r}")
    return elapsed * 1000.0


def body(port: int, path: str) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_many(spool: Path, sessions: int) -> None:
    from agentspool.worker.intake.replica import Replica, replica_path
    from agentspool.worker.state import StateStore

    store = StateStore(spool)
    t0 = time.time() - sessions
    try:
        for n in range(sessions):
            sid = f"small-{n:05d}"
            replica = Replica(replica_path(spool, sid))
            common = {"session_id": sid, "producer_id": "bench"}
            replica.apply(
                [
                    {"type": "session_start", "seq": 1, "pseq": 1, "ts": t0 + n, "agent": "bench",
                     "metadata": {"cwd": "/w"}, **common},
                    {"type": "session_end", "seq": 2, "pseq": 2, "ts": t0 + n + 0.5,
                     "status": "completed", **common},
                ]
            )  # fmt: skip
            summary = replica.summary(sid)
            replica.close()
            assert summary is not None
            store.record_drained(
                session_id=sid, replica=replica.path.name, agent=summary.agent,
                status=summary.status, producer_id=summary.producer_id,
                event_count=summary.event_count, max_seq=summary.max_seq,
                last_event_at=None, now=time.time(), started_at=summary.started_at,
            )  # fmt: skip
    finally:
        store.close()


def spool_files(spool: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(spool)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in spool.rglob("*")
        if p.is_file()
    }


@contextmanager
def serving(spool: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``agentspool ui`` on the spool, answering (bounded wait), stopped after."""
    port = free_port()
    proc = popen(
        [AGENTSPOOL_CLI, "ui", "--spool", str(spool), "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def answers() -> bool:
            try:
                ttfb_ms(port, "/api/info")
                return True
            except OSError:
                return False

        wait_until(answers, 30, "agentspool ui to answer", interval=0.05)
        yield proc, port
    finally:
        stop(proc)


def run_many(cfg: Config) -> list[Row]:
    sessions = cfg.size(5_000, 200)
    spool = cfg.workdir("ui-many-spool")
    started = time.monotonic()
    build_many(spool, sessions)
    build_s = time.monotonic() - started
    replicas = [p for p in (spool / "replicas").glob("*.db")]
    per_session = sum(p.stat().st_size for p in replicas) / len(replicas)
    before = spool_files(spool)
    with serving(spool) as (_, port):
        first = ttfb_ms(port, "/api/sessions")
        again = ttfb_ms(port, "/api/sessions")
        listed = body(port, "/api/sessions")["total"]
        # Issue 25: a sort the worker's index cannot answer reads every replica's row
        # once (then cached); a session's tree looks among them; the stats page asks
        # compute_stats twice, which reads every replica each time.
        sorted_first = ttfb_ms(port, "/api/sessions?sort=cost")
        sorted_again = statistics.median(ttfb_ms(port, "/api/sessions?sort=cost") for _ in range(3))
        tree = ttfb_ms(port, "/api/sessions/small-00000/tree")
        stats_day = ttfb_ms(port, "/api/stats?by=day,agent&tool_groups=0")
        stats_tool = ttfb_ms(port, "/api/stats?by=tool")
    after = spool_files(spool)
    changed = sorted(set(after.items()) ^ set(before.items()))
    if listed != sessions or changed:
        raise AssertionError(f"ui: listed {listed} of {sessions}; files changed: {changed[:5]}")
    return [
        Row(GROUP, "ui.small_replica_kib", "18. a closed two-event session's replica",
            per_session / 1024, "KiB", target=16.0,
            note=f"{sessions:,} sessions: {per_session * sessions / 1e6:.0f} MB in all, built "
            f"in {build_s:.1f} s; 512-byte pages, the primary keys only (docs/RELIABILITY.md)"),
        Row(GROUP, "ui.first_list_many_ms",
            f"18. ui: the first /api/sessions over {sessions:,} sessions, time to first byte",
            first, "ms", target=1000.0,
            note=f"a new server; the next request {again:.0f} ms; the server created or "
            "changed no file in the spool"),
        Row(GROUP, "ui.sort_by_cost_first_ms",
            f"18. ui: the first /api/sessions?sort=cost over {sessions:,} sessions, TTFB",
            sorted_first, "ms", target=3000.0,
            note=f"reads every replica's session row once; then {sorted_again:.0f} ms "
            f"(cached by file signature); a session's tree after it {tree:.0f} ms"),
        Row(GROUP, "ui.stats_page_ms",
            f"18. ui: the stats page's two /api/stats over {sessions:,} sessions' replicas",
            stats_day + stats_tool, "ms",
            note=f"by=day,agent {stats_day:.0f} ms + by=tool {stats_tool:.0f} ms; "
            "reports/stats.py reads every replica per request (nothing cached)"),
    ]  # fmt: skip


def run(cfg: Config) -> list[Row]:
    return run_one(cfg) + run_many(cfg)


def run_one(cfg: Config) -> list[Row]:
    messages = cfg.size(100_000, 2_000)
    tools = cfg.size(1_000, 20)
    repeats = cfg.size(20, 3)
    spool = cfg.workdir("ui-spool")
    t = time.monotonic()
    build_replica(spool, messages, tools)
    build_s = time.monotonic() - t
    with serving(spool) as (proc, port):
        rss_idle_kb = proc_status_kb(proc.pid, "VmRSS")
        list_cold = ttfb_ms(port, "/api/sessions")
        list_warm = [ttfb_ms(port, "/api/sessions") for _ in range(repeats)]
        base = f"/api/sessions/{SESSION}"
        first_page = [ttfb_ms(port, base + "/events") for _ in range(repeats)]
        middle_cursor = None
        page = body(port, base + f"/events?limit={min(1000, messages // 2)}")
        middle_cursor = page["cursor"]
        for _ in range(max(0, messages // 2 // 1000 - 1)):
            page = body(
                port, base + "/events?limit=1000&after=" + urllib.parse.quote(page["cursor"])
            )
            middle_cursor = page["cursor"]
        middle = [
            ttfb_ms(port, base + "/events?after=" + urllib.parse.quote(middle_cursor))
            for _ in range(repeats)
        ]
        head = [ttfb_ms(port, base) for _ in range(repeats)]
        side = [ttfb_ms(port, base + "/details") for _ in range(repeats)]
        html = [ttfb_ms(port, f"/s/{SESSION}") for _ in range(repeats)]
        timeline = [ttfb_ms(port, base + "/tools") for _ in range(repeats)]
        rss_kb = proc_status_kb(proc.pid, "VmRSS")
        hwm_kb = proc_status_kb(proc.pid, "VmHWM")
    size_mb = sum(p.stat().st_size for p in (spool / "replicas").iterdir()) / 1e6
    what = f"{messages:,}-message replica"
    med = statistics.median
    return [
        Row(GROUP, "ui.sessions_ttfb_ms", f"10. ui: /api/sessions time to first byte, {what}",
            med(list_warm), "ms", target=50.0,
            note=f"median of {repeats}; the first request, which reads the replica's counts, "
            f"took {list_cold:.1f} ms; replica {size_mb:.0f} MB built in {build_s:.1f} s with "
            f"{tools:,} tool calls"),
        Row(GROUP, "ui.first_page_ttfb_ms",
            f"10. ui: a session's first transcript page (200 items), time to first byte, {what}",
            med(first_page), "ms", target=100.0,
            note=f"median of {repeats}; a page from the middle (after {messages // 2:,} items) "
            f"{med(middle):.1f} ms; the page's HTML {med(html):.2f} ms; the timeline "
            f"({tools:,} calls) {med(timeline):.1f} ms; the session's row and counts "
            f"{med(head):.1f} ms; the side panel's details (token usage summed over every "
            f"message, fetched beside the transcript) {med(side):.0f} ms"),
        Row(GROUP, "ui.server_rss_mb", f"10. ui: server RSS after serving the {what}",
            rss_kb / 1024, "MB", target=60.0,
            note=f"VmHWM {hwm_kb / 1024:.1f} MB; {rss_idle_kb / 1024:.1f} MB before the first request"),
    ]  # fmt: skip
