"""The Claude Code integration under attack (issue 26): a ``transcript_path`` that is a
FIFO, a device or a directory, and a shared queue whose write lock another process holds.

The hook reads nothing and takes no lock (it only appends its input to the inbox), so
it cannot hang on either; the worker reads transcripts only if they are regular
files, a bounded amount at a time, and every other session's events land.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from agentspool.integrations.claude_code import collector, mapping
from agentspool.producer.sharedqueue import SharedQueue
from tests.helpers import run_cli, worker_env
from tests.integrations.test_claude_code import payload, start_hook
from tests.sqld import Sqld

HOOK_DEADLINE_S = 30  # a hook that is not done by then hangs


def finish_hook(proc: subprocess.Popen[bytes]) -> str:
    """The hook's stderr once it exited 0 with nothing on stdout (bounded wait)."""
    proc.stdin = None  # start_hook wrote it and closed it
    try:
        out, err = proc.communicate(timeout=HOOK_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the hook hung for {HOOK_DEADLINE_S}s") from None
    assert proc.returncode == 0, err
    assert out == b"", out
    return err.decode()


def of(session_id: str, event: str, **fields: Any) -> dict[str, Any]:
    return payload(event, session_id=session_id, **fields)


def messages(sqld: Sqld, session_id: str) -> list[list[Any]]:
    return sqld.query(
        "SELECT role, content FROM messages WHERE session_id = ? ORDER BY seq", [session_id]
    )


def test_a_transcript_path_that_is_no_regular_file_blocks_nobody(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = worker_env(spool, sqld.url)
    odd = {"fifo": str(fifo), "zero": "/dev/zero", "dir": str(tmp_path)}
    for name, path in odd.items():
        for event in (of(name, "UserPromptSubmit", prompt=f"{name} prompt", prompt_id="p",
                         transcript_path=path),
                      of(name, "SessionEnd", reason="other", transcript_path=path),
                      of(f"ok-{name}", "UserPromptSubmit", prompt="fine", prompt_id="p"),
                      of(f"ok-{name}", "SessionEnd", reason="other")):  # fmt: skip
            assert finish_hook(start_hook(env, event)) == ""
    started = time.monotonic()
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    for name, path in odd.items():
        assert f"transcript of session {name}: {path!r} is not a regular file" in result.stderr
        assert messages(sqld, name) == [["user", f"{name} prompt"]]
        assert messages(sqld, f"ok-{name}") == [["user", "fine"]]
    assert sqld.scalar("SELECT count(*) FROM sessions WHERE status = 'completed'") == 6


def test_hooks_never_wait_for_the_shared_queue_and_lose_nothing(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url)
    assert finish_hook(start_hook(env, of("a", "SessionStart", source="startup"))) == ""
    collector.collect(str(spool), final=True)  # the shared queue file exists now
    holder = sqlite3.connect(SharedQueue(str(spool), mapping.AGENT).db_path, timeout=1)
    holder.execute("BEGIN IMMEDIATE")  # a process that holds the write lock and hangs
    try:
        started = time.monotonic()
        procs = [start_hook(env, of(s, "UserPromptSubmit", prompt=f"{s} {n}", prompt_id=f"p{n}"))
                 for s in ("a", "b") for n in range(3)]  # fmt: skip
        for proc in procs:
            assert finish_hook(proc) == ""
        assert time.monotonic() - started < HOOK_DEADLINE_S
        assert collector.collect(str(spool), final=True).files == 0  # it cannot yet ...
    except sqlite3.OperationalError:
        pass  # ... (the collector waits for the lock, then gives up: a later pass)
    finally:
        holder.rollback()
        holder.close()
    for session in ("a", "b"):
        assert finish_hook(start_hook(env, of(session, "SessionEnd", reason="other"))) == ""
    result = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    for session in ("a", "b"):
        # (started at once here, so in any order; Claude Code runs them one by one)
        assert sorted(messages(sqld, session)) == [["user", f"{session} {n}"] for n in range(3)]
    assert os.listdir(Path(spool) / "inbox" / "claude-code") == []


def test_install_writes_through_a_symlinked_settings_file(tmp_path: Path, spool: Path) -> None:
    """Issue 26, item 9: a settings.json kept in dotfiles (a symlink, relative here,
    through a second link) stays a link; the file it points to gets the hooks."""
    env = worker_env(spool)
    dotfiles = tmp_path / "dotfiles" / "claude"
    dotfiles.mkdir(parents=True)
    real = dotfiles / "settings.json"
    real.write_text(json.dumps({"model": "opus"}))
    (tmp_path / "dotfiles" / "current").symlink_to("claude/settings.json")
    claude_dir = tmp_path / "home" / ".claude"
    claude_dir.mkdir(parents=True)
    link = claude_dir / "settings.json"
    link.symlink_to(tmp_path / "dotfiles" / "current")
    result = run_cli("hook", "claude-code", "--install", str(link), env=env, check=True)
    assert "added" in result.stdout
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "dotfiles" / "current")
    assert (tmp_path / "dotfiles" / "current").is_symlink()
    merged = json.loads(real.read_text())
    assert merged["model"] == "opus" and set(merged["hooks"]) == set(mapping.HOOK_EVENTS)
    assert sorted(p.name for p in claude_dir.iterdir()) == ["settings.json"]  # no temp left
    # A link whose file does not exist yet: the file is created where it points.
    dangling = claude_dir.parent / "project-settings.json"
    dangling.symlink_to(dotfiles / "project.json")
    run_cli("hook", "claude-code", "--install", str(dangling), env=env, check=True)
    assert dangling.is_symlink() and "hooks" in json.loads((dotfiles / "project.json").read_text())
