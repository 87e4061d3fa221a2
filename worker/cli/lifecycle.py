"""How long sessions stay, and deleting them: ``prune`` and ``delete``.

``prune`` deletes synced replicas by age and size (daemon/retention.py) or, with
``--remote``, the sessions in the database that ended before a cutoff
(sync/remote_delete.py). ``delete`` removes named sessions locally and, with
``--remote``, from the database; a tombstone keeps them from coming back
(daemon/deletion.py, intake/tombstones.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from agentspool.worker import state as st
from agentspool.worker.cli.options import (
    DURATION,
    SIZE,
    database_errors_explained,
    echo_json,
    remote_database,
    settings_from,
    spool_option,
)
from agentspool.worker.cli.terminal import visible
from agentspool.worker.config import Settings


@click.command()
@spool_option
@click.option(
    "--older-than",
    type=DURATION,
    help="How long a synced replica is kept (with --remote: a session in the database"
    " after it ended): seconds or 12h, 7d, 2w..."
    " [env: AGENTSPOOL_RETAIN_SYNCED; default: 7d; with --remote: required].",
)
@click.option(
    "--max-bytes",
    type=SIZE,
    help="Cap on all replicas' size: bytes or 500M, 2G... (0: none)"
    " [env: AGENTSPOOL_MAX_REPLICA_BYTES; default: 1G].",
)
@click.option(
    "--remote",
    is_flag=True,
    help="Delete from the database (--db / TURSO_DATABASE_URL; default: the embedded"
    " file) every session that ended before --older-than, with its messages and tool"
    " executions; never a running one.",
)
@click.option("--agent", help="With --remote: only this agent's sessions.")
@click.option("--db", "db_url", help="With --remote: the database URL [env: TURSO_DATABASE_URL].")
@click.option("--timeout", "remote_timeout", type=DURATION, default="30s", show_default=True,
              help="With --remote: how long each request to the database may take.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Only list (or with --remote, count) what would be deleted.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@database_errors_explained
def prune(
    spool_dir: Path | None,
    older_than: float | None,
    max_bytes: int | None,
    remote: bool,
    agent: str | None,
    db_url: str | None,
    remote_timeout: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Delete replicas of synced sessions by age and size (never unsynced ones), or
    with --remote, sessions in the database that ended before --older-than.

    The running worker prunes replicas hourly by itself; by hand it runs only while no
    worker holds the spool. With AGENTSPOOL_REMOTE_RETENTION the worker also prunes
    the database, daily; --remote may run at any time."""
    from agentspool.worker.daemon.lock import lock_holder
    from agentspool.worker.daemon.retention import prune as prune_spool

    if remote:
        if older_than is None:
            raise click.UsageError("--remote needs --older-than (e.g. --older-than 90d)")
        if max_bytes is not None:
            raise click.UsageError("--max-bytes is for replicas; the database is pruned by age")
        settings = settings_from(spool_dir=spool_dir, db_url=db_url)
        _prune_remote(settings, older_than, agent, remote_timeout, dry_run, as_json)
        return
    if agent is not None or db_url is not None:
        raise click.UsageError("--agent and --db go with --remote")
    settings = settings_from(
        spool_dir=spool_dir, retain_synced=older_than, max_replica_bytes=max_bytes
    )
    holder = lock_holder(settings.spool_dir)
    if holder is not None and not dry_run:
        raise click.ClickException(
            f"a worker (pid {holder}) is running and prunes by itself; use --dry-run to look, or stop it first"
        )
    with st.existing_state(settings.spool_dir, readonly=False) as store:
        if store is None:
            raise click.ClickException(
                f"no worker state in {settings.spool_dir}: nothing has been synced yet"
            )
        report = prune_spool(
            settings.spool_dir,
            store,
            retain_synced=settings.retain_synced,
            max_bytes=settings.max_replica_bytes,
            dry_run=dry_run,
        )
    if as_json:
        click.echo(json.dumps({
            "dry_run": dry_run,
            "deleted": [{"session_id": s, "bytes": b} for s, b in report.deleted],
            "freed_bytes": report.freed_bytes,
            "kept_bytes": report.kept_bytes,
            "stale_builds": report.stale_builds,
        }, indent=2))  # fmt: skip
        return
    verb = "would delete" if dry_run else "deleted"
    for session_id, size in report.deleted:
        click.echo(f"{verb} {session_id} ({size} bytes)")
    click.echo(
        f"{verb} {len(report.deleted)} replica(s), {report.freed_bytes} bytes; {report.kept_bytes} bytes kept"
    )


