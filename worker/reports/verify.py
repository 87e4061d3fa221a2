"""``agentspool verify``: SQLite's own check of every file in the spool.

Runs ``PRAGMA quick_check`` (``--full``: ``integrity_check``) on every producer queue
file, every session replica, the worker's ``worker.db`` and the embedded database,
on read-only connections (safe while the worker runs). Exits 1 if any is damaged.
Files already in ``quarantine/`` are listed, not checked: they are known to be bad.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from agentspool.producer import queuefile
from agentspool.worker.cli.options import database_errors_explained, settings_from, spool_option
from agentspool.worker.config import EMBEDDED_DB_FILENAME
from agentspool.worker.intake.quarantine import check_database, list_quarantined
from agentspool.worker.intake.replica import REPLICAS_DIRNAME
from agentspool.worker.state import STATE_FILENAME


@dataclass(frozen=True)
class FileCheck:
    path: str  # relative to the spool
    ok: bool
    problem: str | None = None


def spool_files(spool_dir: Path) -> list[Path]:
    """Every SQLite file the spool holds (queue files, replicas, worker.db, embedded db)."""
    files = [queuefile.queue_db_path(q) for q in queuefile.list_queue_dirs(spool_dir)]
    replicas = spool_dir / REPLICAS_DIRNAME
    if replicas.is_dir():
        files += sorted(p for p in replicas.iterdir() if p.suffix == ".db" and p.is_file())
    for name in (STATE_FILENAME, EMBEDDED_DB_FILENAME):
        if (spool_dir / name).is_file():
            files.append(spool_dir / name)
    return files


def verify_spool(spool_dir: Path, *, full: bool = False) -> list[FileCheck]:
    checks = []
    for path in spool_files(spool_dir):
        try:
            problem = check_database(path, full=full)
        except sqlite3.Error as exc:  # locked or busy for 10 s: say so, do not guess
            problem = f"could not be checked: {exc}"
        checks.append(FileCheck(str(path.relative_to(spool_dir)), problem is None, problem))
    return checks


@click.command()
@spool_option
@click.option(
    "--full", is_flag=True, help="Run PRAGMA integrity_check (slower) instead of quick_check."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@database_errors_explained
def verify(spool_dir: Path | None, full: bool, as_json: bool) -> None:
    """Check every queue file, replica and worker.db with SQLite's quick_check.

    Exits 1 if any file is damaged. The worker quarantines a damaged file when it
    meets one (spool/quarantine/, never deleted); these are listed, not checked."""
    settings = settings_from(spool_dir=spool_dir)
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
        for check in checks:
            click.echo(f"{'ok' if check.ok else 'DAMAGED':8} {check.path}")
            if check.problem:
                click.echo(f"         {check.problem}")
        for q in held:
            click.echo(f"{'held':8} quarantine/{q.name}: {q.reason}")
        click.echo(
            f"{len(checks)} file(s) checked, {len(damaged)} damaged, {len(held)} quarantined"
        )
    if damaged:
        raise click.ClickException(
            f"{len(damaged)} damaged file(s) in {settings.spool_dir}. The worker moves a damaged"
            " file to quarantine/ when it reads it; to salvage rows try `sqlite3 FILE .recover`"
        )
