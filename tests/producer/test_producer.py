"""The producer half: import hygiene, never-raising emits, durability, fork, exit, paths.

Everything that forks, exits or gets killed runs in a real subprocess (``run_python``);
the rest runs in-process against a temporary spool. Queue files are read with the
format module's own helpers (``queuefile``), the way the worker reads them.
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentspool import Spool
from agentspool.producer import default_spool_dir, queuefile
from tests.helpers import finish, run_cli, run_python, wait_until, worker_env
from tests.sqld import Sqld

# ---- helpers ---------------------------------------------------------------------


def queue_dirs(spool: Path) -> list[Path]:
    return queuefile.list_queue_dirs(spool)


def read_queue(queue_dir: Path) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """(rows by status, decoded events in file order) of one producer's queue file."""
    conn = queuefile.connect(queue_dir, readonly=True)
    try:
        counts = queuefile.count_by_status(conn)
        items = queuefile.read_pending(conn, 0, 10**9)
    finally:
        conn.close()
    return counts, [json.loads(item.data) for item in items]


def only_queue(spool: Path) -> tuple[Path, dict[int, int], list[dict[str, Any]]]:
    dirs = queue_dirs(spool)
    assert len(dirs) == 1, f"expected one queue file, found {[d.name for d in dirs]}"
    counts, events = read_queue(dirs[0])
    return dirs[0], counts, events


def session_events(events: list[dict[str, Any]], session_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["session_id"] == session_id]


def assert_gapless(events: list[dict[str, Any]], session_id: str) -> list[dict[str, Any]]:
    mine = sorted(session_events(events, session_id), key=lambda e: e["seq"])
    seqs = [e["seq"] for e in mine]
    assert seqs == list(range(len(mine))), f"session {session_id}: seqs not 0..n-1: {seqs[:20]}"
    return mine


class LineReader:
    """Reads a child's stdout lines on a thread so the test can wait with a bound."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line starting with {prefix!r} within {timeout}s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line


def kill9(proc: subprocess.Popen[str]) -> str:
    """SIGKILL and reap (a zombie would still look alive to the worker); returns stderr."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not killed"
    assert proc.stderr is not None
    return proc.stderr.read()


@pytest.fixture
def spools() -> Iterator[list[Spool]]:
    """In-process spools to close after the test (their writer threads then end)."""
    made: list[Spool] = []
    yield made
    for s in made:
        s.close(timeout=1)


@pytest.fixture
def blocked_path(tmp_path: Path) -> Path:
    """A spool path that is a regular file: no queue directory can ever be created."""
    path = tmp_path / "not-a-directory"
    path.write_text("a file, not a spool\n")
    return path


# ---- 1. import hygiene -------------------------------------------------------------


def test_producer_imports_no_worker_dependencies(spool: Path) -> None:
    proc = run_python(
        """
        import json, sys
        import agentspool
        import agentspool.producer
        from agentspool import Spool
        after_import = sorted(sys.modules)
        # using it (the writer thread writes the queue file) must not pull them in either
        sp = Spool(SPOOL)
        s = sp.session(agent="a")
        s.message("user", "hi")
        assert s.end(timeout=30)
        print(json.dumps({"after_import": after_import, "after_use": sorted(sys.modules)}))
        """,
        spool,
    )
    modules = json.loads(finish(proc, timeout=60).strip().splitlines()[-1])
    forbidden = (
        "libsql",
        "libsql_experimental",
        "click",
        "watchdog",
        "prometheus_client",
        "httpx",
        "agentspool.worker",
    )
    for stage, names in modules.items():
        bad = [
            n for n in names if n in forbidden or n.startswith(tuple(f + "." for f in forbidden))
        ]
        assert bad == [], f"{stage}: the producer imported {bad}"
    assert "agentspool.producer" in modules["after_import"]
    # The producer writes persist-queue's format without importing it (8.5 MB).
    assert "persistqueue" not in modules["after_use"]
    assert "sqlite3" in modules["after_use"]  # the check above saw a real write