def _prune_remote(
    settings: Settings,
    older_than: float,
    agent: str | None,
    timeout: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    from agentspool.worker.intake.replica import iso
    from agentspool.worker.sync.database import DatabaseError
    from agentspool.worker.sync.remote_delete import count_expired, delete_expired

    cutoff = iso(time.time() - older_than)
    with remote_database(settings, timeout) as db:
        url = db.url
        try:
            if dry_run:
                counts = count_expired(db, cutoff, agent)
            else:
                counts = delete_expired(db, cutoff, agent)
        except DatabaseError as exc:
            raise click.ClickException(
                f"pruning {url} stopped: {exc}; every session is either whole or deleted:"
                " run the same command again to finish"
            ) from None
    if as_json:
        echo_json({"database": url, "dry_run": dry_run, "ended_before": cutoff,
                   "agent": agent} | counts.to_json())  # fmt: skip
        return
    verb = "would delete" if dry_run else "deleted"
    who = f" of agent {visible(agent)}" if agent else ""
    click.echo(
        f"{verb} {counts.sessions} session(s){who} that ended before {cutoff}"
        f" ({counts.messages} messages, {counts.tool_executions} tool executions) in {url}"
    )


@click.command()
@spool_option
@click.argument("session_ids", metavar="SESSION...", nargs=-1, required=True)
@click.option(
    "--remote",
    is_flag=True,
    help="Also delete them from the database (--db / TURSO_DATABASE_URL; default: the"
    " embedded file).",
)
@click.option("--db", "db_url", help="With --remote: the database URL [env: TURSO_DATABASE_URL].")
@click.option("--timeout", type=DURATION, default="30s", show_default=True,
              help="How long to wait for a running worker, and for each request to the database.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Delete without asking (needed when not on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@database_errors_explained
def delete(
    spool_dir: Path | None,
    session_ids: tuple[str, ...],
    remote: bool,
    db_url: str | None,
    timeout: float,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete sessions with every row: the replica and pending work here, and with
    --remote the database's rows. A deleted session is never sent again, even by a
    worker that still has its events queued (they are dropped).

    SESSION may be a unique prefix of an id."""
    from agentspool.worker.daemon.control import delete_locally
    from agentspool.worker.reports.remote_sessions import resolve_remote
    from agentspool.worker.reports.session_ids import AmbiguousSessionId, resolve_local
    from agentspool.worker.sync.database import DatabaseError
    from agentspool.worker.sync.remote_delete import DeletionCounts, delete_sessions

    settings = settings_from(spool_dir=spool_dir, db_url=db_url)
    spool = settings.spool_dir
    resolved: dict[str, str | None] = {}
    try:
        for given in session_ids:
            resolved[given] = resolve_local(spool, given)
        unknown = [g for g, found in resolved.items() if found is None]
        if unknown and remote:
            with remote_database(settings, timeout) as db:
                for given in unknown:
                    resolved[given] = resolve_remote(db, given)
    except AmbiguousSessionId as exc:
        raise click.ClickException(str(exc)) from None
    missing = [g for g, found in resolved.items() if found is None]
    if missing:
        where = f"{spool} or the database" if remote else f"{spool} (add --remote for the database)"
        raise click.ClickException(f"no session {', '.join(map(repr, missing))} in {where}")
    ids = list(dict.fromkeys(found for found in resolved.values() if found is not None))
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not on a terminal: add --yes to delete without asking")
        where = "here and in the database" if remote else "here"
        shown = ", ".join(visible(i) for i in ids)
        if not click.confirm(f"delete {len(ids)} session(s) {where}: {shown}?", default=False):
            raise click.ClickException("nothing deleted")
    local = None
    if spool.is_dir():
        local = delete_locally(spool, ids, timeout)
        if not local.done:
            raise click.ClickException(
                f"the running worker{'' if local.worker_pid is None else f' (pid {local.worker_pid})'}"
                f" has not removed them within {timeout:g}s;"
                " they are marked deleted and it will; run this again to check"
                + (" and to delete them from the database" if remote else "")
            )
    counts = DeletionCounts()
    url = None
    if remote:
        with remote_database(settings, timeout) as db:
            url = db.url
            try:
                counts = delete_sessions(db, ids)
            except DatabaseError as exc:
                raise click.ClickException(
                    f"deleting from {url} failed: {exc}; run the same command again"
                ) from None
    if as_json:
        echo_json({"deleted": ids, "local": local is not None,
                   "database": url, "remote": counts.to_json() if remote else None})  # fmt: skip
        return
    for session_id in ids:
        click.echo(f"deleted {visible(session_id)}")
    if remote:
        click.echo(
            f"from {url}: {counts.sessions} session(s), {counts.messages} messages,"
            f" {counts.tool_executions} tool executions"
        )
