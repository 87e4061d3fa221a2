"""Inspection commands: ``queue ls``, ``queue peek``, ``sessions``, ``show``.

All of them only read: they answer while a worker runs, and change nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentspool.worker import state as st
from agentspool.worker.cli.options import (
    WHEN_HELP,
    OtherFilterHint,
    database_errors_explained,
    echo_json,
    json_option,
    local_session_id,
    remote_database,
    remote_options,
    settings_from,
    since_option_value,
    spool_option,
    view_redactor,
)
from agentspool.worker.cli.terminal import visible, visible_text
from agentspool.worker.config import Settings
from agentspool.worker.reports.transcript import end_reason, plural, unquoted

if TYPE_CHECKING:
    from agentspool.worker.reports.transcript import Transcript

if TYPE_CHECKING:
    from agentspool.worker.reports.queues import QueueSummary

TOOL_FIELD_CHARS = 500  # tool input/output shown per call unless --full


@click.group()
def queue() -> None:
    """Look at the producers' queue files (read-only)."""


@queue.command("ls")
@spool_option
@json_option
@database_errors_explained
def queue_ls(spool_dir: Path | None, as_json: bool) -> None:
    """List producer queue files: producer, pid, alive, depths, dead and dropped events."""
    from agentspool.worker.reports.queues import list_queues

    settings = settings_from(spool_dir=spool_dir)
    queues = list_queues(settings.spool_dir)
    if as_json:
        echo_json({"spool": str(settings.spool_dir), "queues": [q.to_json() for q in queues]})
        return
    if not queues:
        click.echo(f"no producer queue files in {settings.spool_dir}")
        return
    names = {q.producer_id: visible(q.producer_id) for q in queues}  # a file name: shown
    width = max(len(name) for name in names.values())
    click.echo(
        f"{'PRODUCER':<{width}}  {'PID':>7}  {'STATE':<6}  {'READY':>6}  {'UNACKED':>7}"
        f"  {'ACKED':>6}  {'DEAD':>5}  {'DROPPED':>7}  OLDEST WAITING"
    )
    for q in queues:
        state = {True: "alive", False: "gone", None: "?"}[q.alive]
        if q.closed_at:
            state = "closed"
        elif q.shared:
            state = "shared"
        oldest = "-" if q.oldest_pending_age_s is None else f"{q.oldest_pending_age_s:.1f}s"
        click.echo(
            f"{names[q.producer_id]:<{width}}  {_pid(q):>7}  {state:<6}"
            f"  {q.ready:>6}  {q.unacked:>7}  {q.acked:>6}  {q.dead:>5}  {q.dropped:>7}  {oldest}"
        )
        if q.error:
            click.echo(click.style(f"  cannot read: {visible(q.error)}", fg="red"))


def _pid(q: QueueSummary) -> str:
    if q.shared:
        return "-"  # its writers are short-lived processes, none of them its owner
    return "?" if q.pid is None else str(q.pid)


@queue.command("peek")
@spool_option
@click.option(
    "-n", "limit", type=click.IntRange(min=1), default=20, show_default=True,
    help="How many waiting events to show.",
)  # fmt: skip
@click.option("--producer", help="Only this producer's queue file (see `agentspool queue ls`).")
@json_option
@database_errors_explained
def queue_peek(spool_dir: Path | None, limit: int, producer: str | None, as_json: bool) -> None:
    """Show the events waiting in queue files, decoded, without taking them."""
    from agentspool.worker.reports.queues import peek

    settings = settings_from(spool_dir=spool_dir)
    try:
        found = peek(settings.spool_dir, limit, producer)
    except LookupError:
        raise click.ClickException(
            f"no queue file of producer {producer!r}; list them with: agentspool queue ls"
        ) from None
    redactor = view_redactor(settings)
    if redactor is not None:  # not applied yet: redacted here as the worker will
        found = [p.redacted(redactor) for p in found]
    if as_json:
        echo_json({"spool": str(settings.spool_dir), "events": [p.to_json() for p in found]})
        return
    if not found:
        click.echo("no events are waiting")
        return
    for p in found:
        where = f"{visible(p.producer_id)} #{p.item_id}"
        if p.event is None:
            invalid = click.style(f"INVALID ({visible(p.error)})", fg="red")
            click.echo(f"{where}  {invalid}  {visible(p.raw)}")
            continue
        e = p.event
        line = (
            f"{where}  {visible(e.get('type'))}  session {visible(e.get('session_id'))}"
            f" seq {visible(e.get('seq'))}"
        )
        click.echo(line + "  " + visible(_one_line(_event_gist(e), 100)))
        if p.error:
            click.echo(click.style(f"  will be dead-lettered: {visible(p.error)}", fg="red"))


