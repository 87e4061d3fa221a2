"""``agentspool verify``: report what ``reports.verify`` finds; exit 1 if anything is damaged."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from agentspool.worker.cli.options import database_errors_explained, settings_from, spool_option
from agentspool.worker.cli.terminal import visible
from agentspool.worker.intake.quarantine import list_quarantined
from agentspool.worker.reports.verify import verify_spool
from agentspool.worker.security import InsecureSpool, check_spool_private


@click.command()
@spool_option
@click.option(
    "--full", is_flag=True, help="Run PRAGMA integrity_check (slower) instead of quick_check."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@database_errors_explained
def verify(spool_dir: Path | None, full: bool, as_json: bool) -> None:
    """Check every queue file, replica and worker.db with SQLite's quick_check.

    Refuses (exit 1) a spool the worker would refuse: a link in it, a directory owned
    by another user or writable by group or others.

    Exits 1 if any file is damaged. The worker quarantines a damaged file when it
    meets one (spool/quarantine/, never deleted); these are listed, not checked."""
    settings = settings_from(spool_dir=spool_dir)
    try:  # the worker's own check: a spool it would refuse is not opened here either
        check_spool_private(settings.spool_dir)
    except InsecureSpool as exc:
        raise click.ClickException(str(exc)) from None
    checks = verify_spool(settings.spool_dir, full=full)
    held = list_quarantined(settings.spool_dir)
    damaged = [c for c in checks if not c.ok]
    if as_json:
        report = {
            "spool": str(settings.spool_dir),
            "checked": len(checks),
            "damaged": len(damaged),
            "files": [asdict(c) for c in checks],
            "quarantined": [asdict(q) for q in held],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        # File names and reasons may hold what a producer named a file: shown, not obeyed.
        for check in checks:
            click.echo(f"{'ok' if check.ok else 'DAMAGED':8} {visible(str(check.path))}")
            if check.problem:
                click.echo(f"         {visible(check.problem)}")
        for q in held:
            click.echo(f"{'held':8} quarantine/{visible(q.name)}: {visible(q.reason)}")
        click.echo(
            f"{len(checks)} file(s) checked, {len(damaged)} damaged, {len(held)} quarantined"
        )
    if damaged:
        raise click.ClickException(
            f"{len(damaged)} damaged file(s) in {settings.spool_dir}. The worker moves a damaged"
            " file to quarantine/ when it reads it; to salvage rows try `sqlite3 FILE .recover`"
        )
