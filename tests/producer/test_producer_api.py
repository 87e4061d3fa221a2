"""The producer API agents are written against (issue 13): ``async with`` sessions,
``with session.tool(...)`` blocks, ``model=`` / ``usage=`` on messages, and the
worker closing tool calls a session left running. From asyncio and threaded code,
through the real worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from agentspool import Spool
from agentspool.worker.intake.replica import TOOL_OPEN_AT_ABANDON_ERROR, TOOL_OPEN_AT_END_ERROR
from tests.helpers import run_cli, run_python, start_worker, stop_process, wait_until, worker_env
from tests.sqld import Sqld


def burst_and_show(spool: Path, session_id: str) -> dict[str, Any]:
    env = worker_env(spool)
    run_cli("worker", "run", "--burst", env=env, check=True)
    shown: dict[str, Any] = json.loads(
        run_cli("show", session_id, "--json", env=env, check=True).stdout
    )
    return shown


def tools_by_name(shown: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in shown["tool_executions"]}


# ---- asyncio -----------------------------------------------------------------


def test_async_with_ends_completed_or_error_and_propagates(spool: Path) -> None:
    async def agent() -> None:
        with Spool(spool) as producer:
            async with producer.session(agent="async", session_id="async-ok") as s:
                s.message("user", "hello", model="m-1", usage={"input_tokens": 7})
                async with s.tool("fetch", {"url": "u"}) as call:
                    await asyncio.sleep(0.01)
                    call.output = {"status": 200}
            with pytest.raises(KeyError):
                async with producer.session(agent="async", session_id="async-bad") as s:
                    raise KeyError("missing")

    asyncio.run(agent())
    ok = burst_and_show(spool, "async-ok")
    assert ok["session"]["status"] == "completed"
    fetch = tools_by_name(ok)["fetch"]
    assert fetch["status"] == "completed" and json.loads(fetch["output"]) == {"status": 200}
    assert fetch["duration_ms"] >= 10.0
    bad = burst_and_show(spool, "async-bad")
    assert bad["session"]["status"] == "error"
    assert bad["session"]["error"] == "KeyError: 'missing'"


def test_the_event_loop_keeps_running_while_end_waits_for_the_disk(spool: Path) -> None:
    """While the writer cannot finish (its disk lock is held here), ``async with``'s
    end waits for it off the loop: other tasks keep running meanwhile."""
    ticks_during_wait: list[int] = []

    async def agent() -> bool:
        producer = Spool(spool)
        ticks = 0
        waiting = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                if waiting.is_set():
                    ticks += 1

        task = asyncio.create_task(ticker())
        lock = producer._writer.disk_lock
        assert lock.acquire(timeout=10)  # the writer thread now cannot write
        released = threading.Event()

        def release_when_ticked() -> None:
            # Let the loop tick while end() waits, then let the writer through.
            wait_until(lambda: ticks >= 5, 30, "the loop to tick during end()")
            ticks_during_wait.append(ticks)
            lock.release()
            released.set()

        threading.Thread(target=release_when_ticked, daemon=True).start()
        session = producer.session(agent="loop", session_id="loop-1")
        session.message("user", "x")
        waiting.set()
        ok = await session.aend(timeout=60)
        task.cancel()
        assert released.is_set()
        producer.close()
        return ok

    assert asyncio.run(agent()) is True
    assert ticks_during_wait and ticks_during_wait[0] >= 5
    assert burst_and_show(spool, "loop-1")["session"]["status"] == "completed"


def test_async_with_exit_waits_off_the_loop_too(spool: Path) -> None:
    async def agent() -> int:
        producer = Spool(spool)
        lock = producer._writer.disk_lock
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        assert lock.acquire(timeout=10)
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, lock.release)  # on the loop: only runs if the loop is free
        async with producer.session(agent="loop", session_id="loop-2"):
            before = ticks
        task.cancel()
        producer.close()
        return ticks - before

    assert asyncio.run(agent()) >= 5


# ---- threads -----------------------------------------------------------------


def test_tool_blocks_and_usage_from_threads(spool: Path) -> None:
    producer = Spool(spool)
    errors: list[BaseException] = []

    def agent(n: int) -> None:
        try:
            with producer.session(agent="threaded", session_id=f"t-{n}") as s:
                for i in range(3):
                    s.message("assistant", f"step {i}", model=f"model-{i % 2}",
                              usage={"input_tokens": 100 + i, "output_tokens": 10})  # fmt: skip
                with s.tool("search", {"q": n}) as call:
                    call.output = f"hits for {n}"
                with pytest.raises(RuntimeError):
                    with s.tool("deploy", {"n": n}):
                        raise RuntimeError("no credentials")
                with s.tool("lint") as call:
                    call.error = "3 problems"  # a failure reported without raising
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert producer.flush(30)
    for n in range(4):
        shown = burst_and_show(spool, f"t-{n}")
        tools = tools_by_name(shown)
        assert tools["search"]["status"] == "completed"
        assert tools["search"]["output"] == f"hits for {n}"
        assert tools["search"]["duration_ms"] is not None
        assert tools["deploy"]["status"] == "error"
        assert tools["deploy"]["error"] == "RuntimeError: no credentials"
        assert tools["lint"]["status"] == "error" and tools["lint"]["error"] == "3 problems"
        metadata = json.loads(shown["session"]["metadata"])
        assert metadata["usage"] == {"input_tokens": 303, "output_tokens": 30}
        assert metadata["models"] == ["model-0", "model-1"]
        first = json.loads(shown["messages"][0]["metadata"])
        assert first == {"model": "model-0", "usage": {"input_tokens": 100, "output_tokens": 10}}
    producer.close()


# ---- tool calls a session leaves running ---------------------------------------


def test_a_tool_running_at_the_end_is_closed_by_the_worker(spool: Path, tmp_path: Path) -> None:
    with Spool(spool) as producer, producer.session(agent="py", session_id="py-open") as s:
        s.tool_started("forever", {"x": 1})
    shown = burst_and_show(spool, "py-open")
    forever = tools_by_name(shown)["forever"]
    assert forever["status"] == "error" and forever["error"] == TOOL_OPEN_AT_END_ERROR
    assert forever["ended_at"] == shown["session"]["ended_at"]
    assert forever["duration_ms"] is not None and forever["duration_ms"] >= 0

    # Another language's producer (ingest): the same, in the worker.
    lines = [
        {"v": 1, "type": "session_start", "session_id": "jl-open", "seq": 0, "agent": "node",
         "ts": 1_790_000_000.0},
        {"v": 1, "type": "tool_started", "session_id": "jl-open", "seq": 1, "call_id": "c1",
         "name": "shell", "ts": 1_790_000_001.0},
        {"v": 1, "type": "session_end", "session_id": "jl-open", "seq": 2, "status": "completed",
         "ts": 1_790_000_003.5},
    ]  # fmt: skip
    source = tmp_path / "open.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run_cli("ingest", str(source), env=worker_env(spool), check=True)
    shell = tools_by_name(burst_and_show(spool, "jl-open"))["shell"]
    assert shell["status"] == "error" and shell["error"] == TOOL_OPEN_AT_END_ERROR
    assert shell["ended_at"] == "2026-09-21T14:13:23.500Z"
    assert shell["duration_ms"] == pytest.approx(2500.0, abs=1.0)


def test_a_tool_running_in_an_abandoned_session_gets_an_end_time(spool: Path) -> None:
    proc = run_python(
        """
        import os, sys, time
        from agentspool import Spool
        spool = Spool(SPOOL)
        s = spool.session(agent="killed", session_id="abandoned-1")
        s.message("user", "go", usage={"input_tokens": 5})
        s.tool_started("slow", {"n": 1})
        assert spool.flush(30)
        print("ready", flush=True)
        time.sleep(600)
        """,
        spool,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    shown = burst_and_show(spool, "abandoned-1")
    assert shown["session"]["status"] == "abandoned"
    slow = tools_by_name(shown)["slow"]
    assert slow["status"] == "error" and slow["error"] == TOOL_OPEN_AT_ABANDON_ERROR
    assert slow["ended_at"] is not None and slow["duration_ms"] is not None
    assert json.loads(shown["session"]["metadata"])["usage"] == {"input_tokens": 5}


# ---- emit and ingest take model and usage ----------------------------------------


def test_emit_and_ingest_take_model_and_usage(spool: Path, tmp_path: Path) -> None:
    env = worker_env(spool)
    run_cli("emit", "--session", "e-1", "--type", "session_start", "--agent", "sh", env=env,
            check=True)  # fmt: skip
    written = run_cli(
        "emit", "--session", "e-1", "--type", "message", "--seq", "1", "--role", "assistant",
        "--content", "hi", "--model", "gpt-x", "--usage", '{"input_tokens": 12, "output_tokens": 3}',
        "--json", env=env, check=True,
    )  # fmt: skip
    assert json.loads(written.stdout)["metadata"] == {
        "model": "gpt-x",
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }
    bad = run_cli("emit", "--session", "e-1", "--type", "message", "--seq", "2", "--role", "x",
                  "--usage", "[1]", env=env)  # fmt: skip
    assert bad.returncode == 2 and "must be a JSON object" in bad.stderr
    lines = [
        {"v": 1, "type": "message", "session_id": "e-1", "seq": 2, "role": "assistant",
         "model": "gpt-y", "usage": {"input_tokens": 30, "output_tokens": 7},
         "metadata": {"turn": 2}},
        {"v": 1, "type": "message", "session_id": "e-1", "seq": 3, "role": "assistant",
         "usage": {"input_tokens": "many"}},
        {"v": 1, "type": "session_end", "session_id": "e-1", "seq": 3, "status": "completed"},
    ]  # fmt: skip
    source = tmp_path / "usage.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ingested = run_cli("ingest", str(source), env=env)
    assert ingested.returncode == 4, ingested.stderr
    assert "line 2: usage.input_tokens must be a count" in ingested.stderr
    shown = burst_and_show(spool, "e-1")
    metadata = json.loads(shown["session"]["metadata"])
    assert metadata["usage"] == {"input_tokens": 42, "output_tokens": 10}
    assert metadata["models"] == ["gpt-x", "gpt-y"]
    assert json.loads(shown["messages"][1]["metadata"]) == {
        "turn": 2,
        "model": "gpt-y",
        "usage": {"input_tokens": 30, "output_tokens": 7},
    }


def test_a_checkpointed_running_tool_is_closed_in_the_database(spool: Path, sqld: Sqld) -> None:
    """The database saw the call running (a checkpoint of the open session); once the
    session ends, the database holds it closed, never running forever."""
    env = worker_env(spool, sqld.url, AGENTSPOOL_CHECKPOINT_INTERVAL="0.2")
    worker = start_worker(env)
    agent = run_python(
        """
        import sys
        from agentspool import Spool
        spool = Spool(SPOOL)
        s = spool.session(agent="cp", session_id="cp-1")
        s.tool_started("slow", {"n": 1}, call_id="c1")
        assert spool.flush(30)
        print("started", flush=True)
        sys.stdin.readline()
        assert s.end(timeout=30)
        """,
        spool,
        stdin=subprocess.PIPE,
    )
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "started"

        def tool_status() -> Any:
            try:
                return sqld.scalar("SELECT status FROM tool_executions WHERE call_id = 'c1'")
            except Exception:
                return None  # no tables yet

        assert wait_until(tool_status, 60, "the checkpoint of the running call") == "running"
        finish_with_input(agent, "end\n")
        wait_until(lambda: tool_status() == "error", 60, "the closed call in the database")
        row = sqld.query(
            "SELECT error, ended_at, duration_ms FROM tool_executions WHERE call_id = 'c1'"
        )[0]
        assert row[0] == TOOL_OPEN_AT_END_ERROR and row[1] is not None and row[2] is not None
        assert sqld.scalar("SELECT status FROM sessions WHERE id = 'cp-1'") == "completed"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate(timeout=10)
        stop_process(worker)


def finish_with_input(proc: subprocess.Popen[str], text: str) -> None:
    out, err = proc.communicate(text, timeout=60)
    assert proc.returncode == 0, err
