"""Producer commands for agents in any language: ``emit`` (one event) and ``ingest``
(JSON Lines). The event contract is docs/EVENTS.md; the writing is ingest.py."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
from pathlib import Path
from typing import IO, Any

import click

from agentspool.producer import events as ev
from agentspool.worker.cli.options import (
    echo_json,
    json_option,
    producer_spool_dir,
    spool_option,
)
from agentspool.worker.exitcodes import EXIT_REJECTED


class EventRejectedError(click.ClickException):
    """An input event failed the checks; nothing of it was written (exit 4)."""

    exit_code = EXIT_REJECTED


# option name -> (event field, the event types it belongs to)
_FIELD_OPTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "agent": ("agent", frozenset({ev.SESSION_START})),
    "metadata": ("metadata", frozenset({ev.SESSION_START, ev.MESSAGE})),
    "role": ("role", frozenset({ev.MESSAGE})),
    "content": ("content", frozenset({ev.MESSAGE})),
    "call_id": ("call_id", frozenset({ev.TOOL_STARTED, ev.TOOL_FINISHED})),
    "name": ("name", frozenset({ev.TOOL_STARTED})),
    "tool_input": ("input", frozenset({ev.TOOL_STARTED})),
    "output": ("output", frozenset({ev.TOOL_FINISHED})),
    "error": ("error", frozenset({ev.TOOL_FINISHED, ev.SESSION_END})),
    "duration_ms": ("duration_ms", frozenset({ev.TOOL_FINISHED})),
    "status": ("status", frozenset({ev.SESSION_END})),
    "parent_id": ("parent_id", frozenset({ev.SESSION_START})),
    # A session's model at its start; a message's goes into its metadata, like its
    # usage and cost (ingest.fold_model_and_usage).
    "model": ("model", frozenset({ev.SESSION_START, ev.MESSAGE})),
    "usage": ("usage", frozenset({ev.MESSAGE})),
    "cost_usd": ("cost_usd", frozenset({ev.MESSAGE})),
}
_OPTION_FLAG = {"tool_input": "--input"}


def _flag(option: str) -> str:
    return _OPTION_FLAG.get(option, "--" + option.replace("_", "-"))


@click.command()
@spool_option
@click.option(
    "--session",
    "session_id",
    required=True,
    help="The session's id (1-200 characters of UTF-8 text).",
)
@click.option(
    "--type",
    "event_type",
    required=True,
    type=click.Choice(sorted(ev.EVENT_TYPES)),
    help="The event type; each takes the options named below.",
)
@click.option(
    "--seq",
    type=click.IntRange(min=0),
    help="The event's place in its session: 0 for session_start (the default for it), then"
    " 1, 2, 3... without gaps. Required for every other type: the caller keeps the counter.",
)
@click.option("--ts", help="When it happened: seconds since the epoch or ISO-8601 [default: now].")
@click.option("--agent", help="session_start: the agent's name (required).")
@click.option("--metadata", help="session_start, message: a JSON object.")
@click.option("--role", help="message: user, assistant, system, tool... (required).")
@click.option("--content", help="message: the text; - reads it from stdin.")
@click.option(
    "--parent-id", help="session_start: the session that started this one (a subagent's parent)."
)
@click.option(
    "--model", help="session_start: the model the session runs; message: the model that wrote it."
)
@click.option(
    "--usage",
    help="message: the provider's token usage as a JSON object, e.g. '{\"input_tokens\": 812,"
    ' "output_tokens": 64}\' (Anthropic, OpenAI and OpenCode names are understood;'
    " docs/EVENTS.md).",
)
@click.option("--cost-usd", type=float, help="message: what the model call cost, in US dollars.")
@click.option(
    "--call-id",
    help="tool_started, tool_finished: the call's id, unique in the session (required).",
)
@click.option("--name", help="tool_started: the tool's name (required).")
@click.option(
    "--input", "tool_input", help="tool_started: the tool's input, as JSON; - reads it from stdin."
)
@click.option("--output", help="tool_finished: the tool's output (text); - reads it from stdin.")
@click.option("--error", help="tool_finished: marks the call failed; session_end: why it failed.")
@click.option("--duration-ms", type=float, help="tool_finished: how long the call took.")
@click.option(
    "--status",
    type=click.Choice(sorted(ev.END_STATUSES)),
    help="session_end: how the session ended [default: completed].",
)
@click.option(
    "--owner-pid",
    type=int,
    envvar="AGENTSPOOL_OWNER_PID",
    help="The process the session belongs to: while it runs the session stays open"
    " [env: AGENTSPOOL_OWNER_PID; default: the calling process].",
)
@json_option
def emit(
    spool_dir: Path | None,
    session_id: str,
    event_type: str,
    seq: int | None,
    ts: str | None,
    owner_pid: int | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Write one event into the spool, fsynced, for an agent in any language.

    Prints nothing on success (--json prints the event as written). Exit 4: the
    event was rejected, nothing was written; 2: options missing or misplaced.
    Use each seq of a session once (a second event with a taken seq is
    dead-lettered by the worker); see docs/EVENTS.md."""
    from agentspool.worker.intake.ingest import EventRejected, OwnerNotRunning, emit_event

    event: dict[str, Any] = {
        "v": ev.FORMAT_VERSION,
        "type": event_type,
        "session_id": session_id,
        "seq": seq,
    }
    if seq is None:
        if event_type != ev.SESSION_START:
            raise click.UsageError(
                f"--seq is required for {event_type}: the session's events are numbered"
                " 0 (session_start), 1, 2, ... without gaps, and the caller keeps the count"
            )
        event["seq"] = 0
    if ts is not None:
        event["ts"] = _parse_ts(ts)
    from_stdin = [_flag(o) for o in STDIN_OPTIONS if options.get(o) == "-"]
    if len(from_stdin) > 1:
        raise click.UsageError(f"only one option can read stdin ('-'): {', '.join(from_stdin)}")
    for option, value in options.items():
        if value is None:
            continue
        field, types = _FIELD_OPTIONS[option]
        if event_type not in types:
            raise click.UsageError(
                f"{_flag(option)} does not apply to {event_type} events"
                f" (it applies to {', '.join(sorted(types))})"
            )
        event[field] = _option_value(option, value)
    for field in ev.REQUIRED_FIELDS[event_type]:
        if field not in event:
            if field == "status":
                event["status"] = "completed"
                continue
            raise click.UsageError(f"{event_type} needs {_flag(_option_for(field))}")
    owner = os.getppid() if owner_pid is None else owner_pid
    if event_type == ev.SESSION_START:
        event.update(host=socket.gethostname(), pid=owner)
    spool = producer_spool_dir(spool_dir)
    try:
        written = emit_event(spool, owner, event)
    except EventRejected as exc:
        raise EventRejectedError(f"event rejected, nothing written: {exc}") from None
    except OwnerNotRunning as exc:
        raise click.ClickException(
            f"{exc}; pass --owner-pid with the pid of the agent that owns the session"
        ) from None
    except (OSError, sqlite3.Error, TimeoutError) as exc:
        raise click.ClickException(
            f"cannot write to the spool {spool}: {exc}; check that it is writable"
        ) from None
    if as_json:
        echo_json(written)


