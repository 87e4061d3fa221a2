"""Rows 7 and 11: the sync engine v2 at a distance, under many workers, and in memory.

Every figure comes from the real CLI (``agentspool worker run --burst``, a fresh
process) against a real sqld behind tests/proxy.py, which adds a fixed round trip to
every request and counts HTTP requests. Spools are written by real producer
processes (bench/workload.py). A "warm-up burst" is the same command over a spool of
one session: interpreter start, imports, the schema check and one batch; the backlog
figures are quoted beyond it, as the issue states them.

Anchor, measured in the same run: the v1 sync (bench/legacy_sync.py: one interactive
libsql transaction per session, through libsql 0.1.11 in a child process), over the
same replicas, through the same proxy, into a separate sqld. Every session is then
counted in each sqld, straight, not through the proxy (exactly once).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Child, Config, Ref, Row, clean_env, popen
from bench.workload import expected_rows
from tests.proxy import FaultProxy

GROUP = "sync"
SMALL_EVENTS = 16  # session_start, 10 messages, 2 tool calls (4 events), session_end

# Runs the CLI in-process and reports the process's peak RSS on the way out.
_BURST_WRAPPER = """
import json, sys, time
from agentspool.worker.cli import main
t0 = time.perf_counter()
try:
    main(["worker", "run", "--burst"])
    code = 0
except SystemExit as exc:
    code = exc.code
seconds = time.perf_counter() - t0
with open("/proc/self/status") as f:
    hwm = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")][0]
