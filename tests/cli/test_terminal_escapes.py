"""Agent text is shown, never obeyed (issue 26, item 5): terminal escapes in messages,
tool output and session ids reach a terminal (a real pty) as visible text, and a
newline in a session id cannot forge a worker log line."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import AGENTSPOOL, run_cli, worker_env

CLIPBOARD = "\x1b]52;c;aGFjaw==\x07"  # OSC 52: write the clipboard
TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the window title
WIPE = "\x1b[2J\x1b[H"  # clear the screen, cursor home
C1_CSI = "\x9b2J"  # the same, as one C1 control
FORGED = "\n2026-01-01 00:00:00,000 INFO agentspool.worker: synced session forged"
SID = "evil" + TITLE + FORGED
TS = 1_790_000_000.0


def event(seq: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "session_id": SID, "seq": seq, "ts": TS + seq, **fields}


def on_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> str:
    """What a command writes to a terminal: its stdout and stderr on a real pty."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"{args} wrote nothing for {timeout}s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return b"".join(chunks).decode("utf-8", "replace")


def assert_inert(output: str) -> None:
    """No escape sequence but click's own colours (SGR: ESC [ digits m)."""
    without_colours = re.sub(r"\x1b\[[0-9;]*m", "", output)
    for bad in ("\x1b", "\x07", "\x9b"):
        assert bad not in without_colours, (bad, output)


def test_terminal_escapes_in_agent_text_are_shown_not_obeyed(spool: Path) -> None:
    env = worker_env(spool, TERM="xterm")
    lines = [
        event(0, "session_start", agent="agent" + WIPE),
        event(1, "message", role="assistant",
              content=f"copy {CLIPBOARD} then {WIPE}{C1_CSI} done\n\tindented line"),
        event(2, "tool_started", call_id="c" + TITLE, name="bash" + WIPE, input="ls\x1b[A"),
        event(3, "tool_finished", call_id="c" + TITLE, output=CLIPBOARD, error="bad\x1b[31m"),
        event(3, "message", role="user", content="a second event at seq 3: dead-lettered"),
    ]  # fmt: skip
    ingest = subprocess.run(
        [AGENTSPOOL, "ingest"], input="".join(json.dumps(e) + "\n" for e in lines),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    burst = run_cli("worker", "run", "--burst", env=env)
    assert burst.returncode == 0, burst.stderr

    # The worker's log: one record, one line; the forged line is inside another.
    assert not any(line.startswith("2026-01-01") for line in burst.stderr.splitlines())
    assert "synced session evil\\x1b]0;pwned\\x07\\n2026-01-01" in burst.stderr
    assert_inert(burst.stderr)

    sessions = on_pty([AGENTSPOOL, "sessions"], env)
    assert_inert(sessions)
    assert "evil\\x1b]0;pwned\\x07\\n2026-01-01" in sessions
    assert "agent\\x1b[2J\\x1b[H" in sessions

    shown = on_pty([AGENTSPOOL, "show", "evil"], env)
    assert_inert(shown)
    assert "copy \\x1b]52;c;aGFjaw==\\x07 then \\x1b[2J\\x1b[H\\x9b2J done" in shown
    assert "\tindented line" in shown  # a transcript keeps its tabs and lines
    assert "tool bash\\x1b[2J\\x1b[H" in shown and "[c\\x1b]0;pwned\\x07]" in shown
    assert "input:  ls\\x1b[A" in shown and "error:  bad\\x1b[31m" in shown

    dead = on_pty([AGENTSPOOL, "dead", "ls"], env)
    assert_inert(dead)
    assert "message of session evil\\x1b]0;pwned\\x07\\n2026-01-01" in dead
    shown_dead = on_pty([AGENTSPOOL, "dead", "show", "1"], env)
    assert_inert(shown_dead)


def test_status_and_queue_ls_show_a_hostile_queue_name_as_text(spool: Path) -> None:
    """A queue directory's name is whatever a producer (or anyone who can write the
    spool) made it: `queue ls`, `status` and `verify` print it, and its error, escaped."""
    env = worker_env(spool, TERM="xterm")
    hostile = spool / "queues" / ("evil" + TITLE + WIPE)
    hostile.mkdir(parents=True)
    (hostile / "data.db").write_bytes(b"not a database" + CLIPBOARD.encode())
    for args in ([AGENTSPOOL, "queue", "ls"], [AGENTSPOOL, "status"], [AGENTSPOOL, "verify"]):
        out = on_pty(args, env)
        assert_inert(out)
        assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\x1b[H" in out, out
