"""``agentspool stats``: tokens, cost and tool health of many sessions, in one table.

A thin layer over ``reports.stats.compute_stats``: the spool's replicas by default,
the database with ``--remote``. ``--json`` prints the function's dict as it is, plus
where it was read (the contract in docs/CLI.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agentspool.worker.cli.options import (
    WHEN_HELP,
    database_errors_explained,
    echo_json,
    json_option,
    remote_database,
    remote_options,
    settings_from,
    since_option_value,
    spool_option,
)
from agentspool.worker.cli.terminal import visible
from agentspool.worker.reports.transcript import plural

BY_CHOICES = ("agent", "model", "day", "tool")


@click.command()
@spool_option
@click.option(
    "--since", metavar="WHEN",
    help=f"Only sessions that started since WHEN: {WHEN_HELP}.",
)  # fmt: skip
@click.option("--agent", help="Only this agent's sessions.")
@click.option(
    "--by", type=click.Choice(BY_CHOICES),
    help="One row per agent, model (the session's first), day (UTC, of the start) or tool (by name).",
)  # fmt: skip
@remote_options
@json_option
@database_errors_explained
def stats(
    spool_dir: Path | None,
    since: str | None,
    agent: str | None,
    by: str | None,
    remote: bool,
    db_url: str | None,
    remote_timeout: float,
    as_json: bool,
) -> None:
    """Add up sessions: counts by status, tokens, cost (and how many sessions have no
    price), tool calls, tool error rate and tool duration p50/p95, in total or --by
    agent, model, day or tool. Reads the spool's replicas, or with --remote the
    database (where synced sessions stay after the spool prunes them)."""
    from agentspool.worker.intake.pricing import prices_version
    from agentspool.worker.reports.stats import compute_stats

    settings = settings_from(spool_dir=spool_dir, db_url=db_url)
    since_iso = since_option_value(since)
    where: dict[str, Any]
    if remote:
        with remote_database(settings, remote_timeout) as db:
            figures = compute_stats(db, since=since_iso, agent=agent, by=by)
            where = {"database": db.url}
    else:
        figures = compute_stats(settings.spool_dir, since=since_iso, agent=agent, by=by)
        where = {"spool": str(settings.spool_dir)}
    if as_json:
        echo_json(where | figures | {"prices": prices_version()})
        return
    shown = next(iter(where.values()))
    totals = figures["totals"]
    if not totals["sessions"]:
        filtered = since or agent
        click.echo(f"no sessions match in {shown}" if filtered else f"no sessions in {shown}")
        return
    _echo_totals(totals)
    if by:
        click.echo("")
        _echo_groups(by, figures["groups"])


def _echo_totals(t: dict[str, Any]) -> None:
    statuses = ", ".join(f"{s} {_count(n)}" for s, n in t["sessions_by_status"].items() if n)
    click.echo(f"sessions    {_count(t['sessions'])}  ({statuses})")
    click.echo(
        f"tokens      input {_count(t['input_tokens'])}"
        f" (cache read {_count(t['cache_read_tokens'])},"
        f" cache write {_count(t['cache_write_tokens'])})"
        f"  output {_count(t['output_tokens'])}"
    )
    unpriced = t["sessions_unpriced"]
    click.echo(
        f"cost        {_usd(t['cost_usd'])}  ({_count(t['sessions_priced'])} sessions priced"
        + (f"; {plural(unpriced, 'session')} with tokens and no price" if unpriced else "")
        + ")"
    )
    click.echo(
        f"tool calls  {_count(t['tool_calls'])}  errors {_count(t['tool_errors'])}"
        f" ({_rate(t['tool_error_rate'])})  duration p50 {_ms(t['tool_duration_p50_ms'])}"
        f"  p95 {_ms(t['tool_duration_p95_ms'])}"
    )


def _echo_groups(by: str, groups: list[dict[str, Any]]) -> None:
    tool_columns = [("CALLS", "tool_calls", _count), ("ERRORS", "tool_errors", _count),
                    ("ERROR RATE", "tool_error_rate", _rate),
                    ("P50", "tool_duration_p50_ms", _ms), ("P95", "tool_duration_p95_ms", _ms)]  # fmt: skip
    columns = tool_columns
    if by != "tool":
        columns = [("SESSIONS", "sessions", _count), ("INPUT", "input_tokens", _count),
                   ("OUTPUT", "output_tokens", _count), ("CACHE READ", "cache_read_tokens", _count),
                   ("CACHE WRITE", "cache_write_tokens", _count), ("COST", "cost_usd", _usd),
                   ("UNPRICED", "sessions_unpriced", _count), ("TOOL CALLS", "tool_calls", _count),
                   *tool_columns[1:]]  # fmt: skip
    names = [visible(g[by]) if g[by] is not None else "(none)" for g in groups]
    cells = [[fmt(g[key]) for _, key, fmt in columns] for g in groups]
    key_width = max(len(by), *(len(n) for n in names))
    widths = [max(len(title), *(len(row[i]) for row in cells)) for i, (title, _, _) in
              enumerate(columns)]  # fmt: skip
    header = "  ".join(t.rjust(w) for (t, _, _), w in zip(columns, widths, strict=True))
    click.echo(f"{by.upper():<{key_width}}  {header}")
    for name, row in zip(names, cells, strict=True):
        line = "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
        click.echo(f"{name:<{key_width}}  {line}")


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"
