"""``agentspool export``: sessions as JSON Lines (reports/export.py does the work)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click

from agentspool.worker.cli.inspect import SESSION_STATUSES
from agentspool.worker.cli.options import (
    database_errors_explained,
    remote_database,
    remote_options,
    settings_from,
    spool_option,
)


@click.command()
@spool_option
@click.option("--agent", help="Only this agent's sessions.")
@click.option(
    "--since", metavar="WHEN",
    help="Only sessions still running or that ended since WHEN: a duration ago with its unit (30m, 2h, 7d) or an ISO-8601 time.",
)  # fmt: skip
@click.option("--status", type=click.Choice(SESSION_STATUSES),
              help="Only sessions with this status: running, completed, error, abandoned.")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: stdout).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(("jsonl", "openai")), default="jsonl",
              show_default=True,
              help="jsonl: agentspool.session/1, one session per line with its messages and"
              " tool executions (docs/CLI.md); openai: the chat fine-tuning shape.")  # fmt: skip
@remote_options
@database_errors_explained
def export(
    spool_dir: Path | None,
    agent: str | None,
    since: str | None,
    status: str | None,
    output: Path | None,
    fmt: str,
    remote: bool,
    db_url: str | None,
    remote_timeout: float,
) -> None:
    """Write sessions as JSON Lines, one session per line, oldest first: from the
    replicas in the spool, or with --remote from the database. Streamed: a session
    of any size is written without holding it in memory."""
    from agentspool.worker.durations import has_unit
    from agentspool.worker.reports.export import Filters, export_local, export_remote
    from agentspool.worker.reports.transcript import since_to_iso
    from agentspool.worker.sync.database import DatabaseError

    settings = settings_from(spool_dir=spool_dir, db_url=db_url)
    if since is not None and not has_unit(since):
        raise click.BadParameter(f"{since!r} has no unit: say {since}m, {since}h or {since}d",
                                 param_hint="--since")  # fmt: skip
    try:
        filters = Filters(agent, status, None if since is None else since_to_iso(since))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    out: IO[str] = sys.stdout if output is None else output.open("w", encoding="utf-8")
    try:
        if remote:
            with remote_database(settings, remote_timeout) as db:
                try:
                    report = export_remote(db, out, filters, fmt)
                except DatabaseError as exc:
                    raise click.ClickException(f"reading {db.url} failed: {exc}") from None
        else:
            report = export_local(settings.spool_dir, out, filters, fmt)
    finally:
        if output is not None:
            out.close()
    missing = (
        f"; {report.missing_replicas} session(s) whose replica was pruned are not in it"
        " (export them with --remote)"
        if report.missing_replicas
        else ""
    )
    if report.empty:
        missing += f"; {report.empty} session(s) without a message to keep were left out"
    click.echo(
        f"exported {report.sessions} session(s), {report.messages} messages,"
        f" {report.tool_executions} tool executions{missing}",
        err=True,
    )
