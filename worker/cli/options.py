"""What every ``agentspool`` command shares: option bundles and output helpers.

Kept apart from app.py so that the command modules (dead.py, emit.py, ...) and
app.py, which registers them, never import each other.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agentspool.producer import default_spool_dir
from agentspool.worker.config import ConfigError, Settings, load_settings
from agentspool.worker.durations import format_duration, parse_duration
from agentspool.worker.sizes import parse_size

if TYPE_CHECKING:
    from agentspool.worker.intake.redaction import Redactor
    from agentspool.worker.sync.database import Database

F = TypeVar("F", bound=Callable[..., Any])


SPOOL_HELP = "Spool directory [env: AGENTSPOOL_DIR; default: $XDG_STATE_HOME/agentspool]."
# Where the group-level ``agentspool --spool S <command>`` keeps its value.
_GROUP_SPOOL = "agentspool.group_spool_dir"


class EndsQuietlyOnClosedStdout(click.Group):
    """The ``agentspool`` group: a reader that closes our stdout early (``| head -1``)
    ends the command as it ends every Unix tool, by SIGPIPE, with nothing on stderr
    (click alone would exit 1, and an ``except OSError`` on the way could blame the
    spool)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            end_on_closed_stdout()


def end_on_closed_stdout() -> None:
    import os
    import signal

    # What is still buffered for stdout must not raise again on the way out.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python starts with SIGPIPE ignored
    os.kill(os.getpid(), signal.SIGPIPE)


def remember_group_spool(ctx: click.Context, spool_dir: Path | None) -> None:
    """Called by the ``agentspool`` group: its ``--spool`` is every command's default."""
    if spool_dir is not None:
        ctx.meta[_GROUP_SPOOL] = spool_dir


def group_spool(ctx: click.Context | None) -> Path | None:
    """The spool given before the command (``agentspool --spool S status``), if any."""
    return None if ctx is None else ctx.meta.get(_GROUP_SPOOL)


def spool_or_group_default(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # A command's own --spool wins; else the one given before the command name.
    return value if value is not None else group_spool(ctx)


def spool_option(func: F) -> F:
    """The shared ``--spool`` option (else ``agentspool --spool``, else AGENTSPOOL_DIR,
    else the XDG state dir)."""
    decorator = click.option(
        "--spool",
        "spool_dir",
        type=click.Path(path_type=Path),  # unusable paths get the one-line answer below
        callback=spool_or_group_default,
        help=SPOOL_HELP,
    )
    return decorator(func)


class DurationType(click.ParamType):
    """Seconds, or a duration with units: 90, 30s, 15m, 2h, 7d, 1w, 1h30m (durations.py)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def duration_default(seconds: float) -> str:
    """A duration option's default as its help shows it: ``10s``, ``2m``, ``7d`` (click
    converts the text like any value typed, and ``show_default`` prints it as is)."""
    return format_duration(seconds)


class SizeType(click.ParamType):
    """Bytes, or a size with units: 1048576, 500K, 64M, 1G (sizes.py)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


def remote_options(func: F) -> F:
    """``--remote`` with ``--db`` and ``--timeout``: read the database instead of the spool."""
    for decorator in reversed([
        click.option("--remote", is_flag=True,
                     help="Read the remote database (--db / TURSO_DATABASE_URL, with"
                     " TURSO_AUTH_TOKEN) instead of the local spool."),
        click.option("--db", "db_url",
                     help="With --remote: the database URL [env: TURSO_DATABASE_URL;"
                     " default: the embedded file in the spool]."),
        click.option("--timeout", "remote_timeout", type=DURATION, default="10s",
                     show_default=True,
                     help="With --remote: how long to wait for the database (10s, 1m...)."),
    ]):  # fmt: skip
        func = decorator(func)
    return func


def local_session_id(spool_dir: Path, given: str) -> str:
    """``given`` or the one local session id it is a prefix of; ambiguous: exit 1
    listing the candidates."""
    from agentspool.worker.reports.session_ids import AmbiguousSessionId, resolve_local

    try:
        return resolve_local(spool_dir, given) or given
    except AmbiguousSessionId as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def remote_database(settings: Settings, timeout: float) -> Iterator[Database]:
    """The database, or exit 1 with one line that names it and what went wrong."""
    from agentspool.worker.config import EMBEDDED_DB_FILENAME, display_url
    from agentspool.worker.sync.database import DatabaseError, open_database

    if settings.embedded and not (settings.spool_dir / EMBEDDED_DB_FILENAME).exists():
        raise click.ClickException(
            f"no database to read: TURSO_DATABASE_URL is not set and the spool"
            f" {settings.spool_dir} has no embedded database; give --db URL"
        )
    shown = display_url(settings.effective_db_url)
    try:
        with open_database(settings.effective_db_url, settings.auth_token, timeout=timeout) as db:
            yield db
    except DatabaseError as exc:
        if "no such table" in str(exc):
            raise click.ClickException(
                f"the database {shown} has no agentspool tables: nothing was synced to it"
                " (agentspool migrate creates them)"
            ) from None
        raise click.ClickException(f"cannot read the database {shown}: {exc}") from None


