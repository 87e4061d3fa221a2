"""Row 13: the Claude Code hook's command, on its own (row 15 is the real Claude Code).

The settings' command: ``/bin/sh -c`` with the command ``--print-settings`` writes
(one ``dd`` appending the event to the inbox, fsynced), beside ``/bin/sh -c
/bin/true`` (what any command hook costs), interleaved. The Python form, ``agentspool
hook claude-code``: one real process from spawn to exit, beside a bare interpreter
(``python -c pass``, the floor) and ``agentspool --version`` (the console script
through click, the anchor). Each sample is fed one ``UserPromptSubmit`` event (a
400-byte prompt) on stdin. Afterwards the worker's collector must find every event,
once, and no call may have printed on stdout.

``import agentspool``: the same pairing, a fresh ``python -c "import agentspool"``
against the bare interpreter; the anchor loads the producer's API
(``from agentspool import Spool``), which ``import agentspool`` used to do at once.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from bench.common import AGENTSPOOL_CLI, PYTHON, Config, Ref, Row, clean_env, percentile

GROUP = "hook"
TARGET_MS = 80.0


def run(cfg: Config) -> list[Row]:
    calls = cfg.size(30, 5)
    spool = cfg.workdir("hook-spool")
    env = clean_env(AGENTSPOOL_DIR=str(spool))
    env.pop("PYTHONPATH", None)  # as Claude Code runs it: nothing but the installed package
    event = {
        "session_id": "bench-hook-session",
        "transcript_path": "/nonexistent/transcript.jsonl",
        "cwd": "/home/dev/project",
        "permission_mode": "default",
        "hook_event_name": "UserPromptSubmit",
        "prompt": "x" * 400,
    }
    data = json.dumps(event).encode()
    _timed([AGENTSPOOL_CLI, "hook", "claude-code"], env, data)  # creates the inbox

    from agentspool.integrations.claude_code.inbox import hook_command

    hook, bare, version, dd, true = [], [], [], [], []
    for _ in range(calls):  # interleaved: each kind sees the same load
        hook.append(_timed([AGENTSPOOL_CLI, "hook", "claude-code"], env, data))
        bare.append(_timed([PYTHON, "-c", "pass"], env))
        version.append(_timed([AGENTSPOOL_CLI, "--version"], env))
        dd.append(_timed(["/bin/sh", "-c", hook_command()], env, data))
        true.append(_timed(["/bin/sh", "-c", "/bin/true"], env, data))
    landed = _events_collected(spool)
    if landed != 2 * calls + 2:  # + the first call's session_start and message
        raise AssertionError(f"{2 * calls + 2} events expected from the inbox, found {landed}")

    imports, anchor, bare_again = [], [], []
    for _ in range(calls):
        imports.append(_timed([PYTHON, "-c", "import agentspool"], env))
        bare_again.append(_timed([PYTHON, "-c", "pass"], env))
        anchor.append(_timed([PYTHON, "-c", "from agentspool import Spool"], env))

    h, b, v, d, t = sorted(hook), sorted(bare), sorted(version), sorted(dd), sorted(true)
    i, a, b2 = sorted(imports), sorted(anchor), sorted(bare_again)
    floor_label = "bare interpreter (python -c pass)"
    note = (
        f"{calls} calls of a real subprocess, each writing one fsynced event into the "
        f"inbox; p90 "
        f"{percentile(h, 90):.1f} ms, max {h[-1]:.1f} ms; `agentspool --version` median "
        f"{percentile(v, 50):.1f} ms; bare interpreter median {percentile(b, 50):.1f} ms"
    )
    return [
        Row(
            GROUP,
            "hook.claude_code.dd.p50",
            f"13. Claude Code hook, the settings' command (sh + dd), median ({calls} calls)",
            percentile(d, 50),
            "ms",
            floor=Ref(percentile(t, 50), "sh -c /bin/true"),
            note=f"p90 {percentile(d, 90):.2f} ms (sh -c /bin/true: {percentile(t, 90):.2f} ms);"
            f" {percentile(d, 50) - percentile(t, 50):.2f} ms beyond a no-op command",
        ),
        Row(
            GROUP,
            "hook.claude_code.p50",
            f"13. Claude Code hook, Python form, one event per process, median ({calls} calls)",
            percentile(h, 50),
            "ms",
            floor=Ref(percentile(b, 50), floor_label),
            anchor=Ref(percentile(v, 50), "agentspool --version (click)"),
            target=TARGET_MS,
            note=note,
        ),
        Row(
            GROUP,
            "hook.claude_code.p90",
            f"13. Claude Code hook, p90 ({calls} calls)",
            percentile(h, 90),
            "ms",
            floor=Ref(percentile(b, 90), floor_label),
            anchor=Ref(percentile(v, 90), "agentspool --version (click)"),
        ),
        Row(
            GROUP,
            "hook.import_agentspool.p50",
            f"13. `import agentspool` in a fresh interpreter, median ({calls})",
            percentile(i, 50),
            "ms",
            floor=Ref(percentile(b2, 50), floor_label),
            anchor=Ref(percentile(a, 50), "from agentspool import Spool"),
            note=f"interpreter start included; `from agentspool import Spool` median "
            f"{percentile(a, 50):.1f} ms",
        ),
    ]


def _timed(args: list[str], env: dict[str, str], stdin: bytes = b"") -> float:
    """Milliseconds from spawn to exit of one process that must succeed silently."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, input=stdin, capture_output=True, timeout=60)
    elapsed = (time.perf_counter() - t0) * 1000.0
    if proc.returncode != 0 or proc.stderr:
        raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr!r}")
    if args[-1] == "claude-code" and proc.stdout:
        raise AssertionError(f"the hook printed on stdout: {proc.stdout!r}")
    return elapsed


def _events_collected(spool: Path) -> int:
    """The events the worker's collector makes of the inbox (what the hooks wrote)."""
    from agentspool.integrations.claude_code import collector

    collected = collector.collect(str(spool), final=True)
    if collected.unreadable or collected.waiting:
        raise AssertionError(f"hook input left behind: {collected}")
    path = spool / "queues" / "shared-claude-code" / "data.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM ack_queue_default").fetchone()[0])
    finally:
        conn.close()