def _event_gist(e: dict[str, Any]) -> str:
    kind = e.get("type")
    if kind == "session_start":
        return f"agent {e.get('agent')}"
    if kind == "message":
        return f"{e.get('role')}: {_text(e.get('content'))}"
    if kind == "tool_started":
        return f"{e.get('name')} [{e.get('call_id')}] {_text(e.get('input'))}"
    if kind == "tool_finished":
        error = e.get("error")
        return f"[{e.get('call_id')}] " + (f"error: {error}" if error else _text(e.get("output")))
    if kind == "session_end":
        return str(e.get("status")) + (f": {e['error']}" if e.get("error") else "")
    return ""


SESSION_STATUSES = ("running", "completed", "error", "abandoned")


@click.command()
@spool_option
@click.option(
    "--state", "sync_state", type=OtherFilterHint(st.SYNC_STATES, "--status", SESSION_STATUSES),
    help="Only sessions in this sync state (local only): open, pending, synced, failed.",
)  # fmt: skip
@click.option(
    "--status", type=OtherFilterHint(SESSION_STATUSES, "--state", st.SYNC_STATES),
    help="Only sessions with this status: running, completed, error, abandoned.",
)  # fmt: skip
@click.option("--agent", help="Only this agent's sessions.")
@click.option(
    "--since", metavar="WHEN",
    help=f"Only sessions active since WHEN: {WHEN_HELP}.",
)  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True,
    help="Show at most this many (the most recently active first).",
)  # fmt: skip
@remote_options
@json_option
@database_errors_explained
def sessions(
    spool_dir: Path | None,
    sync_state: str | None,
    status: str | None,
    agent: str | None,
    since: str | None,
    limit: int,
    remote: bool,
    db_url: str | None,
    remote_timeout: float,
    as_json: bool,
) -> None:
    """List sessions, most recently active first: the ones the worker has seen, or
    with --remote the ones in the database (agent, status, start, duration,
    message and tool counts)."""
    from agentspool.worker.reports.transcript import list_sessions, session_json

    settings = settings_from(spool_dir=spool_dir, db_url=db_url)
    since_iso = since_option_value(since)
    if remote:
        if sync_state is not None:
            raise click.UsageError(
                "--state is the local sync state; the database holds synced sessions"
                " (filter them with --status)"
            )
        _remote_sessions(settings, status, agent, since_iso, limit, remote_timeout, as_json)
        return
    found = list_sessions(
        settings.spool_dir, sync_state=sync_state, agent=agent, since=since_iso, limit=None
    )
    if status is not None:
        found = [s for s in found if s.status == status]
    found = found[:limit]
    if as_json:
        echo_json(
            {
                "spool": str(settings.spool_dir),
                "sessions": [session_json(s, settings.spool_dir) for s in found],
            }
        )
        return
    if not found:
        filtered = sync_state or status or agent or since
        where = settings.spool_dir
        click.echo(f"no sessions match in {where}" if filtered else f"no sessions yet in {where}")
        return
    ids = {s.session_id: visible(s.session_id) for s in found}
    agents = {s.agent: visible(s.agent) for s in found}
    sid_width = max(len("SESSION"), *(len(i) for i in ids.values()))
    agent_width = max(len("AGENT"), *(len(a) for a in agents.values()))
    click.echo(
        f"{'LAST EVENT':<24}  {'SESSION':<{sid_width}}  {'AGENT':<{agent_width}}"
        f"  {'STATUS':<9}  {'SYNC':<7}  EVENTS"
    )
    for s in found:
        status_text = click.style(f"{s.status:<9}", fg=_status_colour(s.status))
        sync = click.style(f"{s.sync_state:<7}", fg="red" if s.sync_state == st.FAILED else None)
        click.echo(
            f"{s.last_event_at or '-':<24}  {ids[s.session_id]:<{sid_width}}"
            f"  {agents[s.agent]:<{agent_width}}  {status_text}  {sync}  {s.event_count}"
        )
        if s.rejected_events:
            click.echo(click.style(
                f"  {plural(s.rejected_events, 'event')} rejected (dead letters): agentspool dead ls",
                fg="red"))  # fmt: skip
        if s.last_error and s.sync_state in (st.PENDING, st.FAILED):
            error = visible(_one_line(s.last_error, 200))
            click.echo(click.style(f"  sync error: {error}", fg="red"))