# ---- 2. emitting never raises ------------------------------------------------------


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def test_strange_content_never_raises_and_is_coerced(spool: Path, spools: list[Spool]) -> None:
    sp = Spool(spool)
    spools.append(sp)
    s = sp.session(agent=None, metadata={"when": datetime.datetime(2024, 1, 2)})  # type: ignore[arg-type]
    contents: list[Any] = [
        object(),
        {1, 2, 3},
        b"raw \xff bytes",
        datetime.datetime(2024, 5, 6, 7, 8, 9),
        2**200,
        -(2**100),
        float("nan"),
        "lone surrogate \ud800",
        {"nested": [{"set": frozenset({"x"})}, (1, 2)]},
        {1: "int key", None: "none key"},
    ]
    started = time.perf_counter()
    for content in contents:
        s.message(None, content)  # type: ignore[arg-type]
    s.message("user", "text", metadata="not a dict")  # type: ignore[arg-type]
    call = s.tool_started(None, input={"bytes": b"\x00"}, call_id=12345)  # type: ignore[arg-type]
    s.tool_finished(call, output=object(), error=ValueError("bad"))  # type: ignore[arg-type]
    s.tool_finished("never-started", output=None)
    elapsed = time.perf_counter() - started
    assert s.end(timeout=30) is True
    assert elapsed < 2.0, f"{len(contents) + 4} emits took {elapsed:.3f}s"

    stats = sp.stats()
    assert stats.dropped == 0 and stats.write_errors == 0 and stats.last_error is None
    _, counts, events = only_queue(spool)
    n = 1 + len(contents) + 1 + 2 + 1 + 1
    assert counts == {queuefile.STATUS_INITED: n}
    mine = assert_gapless(events, s.id)
    assert mine[0]["type"] == "session_start" and mine[0]["agent"] == "None"
    messages = [e for e in mine if e["type"] == "message"]
    assert all(m["role"] in ("None", "user") for m in messages)
    assert messages[2]["content"] == "raw \ufffd bytes"
    assert messages[3]["content"] == "2024-05-06 07:08:09"
    assert messages[4]["content"] == 2**200
    assert sorted(messages[1]["content"]) == [1, 2, 3]
    assert messages[-1]["metadata"] == {"value": "not a dict"}
    assert mine[-3]["type"] == "tool_finished" and mine[-3]["error"] == "bad"
    assert mine[-1]["type"] == "session_end" and mine[-1]["status"] == "completed"


def test_unencodable_values_are_coerced_not_dropped(spool: Path, spools: list[Spool]) -> None:
    """Values json cannot encode even with a fallback (an int past Python's 4,300-digit
    str limit, a self-referencing list, an object whose str() raises) must not raise;
    the design says the producer coerces instead: the event must still be written,
    so the session keeps its gapless order."""
    sp = Spool(spool)
    spools.append(sp)
    s = sp.session(agent="a")
    circular: list[Any] = []
    circular.append(circular)
    odd = {"huge int": 10**5000, "circular list": circular, "unprintable": Unprintable()}
    for label, value in odd.items():
        s.message("user", value, metadata={"label": label})  # must not raise
    assert s.end(timeout=30) is True
    _, _, events = only_queue(spool)
    written = {e["metadata"]["label"] for e in events if e["type"] == "message"}
    lost = [label for label in odd if label not in written]
    stats = sp.stats()
    assert lost == [] and stats.dropped == 0, (
        f"events silently lost instead of coerced: {lost} (stats.dropped={stats.dropped}); "
        f"seqs written: {sorted(e['seq'] for e in events)}"
    )
    assert_gapless(events, s.id)


