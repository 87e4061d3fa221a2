"""``agentspool dead``: list, read, requeue and purge dead letters."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from agentspool.worker.cli.options import (
    database_errors_explained,
    echo_json,
    json_option,
    settings_from,
    spool_option,
    view_redactor,
)
from agentspool.worker.cli.terminal import visible, visible_text

if TYPE_CHECKING:
    from agentspool.worker.config import Settings
    from agentspool.worker.intake.deadletters import DeadLetter


@click.group()
def dead() -> None:
    """Dead letters: queue items the worker could not apply, kept with the reason."""


@dead.command("ls")
@spool_option
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True,
    help="Show at most this many (the oldest first).",
)  # fmt: skip
@json_option
@database_errors_explained
def dead_ls(spool_dir: Path | None, limit: int, as_json: bool) -> None:
    """List dead letters: id, where the item came from, its session and the reason."""
    from agentspool.worker.intake.deadletters import list_dead_letters

    settings = settings_from(spool_dir=spool_dir)
    letters, total = list_dead_letters(settings.spool_dir, limit)
    letters = [_as_shown(d, settings) for d in letters]
    if as_json:
        echo_json(
            {
                "spool": str(settings.spool_dir),
                "total": total,
                "dead_letters": [d.to_json() for d in letters],
            }
        )
        return
    if not letters:
        click.echo("no dead letters")
        return
    for d in letters:
        j = d.to_json()
        what = (
            f"{visible(j['type'])} of session {visible(j['session_id'])} seq {j['seq']}"
            if j["session_id"]
            else f"{j['bytes']} bytes, not an event"
        )
        click.echo(f"{d.id:>5}  {j['created_at']}  {visible(d.producer_id)} #{d.item_id}  {what}")
        click.echo(click.style(f"       {visible(d.reason)}", fg="red"))
    if total > len(letters):
        click.echo(f"... {total - len(letters)} more (--limit)")
    click.echo(
        "read one: agentspool dead show ID; after fixing the cause: agentspool dead requeue ID"
    )


@dead.command("show")
@spool_option
@click.argument("dead_id", type=int)
@click.option(
    "--raw",
    is_flag=True,
    help="Write the item's stored bytes exactly (secrets redacted), nothing else.",
)
@json_option
@database_errors_explained
def dead_show(spool_dir: Path | None, dead_id: int, raw: bool, as_json: bool) -> None:
    """Show one dead letter: the reason and the item (decoded when it is JSON)."""
    settings = settings_from(spool_dir=spool_dir)
    letter = _as_shown(_one(settings.spool_dir, dead_id), settings)
    if raw:
        sys.stdout.buffer.write(letter.data)
        sys.stdout.buffer.flush()
        return
    if as_json:
        echo_json(letter.to_json(with_data=True))
        return
    j = letter.to_json()
    click.echo(f"dead letter {letter.id}, recorded {j['created_at']}")
    click.echo(f"from        {visible(letter.producer_id)} item {letter.item_id}")
    click.echo(click.style(f"reason      {visible(letter.reason)}", fg="red"))
    event = letter.event()
    if event is not None:
        click.echo(visible_text(json.dumps(event, indent=2, ensure_ascii=False)))
    else:
        click.echo(f"item ({len(letter.data)} bytes, not a JSON object):")
        click.echo(visible_text(letter.data.decode("utf-8", "replace")))


@dead.command("requeue")
@spool_option
@click.argument("dead_id", type=int, required=False)
@click.option("--all", "requeue_all", is_flag=True, help="Requeue every dead letter.")
@click.option(
    "--event", "event_file", type=click.File("rb"),
    help="A corrected event (JSON; - for stdin) to queue instead of the stored item.",
)  # fmt: skip
@json_option
@database_errors_explained
def dead_requeue(
    spool_dir: Path | None,
    dead_id: int | None,
    requeue_all: bool,
    event_file: IO[bytes] | None,
    as_json: bool,
) -> None:
    """Queue dead letters again (after fixing the cause), then delete them.

    The stored item is checked again and goes back byte for byte; one still invalid
    is kept and reported (exit 1). To fix an item:
    `agentspool dead show ID --raw > e.json`, edit it, then
    `agentspool dead requeue ID --event e.json`."""
    from agentspool.worker.intake.deadletters import get_dead_letters, requeue

    if (dead_id is None) == (not requeue_all):
        raise click.UsageError("give either a dead letter ID or --all")
    if event_file is not None and requeue_all:
        raise click.UsageError("--event replaces one dead letter: give its ID, not --all")
    settings = settings_from(spool_dir=spool_dir)
    letters = (
        [_one(settings.spool_dir, dead_id)]
        if dead_id is not None
        else get_dead_letters(settings.spool_dir, None)
    )
    replacement = None if event_file is None else event_file.read()
    report = requeue(settings.spool_dir, letters, replacement)
    if as_json:
        echo_json(
            {
                "producer_id": report.producer_id,
                "requeued": report.requeued,
                "refused": [{"id": i, "error": e} for i, e in report.refused],
            }
        )
    else:
        if report.requeued:
            click.echo(
                f"requeued {len(report.requeued)} dead letter(s) as producer"
                f" {report.producer_id}; the worker applies them next"
            )
        elif not report.refused:
            click.echo("no dead letters")
        for i, error in report.refused:
            click.echo(f"dead letter {i} is still invalid: {error}", err=True)
    if report.refused:
        first = report.refused[0][0]
        raise click.ClickException(
            f"{len(report.refused)} dead letter(s) kept. Fix one: agentspool dead show {first}"
            f" --raw > e.json; edit e.json; agentspool dead requeue {first} --event e.json"
            f" (or drop it: agentspool dead purge {first})"
        )


@dead.command("purge")
@spool_option
@click.argument("dead_id", type=int, required=False)
@click.option("--all", "purge_all", is_flag=True, help="Delete every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@database_errors_explained
def dead_purge(
    spool_dir: Path | None, dead_id: int | None, purge_all: bool, yes: bool, as_json: bool
) -> None:
    """Delete dead letters for good (asks first unless --yes)."""
    from agentspool.worker.intake.deadletters import delete_dead_letters, get_dead_letters

    if (dead_id is None) == (not purge_all):
        raise click.UsageError("give either a dead letter ID or --all")
    settings = settings_from(spool_dir=spool_dir)
    letters = (
        [_one(settings.spool_dir, dead_id)]
        if dead_id is not None
        else get_dead_letters(settings.spool_dir, None)
    )
    if letters and not yes:
        click.confirm(
            f"delete {len(letters)} dead letter(s) for good?", default=False, abort=True, err=True
        )
    deleted = delete_dead_letters(settings.spool_dir, [d.id for d in letters])
    if as_json:
        echo_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted} dead letter(s)")


def _as_shown(letter: DeadLetter, settings: Settings) -> DeadLetter:
    """The dead letter as the views print it: its bytes and reason redacted as the
    worker redacts what it applies (docs/RELIABILITY.md), so that a secret in an item
    that never reached a replica is not printed either. The stored item is unchanged:
    `dead requeue` queues it again as it was."""
    redactor = view_redactor(settings)
    if redactor is None:
        return letter
    import dataclasses
    from collections import Counter

    return dataclasses.replace(
        letter, data=redactor.raw(letter.data), reason=redactor.text(letter.reason, Counter())
    )


def _one(spool_dir: Path, dead_id: int) -> DeadLetter:
    from agentspool.worker.intake.deadletters import get_dead_letters

    try:
        return get_dead_letters(spool_dir, [dead_id])[0]
    except LookupError:
        raise click.ClickException(
            f"no dead letter {dead_id}; list them with: agentspool dead ls"
        ) from None