WHEN_HELP = (
    "a duration ago with its unit (30m, 2h, 7d) or an ISO-8601 time (UTC unless it has an offset)"
)


def since_option_value(since: str | None) -> str | None:
    """``--since`` as the ISO text the spool and the database store times in."""
    from agentspool.worker.durations import has_unit
    from agentspool.worker.reports.transcript import since_to_iso

    if since is None:
        return None
    if not has_unit(since):
        raise click.BadParameter(
            f"{since!r} has no unit: say {since}s, {since}m, {since}h or {since}d",
            param_hint="--since",
        )
    try:
        return since_to_iso(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def json_option(func: F) -> F:
    """The shared ``--json`` flag: one JSON document on stdout (schemas in docs/CLI.md)."""
    decorator = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document (schema in docs/CLI.md) instead of text.",
    )
    return decorator(func)


def settings_from(**overrides: Any) -> Settings:
    try:
        return load_settings(overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def view_redactor(settings: Settings) -> Redactor | None:
    """The redactor of views that print what the worker has not applied (queue files,
    dead letters): the worker's own (docs/RELIABILITY.md); None when it is off."""
    if not settings.redact:
        return None
    from agentspool.worker.config import redact_patterns_of
    from agentspool.worker.intake.redaction import Redactor

    try:
        return Redactor(redact_patterns_of(settings))
    except ConfigError as exc:  # the file changed since the settings were read
        raise click.ClickException(str(exc)) from None


def producer_spool_dir(spool_dir: Path | None) -> Path:
    """The spool as a producer finds it (the option, AGENTSPOOL_DIR, the XDG default).

    Producer-side commands read nothing else, as the Python producer reads nothing
    else: a worker setting that is wrong must not stop an agent from logging."""
    return (spool_dir if spool_dir is not None else default_spool_dir()).expanduser()


def setup_logging(verbose: bool) -> None:
    from agentspool.worker.cli.terminal import VisibleFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(VisibleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


def load_env_file(path: Path) -> None:
    """Put the file's settings into the environment, then validate all settings once,
    so a bad value is reported now, naming the file, whichever command runs."""
    import os
    from dataclasses import fields

    from agentspool.worker.config import EnvFileError, env_var, read_env_file

    try:
        assignments = read_env_file(path)
    except EnvFileError as exc:
        raise click.ClickException(
            f"{exc}; the format is KEY=VALUE lines and # comments, as in .env.example"
        ) from None
    known = set(_OTHER_ENV_VARS)
    for f in fields(Settings):
        try:
            known.add(env_var(f.name))
        except KeyError:
            pass
    for number, key, value in assignments:
        if key.startswith(("AGENTSPOOL_", "TURSO_")) and key not in known:
            click.echo(
                f"warning: {path}:{number}: agentspool has no setting {key} (a typo?)", err=True
            )
        os.environ[key] = value
    try:
        load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"{exc} (after reading {path})") from None


# Environment variables read by the CLI itself or by producers rather than by Settings
# (.env.example documents AGENTSPOOL_MAX_QUEUE_BYTES for the agents' side).
_OTHER_ENV_VARS = ("AGENTSPOOL_ENV_FILE", "AGENTSPOOL_OWNER_PID", "AGENTSPOOL_MAX_QUEUE_BYTES")


def refuse_unusable_spool(spool_dir: Path, *, writable: bool) -> None:
    """Exit 1 with one line if the spool cannot be read (or, with ``writable``,
    written or created): a parent that is a file, no permission, a read-only mount."""
    from agentspool.worker.spool_access import unreadable_reason, unwritable_reason

    reason = unwritable_reason(spool_dir) if writable else unreadable_reason(spool_dir)
    if reason is not None:
        raise click.ClickException(
            f"cannot use the spool {spool_dir}: {reason}; choose another with --spool or"
            " AGENTSPOOL_DIR"
        )


def database_errors_explained(func: F) -> F:
    """A spool file SQLite cannot read (busy past the timeout, damaged), or one the
    operating system will not open, becomes an error that says so, not a traceback."""
    import functools
    import sqlite3

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(
                f"cannot read the spool's files: {exc}; a damaged worker.db or replica is"
                " quarantined and rebuilt by the worker (agentspool worker run); see agentspool status"
            ) from None
        except BrokenPipeError:
            raise  # stdout was closed (`| head`): not the spool's fault; see cli.run
        except OSError as exc:  # permission denied, not a directory, ...
            where = f" {exc.filename}" if exc.filename else ""
            raise click.ClickException(
                f"cannot read the spool's files{where}: {exc.strerror or exc}"
            ) from None

    return wrapper  # type: ignore[return-value]


class OtherFilterHint(click.Choice):
    """A choice that, given a value of the other filter (``--state error``), says
    which option takes it instead of only listing its own values."""

    def __init__(self, choices: tuple[str, ...], other: str, other_choices: tuple[str, ...]):
        super().__init__(choices)
        self.other = other
        self.other_choices = other_choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.other_choices and value not in self.choices:
            self.fail(
                f"{value!r} is not one of {', '.join(map(repr, self.choices))};"
                f" did you mean {self.other} {value}?",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)
