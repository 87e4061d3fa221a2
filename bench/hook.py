"""Row 13: the Claude Code hook, as Claude Code runs it.

Each sample is the wall-clock time of one real ``agentspool hook claude-code``
process, from spawn to exit, fed one ``UserPromptSubmit`` event (a 400-byte prompt)
on stdin for one session. Each call writes the payload to a file of its own in the
spool's inbox (``<spool>/inbox/claude-code/``), fsynced and renamed into place,
before it exits; no worker is running to collect them. (The settings agentspool
writes run the same write as one ``dd``; this row times the Python command.) Paired
in the same loop, under the same load: the floor, a bare interpreter (``python -c
pass``), and the anchor, ``agentspool --version`` (the console script through
click). Afterwards every call's payload must be in the inbox, once, and every call
must have printed nothing on stdout.

``import agentspool``: the same pairing, a fresh ``python -c "import agentspool"``
against the bare interpreter; the anchor loads the producer's API
(``from agentspool import Spool``), which ``import agentspool`` used to do at once.
"""

from __future__ import annotations

import json
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

    hook, bare, version = [], [], []
    for _ in range(calls):  # interleaved: each kind sees the same load
        hook.append(_timed([AGENTSPOOL_CLI, "hook", "claude-code"], env, data))
        bare.append(_timed([PYTHON, "-c", "pass"], env))
        version.append(_timed([AGENTSPOOL_CLI, "--version"], env))
    landed = _payloads_in_inbox(spool, data)
    if landed != calls + 1:  # + the first call's
        raise AssertionError(f"{calls + 1} payloads expected in the inbox, found {landed}")

    imports, anchor, bare_again = [], [], []
    for _ in range(calls):
        imports.append(_timed([PYTHON, "-c", "import agentspool"], env))
        bare_again.append(_timed([PYTHON, "-c", "pass"], env))
        anchor.append(_timed([PYTHON, "-c", "from agentspool import Spool"], env))

    h, b, v = sorted(hook), sorted(bare), sorted(version)
    i, a, b2 = sorted(imports), sorted(anchor), sorted(bare_again)
    floor_label = "bare interpreter (python -c pass)"
    note = (
        f"{calls} calls of a real subprocess, each writing its payload, fsynced, to a"
        f" file of its own in the spool's inbox ({landed} in the end, no worker running); p90 "
        f"{percentile(h, 90):.1f} ms, max {h[-1]:.1f} ms; `agentspool --version` median "
        f"{percentile(v, 50):.1f} ms; bare interpreter median {percentile(b, 50):.1f} ms"
    )
    return [
        Row(
            GROUP,
            "hook.claude_code.p50",
            f"13. Claude Code hook, one event per process, median ({calls} calls)",
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


def _payloads_in_inbox(spool: Path, data: bytes) -> int:
    """The payloads the calls left in the inbox, each whole (one file per call)."""
    files = sorted((spool / "inbox" / "claude-code").glob("*.json"))
    for path in files:
        if path.read_bytes() != data:
            raise AssertionError(f"{path.name} does not hold the payload as it was sent")
    return len(files)