def _option_for(field: str) -> str:
    return next(o for o, (f, _) in _FIELD_OPTIONS.items() if f == field)


# Options whose value ``-`` means "read it from stdin" (one of them per emit).
STDIN_OPTIONS = ("content", "output", "tool_input")
_OBJECT_EXAMPLES = {
    "metadata": '\'{"task": "fix-123"}\'',
    "usage": '\'{"input_tokens": 812, "output_tokens": 64}\'',
}


def _option_value(option: str, value: Any) -> Any:
    if option in STDIN_OPTIONS and value == "-":
        value = sys.stdin.read()
        if option != "tool_input":
            return value
    if option in ("metadata", "tool_input", "usage"):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            hint = (
                f"it must be a JSON object, e.g. {_OBJECT_EXAMPLES[option]}"
                if option in _OBJECT_EXAMPLES
                else "quote text as a JSON string, e.g. '\"ls -la\"'"
            )
            raise click.BadParameter(
                f"not JSON ({exc}); {hint}", param_hint=_flag(option)
            ) from None
        if option in ("metadata", "usage") and not isinstance(parsed, dict):
            raise click.BadParameter(
                f"must be a JSON object, e.g. {_OBJECT_EXAMPLES[option]}", param_hint=_flag(option)
            )
        return parsed
    return value


def _parse_ts(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            "give seconds since the epoch or an ISO-8601 time", param_hint="--ts"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@click.command()
@spool_option
@click.argument("source", type=click.File("rb"), default="-")
@json_option
def ingest(spool_dir: Path | None, source: IO[bytes], as_json: bool) -> None:
    """Write events from JSON Lines (SOURCE, default stdin) into the spool.

    One event per line, the queue's schema (docs/EVENTS.md); ts, producer_id and
    pseq are filled in when missing. Good lines are written (fsynced) as they
    arrive; each bad one is reported on stderr with its line number and kept: the
    worker makes it a dead letter and marks its session. Exit 0: all
    written; 4: some lines rejected (the others are written); 1: the spool could
    not be written."""
    from agentspool.worker.intake.ingest import OwnQueue, ingest_lines

    spool = producer_spool_dir(spool_dir)
    queue = OwnQueue(spool, "ingest")

    def report_bad_line(number: int, reason: str) -> None:
        click.echo(f"line {number}: {reason}", err=True)

    try:
        report = ingest_lines(source, queue, on_rejected=report_bad_line)
    except (OSError, sqlite3.Error) as exc:
        raise click.ClickException(
            f"cannot write to the spool {spool}: {exc}; {queue.written} event(s) written"
            " before the error are kept; fix the spool, then ingest the rest"
        ) from None
    finally:
        queue.close()
    if as_json:
        echo_json(
            {
                "producer_id": report.producer_id if queue.written else None,
                "written": report.written,
                "rejected": len(report.rejected),
                "errors": [{"line": n, "error": e} for n, e in report.rejected[:1000]],
            }
        )
    else:
        click.echo(
            f"wrote {_count(report.written, 'event')}"
            + (f" as producer {report.producer_id}" if queue.written else "")
            + (
                f"; {_count(len(report.rejected), 'line')} rejected, kept for"
                " `agentspool dead ls` (the worker marks their sessions)"
                if report.rejected
                else ""
            )
        )
    if report.rejected:
        sys.exit(EXIT_REJECTED)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
