"""The ``agentspool`` command: a thin layer over the worker library.

Logs go to stderr so that stdout (and ``--json``) stays parseable. Library errors
become ``click.ClickException`` (exit 1) with a message that names the next step.

Exit codes: 0 success; 1 error (including "another worker is running"); 2 usage
error; 3 ``worker run --burst`` ended with sessions left open, pending or failed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import state as st
from .config import ConfigError, Settings, load_settings
from .lock import WorkerAlreadyRunning

F = TypeVar("F", bound=Callable[..., Any])


def spool_option(func: F) -> F:
    """The shared ``--spool`` option (else AGENTSPOOL_DIR, else the XDG state dir)."""
    decorator = click.option(
        "--spool",
        "spool_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Spool directory [env: AGENTSPOOL_DIR; default: $XDG_STATE_HOME/agentspool].",
    )
    return decorator(func)


def settings_from(**overrides: Any) -> Settings:
    try:
        return load_settings(overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.version_option(package_name="agentspool")
def main() -> None:
    """agentspool: durable, agent-harmless session logging to Turso (libSQL)."""


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
    "--sync-timeout",
    type=float,
    help="Seconds one sync attempt may take [env: AGENTSPOOL_SYNC_TIMEOUT; default: 30].",
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
    sync_timeout: float | None,
    metrics_port: int | None,
    verbose: bool,
) -> None:
    """Drain producer queues into session replicas and sync ended sessions.

    Runs until SIGTERM/SIGINT (drains and syncs for up to
    AGENTSPOOL_SHUTDOWN_TIMEOUT, a second signal stops at once), or with --burst
    until the spool is empty; --burst exits 0 only if every session is synced,
    3 if any is left open, pending or failed."""
    from .service import Worker

    setup_logging(verbose)
    settings = settings_from(
        spool_dir=spool_dir, db_url=db_url, sync_timeout=sync_timeout, metrics_port=metrics_port
    )
    try:
        code = Worker(settings, burst=burst).run()
    except WorkerAlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command()
@spool_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON object (see README) instead of text."
)
def status(spool_dir: Path | None, as_json: bool) -> None:
    """Show producer queues, sessions by state, dead letters and the last sync error."""
    from .status import spool_status

    settings = settings_from(spool_dir=spool_dir)
    report = spool_status(settings.spool_dir)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
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
            f"  {p.producer_id}  [{alive}]  ready {p.ready}, unacked {p.unacked},"
            f" acked {p.acked}, dead {p.dead}{extra}"
        )
    s = report.sessions
    click.echo(
        f"sessions  open {s[st.OPEN]}, pending sync {s[st.PENDING]}, synced {s[st.SYNCED]},"
        f" failed {s[st.FAILED]}, abandoned {s['abandoned']}"
    )
    click.echo(f"dead letters  {report.dead_letters}")
    if report.last_sync_error:
        e = report.last_sync_error
        click.echo(f"last sync error  {e['session_id']}: {e['error']}")


@main.command()
@spool_option
@click.argument("session_id", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed session.")
def retry(spool_dir: Path | None, session_id: str | None, all_failed: bool) -> None:
    """Move a failed session (or, with --failed, all of them) back to pending sync."""
    if bool(session_id) == all_failed:
        raise click.UsageError("give either a SESSION_ID or --failed")
    settings = settings_from(spool_dir=spool_dir)
    if not (settings.spool_dir / st.STATE_FILENAME).exists():
        raise click.ClickException(f"no worker state in {settings.spool_dir}: nothing to retry")
    store = st.StateStore(settings.spool_dir)
    try:
        moved = store.retry_failed(None if all_failed else session_id)
    finally:
        store.close()
    if session_id and moved == 0:
        raise click.ClickException(
            f"session {session_id} is not failed; see `agentspool status` for the failed ones"
        )
    click.echo(f"{moved} session(s) will be synced again by the worker")


@main.command()
@click.option("--spool", "spool_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to put the demo spool (default: a new temporary directory).")  # fmt: skip
def demo(spool_dir: Path | None) -> None:
    """Run a few simulated agents (one killed mid-session), drain, sync, show what landed."""
    from .demo import run_demo

    setup_logging(False)
    sys.exit(run_demo(spool_dir, echo=click.echo))


@main.command()
@spool_option
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for the worker to finish.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
def drain(spool_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Tell the running worker to finish (drain, seal, sync everything, exit) and wait.

    For the last step of a CI job. Without a running worker it does the same work
    itself. Exits 0 when every session is synced, 3 when anything is left or failed
    (a summary says what), including when the worker did not finish in time."""
    from dataclasses import replace

    from .control import finish_worker

    setup_logging(False)
    settings = settings_from(spool_dir=spool_dir)
    settings = replace(settings, burst_timeout=max(1.0, timeout))
    outcome = finish_worker(settings, timeout)
    s = outcome.status.sessions
    if as_json:
        report = outcome.status.to_json() | {"finished": outcome.finished, "left": outcome.left}
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
            f" failed {s['failed']}, abandoned {s['abandoned']}; dead letters {outcome.status.dead_letters}"
        )
        if outcome.status.last_sync_error:
            e = outcome.status.last_sync_error
            click.echo(f"last sync error  {e['session_id']}: {e['error']}", err=True)
    sys.exit(0 if outcome.finished and outcome.left == 0 else 3)
