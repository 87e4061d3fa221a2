"""The Claude Code hook under attack (issue 26): a ``transcript_path`` that is a FIFO,
a device or a directory, and a shared queue whose write lock another process holds.

No hook may hang, hold the lock while it reads anything else, or lose another
session's event: each exits 0 in bounded time, and every event lands once, in order.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from agentspool.integrations import claude_code
from agentspool.producer import layout
from agentspool.producer.sharedqueue import SharedQueue
from tests.helpers import run_cli, worker_env
from tests.integrations.test_claude_code import QUEUE, payload, start_hook
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
    return dict(payload(event, **fields), session_id=session_id)


def messages(sqld: Sqld, session_id: str) -> list[list[Any]]:
    return sqld.query(
        "SELECT role, content FROM messages WHERE session_id = ? ORDER BY seq", [session_id]
    )


def test_a_transcript_path_that_is_no_regular_file_is_refused_without_blocking_anyone(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    """Issue 26, item 2: with a FIFO as ``transcript_path`` the hook blocked in open()
    inside the write lock, and two hooks of other sessions lost their events after 5 s;
    with /dev/zero it read until MemoryError. Now each is refused with one stderr line
    while the other sessions' hooks, started at the same time, write their events."""
    env = worker_env(spool, sqld.url)
    fifo = tmp_path / "transcript.fifo"
    os.mkfifo(fifo)
    for sid in ("victim", "other-1", "other-2"):
        assert finish_hook(start_hook(env, of(sid, "SessionStart", source="startup"))) == ""
    for hostile in (str(fifo), "/dev/zero", str(tmp_path)):
        stop = start_hook(env, of("victim", "Stop", transcript_path=hostile))
        others = [
            start_hook(env, of(sid, "UserPromptSubmit", prompt=f"{sid} after {hostile}"))
            for sid in ("other-1", "other-2")
        ]
        err = finish_hook(stop)
        assert err.count("\n") == 1 and "is not a regular file: not read" in err, err
        assert repr(hostile) in err
        for proc in others:
            assert finish_hook(proc) == ""

    burst = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert burst.returncode == 3, burst.stderr  # the sessions are open, not ended
    for sid in ("other-1", "other-2"):
        assert [c for _, c in messages(sqld, sid)] == [
            f"{sid} after {h}" for h in (str(fifo), "/dev/zero", str(tmp_path))
        ]
    assert messages(sqld, "victim") == []  # no reply could be taken: none invented


def test_a_hook_that_cannot_get_the_lock_defers_its_event_and_nothing_is_lost(
    spool: Path, sqld: Sqld
) -> None:
    """Another process holds the shared queue's write lock and hangs. Hooks wait
    (AGENTSPOOL_HOOK_LOCK_WAIT, shortened here), then leave their events in files of
    their own, exit 0 and say so. Once the lock is free, the session's next hook adds
    its deferred events before its own, and the worker adds the rest: every event
    lands once, each session in order."""
    env = worker_env(spool, sqld.url, AGENTSPOOL_HOOK_LOCK_WAIT="1")
    for sid in ("a", "b"):
        assert finish_hook(start_hook(env, of(sid, "SessionStart", source="startup"))) == ""
    db = spool / layout.QUEUES_DIRNAME / QUEUE / layout.DB_FILENAME
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer that hangs with the lock
    try:
        procs = [
            start_hook(env, of(sid, "UserPromptSubmit", prompt=f"{sid} 1")) for sid in ("a", "b")
        ]
        for proc in procs:
            err = finish_hook(proc)
            assert err.count("\n") == 1 and "stayed locked for 1s" in err, err
        err = finish_hook(start_hook(env, of("a", "Stop", last_assistant_message="a 2")))
        assert "stayed locked" in err
        queue = SharedQueue(str(spool), claude_code.AGENT)
        assert len(queue.deferred()) == 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    # The lock is free: a's next hook adds a's deferred calls first, then its own.
    assert finish_hook(start_hook(env, of("a", "UserPromptSubmit", prompt="a 3"))) == ""
    assert len(queue.deferred("a")) == 0 and len(queue.deferred("b")) == 1
    # b's deferred call waits for the worker (b has no more hooks).
    burst = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert burst.returncode == 3, burst.stderr  # open sessions, nothing left undrained
    assert queue.deferred() == []
    assert messages(sqld, "a") == [["user", "a 1"], ["assistant", "a 2"], ["user", "a 3"]]
    assert messages(sqld, "b") == [["user", "b 1"]]


def test_a_deferred_call_is_added_once_even_if_its_file_comes_back(spool: Path) -> None:
    """The replay records the file's name in the session's state in the same
    transaction as its events: a replayer that died before deleting the file (the
    file is back) adds nothing twice."""
    queue = SharedQueue(str(spool), claude_code.AGENT)
    claude_code.record(of("s", "SessionStart", source="startup"), str(spool))
    held = {"payload": of("s", "UserPromptSubmit", prompt="once"), "reply": None, "at": 1.0}
    path = Path(queue.defer("s", held))
    saved = path.read_bytes()
    assert claude_code.replay_deferred(str(spool)) == 1
    path.write_bytes(saved)  # as if the replayer had died before the unlink
    assert claude_code.replay_deferred(str(spool)) == 0
    assert queue.deferred() == []
    conn = sqlite3.connect(queue.db_path)
    rows = [json.loads(r[0]) for r in conn.execute(f"SELECT data FROM {layout.TABLE}")]  # noqa: S608
    conn.close()
    assert [(e["type"], e["seq"], e["ts"]) for e in rows][1:] == [("message", 1, 1.0)]
    # A file this version cannot apply is set aside, not retried, not deleted.
    bad = Path(queue.deferred_dir) / "00000000000000000001-1-0000000000000000.json"
    bad.write_text("{not json")
    assert claude_code.replay_deferred(str(spool)) == 0
    assert queue.deferred() == [] and (bad.parent / f".unusable-{bad.name}").exists()
    shutil.rmtree(queue.deferred_dir)


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
    assert merged["model"] == "opus" and set(merged["hooks"]) == set(claude_code.HOOK_EVENTS)
    assert sorted(p.name for p in claude_dir.iterdir()) == ["settings.json"]  # no temp left
    # A link whose file does not exist yet: the file is created where it points.
    dangling = claude_dir.parent / "project-settings.json"
    dangling.symlink_to(dotfiles / "project.json")
    run_cli("hook", "claude-code", "--install", str(dangling), env=env, check=True)
    assert dangling.is_symlink() and "hooks" in json.loads((dotfiles / "project.json").read_text())