def _remote_sessions(
    settings: Settings,
    status: str | None,
    agent: str | None,
    since: str | None,
    limit: int,
    timeout: float,
    as_json: bool,
) -> None:
    from agentspool.worker.reports.remote_sessions import list_remote_sessions

    with remote_database(settings, timeout) as db:
        found = list_remote_sessions(db, status=status, agent=agent, since=since, limit=limit)
        url = db.url
    if as_json:
        echo_json({"database": url, "sessions": [s.to_json() for s in found]})
        return
    if not found:
        filtered = status or agent or since
        click.echo(f"no sessions match in {url}" if filtered else f"no sessions in {url} yet")
        return
    ids = {s.session_id: visible(s.session_id) for s in found}
    agents = {s.agent: visible(s.agent) for s in found}
    sid_width = max(len("SESSION"), *(len(i) for i in ids.values()))
    agent_width = max(len("AGENT"), *(len(a) for a in agents.values()))
    click.echo(
        f"{'STARTED':<24}  {'SESSION':<{sid_width}}  {'AGENT':<{agent_width}}"
        f"  {'STATUS':<9}  {'DURATION':>8}  {'MESSAGES':>8}  {'TOOLS':>5}"
    )
    for s in found:
        status_text = click.style(f"{s.status:<9}", fg=_status_colour(s.status))
        click.echo(
            f"{visible(s.started_at):<24}  {ids[s.session_id]:<{sid_width}}"
            f"  {agents[s.agent]:<{agent_width}}  {status_text}  {_duration(s.duration_s):>8}  {s.message_count:>8}"
            f"  {s.tool_count:>5}"
        )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@click.command()
@spool_option
@click.argument("session_id")
@click.option("--full", is_flag=True, help="Do not shorten long tool inputs and outputs.")
@remote_options
@json_option
@database_errors_explained
def show(
    spool_dir: Path | None,
    session_id: str,
    full: bool,
    remote: bool,
    db_url: str | None,
    remote_timeout: float,
    as_json: bool,
) -> None:
    """Print a session's transcript: messages, tool calls with durations, errors.

    SESSION_ID may be a unique prefix of the id. Read from the session's local
    replica, or with --remote from the database (a synced session whose replica
    was pruned is only there)."""
    from agentspool.worker.reports.transcript import ReplicaGone, SessionNotFound, load_transcript

    settings = settings_from(spool_dir=spool_dir, db_url=db_url)
    if remote:
        transcript = _remote_transcript(settings, session_id, remote_timeout)
    else:
        full_id = local_session_id(settings.spool_dir, session_id)
        try:
            transcript = load_transcript(settings.spool_dir, full_id)
        except SessionNotFound:
            raise click.ClickException(
                f"no session {session_id!r} in {settings.spool_dir}; list them with:"
                " agentspool sessions (or read the database: agentspool show ID --remote)"
            ) from None
        except ReplicaGone as exc:
            raise click.ClickException(
                f"{exc}; read it there with: agentspool show {full_id} --remote"
            ) from None
    if as_json:
        echo_json(transcript.to_json())
        return
    # Every value below came from an agent or the database: shown, never obeyed.
    s = {k: v if v is None or isinstance(v, int | float) else visible(v) for k, v in
         transcript.session.items()}  # fmt: skip
    error = transcript.session.get("error")
    click.echo(click.style(f"session  {s['id']}", bold=True))
    status = click.style(str(s["status"]), fg=_status_colour(transcript.session["status"]))
    sync = f"   sync {transcript.sync_state}" if transcript.sync_state else ""
    click.echo(f"agent    {s['agent'] or '?'}   status {status}{sync}")
    if transcript.database:
        click.echo(f"from     {transcript.database}")
    reason = end_reason(s.get("metadata"))
    click.echo(
        f"started  {s['started_at']}   ended {s['ended_at'] or '-'}"
        + (f" (reason: {reason})" if reason else "")
    )
    if s.get("host") or s.get("pid"):
        click.echo(
            f"host     {s.get('host') or '?'}" + (f" (pid {s['pid']})" if s.get("pid") else "")
        )
    if s.get("metadata"):
        click.echo(f"metadata {s['metadata']}")
    click.echo(
        f"events   {s['event_count']}"
        f" ({plural(transcript.session['message_count'] or 0, 'message')},"
        f" {plural(transcript.session['tool_count'] or 0, 'tool call')})"
    )
    if transcript.rejected_events:
        click.echo(click.style(
            f"rejected {plural(transcript.rejected_events, 'event')} of this session"
            " kept as dead letters, not in this transcript: agentspool dead ls", fg="red"))  # fmt: skip
    if transcript.missing_seqs:
        seqs = ", ".join(map(str, transcript.missing_seqs))
        click.echo(click.style(f"missing  seq {seqs}: never applied (see above)"
                               if transcript.rejected_events else
                               f"missing  seq {seqs}: not (yet) applied", fg="red"))  # fmt: skip
    if error:
        click.echo(click.style(f"error    {visible_text(error)}", fg="red"))
    limit = None if full else TOOL_FIELD_CHARS
    for kind, row in transcript.timeline():
        click.echo("")
        if kind == "message":
            at = visible(_clock(row["created_at"]))
            head = click.style(visible(row["role"]), bold=True)
            click.echo(f"{at}  #{row['seq']} {head}")
            click.echo(_indent(visible_text(_text(row["content"]))))
        else:
            _echo_tool(row, limit)


