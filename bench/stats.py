"""Row 19 (issue 25): ``agentspool stats --remote`` over 100,000 sessions and 2 M messages
in a real sqld, at 20 ms per HTTP request.

The database is written straight into sqld's data file (``<db-path>/dbs/default/data``)
with sqlite3 before sqld starts: sqld 0.24.32 serves a file it finds there, and loading
2 M rows through HTTP would take minutes that measure nothing of ``stats``. The schema
is agentspool's own (``worker.migrations``). 100,000 sessions of 10 agents, 5 models,
started over 30 days, each with 20 messages (short content: ``stats`` never reads a
message) and 5 tool calls (500,000, 12 tool names, 5 % errors, log-normal durations).

Measured: ``compute_stats`` on a ``RemoteDatabase`` behind tests/proxy.py (20 ms added
to every request), the median of 3 runs for the totals and for each ``--by``; the HTTP
requests each made (the schema version, the figures, and with ``--by`` the ranks); and
the whole command, ``agentspool stats --remote --by tool --json`` in a fresh process
(interpreter start and imports included). Floor: one round trip (20 ms).

Also what pricing costs the drain: assistant messages with a model and a usage applied
to a replica (``Replica.apply``, as the drain applies them) when the worker prices them
with genai-prices, against the same messages carrying their source's ``cost_usd``
(nothing to price): the difference is the price lookup.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Config, Ref, Row, clean_env
from tests.proxy import FaultProxy

GROUP = "stats"
RTT = 0.020
MESSAGES_PER_SESSION = 20
TOOLS_PER_SESSION = 5
AGENTS = [f"agent-{n}" for n in range(10)]
MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o-mini", "gpt-5", "local-llama"]
TOOLS = ["Bash", "Read", "Edit", "Write", "Grep", "Glob", "WebFetch", "Task", "Todo", "LS",
         "NotebookEdit", "WebSearch"]  # fmt: skip
DAY_S = 86400.0
# The filtered rows: (row key, the flags, by, _timed's filters, what the note adds).
FILTERED = [
    ("since_agent_day", "--since 7d --agent A --by day", "day",
     {"since_days": 7, "agent": AGENTS[0]}, ""),
    ("since_week_agent", "--since 7d --by agent", "agent", {"since_days": 7},
     "23 % of the sessions match; "),
    ("since_all_day", "--since 31d --by day (every session matches)", "day",
     {"since_days": 31}, "a walk tests each index entry's session start; "),  # 30 days of data
]  # fmt: skip
BATCH = 20_000  # rows per executemany


def run(cfg: Config) -> list[Row]:
    sessions = cfg.size(100_000, 1_000)
    workdir = cfg.workdir("stats-sqld")
    started = time.monotonic()
    build_database(workdir / "db" / "dbs" / "default" / "data", sessions)
    build_s = time.monotonic() - started
    with common.sqld_server(workdir) as sqld:
        assert sqld.scalar("SELECT count(*) FROM sessions") == sessions
        proxy = FaultProxy(sqld.port)
        proxy.set_latency(RTT)
        proxy.start()
        try:
            timings = {by: _timed(proxy, by) for by in (None, "agent", "model", "day", "tool")}
            filtered = {key: _timed(proxy, by, **filters)
                        for key, _, by, filters, _ in FILTERED}  # fmt: skip
            command = _timed_command(proxy)
        finally:
            proxy.stop()
    scale = f"{sessions:,} sessions, {sessions * MESSAGES_PER_SESSION:,} messages"
    note = (
        f"{sessions * TOOLS_PER_SESSION:,} tool calls; median of 3; database built in"
        f" {build_s:.0f} s (not timed)"
    )
    rows = [
        Row(GROUP, f"stats.remote.{by or 'totals'}.seconds",
            f"19. stats --remote{f' --by {by}' if by else ''}, {scale}, at 20 ms",
            t["seconds"], "s", floor=Ref(RTT, "1 round trip"), target=1.0,
            note=f"{t['requests']} HTTP request(s); {note}")
        for by, t in timings.items()
    ]  # fmt: skip
    rows += [
        Row(GROUP, f"stats.remote.{key}.seconds", f"19. stats --remote {flags}, {scale}, at 20 ms",
            filtered[key]["seconds"], "s", floor=Ref(RTT, "1 round trip"), target=1.0,
            note=f"{filtered[key]['requests']} HTTP request(s); {about}{note}")
        for key, flags, _, _, about in FILTERED
    ]  # fmt: skip
    rows.append(
        Row(GROUP, "stats.remote.command.seconds",
            f"19. the command `agentspool stats --remote --by tool --json`, {scale}, at 20 ms",
            command, "s", floor=Ref(RTT, "1 round trip"),
            note="a fresh process: interpreter start, imports, the request, the output")
    )  # fmt: skip
    return rows + spool_rows(cfg) + pricing_rows(cfg)


def spool_rows(cfg: Config) -> list[Row]:
    """``agentspool stats`` without ``--remote``: every replica of a spool read (one
    small SQL aggregation each), read-only."""
    from agentspool.worker.reports.stats import compute_stats
    from bench.ui import build_many, spool_files

    sessions = cfg.size(1_000, 50)
    spool = cfg.workdir("stats-spool")
    build_many(spool, sessions)
    before = spool_files(spool)
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        found = compute_stats(spool, by="tool")
        seconds.append(time.perf_counter() - t0)
    if found["totals"]["sessions"] != sessions or spool_files(spool) != before:
        raise AssertionError("stats: a spool's replicas miscounted, or a file in it changed")
    median = statistics.median(seconds)
    return [
        Row(GROUP, "stats.spool.seconds", f"19. stats --by tool over a spool of {sessions:,} replicas",
            median, "s", note=f"{median / sessions * 1e3:.2f} ms a replica (open read-only, three"
            " queries); median of 3; no file in the spool created or changed"),
    ]  # fmt: skip


def pricing_rows(cfg: Config) -> list[Row]:
    messages = cfg.size(20_000, 1_000)
    priced = _apply_seconds(cfg, messages, given_cost=False) / messages * 1e6
    given = _apply_seconds(cfg, messages, given_cost=True) / messages * 1e6
    return [
        Row(GROUP, "stats.pricing.apply_us",
            "19. drain: apply one assistant message the worker prices (claude-sonnet-4-5)",
            priced, "us", anchor=Ref(given, "the same message with its source's cost_usd"),
            note=f"{messages:,} messages into one replica in batches of 500; the price"
            f" lookup adds {priced - given:.0f} µs a message"),
    ]  # fmt: skip


def _apply_seconds(cfg: Config, messages: int, *, given_cost: bool) -> float:
    from agentspool.worker.intake.pricing import price_usd
    from agentspool.worker.intake.replica import Replica

    price_usd("claude-sonnet-4-5", 1, 1, 0, 0)  # the table's import: once per worker
    replica = Replica(cfg.workdir("pricing") / "replica.db")
    usage = {"input_tokens": 12_000, "output_tokens": 800, "cache_read_tokens": 9_000,
             "cache_write_tokens": 1_000}  # fmt: skip
    metadata: dict[str, Any] = {"model": "claude-sonnet-4-5", "usage": usage}
    if given_cost:
        metadata["cost_usd"] = 0.0123
    now = time.time()

    def event(seq: int, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "session_id": "pricing", "seq": seq, "producer_id": "bench",
                "pseq": seq, "ts": now + seq * 0.001, **fields}  # fmt: skip

    replica.apply([event(0, "session_start", agent="bench")])
    seconds = 0.0
    for start in range(1, messages + 1, 500):
        batch = [event(seq, "message", role="assistant", content="ok", metadata=metadata)
                 for seq in range(start, min(start + 500, messages + 1))]  # fmt: skip
        t0 = time.perf_counter()
        replica.apply(batch)
        seconds += time.perf_counter() - t0
    replica.close()
    return seconds


def _timed(proxy: FaultProxy, by: str | None, **filters: Any) -> dict[str, Any]:
    from agentspool.worker.intake.replica import iso
    from agentspool.worker.reports.stats import compute_stats
    from agentspool.worker.sync.database import open_database

    if "since_days" in filters:
        filters["since"] = iso(time.time() - filters.pop("since_days") * DAY_S)
    seconds = []
    with open_database(proxy.url, None, timeout=60) as db:
        before = proxy.counts().requests
        for _ in range(3):
            t0 = time.perf_counter()
            result = compute_stats(db, by=by, **filters)
            seconds.append(time.perf_counter() - t0)
        requests = (proxy.counts().requests - before) / 3
    if not result["totals"]["sessions"]:
        raise AssertionError(f"stats: no sessions counted by={by} {filters}")
    return {"seconds": statistics.median(seconds), "requests": requests}


def _timed_command(proxy: FaultProxy) -> float:
    args = [common.AGENTSPOOL_CLI, "stats", "--remote", "--db", proxy.url, "--by", "tool"]
    t0 = time.perf_counter()
    subprocess.run([*args, "--json"], env=clean_env(), check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    return time.perf_counter() - t0


def build_database(path: Path, sessions: int) -> None:
    """agentspool's schema and the workload, written with sqlite3 in big transactions."""
    from agentspool.producer.transaction import transaction
    from agentspool.worker import migrations
    from agentspool.worker.intake.replica import iso

    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")  # as sqld keeps it
    conn.execute("PRAGMA synchronous=OFF")  # a scratch file, rebuilt on every run
    migrations.migrate(conn)
    rng = random.Random(25)
    now = time.time()
    session_rows, message_rows, tool_rows = [], [], []

    def flush(force: bool = False) -> None:
        for sql, rows in ((_SESSION_SQL, session_rows), (_MESSAGE_SQL, message_rows),
                          (_TOOL_SQL, tool_rows)):  # fmt: skip
            if rows and (force or len(rows) >= BATCH):
                with transaction(conn):
                    conn.executemany(sql, rows)
                rows.clear()

    for n in range(sessions):
        sid = f"bench-stats-{n:07d}"
        start = now - rng.random() * 30 * DAY_S
        model = rng.choice(MODELS)
        priced = model != "local-llama"
        totals = [0, 0, 0, 0, 0.0]
        for seq in range(1, MESSAGES_PER_SESSION + 1):
            at = iso(start + seq)
            if seq % 2:  # the user's turn
                message_rows.append((sid, seq, "user", "a question", at, None, None, None,
                                     None, None, None))  # fmt: skip
                continue
            inputs = rng.randint(1_000, 50_000)
            read = rng.randint(0, inputs // 2)
            output = rng.randint(50, 4_000)
            cost = (inputs * 3 + output * 15) / 1e6 if priced else None
            message_rows.append((sid, seq, "assistant", "an answer", at, model, inputs, output,
                                 read, 0, cost))  # fmt: skip
            totals = [totals[0] + inputs, totals[1] + output, totals[2] + read, 0,
                      totals[4] + (cost or 0.0)]  # fmt: skip
        for c in range(TOOLS_PER_SESSION):
            failed = rng.random() < 0.05
            duration = rng.lognormvariate(4.0, 1.5)
            tool_rows.append((sid, f"call-{c}", rng.choice(TOOLS), "error" if failed else "completed",
                              iso(start + c), iso(start + c + duration / 1000), duration))  # fmt: skip
        session_rows.append((sid, rng.choice(AGENTS), rng.choice(["completed"] * 8 + ["error", "abandoned"]),
                             iso(start), iso(start + 60), model, *totals[:4],
                             totals[4] if priced else None,
                             MESSAGES_PER_SESSION, TOOLS_PER_SESSION))  # fmt: skip
        flush()
    flush(force=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


_SESSION_SQL = (
    "INSERT INTO sessions (id, agent, status, started_at, ended_at, model, input_tokens,"
    " output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, message_count, tool_count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MESSAGE_SQL = (
    "INSERT INTO messages (session_id, seq, role, content, created_at, model, input_tokens,"
    " output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TOOL_SQL = (
    "INSERT INTO tool_executions (session_id, call_id, name, status, started_at, ended_at,"
    " duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