print(json.dumps({"code": code, "seconds": seconds, "hwm_kb": hwm}))
"""


def run(cfg: Config) -> list[Row]:
    return [*backlog_rows(cfg), *workers_rows(cfg), *big_session_rows(cfg), *memory_rows(cfg)]


# ---- helpers ----------------------------------------------------------------------


def _spool(cfg: Config, name: str, sessions: int, events: int, tools: bool = True) -> Path:
    spool = cfg.workdir(name)
    produced = Child(
        "workload:produce", spool=str(spool), sessions=sessions, events=events, tag=name,
        tools=tools,
    ).result(timeout=600)  # fmt: skip
    if produced["dropped"] or not produced["confirmed"]:
        raise AssertionError(f"sync: the producer lost events: {produced}")
    return spool


def _drain_only(spool: Path) -> None:
    """Apply the queues to replicas without syncing (for the v1 anchor)."""
    from agentspool.worker.intake.drain import Drainer
    from agentspool.worker.state import StateStore

    state = StateStore(spool)
    drainer = Drainer(spool, state)
    try:
        while drainer.drain_all().items:
            pass
    finally:
        drainer.close()
        state.close()


def burst(spool: Path, url: str, log: Path, **env: str) -> dict[str, Any]:
    """One ``agentspool worker run --burst`` (in a wrapper that reads its peak RSS)."""
    with open(log, "ab") as err:
        proc = popen(
            [common.PYTHON, "-c", _BURST_WRAPPER],
            env=clean_env(AGENTSPOOL_DIR=str(spool), TURSO_DATABASE_URL=url, **env),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        out, _ = proc.communicate(timeout=900)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if result["code"] != 0:
        raise AssertionError(f"sync: worker --burst exited with {result['code']}; see {log}")
    return result


def _migrate(url: str) -> None:
    subprocess.run(
        [common.AGENTSPOOL_CLI, "migrate", "--yes", "--db", url],
        env=clean_env(), check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def legacy_child(url: str, spool: str, session_ids: list[str]) -> dict[str, Any]:
    """The v1 sync in its own process (libsql is loaded here only): every session
    pushed in its own interactive transaction, as the v1 sync child did."""
    from agentspool.worker.intake.replica import open_readonly, read_session_rows, replica_path
    from bench import legacy_sync

    conn = legacy_sync.connect(url, None)
    legacy_sync.ensure_schema(conn)
    t0 = time.perf_counter()
    statements = 0
    for sid in session_ids:
        replica = open_readonly(replica_path(Path(spool), sid))
        try:
            rows = read_session_rows(replica, sid)
        finally:
            replica.close()
        statements += legacy_sync.push_session(conn, rows).statements
    seconds = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        hwm = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")][0]
    return {"seconds": seconds, "statements": statements, "hwm_kb": hwm}


def _legacy(proxy: FaultProxy, spool: Path, session_ids: list[str]) -> dict[str, Any]:
    before = proxy.counts().requests
    result: dict[str, Any] = Child(
        "sync:legacy_child", url=proxy.url, spool=str(spool), session_ids=session_ids
    ).result(timeout=1800)
    result["requests"] = proxy.counts().requests - before
    return result


def _count(sqld: Any, prefix: str) -> tuple[int, int, int]:
    like = prefix + "%"
    return (
        sqld.scalar(
            "SELECT count(*) FROM sessions WHERE id LIKE ? AND status = 'completed'", (like,)
        ),
        sqld.scalar("SELECT count(*) FROM messages WHERE session_id LIKE ?", (like,)),
        sqld.scalar("SELECT count(*) FROM tool_executions WHERE session_id LIKE ?", (like,)),
    )


def _expect(sqld: Any, prefix: str, sessions: int, events: int, tools: bool = True) -> None:
    messages, calls = expected_rows(events, tools)
    want = (sessions, sessions * messages, sessions * calls)
    got = _count(sqld, prefix)
    if got != want:
        raise AssertionError(f"sync: {prefix}: sqld holds {got}, expected {want}")


class _Proxied:
    """A fresh sqld behind a latency proxy, migrated (schema creation is not timed)."""

    def __init__(self, cfg: Config, name: str, rtt: float) -> None:
        self._server = common.sqld_server(cfg.workdir(name))
        self.sqld = self._server.__enter__()
        self.proxy = FaultProxy(self.sqld.port)
        self.proxy.set_latency(rtt)
        self.proxy.start()
        _migrate(self.sqld.url)

    def close(self) -> None:
        self.proxy.stop()
        self._server.__exit__(None, None, None)

    def __enter__(self) -> _Proxied:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _timed_burst(p: _Proxied, spool: Path, log: Path) -> dict[str, Any]:
    before = p.proxy.counts().requests
    result = burst(spool, p.proxy.url, log)
    result["requests"] = p.proxy.counts().requests - before
    return result


# ---- 11a: a backlog of 100 ended sessions at 50 ms per request ---------------------


def backlog_rows(cfg: Config) -> list[Row]:
    sessions = cfg.size(100, 10)
    rtt = 0.050
    warm_spool = _spool(cfg, "warm", 1, SMALL_EVENTS)
    backlog = _spool(cfg, "backlog", sessions, SMALL_EVENTS)
    anchor_spool = _spool(cfg, "v1backlog", sessions, SMALL_EVENTS)
    _drain_only(anchor_spool)
    log = cfg.tmp / "sync-backlog.log"
    with _Proxied(cfg, "backlog-sqld", rtt) as p:
        warm = _timed_burst(p, warm_spool, log)
        ours = _timed_burst(p, backlog, log)
        _expect(p.sqld, "backlog-", sessions, SMALL_EVENTS)
    with _Proxied(cfg, "v1backlog-sqld", rtt) as p:
        v1 = _legacy(p.proxy, anchor_spool, [f"v1backlog-s{n}" for n in range(sessions)])
        _expect(p.sqld, "v1backlog-", sessions, SMALL_EVENTS)
    beyond = ours["seconds"] - warm["seconds"]
    title = f"a backlog of {sessions} ended sessions (10 messages + 2 tool calls) at 50 ms"
    return [
        Row(GROUP, "sync.backlog.requests", f"11. HTTP requests to sync {title}",
            ours["requests"], "req", floor=Ref(1, "one batch"),
            anchor=Ref(v1["requests"], "v1: a transaction per session"), target=10,
            note=f"the whole burst, schema check included; warm-up burst: {warm['requests']}"),
        Row(GROUP, "sync.backlog.seconds", f"11. seconds beyond a one-session warm-up burst, {title}",
            beyond, "s", floor=Ref(rtt, "1 round trip"),
            anchor=Ref(v1["seconds"], "v1 (sync only, no start-up)"), target=1.5,
            note=f"burst {ours['seconds']:.2f} s - warm-up {warm['seconds']:.2f} s"),
    ]  # fmt: skip


# ---- 11b: 8 workers, 40 sessions each, into one sqld at 20 ms -------------------------


def workers_rows(cfg: Config) -> list[Row]:
    workers = cfg.size(8, 2)
    sessions = cfg.size(40, 5)
    rtt = 0.020
    spools = [_spool(cfg, f"job{n}", sessions, SMALL_EVENTS) for n in range(workers)]
    v1_spools = [_spool(cfg, f"v1job{n}", sessions, SMALL_EVENTS) for n in range(workers)]
    for spool in v1_spools:
        _drain_only(spool)
    warm_spool = _spool(cfg, "warm8", 1, SMALL_EVENTS)
    log = cfg.tmp / "sync-workers.log"
    with _Proxied(cfg, "workers-sqld", rtt) as p:
        warm = _timed_burst(p, warm_spool, log)
        before = p.proxy.counts().requests
        t0 = time.perf_counter()
        procs = [
            popen(
                [common.PYTHON, "-c", _BURST_WRAPPER],
                env=clean_env(AGENTSPOOL_DIR=str(s), TURSO_DATABASE_URL=p.proxy.url),
                stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True,
            )
            for s in spools
        ]  # fmt: skip
        results = [
            json.loads(proc.communicate(timeout=900)[0].strip().splitlines()[-1]) for proc in procs
        ]
        wall = time.perf_counter() - t0
        requests = p.proxy.counts().requests - before
        if any(r["code"] != 0 for r in results):
            raise AssertionError(f"sync: a worker failed: {results}; see {log}")
        for n in range(workers):
            _expect(p.sqld, f"job{n}-", sessions, SMALL_EVENTS)
    with _Proxied(cfg, "v1workers-sqld", rtt) as p:
        t0 = time.perf_counter()
        children = [
            Child("sync:legacy_child", url=p.proxy.url, spool=str(s),
                  session_ids=[f"v1job{n}-s{i}" for i in range(sessions)])
            for n, s in enumerate(v1_spools)
        ]  # fmt: skip
        v1 = [c.result(timeout=1800) for c in children]
        v1_wall = time.perf_counter() - t0
        for n in range(workers):
            _expect(p.sqld, f"v1job{n}-", sessions, SMALL_EVENTS)
    slowest = max(r["seconds"] for r in results)
    title = f"{workers} workers x {sessions} sessions bursting at once into one sqld at 20 ms"
    return [
        Row(GROUP, "sync.workers.slowest_beyond_warmup", f"11. slowest worker, seconds beyond a warm-up burst: {title}",
            slowest - warm["seconds"], "s", floor=Ref(rtt, "1 round trip"),
            anchor=Ref(max(r["seconds"] for r in v1), "v1: slowest worker's sync"), target=5.0,
            note=f"slowest burst {slowest:.2f} s, warm-up {warm['seconds']:.2f} s, all "
            f"{workers * sessions} sessions exactly once, {requests} requests in all; wall "
            f"{wall:.2f} s (v1 wall {v1_wall:.2f} s)"),
    ]  # fmt: skip


# ---- 11d / 7: one 10,000-message session at 20 ms ---------------------------------------


def big_session_rows(cfg: Config) -> list[Row]:
    events = cfg.size(10_000, 500)
    rtt = 0.020
    spool = _spool(cfg, "tenk", 1, events, tools=False)
    v1_spool = _spool(cfg, "v1tenk", 1, events, tools=False)
    _drain_only(v1_spool)
    log = cfg.tmp / "sync-10k.log"
    with _Proxied(cfg, "tenk-sqld", rtt) as p:
        ours = _timed_burst(p, spool, log)
        _expect(p.sqld, "tenk-", 1, events, tools=False)
    with _Proxied(cfg, "v1tenk-sqld", rtt) as p:
        v1 = _legacy(p.proxy, v1_spool, ["v1tenk-s0"])
        _expect(p.sqld, "v1tenk-", 1, events, tools=False)
    title = f"one {events - 2:,}-message session (400-byte contents) at 20 ms"
    return [
        Row(GROUP, "sync.10k.requests", f"11. HTTP requests to sync {title}", ours["requests"],
            "req", floor=Ref(1, "one request"), anchor=Ref(v1["requests"], "v1"), target=3,
            note="the whole burst, schema check included"),
        Row(GROUP, "sync.10k.seconds", f"7. seconds to sync {title} (whole burst)",
            ours["seconds"], "s", floor=Ref(rtt, "1 round trip"),
            anchor=Ref(v1["seconds"], "v1 (sync only, no start-up)"), target=1.5),
    ]  # fmt: skip


# ---- 11c: one 200,000-message session, loopback: peak RSS --------------------------------


def memory_rows(cfg: Config) -> list[Row]:
    events = cfg.size(200_000, 2_000)
    spool = _spool(cfg, "huge", 1, events, tools=False)
    v1_spool = _spool(cfg, "v1huge", 1, events, tools=False)
    _drain_only(v1_spool)
    log = cfg.tmp / "sync-huge.log"
    with common.sqld_server(cfg.workdir("huge-sqld")) as sqld:
        ours = burst(spool, sqld.url, log)
        _expect(sqld, "huge-", 1, events, tools=False)
    with common.sqld_server(cfg.workdir("v1huge-sqld")) as sqld:
        v1 = Child(
            "sync:legacy_child", url=sqld.url, spool=str(v1_spool), session_ids=["v1huge-s0"]
        ).result(timeout=1800)
        _expect(sqld, "v1huge-", 1, events, tools=False)
    batches = log.read_text().count("batch landed")
    return [
        Row(GROUP, "sync.huge.peak_rss_mb",
            f"11. peak RSS of the worker, draining and syncing one {events - 2:,}-message session",
            ours["hwm_kb"] / 1024, "MB", anchor=Ref(v1["hwm_kb"] / 1024, "v1 sync child"),
            target=100.0,
            note=f"the worker is one process (no sync child); {batches} batches; every row "
            f"exactly once; burst {ours['seconds']:.1f} s"),
    ]  # fmt: skip