def test_emit_after_close_is_dropped_and_counted(spool: Path, spools: list[Spool]) -> None:
    sp = Spool(spool)
    spools.append(sp)
    s = sp.session(agent="a")
    s.message("user", "before close")
    assert sp.close(timeout=10) is True
    assert sp.stats().dropped == 0
    for i in range(100):
        s.message("user", f"after close {i}")
    call = s.tool_started("t")
    s.tool_finished(call)
    late = sp.session(agent="b")  # starting a session on a closed spool is fine too
    late.message("user", "x")
    assert sp.stats().dropped == 100 + 2 + 2
    assert sp.flush(timeout=0.2) is False
    assert s.end(timeout=0.2) is False
    assert sp.close() is True  # closing twice is harmless
    _, counts, events = only_queue(spool)
    assert counts == {queuefile.STATUS_INITED: 2}
    assert [e["type"] for e in events] == ["session_start", "message"]
    info = read_producer_info_of(queue_dirs(spool)[0])
    assert info is not None and info.closed_at is not None


def read_producer_info_of(queue_dir: Path) -> queuefile.ProducerInfo | None:
    conn = queuefile.connect(queue_dir, readonly=True)
    try:
        return queuefile.read_producer_info(conn)
    finally:
        conn.close()


def test_unwritable_spool_never_raises(blocked_path: Path, spools: list[Spool]) -> None:
    sp = Spool(blocked_path)
    spools.append(sp)
    started = time.perf_counter()
    s = sp.session(agent="a")
    for i in range(1000):
        s.message("user", f"m{i}")
    call = s.tool_started("t", input=object())
    s.tool_finished(call, output={1, 2})
    emit_time = time.perf_counter() - started
    # Milliseconds when idle; an emit that waited on the failing writer would wait for
    # its retries: the bound catches that, with room for a busy machine.
    assert emit_time < 10, f"1,003 emits with a failing writer took {emit_time:.3f}s"

    started = time.monotonic()
    assert sp.flush(timeout=0.5) is False
    assert s.end(timeout=0.5) is False
    waited = time.monotonic() - started
    assert waited < 10, f"flush(0.5) + end(0.5) took {waited:.2f}s"

    stats = wait_until(lambda: (st := sp.stats()).write_errors > 0 and st, 60, "write errors")
    assert stats.last_error, stats
    assert stats.written == 0
    assert sp.close(timeout=1) is False  # nothing reached the disk: not a success
    assert blocked_path.read_text() == "a file, not a spool\n"


# ---- 3. what end() confirms is in the file -------------------------------------------


def test_end_confirms_every_event_with_identity_and_gapless_order(
    spool: Path, spools: list[Spool]
) -> None:
    sp = Spool(spool)
    spools.append(sp)
    a = sp.session(agent="agent-a", session_id="sess-a", metadata={"k": "v"})
    b = sp.session(agent="agent-b")  # interleaved: each session has its own order
    for i in range(50):
        a.message("user" if i % 2 else "assistant", f"a{i}")
        if i % 5 == 0:
            call = b.tool_started("search", input={"q": i})
            b.tool_finished(call, output={"hits": i})
        b.message("user", [{"type": "text", "text": f"b{i}"}])
    assert a.end(timeout=30) is True
    # end() returned True: everything of session a is in the file *now*, no waiting
    _, counts, events = only_queue(spool)
    a_events = assert_gapless(events, "sess-a")
    assert len(a_events) == 1 + 50 + 1
    assert a_events[-1]["type"] == "session_end" and a_events[-1]["status"] == "completed"
    assert a_events[0]["metadata"] == {"k": "v"} and a_events[0]["pid"] == os.getpid()

    assert b.end("error", error="boom", timeout=30) is True
    queue_dir, counts, events = only_queue(spool)
    b_events = assert_gapless(events, b.id)
    assert len(b_events) == 1 + 10 * 2 + 50 + 1
    assert b_events[-1]["status"] == "error" and b_events[-1]["error"] == "boom"
    assert counts == {queuefile.STATUS_INITED: len(a_events) + len(b_events)}
    assert len(events) == len(a_events) + len(b_events)

    assert {e["producer_id"] for e in events} == {sp.producer_id} == {queue_dir.name}
    pseqs = [e["pseq"] for e in events]
    assert len(set(pseqs)) == len(pseqs)
    assert pseqs == sorted(pseqs)  # one writer, one file: written in emit order
    assert all(e["v"] == 1 and isinstance(e["ts"], float) for e in events)
    info = read_producer_info_of(queue_dir)
    assert info is not None and info.producer_id == sp.producer_id and info.pid == os.getpid()
    assert a.end(timeout=30) is True  # a second end only flushes: no second end event
    assert len(only_queue(spool)[2]) == len(events)
    stats = sp.stats()
    assert (stats.emitted, stats.written, stats.dropped) == (len(events), len(events), 0)


