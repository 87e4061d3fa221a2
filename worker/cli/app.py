"""The ``agentspool`` command: a thin layer over the worker library.

Logs go to stderr so that stdout (and ``--json``) stays parseable. Library errors
become ``click.ClickException`` (exit 1) with a message that names the next step.

Exit codes are in exitcodes.py.
Shared options and helpers are in options.py; each command group is a module of
its own in this package, registered here
(docs/CLI.md documents every command and its ``--json`` schema).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from agentspool.worker import state as st
from agentspool.worker.cli.dead import dead
from agentspool.worker.cli.emit import emit, ingest
from agentspool.worker.cli.export import export
from agentspool.worker.cli.hook import hook
from agentspool.worker.cli.imports import import_group
from agentspool.worker.cli.inspect import queue, sessions, show
from agentspool.worker.cli.lifecycle import delete, prune
from agentspool.worker.cli.options import (
    DURATION,
    EndsQuietlyOnClosedStdout,
    database_errors_explained,
    duration_default,
    echo_json,
    json_option,
    load_env_file,
    local_session_id,
    refuse_unusable_spool,
    remember_group_spool,
    settings_from,
    setup_logging,
    spool_option,
    spool_or_group_default,
)
from agentspool.worker.cli.stats import stats
from agentspool.worker.cli.terminal import visible
from agentspool.worker.cli.ui import ui
from agentspool.worker.cli.verify import verify
from agentspool.worker.daemon.control import retry_now
from agentspool.worker.daemon.lock import WorkerAlreadyRunning
from agentspool.worker.exitcodes import EXIT_ERROR, EXIT_LEFT_PENDING, EXIT_OK
from agentspool.worker.reports.health import DEFAULT_MAX_AGE_S

__all__ = ["main", "settings_from", "setup_logging", "spool_option"]


@click.group(cls=EndsQuietlyOnClosedStdout)
@click.version_option(package_name="agentspool")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="AGENTSPOOL_ENV_FILE",
    help="Load settings from this file first (KEY=VALUE lines, as in .env.example);"
    " they override the environment [env: AGENTSPOOL_ENV_FILE].",
)
@click.option(
    "--spool",
    "spool_dir",
    type=click.Path(path_type=Path),  # checked by the command, as AGENTSPOOL_DIR is
    help="Spool directory for the command that follows (as its own --spool)"
    " [env: AGENTSPOOL_DIR; default: $XDG_STATE_HOME/agentspool].",
)
@click.pass_context
def main(ctx: click.Context, env_file: Path | None, spool_dir: Path | None) -> None:
    """agentspool: durable, agent-harmless session logging to Turso (libSQL)."""
    remember_group_spool(ctx, spool_dir)
    if env_file is not None:
        load_env_file(env_file)


@main.group()
def worker() -> None:
    """Run the worker that drains the spool and syncs sessions."""


@worker.command("run")
@spool_option
@click.option(
    "--db",
    "db_url",
    help="Remote database URL [env: TURSO_DATABASE_URL; default: a libSQL file in the spool].",
)
@click.option(
    "--burst",
    is_flag=True,
    help="Drain everything, seal sessions whose producers are gone, sync, and exit.",
)
@click.option(
    "--timeout",
    "burst_timeout",
    type=DURATION,
    help="With --burst: how long to keep retrying a sync that fails before giving up"
    " (exit 3): seconds or 30s, 5m... [env: AGENTSPOOL_BURST_TIMEOUT; default: 5m].",
)
@click.option(
    "--sync-timeout",
    type=DURATION,
    help="How long one sync attempt may take: seconds or 30s, 2m..."
    " [env: AGENTSPOOL_SYNC_TIMEOUT; default: 30s].",
)
@click.option(
    "--metrics-port",
    type=int,
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics [env: AGENTSPOOL_METRICS_PORT].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def worker_run(
    spool_dir: Path | None,
    db_url: str | None,
    burst: bool,
    burst_timeout: float | None,
    sync_timeout: float | None,
    metrics_port: int | None,
    verbose: bool,
) -> None:
    """Drain producer queues into session replicas and sync ended sessions.

    Runs until SIGTERM/SIGINT (drains and syncs for up to
    AGENTSPOOL_SHUTDOWN_TIMEOUT, a second signal stops at once), or with --burst
    until the spool is empty; --burst exits 0 only if every session is synced,
    3 if any is left open, pending or failed."""
    from agentspool.worker.daemon.service import Worker

    setup_logging(verbose)
    if burst_timeout is not None and not burst:
        raise click.UsageError("--timeout goes with --burst (a service runs until stopped)")
    settings = settings_from(
        spool_dir=spool_dir,
        db_url=db_url,
        burst_timeout=burst_timeout,
        sync_timeout=sync_timeout,
        metrics_port=metrics_port,
    )
    refuse_unusable_spool(settings.spool_dir, writable=True)
    try:
        code = Worker(settings, burst=burst).run()
    except WorkerAlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C before the worker's own handlers were installed
        click.echo("interrupted while starting: nothing was synced or lost", err=True)
        sys.exit(130)
    sys.exit(code)


@main.command()
@spool_option
@json_option
@database_errors_explained
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 if a session failed to sync, a dead letter exists, or work waited"
    " longer than --max-age (for monitoring).",
)
@click.option(
    "--max-age",
    type=DURATION,
    default=duration_default(DEFAULT_MAX_AGE_S),
    show_default=True,
    help="How long a queue item may wait to be drained, or an ended session to be synced:"
    " seconds or 30s, 10m, 1h...",
)
def status(spool_dir: Path | None, as_json: bool, check: bool, max_age: float) -> None:
    """Show producer queues, sessions by state, dead letters and the last sync error.

    With --check, also a health verdict for monitoring: exit 0 healthy, 1 not (the
    problems are listed, each with the next step)."""
    from agentspool.worker.reports.health import check_health
    from agentspool.worker.reports.status import spool_status
    from agentspool.worker.spool_access import unwritable_reason

    settings = settings_from(spool_dir=spool_dir)
    refuse_unusable_spool(settings.spool_dir, writable=False)
    report = spool_status(settings.spool_dir)
    health = check_health(settings.spool_dir, report, max_age)
    unwritable = unwritable_reason(settings.spool_dir)
    if unwritable is not None:  # readable, so there is a report: but nothing can log into it
        health.problems.insert(0, f"producers cannot write to the spool: {unwritable}")
    if as_json:
        echo_json(
            report.to_json()
            | {
                "oldest_pending_age_s": health.oldest_pending_age_s,
                "worker_alive": health.worker_alive,
                "healthy": health.healthy,
                "problems": health.problems,
            }
        )
        if check and not health.healthy:
            sys.exit(EXIT_ERROR)
        return
    worker = f"running (pid {report.worker_pid})" if report.worker_pid else "not running"
    click.echo(f"spool   {report.spool}")
    click.echo(f"worker  {worker}")
    click.echo(f"queues  {len(report.producers)} producer file(s)")
    for p in report.producers:
        alive = {True: "alive", False: "gone", None: "?"}[p.alive]
        extra = f", {p.dropped} dropped by producer" if p.dropped else ""
        extra += f", error: {p.error}" if p.error else ""
        click.echo(
            visible(
                f"  {p.producer_id}  [{alive}]  ready {p.ready}, unacked {p.unacked},"
                f" acked {p.acked}, dead {p.dead}{extra}"
            )
        )
    s = report.sessions
    click.echo(
        f"sessions  open {s[st.OPEN]}, pending sync {s[st.PENDING]}, synced {s[st.SYNCED]},"
        f" failed {s[st.FAILED]}, abandoned {s['abandoned']}"
    )
    click.echo(f"dead letters  {report.dead_letters}")
    if report.sessions_with_rejected_events:
        click.echo(click.style(
            f"rejected events  {report.sessions_with_rejected_events} session(s) miss events"
            " kept as dead letters (agentspool sessions shows which; agentspool dead ls)",
            fg="red"))  # fmt: skip
    if report.last_sync_error:
        e = report.last_sync_error
        click.echo(visible(f"last sync error  {e['session_id']}: {e['error']}"))
    age = health.oldest_pending_age_s
    click.echo(f"oldest waiting  {'-' if age is None else f'{age:.1f}s'}")
    if health.healthy:
        click.echo("health  ok")
    else:
        click.echo(click.style(f"health  {len(health.problems)} problem(s)", fg="red"))
        for problem in health.problems:
            click.echo(f"  - {visible(problem)}")
    if check and not health.healthy:
        sys.exit(EXIT_ERROR)


@main.command()
@spool_option
@click.argument("session_id", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed session.")
@json_option
@database_errors_explained
def retry(spool_dir: Path | None, session_id: str | None, all_failed: bool, as_json: bool) -> None:
    """Sync a failed session again (or, with --failed, all of them), after fixing the
    cause. A pending session that waits for its next attempt is tried at once. A
    running worker is told to start afresh (its backoff is reset).

    SESSION_ID may be a unique prefix of the id."""
    if bool(session_id) == all_failed:
        raise click.UsageError("give either a SESSION_ID or --failed")
    settings = settings_from(spool_dir=spool_dir)
    if session_id:
        session_id = local_session_id(settings.spool_dir, session_id)
    with st.existing_state(settings.spool_dir, readonly=False) as store:
        if store is None:
            raise click.ClickException(f"no worker state in {settings.spool_dir}: nothing to retry")
        moved = store.retry_failed(None if all_failed else session_id)
    if session_id and moved == 0:
        raise click.ClickException(
            f"session {session_id} is neither failed nor pending; see `agentspool status`"
        )
    retry_now(settings.spool_dir)
    if as_json:
        echo_json({"retried": moved})
        return
    click.echo(f"{moved} session(s) will be synced again by the worker")


@main.command()
@click.option("--spool", "spool_dir", type=click.Path(file_okay=False, path_type=Path),
              callback=spool_or_group_default,
              help="Where to put the demo spool (default: a new temporary directory).")  # fmt: skip
def demo(spool_dir: Path | None) -> None:
    """Run a few simulated agents (one killed mid-session), drain, sync, show what landed."""
    from agentspool.worker.demo import run_demo

    setup_logging(False)
    sys.exit(run_demo(spool_dir, echo=click.echo))


@main.command()
@spool_option
@click.option("--timeout", type=DURATION, default="2m", show_default=True,
              help="How long to wait for the worker to finish: seconds or 30s, 5m...")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
@database_errors_explained
def drain(spool_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Tell the running worker to finish (drain, seal, sync everything, exit) and wait.

    For the last step of a CI job. Without a running worker it does the same work
    itself. Exits 0 when every session is synced, 3 when anything is left or failed
    (a summary says what), including when the worker did not finish in time."""
    from dataclasses import replace

    from agentspool.worker.daemon.control import finish_worker
    from agentspool.worker.reports.status import spool_status

    setup_logging(False)
    settings = settings_from(spool_dir=spool_dir)
    refuse_unusable_spool(settings.spool_dir, writable=True)  # it may do the work itself
    settings = replace(settings, burst_timeout=max(1.0, timeout))
    outcome = finish_worker(settings, timeout)
    status = spool_status(settings.spool_dir)
    left = status.work_left()
    s = status.sessions
    if as_json:
        report = status.to_json() | {"finished": outcome.finished, "left": left}
        click.echo(json.dumps(report, indent=2))
    else:
        who = (
            f"worker {outcome.worker_pid}"
            if outcome.worker_pid
            else "no worker running; drained here"
        )
        click.echo(
            f"{who}: {'finished' if outcome.finished else f'still running after {timeout:g}s'};"
            f" sessions synced {s['synced']}, open {s['open']}, pending {s['pending']},"
            f" failed {s['failed']}, abandoned {s['abandoned']}; dead letters {status.dead_letters}"
        )
        if status.last_sync_error:
            e = status.last_sync_error
            click.echo(f"last sync error  {e['session_id']}: {e['error']}", err=True)
    sys.exit(EXIT_OK if outcome.finished and left == 0 else EXIT_LEFT_PENDING)