def _remote_transcript(settings: Settings, given: str, timeout: float) -> Transcript:
    from agentspool.worker.reports.remote_sessions import load_remote_transcript, resolve_remote
    from agentspool.worker.reports.session_ids import AmbiguousSessionId
    from agentspool.worker.reports.transcript import SessionNotFound

    with remote_database(settings, timeout) as db:
        try:
            session_id = resolve_remote(db, given)
        except AmbiguousSessionId as exc:
            raise click.ClickException(str(exc)) from None
        try:
            if session_id is None:
                raise SessionNotFound(given)
            return load_remote_transcript(db, session_id)
        except SessionNotFound:
            raise click.ClickException(
                f"no session {given!r} in {db.url}; list them with: agentspool sessions --remote"
            ) from None


def _echo_tool(t: dict[str, Any], limit: int | None) -> None:
    duration = "" if t["duration_ms"] is None else f"  {t['duration_ms']:.1f} ms"
    status = click.style(
        visible(t["status"]), fg={"error": "red", "running": "yellow"}.get(t["status"], "green")
    )
    at = visible(_clock(t["started_at"] or t["ended_at"]))
    headless = t["started_at"] is None and not t["name"]
    name = click.style("tool (start missing)" if headless else f"tool {visible(t['name'] or '?')}",
                       fg="cyan", bold=True)  # fmt: skip
    click.echo(f"{at}  {name} [{visible(t['call_id'])}]{duration}  {status}")
    if headless:  # a finish without its tool_started: only half of the call is known
        click.echo(click.style(_indent("its tool_started event never arrived: the tool's"
                                       " name, input and start are unknown"), fg="yellow"))  # fmt: skip
    if t["input"] is not None:
        click.echo(_indent("input:  " + visible_text(_shorten(_text(t["input"]), limit))))
    if t["output"] is not None:
        click.echo(
            _indent("output: " + visible_text(_shorten(unquoted(_text(t["output"])), limit)))
        )
    if t["error"]:
        click.echo(click.style(_indent("error:  " + visible_text(t["error"])), fg="red"))


def _status_colour(status: str) -> str | None:
    return {"error": "red", "abandoned": "yellow", "running": "blue"}.get(status)


def _clock(at: str | None) -> str:
    """'2026-01-02T03:04:05.678Z' -> '03:04:05.678' (the header has the date)."""
    return at[11:23] if at and len(at) >= 23 else (at or "?")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in str(text).splitlines() or [""])


def _shorten(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more characters; --full shows all]"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