def test_threads_emitting_at_once_get_unique_pseqs_and_are_all_counted(
    spool: Path, spools: list[Spool]
) -> None:
    """``stats().emitted`` is a real counter, kept with the per-producer sequence."""
    sp = Spool(spool)
    spools.append(sp)
    threads, per_thread = 8, 400
    start = threading.Barrier(threads)

    def agent(n: int) -> None:
        s = sp.session(agent=f"t{n}")
        start.wait(timeout=60)
        for i in range(per_thread):
            s.message("user", str(i))
        s.end(timeout=60)

    workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in workers)
    assert sp.flush(timeout=60) is True
    total = threads * (1 + per_thread + 1)
    stats = sp.stats()
    assert (stats.emitted, stats.written, stats.dropped) == (total, total, 0)
    _, _, events = only_queue(spool)
    assert sorted(e["pseq"] for e in events) == list(range(total))


def test_invalid_end_status_becomes_error(spool: Path, spools: list[Spool]) -> None:
    sp = Spool(spool)
    spools.append(sp)
    s = sp.session(agent="a")
    assert s.end("weird", timeout=30) is True
    _, _, events = only_queue(spool)
    end = assert_gapless(events, s.id)[-1]
    assert end["status"] == "error" and "weird" in end["error"]


# ---- 4. a burst on a healthy disk ------------------------------------------------------


def test_burst_of_100k_messages_loses_nothing(spool: Path, spools: list[Spool]) -> None:
    sp = Spool(spool)
    spools.append(sp)
    s = sp.session(agent="burst")
    started = time.perf_counter()
    for i in range(100_000):
        s.message("assistant", f"message number {i}")
    emitted = time.perf_counter()
    assert sp.flush(timeout=120) is True
    flushed = time.perf_counter()
    print(f"100k emits: {emitted - started:.3f}s, flush after: {flushed - emitted:.3f}s")
    stats = sp.stats()
    assert stats.dropped == 0 and stats.write_errors == 0
    assert stats.written == stats.emitted == 100_001
    _, counts, events = only_queue(spool)
    assert sum(counts.values()) >= 100_001
    assert len(events) == 100_001
    assert_gapless(events, s.id)


# ---- 5. the bounded buffer --------------------------------------------------------------


def test_bounded_buffer_drops_when_the_writer_is_stuck(
    blocked_path: Path, spools: list[Spool]
) -> None:
    limit = 1000
    sp = Spool(blocked_path, max_buffered=limit)
    spools.append(sp)
    s = sp.session(agent="a")
    started = time.perf_counter()
    for i in range(5000):
        s.message("user", f"m{i}")
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"5,000 emits with a blocked writer took {elapsed:.3f}s"
    first = sp.stats()
    assert first.buffered <= limit, first
    assert first.written == 0

    # Let the writer retry (it collects what waits for it before each attempt), then
    # emit another burst: the buffer is full, so (nearly) all of it must be dropped.
    errors = first.write_errors
    wait_until(lambda: sp.stats().write_errors >= errors + 2, 60, "two more write attempts")
    for i in range(5000):
        s.message("user", f"n{i}")
    second = sp.stats()
    assert second.buffered <= limit, second
    held = second.emitted - second.written - second.dropped
    assert held <= limit, (
        f"max_buffered={limit} but {held} events are held in memory "
        f"(stats.buffered={second.buffered}, dropped={second.dropped} of {second.emitted}; "
        f"after the first burst: dropped={first.dropped} of {first.emitted})"
    )
    assert first.dropped >= 4000, first


# ---- 6. the context manager ---------------------------------------------------------------