@main.command()
@spool_option
@click.option(
    "--db",
    "db_url",
    help="Remote database URL [env: TURSO_DATABASE_URL; default: the embedded file].",
)
@click.option("--yes", is_flag=True, help="Apply without asking.")
@click.option("--dry-run", is_flag=True, help="Only show what would be applied.")
@click.option(
    "--timeout",
    type=DURATION,
    default="1m",
    show_default=True,
    help="How long to wait for the database: seconds or 30s, 2m...",
)
def migrate(
    spool_dir: Path | None, db_url: str | None, yes: bool, dry_run: bool, timeout: float
) -> None:
    """Apply the schema to the remote database, showing what it will do first.

    The worker migrates by itself before its first sync; this is for doing it ahead
    of time, or to see what a new version of agentspool would change."""
    from agentspool.worker import migrations
    from agentspool.worker.sync.database import DatabaseError, open_database

    settings = settings_from(spool_dir=spool_dir, db_url=db_url)
    try:
        with open_database(settings.effective_db_url, settings.auth_token, timeout=timeout) as db:
            applied, pending = db.schema_plan()
            click.echo(f"database {db.url}: schema versions {applied or 'none'}")
            if not pending:
                click.echo("up to date: nothing to apply")
                return
            for m in pending:
                click.echo(f"-- {m.name}")
                if m.repeat:  # see migrations.py: a backfill, in steps of its own
                    click.echo(
                        "-- (nothing to fill in a new database)"
                        if migrations.steps_are_empty(applied)
                        else "-- (run again and again, each in its own transaction,"
                        " until it changes no row)"
                    )
                for statement in m.statements:
                    click.echo(statement.rstrip() + ";")
            if dry_run:
                return
            if not yes and not click.confirm("apply these migrations?", default=False):
                raise click.ClickException("nothing applied")
            done = db.ensure_schema()
            click.echo(f"applied: {done or 'nothing (another process just did it)'}")
    except DatabaseError as exc:
        raise click.ClickException(f"{exc}") from None


# Command groups, one module each in cli/: inspection, dead letters, producers in
# any language, the web viewer, the integrity check.
main.add_command(queue)
main.add_command(sessions)
main.add_command(show)
main.add_command(stats)
main.add_command(dead)
main.add_command(emit)
main.add_command(ingest)
main.add_command(ui)
main.add_command(hook)
main.add_command(import_group)
main.add_command(verify)
main.add_command(prune)
main.add_command(delete)
main.add_command(export)
