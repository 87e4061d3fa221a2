"""``agentspool demo``: simulated agents -> spool -> worker -> embedded libSQL database.

Three agent processes log sessions (messages and tool calls); one of them is killed
with SIGKILL mid-session. The worker then drains the spool in burst mode, seals the
killed agent's session as abandoned, syncs everything to the embedded database
(``<spool>/agentspool.db``) and the demo prints what landed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentspool.worker.config import EMBEDDED_DB_FILENAME, load_settings

AGENTS = [("researcher", 6, False), ("coder", 10, False), ("doomed-agent", 50, True)]


def run_demo(spool_dir: Path | None, echo: Callable[[str], None] = print) -> int:
    from agentspool.worker.daemon.service import Worker

    spool = spool_dir or Path(tempfile.mkdtemp(prefix="agentspool-demo-"))
    echo(f"spool: {spool}")
    procs: list[tuple[str, bool, subprocess.Popen[str]]] = []
    for name, turns, doomed in AGENTS:
        args = [sys.executable, "-m", "agentspool.worker.demo", "--spool", str(spool),
                "--agent", name, "--turns", str(turns)]  # fmt: skip
        procs.append((name, doomed, subprocess.Popen(args, stdout=subprocess.PIPE, text=True)))
    for name, doomed, proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # each agent says when it has logged enough
        if doomed:
            proc.send_signal(signal.SIGKILL)
            echo(f"agent {name}: {line}; killed with SIGKILL mid-session")
        else:
            echo(f"agent {name}: {line}")
        proc.wait(timeout=60)

    echo("worker: draining, sealing and syncing (burst mode)...")
    settings = load_settings({"spool_dir": spool, "liveness_interval": 0.2})
    code = Worker(settings, burst=True).run()

    db = spool / EMBEDDED_DB_FILENAME
    echo(f"\nwhat landed in {db}:")
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT s.agent, s.id, s.status, s.event_count,"
        " (SELECT count(*) FROM messages m WHERE m.session_id = s.id),"
        " (SELECT count(*) FROM tool_executions t WHERE t.session_id = s.id),"
        " (SELECT round(avg(duration_ms), 1) FROM tool_executions t WHERE t.session_id = s.id)"
        " FROM sessions s ORDER BY s.agent"
    ).fetchall()
    echo(
        f"  {'agent':<14}{'session':<34}{'status':<11}{'events':>7}{'messages':>10}{'tools':>7}{'avg tool ms':>13}"
    )
    for agent, sid, status, events, messages, tools, avg_ms in rows:
        echo(
            f"  {agent:<14}{sid:<34}{status:<11}{events:>7}{messages:>10}{tools:>7}{avg_ms or 0:>13}"
        )
    conn.close()
    echo("\nthe killed agent's session arrived 'abandoned' with every event it had committed.")
    echo(f"to look at the sessions in a browser: {_command()} ui --spool {spool}")
    return code


def _command() -> str:
    """How to run this agentspool again: ``make demo`` runs ``.venv/bin/agentspool``,
    which is not on PATH unless the virtualenv is active."""
    invoked = Path(sys.argv[0])
    on_path = shutil.which("agentspool")
    if invoked.name != "agentspool" or (on_path and Path(on_path).resolve() == invoked.resolve()):
        return "agentspool"
    return str(invoked)


TOOLS = ("read_file", "search", "edit_file", "run_tests")


def simulate_agent(spool_dir: Path, agent: str, turns: int, doomed: bool) -> None:
    import os

    from agentspool import Spool

    spool = Spool(spool_dir)
    metadata = {"demo": True, "model": "demo-model-1", "cwd": os.getcwd()}
    with spool.session(agent=agent, metadata=metadata) as session:
        session.message("user", f"Hello {agent}, please do {turns} steps.")
        for turn in range(turns):
            name = TOOLS[turn % len(TOOLS)]
            call = session.tool_started(name, input={"turn": turn})
            time.sleep(0.005 + (turn * 7 % 5) * 0.008)  # tools take different times
            if name == "run_tests" and turn % 8 == 3:
                session.tool_finished(call, error="2 tests failed: test_paging, test_limits")
            else:
                session.tool_finished(call, output={"lines": turn * 10})
            usage = {"input_tokens": 900 + 40 * turn, "output_tokens": 120 + 15 * turn}
            session.message("assistant", f"step {turn} done", metadata={"usage": usage})
            if doomed and turn == 5:
                spool.flush()
                print(f"{session.id} logged {turn + 1} steps", flush=True)
                time.sleep(120)  # waits here to be killed
        print(f"{session.id} completed {turns} steps", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="a simulated agent for `agentspool demo`")
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    simulate_agent(args.spool, args.agent, args.turns, doomed=args.agent == "doomed-agent")


if __name__ == "__main__":
    main()
