"""`agentspool import claude-code`: a progress bar on a terminal, one summary line
anywhere, a clear error for a path that is not there. (What it imports is held to
the real Claude Code's transcripts in tests/integrations/test_claude_code_cli.py.)"""

from __future__ import annotations

from pathlib import Path

from bench.claude_import import TURNS, _write_session
from tests.cli.test_terminal_escapes import on_pty
from tests.helpers import AGENTSPOOL, run_cli, worker_env


def test_a_progress_bar_on_a_terminal_and_one_summary_line_in_a_pipe(
    spool: Path, tmp_path: Path
) -> None:
    projects = tmp_path / "projects"
    for n in range(3):
        _write_session(projects / "proj", f"s-{n}")
    env = worker_env(spool, TERM="xterm")
    on_terminal = on_pty([AGENTSPOOL, "import", "claude-code", str(projects)], env)
    assert "importing" in on_terminal and "100%" in on_terminal, on_terminal
    # a turn: a prompt, two responses (messages) and a tool result: 4 records
    summary = f"imported 3 session(s) (3 new) from 3 file(s): {3 * 3 * TURNS} message(s)"
    assert summary in on_terminal

    piped = run_cli("import", "claude-code", str(projects), env=env)
    assert piped.returncode == 0 and "importing" not in piped.stderr + piped.stdout
    assert piped.stdout.splitlines() == [
        "imported 0 session(s) (0 new) from 3 file(s): 0 message(s), 0 tool call(s);"
        f" {3 * 4 * TURNS} record(s) already there; 0 unreadable line(s),"
        " 0 unreadable file(s)"
    ]

    missing = run_cli("import", "claude-code", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
