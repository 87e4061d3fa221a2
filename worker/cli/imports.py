"""``agentspool import ...``: sessions an agent tool kept on disk, into the spool."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agentspool.worker.cli.options import producer_spool_dir, spool_option

DEFAULT_CLAUDE_PROJECTS = Path("~/.claude/projects")


@click.group("import")
def import_group() -> None:
    """Import sessions an agent tool kept on disk (docs/INTEGRATIONS.md)."""


@import_group.command("claude-code")
@spool_option
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def import_claude_code(spool_dir: Path | None, paths: tuple[Path, ...]) -> None:
    """Import Claude Code transcripts (files or folders; default ~/.claude/projects),
    subagents included, through the spool: the worker syncs them like live sessions.

    Safe to repeat, and over sessions the hook captured live: nothing is logged twice
    and what is missing is added. Unreadable files and lines are reported, never fatal."""
    from agentspool.integrations.claude_code.importer import find_transcripts, import_transcripts

    roots = [p.expanduser() for p in paths] or [DEFAULT_CLAUDE_PROJECTS.expanduser()]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        raise click.ClickException(f"no such file or folder: {', '.join(missing)}")
    transcripts = find_transcripts(roots)
    spool = producer_spool_dir(spool_dir)
    if sys.stderr.isatty() and transcripts:
        with click.progressbar(length=len(transcripts), label="importing", file=sys.stderr) as bar:
            summary = import_transcripts(str(spool), transcripts, progress=lambda _: bar.update(1))
    else:
        summary = import_transcripts(str(spool), transcripts)
    for problem in summary.problems:
        click.echo(f"skipped {problem}", err=True)
    click.echo(
        f"imported {summary.sessions} session(s) ({summary.new_sessions} new) from"
        f" {summary.files} file(s): {summary.messages} message(s),"
        f" {summary.tools} tool call(s); {summary.skipped} record(s) already there;"
        f" {summary.bad_lines} unreadable line(s), {len(summary.problems)} unreadable file(s)"
    )
