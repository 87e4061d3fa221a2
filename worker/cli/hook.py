"""``agentspool hook ...``: agent frameworks' hooks that log to the spool.

``agentspool hook claude-code`` with no option is the hook itself; the console
script runs it without loading this module (see ``cli/__init__.py``), and this
command does the same thing when it is reached through click (``--env-file``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from agentspool.integrations import opencode
from agentspool.integrations.claude_code import hook as claude_code
from agentspool.integrations.claude_code import inbox

DEFAULT_SETTINGS = Path("~/.claude/settings.json")
PLAIN_COMMAND = "agentspool hook claude-code"


@click.group()
def hook() -> None:
    """Hooks for agent tools that log their sessions to the spool (docs/INTEGRATIONS.md)."""


@hook.command("claude-code")
@click.option(
    "--print-settings",
    is_flag=True,
    help="Print the settings.json block that runs this hook on every Claude Code event.",
)
@click.option(
    "--install",
    "install_path",
    is_flag=False,
    flag_value=str(DEFAULT_SETTINGS),
    default=None,
    metavar="[PATH]",
    help="Merge that block into a Claude Code settings file, keeping what is there"
    f" [default PATH: {DEFAULT_SETTINGS}; a project's is .claude/settings.json].",
)
@click.option(
    "--command",
    "hook_command",
    default=None,
    metavar="CMD",
    help="The command the settings run [default: one `dd` that appends the event to the"
    " spool's inbox (GNU coreutils); `agentspool hook claude-code` does the same from"
    " Python, where dd is not GNU's].",
)
def claude_code_hook(
    print_settings: bool, install_path: str | None, hook_command: str | None
) -> None:
    """Log Claude Code sessions. Run as the command of a Claude Code hook, it appends the
    event (JSON on stdin) to the spool's inbox, fsynced, prints nothing and exits 0 (a
    problem is one line on stderr); the worker maps it, with the session's transcript.
    --print-settings and --install set Claude Code up to do the same with one `dd`."""
    if not print_settings and install_path is None:
        sys.exit(claude_code.run_hook())
    command = hook_command or inbox.hook_command()
    if print_settings:
        click.echo(json.dumps(claude_code.settings_block(command), indent=2))
    if install_path is not None:
        path = Path(install_path).expanduser()
        added = install(path, command)
        if added:
            click.echo(f"{path}: added the agentspool hook to {len(added)} events"
                       f" ({', '.join(added)})")  # fmt: skip
        else:
            click.echo(f"{path}: every event already runs the agentspool hook")


def install(path: Path, command: str) -> list[str]:
    """Merge the hook into the settings file at ``path`` (created if missing); return
    the events it was added to. The file is replaced whole (written aside, fsynced,
    renamed), so Claude Code never reads half of it; through a symlink, the file it
    points to is replaced and the link stays."""
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError) as exc:
            raise click.ClickException(
                f"cannot read {path}: {exc}; fix it or pass another file to --install"
            ) from None
        if not isinstance(existing, dict):
            raise click.ClickException(f"{path} is not a JSON object; fix it first")
    try:
        merged, added = claude_code.merge_settings(existing, command)
    except ValueError as exc:
        raise click.ClickException(f"cannot merge into {path}: {exc}") from None
    if added:
        # A settings file kept in dotfiles is a symlink: write the file it points to,
        # so the link stays a link (replacing the path would put a copy in its place).
        _replace_file(path.resolve(), json.dumps(merged, indent=2) + "\n")
    return added


def _replace_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@hook.command("opencode")
@click.option(
    "--install",
    "do_install",
    is_flag=True,
    help="Write the plugin into the project's .opencode/plugin/ (again: updates it).",
)
@click.option(
    "--global",
    "everywhere",
    is_flag=True,
    help="With --install: into ~/.config/opencode/plugin/ instead, for every project.",
)
@click.option("--print", "print_plugin", is_flag=True, help="Print the plugin (JavaScript).")
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The project directory --install writes into.",
)
def opencode_hook(do_install: bool, everywhere: bool, print_plugin: bool, project: Path) -> None:
    """Log every OpenCode session: a plugin that OpenCode runs in its own process,
    writing each event durably into the spool as it happens (no process per event)."""
    if not (do_install or print_plugin):
        raise click.UsageError("say --install [--global] or --print")
    if everywhere and not do_install:
        raise click.UsageError("--global goes with --install")
    if print_plugin:
        click.echo(opencode.plugin_source(), nl=False)
    if do_install:
        target = (
            opencode.global_plugin_dir() if everywhere else opencode.project_plugin_dir(project)
        )
        try:
            path, changed = opencode.install(target)
        except OSError as exc:
            raise click.ClickException(f"cannot write the plugin into {target}: {exc}") from None
        click.echo(f"{path}: {'installed' if changed else 'already up to date'}", err=print_plugin)
