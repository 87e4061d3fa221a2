"""The CLI's surface: help text, documentation, errors with a next step, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agentspool.worker.cli import main
from tests.helpers import run_cli, worker_env

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
CLI_DOC = (REPO / "docs" / "CLI.md").read_text()


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += all_commands(command, path + " ")
        else:
            found.append((path, command))
    return found


COMMANDS = all_commands(main)


def test_the_cli_has_the_core_commands() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"worker run", "status", "retry", "demo"} <= names


@pytest.mark.parametrize("name,command", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_help_and_is_documented(name: str, command: click.Command) -> None:
    assert command.help and len(command.help) > 20, f"{name} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"option {param.opts} of {name} has no help text"
    assert f"agentspool {name}" in README + CLI_DOC, (
        f"`agentspool {name}` is in neither README.md nor docs/CLI.md"
    )
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_status_of_an_empty_spool(spool: Path) -> None:
    env = worker_env(spool)
    text = run_cli("status", env=env, check=True).stdout
    assert "worker  not running" in text
    assert "sessions  open 0, pending sync 0, synced 0, failed 0, abandoned 0" in text
    report = json.loads(run_cli("status", "--json", env=env, check=True).stdout)
    assert report["worker_pid"] is None
    assert report["producers"] == []
    assert report["sessions"] == {"open": 0, "pending": 0, "synced": 0, "failed": 0, "abandoned": 0}
    assert report["dead_letters"] == 0 and report["last_sync_error"] is None


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["sessions"],
        ["dead", "ls"],
        ["dead", "purge", "--all"],
        ["retry", "--failed"],
        ["prune", "--dry-run"],
        ["show", "no-such-session"],
    ],
    ids=" ".join,
)
def test_commands_never_create_worker_state_where_no_worker_ran(
    spool: Path, args: list[str]
) -> None:
    env = {"AGENTSPOOL_DIR": str(spool)}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code in (0, 1), result.output
    assert not (spool / "worker.db").exists(), f"agentspool {' '.join(args)} created worker.db"


def test_a_bad_setting_is_a_clear_error(spool: Path) -> None:
    result = run_cli(
        "worker", "run", "--burst", env=worker_env(spool, AGENTSPOOL_SYNC_TIMEOUT="soon")
    )
    assert result.returncode == 1
    assert "AGENTSPOOL_SYNC_TIMEOUT must be a number" in result.stderr
    result = run_cli("worker", "run", "--burst", "--db", "postgres://x", env=worker_env(spool))
    assert result.returncode == 1
    assert "TURSO_DATABASE_URL / --db 'postgres://x' is not a database URL" in result.stderr
    assert "accepted: libsql://" in result.stderr


def test_retry_needs_a_session_or_failed(spool: Path) -> None:
    env = worker_env(spool)
    assert run_cli("retry", env=env).returncode == 2
    missing = run_cli("retry", "--failed", env=env)
    assert missing.returncode == 1 and "nothing to retry" in missing.stderr


def test_burst_on_an_empty_spool_exits_zero_and_says_embedded(spool: Path) -> None:
    result = run_cli("worker", "run", "--burst", env=worker_env(spool))
    assert result.returncode == 0, result.stderr
    assert "embedded database" in result.stderr
    assert result.stdout == ""  # logs go to stderr


def test_demo_lands_its_sessions_and_names_a_command_that_runs(tmp_path: Path) -> None:
    """`make demo`'s command: three sessions land (the killed agent's `abandoned`), and
    the viewer command it prints names an executable that exists (the venv's, when
    `agentspool` is not on PATH)."""
    import shutil
    import sqlite3

    spool = tmp_path / "demo"
    result = run_cli("demo", "--spool", str(spool), env=worker_env(spool), timeout=180)
    assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(spool / "agentspool.db")
    try:
        statuses = dict(conn.execute("SELECT agent, status FROM sessions"))
    finally:
        conn.close()
    assert statuses == {
        "researcher": "completed",
        "coder": "completed",
        "doomed-agent": "abandoned",
    }
    last = result.stdout.strip().splitlines()[-1]
    assert last.endswith(f" ui --spool {spool}"), last
    executable = last.split(": ", 1)[1].split()[0]
    assert shutil.which(executable) or Path(executable).is_file(), executable