def test_session_context_manager_ends_completed_or_error(spool: Path, spools: list[Spool]) -> None:
    sp = Spool(spool)
    spools.append(sp)
    with sp.session(agent="a", session_id="clean") as s:
        s.message("user", "hi")

    class AgentFailure(Exception):
        pass

    with pytest.raises(AgentFailure, match="tool exploded"):
        with sp.session(agent="a", session_id="failing") as s:
            s.message("user", "hi")
            raise AgentFailure("tool exploded")

    # __exit__ ran end(), which waited for the disk: no flush needed here
    _, _, events = only_queue(spool)
    clean = assert_gapless(events, "clean")
    assert clean[-1]["type"] == "session_end"
    assert clean[-1]["status"] == "completed" and clean[-1]["error"] is None
    failing = assert_gapless(events, "failing")
    assert failing[-1]["type"] == "session_end" and failing[-1]["status"] == "error"
    assert "tool exploded" in failing[-1]["error"]
    assert "AgentFailure" in failing[-1]["error"]


# ---- 7. fork ------------------------------------------------------------------------------

FORK_SCRIPT = """
import json, os, sys
from agentspool import Spool
from agentspool.producer import default_spool_dir

sp = Spool(SPOOL)
p = sp.session(agent="parent", session_id="parent-session")
for i in range(100):
    p.message("user", f"before fork {i}")
assert sp.flush(timeout=30)
# a backlog the parent's writer is busy with at the moment of the fork: it is the
# parent's to write, never the child's
for i in range(20000):
    p.message("user", f"backlog {i}")
parent_producer = sp.producer_id
pid = os.fork()
if pid == 0:
    try:
        c = sp.session(agent="child", session_id="child-session")
        for i in range(500):
            c.message("assistant", f"child {i}")
        call = c.tool_started("t")
        c.tool_finished(call, output=1)
        ok = c.end(timeout=30) and sp.flush(timeout=30)
        print(json.dumps({"child_producer": sp.producer_id, "child_ok": ok,
                          "child_error": sp.stats().last_error}), flush=True)
    finally:
        os._exit(0 if ok else 1)
for i in range(100):
    p.message("user", f"after fork {i}")
ok = p.end(timeout=60) and sp.flush(timeout=60)
_, status = os.waitpid(pid, 0)
print(json.dumps({"parent_producer": parent_producer, "parent_producer_after": sp.producer_id,
                  "parent_ok": ok, "child_pid": pid,
                  "child_exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""


def test_fork_child_gets_its_own_writer_and_file(spool: Path) -> None:
    out = finish(run_python(FORK_SCRIPT, spool), timeout=90)
    report: dict[str, Any] = {}
    for line in out.strip().splitlines():
        report.update(json.loads(line))
    assert report["parent_ok"] is True
    assert report["child_ok"] is True, report
    assert report["child_exit"] == 0
    assert report["parent_producer"] == report["parent_producer_after"]
    assert report["child_producer"] != report["parent_producer"]

    dirs = {d.name: d for d in queue_dirs(spool)}
    assert set(dirs) == {report["parent_producer"], report["child_producer"]}

    parent_counts, parent_events = read_queue(dirs[report["parent_producer"]])
    child_counts, child_events = read_queue(dirs[report["child_producer"]])
    assert {e["session_id"] for e in parent_events} == {"parent-session"}
    assert {e["session_id"] for e in child_events} == {"child-session"}
    assert {e["producer_id"] for e in parent_events} == {report["parent_producer"]}
    assert {e["producer_id"] for e in child_events} == {report["child_producer"]}
    parent_session = assert_gapless(parent_events, "parent-session")
    assert len(parent_session) == 1 + 100 + 20000 + 100 + 1  # each exactly once
    child_session = assert_gapless(child_events, "child-session")
    assert len(child_session) == 1 + 500 + 2 + 1
    assert sum(parent_counts.values()) == len(parent_session)
    assert sum(child_counts.values()) == len(child_session)
    child_info = read_producer_info_of(dirs[report["child_producer"]])
    assert child_info is not None and child_info.pid == report["child_pid"]


def test_fork_while_the_writer_is_still_starting(spool: Path) -> None:
    """A fork right after the first emit, while the parent's writer thread is still
    setting up its queue file (building it aside, renaming it into place): the
    child must still get a working writer of its own."""
    proc = run_python(
        """
        import json, os, sys, time
        from agentspool import Spool

        sp = Spool(SPOOL)
        p = sp.session(agent="parent", session_id="parent-session")
        p.message("user", "first")
        # Fork at once: the writer thread is most likely still making its queue file.
        queues = os.path.join(str(SPOOL), "queues")
        in_first_write = not (os.path.isdir(queues) and any(
            not name.startswith(".") for name in os.listdir(queues)))
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                c = sp.session(agent="child", session_id="child-session")
                c.message("assistant", "from the child")
                ok = c.end(timeout=30)
                print(json.dumps({"child_ok": ok, "child_error": sp.stats().last_error,
                                  "in_first_write": in_first_write}), flush=True)
            finally:
                os._exit(0 if ok else 1)
        ok = p.end(timeout=30)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"parent_ok": ok, "child_exit": os.waitstatus_to_exitcode(status)}))
        """,
        spool,
    )
    out = finish(proc, timeout=60)
    report: dict[str, Any] = {}
    for line in out.strip().splitlines():
        report.update(json.loads(line))
    assert report["parent_ok"] is True
    assert report.get("child_ok") is True and report["child_exit"] == 0, (
        f"the forked child could not write its events: {report}"
    )
    sessions = {e["session_id"] for d in queue_dirs(spool) for e in read_queue(d)[1]}
    assert sessions == {"parent-session", "child-session"}


# ---- 8. kill -9 against the real worker and sqld -----------------------------------------


def burst_worker(spool: Path, sqld: Sqld) -> subprocess.CompletedProcess[str]:
    result = run_cli(
        "worker", "run", "--burst", "--db", sqld.url, env=worker_env(spool, sqld.url), timeout=90
    )
    assert result.returncode == 0, f"burst worker exit {result.returncode}\n{result.stderr}"
    return result


def test_kill9_after_end_loses_nothing(spool: Path, sqld: Sqld) -> None:
    messages = 300
    proc = run_python(
        f"""
        import time
        from agentspool import Spool
        sp = Spool(SPOOL)
        s = sp.session(agent="killed", session_id="ended-then-killed")
        for i in range({messages}):
            s.message("user" if i % 2 else "assistant", f"m{{i}}")
            if i % 50 == 0:
                call = s.tool_started("search", input={{"q": i}})
                s.tool_finished(call, output={{"hits": i}})
        assert s.end(timeout=30) is True
        print("ended", flush=True)
        time.sleep(60)
        """,
        spool,
    )
    try:
        LineReader(proc).expect("ended", timeout=30)
    finally:
        stderr = kill9(proc)
    assert "Traceback" not in stderr, stderr

    burst_worker(spool, sqld)
    tools = len(range(0, messages, 50))
    row = sqld.query(
        "SELECT status, event_count, message_count, tool_count FROM sessions WHERE id = ?",
        ("ended-then-killed",),
    )
    assert row == [["completed", 1 + messages + 2 * tools + 1, messages, tools]]
    assert sqld.scalar("SELECT count(*) FROM messages") == messages
    assert sqld.scalar("SELECT count(*) FROM tool_executions WHERE status = 'completed'") == tools


def test_kill9_mid_session_keeps_a_gapless_prefix(spool: Path, sqld: Sqld) -> None:
    confirmed_messages = 400
    proc = run_python(
        f"""
        import time
        from agentspool import Spool
        sp = Spool(SPOOL)
        s = sp.session(agent="killed", session_id="killed-mid-session")
        for i in range({confirmed_messages}):
            s.message("user", f"confirmed {{i}}")
        assert sp.flush(timeout=30) is True
        print("confirmed", 1 + {confirmed_messages}, flush=True)
        i = 0
        while True:  # never flushed, never ended: killed somewhere in here
            s.message("assistant", f"unconfirmed {{i}}")
            i += 1
            if i == 2000:
                print("emitting", flush=True)
            if i % 20 == 0:
                time.sleep(0.001)
        """,
        spool,
    )
    try:
        reader = LineReader(proc)
        confirmed = int(reader.expect("confirmed", timeout=30).split()[1])
        reader.expect("emitting", timeout=30)
    finally:
        stderr = kill9(proc)
    assert "Traceback" not in stderr, stderr

    burst_worker(spool, sqld)
    row = sqld.query(
        "SELECT status, event_count, message_count FROM sessions WHERE id = ?",
        ("killed-mid-session",),
    )
    assert len(row) == 1
    status, event_count, message_count = row[0]
    print(f"kill -9 mid-session: {confirmed} events confirmed, {event_count} arrived")
    assert status == "abandoned"
    assert event_count >= confirmed
    seqs = [
        r[0]
        for r in sqld.query(
            "SELECT seq FROM messages WHERE session_id = ? ORDER BY seq", ("killed-mid-session",)
        )
    ]
    assert seqs == list(range(1, len(seqs) + 1)), "messages are not a gapless prefix"
    assert len(seqs) == message_count == event_count - 1  # session_start + messages
    assert len(seqs) >= confirmed_messages


# ---- 9. the exit flush -----------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["return", "uncaught exception", "sys.exit(3)"])
def test_exit_flushes_without_flush_or_close(spool: Path, ending: str) -> None:
    last_line = {
        "return": "pass",
        "uncaught exception": "raise RuntimeError('agent crashed politely')",
        "sys.exit(3)": "sys.exit(3)",
    }[ending]
    proc = run_python(
        f"""
        import sys
        from agentspool import Spool
        sp = Spool(SPOOL)
        a = sp.session(agent="a", session_id="exit-a")
        b = sp.session(agent="b", session_id="exit-b")
        for i in range(20000):
            (a if i % 2 else b).message("user", f"m{{i}}")
        a.end(timeout=0)  # handed over, not waited for
        {last_line}
        """,
        spool,
    )
    out, err = proc.communicate(timeout=60)
    expected_rc = {"return": 0, "uncaught exception": 1, "sys.exit(3)": 3}[ending]
    assert proc.returncode == expected_rc, err
    queue_dir, counts, events = only_queue(spool)
    assert counts == {queuefile.STATUS_INITED: 2 + 20000 + 1}
    assert len(assert_gapless(events, "exit-a")) == 1 + 10000 + 1
    assert len(assert_gapless(events, "exit-b")) == 1 + 10000
    info = read_producer_info_of(queue_dir)
    assert info is not None and info.closed_at is not None  # the exit closed the spool


# ---- 10. where the spool lives ------------------------------------------------------------

PATH_PROBE = """
import json
from agentspool import Spool
from agentspool.producer import default_spool_dir
sp = Spool()
s = sp.session(agent="probe")
ok = s.end(timeout=30)
print(json.dumps({"path": str(sp.path), "ok": ok}))
"""


def probe_spool_path(env_overrides: dict[str, str], home: Path) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENTSPOOL_", "TURSO_")) and k != "XDG_STATE_HOME"
    }
    env["HOME"] = str(home)
    env.update(env_overrides)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PATH_PROBE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_spool_path_from_agentspool_dir_then_xdg_state_home_then_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    explicit = tmp_path / "explicit-spool"
    xdg = tmp_path / "xdg-state"

    both = probe_spool_path({"AGENTSPOOL_DIR": str(explicit), "XDG_STATE_HOME": str(xdg)}, home)
    assert both == {"path": str(explicit), "ok": True}
    assert len(queue_dirs(explicit)) == 1
    assert not xdg.exists()

    xdg_only = probe_spool_path({"XDG_STATE_HOME": str(xdg)}, home)
    assert xdg_only == {"path": str(xdg / "agentspool"), "ok": True}
    assert len(queue_dirs(xdg / "agentspool")) == 1
    assert len(queue_dirs(explicit)) == 1  # untouched by the second producer

    neither = probe_spool_path({}, home)
    default = home / ".local" / "state" / "agentspool"
    assert neither == {"path": str(default), "ok": True}
    assert len(queue_dirs(default)) == 1


def test_explicit_path_argument_wins_over_environment(spool: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "env-spool"
    proc = run_python(
        f"""
        import os
        from agentspool import Spool
        os.environ["AGENTSPOOL_DIR"] = {str(elsewhere)!r}
        sp = Spool(SPOOL)
        assert sp.session(agent="a").end(timeout=30)
        print(sp.path)
        """,
        spool,
    )
    assert finish(proc, timeout=60).strip() == str(spool)
    assert len(queue_dirs(spool)) == 1
    assert not elsewhere.exists()


def test_flush_after_the_writer_caught_up_still_fsyncs(spool: Path) -> None:
    """Events the writer already committed without an fsync (the usual case when the
    agent does anything between emitting and flushing) are fsynced by flush()."""
    producer = Spool(spool)
    session = producer.session(agent="a")
    session.message("user", "hi")
    wait_until(lambda: producer.stats().written == 2, 60, "the writer to commit both events")
    (queue_dir,) = queuefile.list_queue_dirs(spool)

    def flushed_at() -> str | None:
        conn = queuefile.connect(queue_dir, readonly=True)
        try:
            assert queuefile.META_TABLE == "agentspool_producer"
            row = conn.execute(
                "SELECT value FROM agentspool_producer WHERE key = 'flushed_at'"
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else str(row[0])

    assert flushed_at() is None  # nothing was fsynced on purpose so far
    assert producer.flush(timeout=60)
    assert flushed_at() is not None  # the durable marker commit ran
    producer.close()


def test_a_tilde_in_agentspool_dir_means_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # as the worker's settings expand it
    assert default_spool_dir({"AGENTSPOOL_DIR": "~/spool-here"}) == tmp_path / "spool-here"


def test_a_full_queue_file_drops_new_events_without_blocking(spool: Path) -> None:
    """The size bound (max_queue_bytes / AGENTSPOOL_MAX_QUEUE_BYTES): past it, new
    events are dropped and counted, emitting stays fast, and flush() says False."""
    producer = Spool(spool, max_queue_bytes=200_000)
    session = producer.session(agent="a")
    started = time.monotonic()
    for _round in range(6):
        for _ in range(2_000):
            session.message("assistant", "x" * 400)
        producer.flush(timeout=10)
        time.sleep(1.1)  # the writer re-measures its file once a second
    assert time.monotonic() - started < 30
    stats = producer.stats()
    assert stats.dropped > 0 and stats.write_errors == 0
    (queue_dir,) = queuefile.list_queue_dirs(spool)
    conn = queuefile.connect(queue_dir, readonly=True)
    try:
        rows = queuefile.count_by_status(conn).get(queuefile.STATUS_INITED, 0)
        size = queuefile.live_bytes(conn)
    finally:
        conn.close()
    assert rows == stats.written and rows + stats.dropped == stats.emitted
    assert size < 200_000 + 2 * 2_000 * 700  # at most the batches in flight past the bound
    producer.close()


def test_a_session_id_no_worker_can_store_is_refused_and_counted(
    spool: Path, spools: list[Spool]
) -> None:
    """A lone surrogate (from a JSON escape or undecodable bytes) or an id over 200
    characters: every event of that session is dropped and counted, nothing raises,
    ``end()`` says it failed, and the good session beside it is written whole."""
    sp = Spool(spool)
    spools.append(sp)
    for bad_id in ("\udc80bad", "x" * 201):
        bad = sp.session(agent="a", session_id=bad_id)
        bad.message("user", "lost")
        call = bad.tool_started("t")
        bad.tool_finished(call)
        assert bad.end(timeout=10) is False
    good = sp.session(agent="a", session_id="good")
    good.message("user", "kept")
    assert good.end(timeout=10) is True
    assert sp.stats().dropped == 2 * 5
    _, _, events = only_queue(spool)
    assert {e["session_id"] for e in events} == {"good"}
