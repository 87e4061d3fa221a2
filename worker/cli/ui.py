"""``agentspool ui``: the local, read-only web viewer (agentspool.worker.ui)."""

from __future__ import annotations

import errno
from pathlib import Path

import click

from agentspool.worker.cli.options import settings_from, setup_logging, spool_option


@click.command()
@spool_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but a loopback address shows your sessions to the network.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port; the URL is printed).",
)
@click.option(
    "--remote",
    is_flag=True,
    help="Read the sessions database instead of the spool (--db, else TURSO_DATABASE_URL,"
    " else the spool's embedded file).",
)
@click.option(
    "--db",
    "db_url",
    help="Database URL for --remote (implies it) [env: TURSO_DATABASE_URL; token: TURSO_AUTH_TOKEN].",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def ui(
    spool_dir: Path | None,
    host: str,
    port: int,
    remote: bool,
    db_url: str | None,
    open_browser: bool,
    verbose: bool,
) -> None:
    """Serve a read-only web viewer: sessions, transcripts, tool timelines, live.

    By default it reads the spool (replicas and the worker's state, so open sessions
    update as they run); --remote reads the database (a teammate's sessions). Stops
    on Ctrl-C or SIGTERM. The JSON API it serves is in docs/CLI.md."""
    from agentspool.worker.ui.remote_source import RemoteSource
    from agentspool.worker.ui.server import ViewerServer, is_loopback, serve
    from agentspool.worker.ui.sources import Source, SourceError, SpoolSource

    setup_logging(verbose)
    settings = settings_from(spool_dir=spool_dir, db_url=db_url)
    source: Source
    if remote or db_url:
        try:
            source = RemoteSource(settings.effective_db_url, settings.auth_token)
        except SourceError as exc:
            raise click.ClickException(f"{exc}; check --db / TURSO_DATABASE_URL") from None
    else:
        source = SpoolSource(settings.spool_dir)
    if not is_loopback(host):
        click.echo(
            f"warning: listening on {host}: anyone who can reach it can read these sessions",
            err=True,
        )
    try:
        server = ViewerServer(host, port, source, verbose=verbose)
    except OSError as exc:
        source.close()
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is in use; pick another with --port (0: any free one)"
            ) from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    where = source.describe()["where"]
    try:
        serve(
            server,
            open_browser=open_browser,
            ready=lambda url: click.echo(f"agentspool ui: {where} at {url}"),
        )
    finally:
        source.close()
