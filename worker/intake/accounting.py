"""What a message cost: its model, token counts and price, as the worker stores them.

A producer puts them in a message's metadata (``model``, ``usage`` as the provider
gave it, ``cost_usd``; docs/EVENTS.md). The worker turns them into the version-2
columns of ``messages`` -- the usage through the one mapping every producer shares,
agentspool.producer.usage -- and adds them to the session's columns
(intake/replica.py). The raw usage stays in the metadata.

A message's cost is the source's own figure where it gives one (OpenCode does), else
its price from the model and token counts (intake/pricing.py), else NULL. A session's
cost is the sum of its messages' and NULL as soon as one of its messages that counted
tokens has no cost: a partial sum would look like a complete one (``agentspool stats``
counts such sessions as unpriced).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import Any

from agentspool.producer.usage import TOKEN_COLUMNS, tokens_of
from agentspool.worker.intake.pricing import price_usd
from agentspool.worker.intake.redaction import BUILTIN_REDACTOR

log = logging.getLogger("agentspool.worker")

# A message's token counts, model and cost, in its metadata (docs/EVENTS.md): the
# worker fills the message's columns from them (the usage through the one mapping,
# agentspool.producer.usage) and adds them to the session's; the raw usage is also
# summed key by key into the session's metadata when the session ends.
USAGE_KEY = "usage"
MODEL_KEY = "model"
MODELS_KEY = "models"
COST_KEY = "cost_usd"
# Per message and per session: the model, the four token counts, the cost.
ACCOUNTING_COLUMNS = ("model", *TOKEN_COLUMNS, "cost_usd")

# Usage shapes (their sorted keys) already reported as unreadable by this process.
_reported_usage_shapes: set[tuple[str, ...]] = set()


def accounting_of(
    metadata: Any, at: str | None = None, shown: Callable[[str], str] = str
) -> tuple[Any, ...] | None:
    """A message's (model, input, output, cache read, cache write, cost) from its
    metadata, ``None`` when it names none of them. A usage the mapping cannot read
    is logged once per shape and kept in the metadata as it is; nothing is guessed.
    Without a cost in the metadata, the cost is the price at ``at`` (the message's
    time) of its tokens, when the price table knows the model (``shown`` makes the
    model's name fit for the log: see ``price_usd``)."""
    if not isinstance(metadata, dict):
        return None
    model = metadata.get(MODEL_KEY)
    model = model if isinstance(model, str) and model else None
    usage = metadata.get(USAGE_KEY)
    tokens = None
    if usage is not None:
        tokens = tokens_of(usage)
        if tokens is None:
            _report_unreadable_usage(usage)
    cost = metadata.get(COST_KEY)
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < 1e12:
        cost = None  # also NaN
    if model is None and tokens is None and cost is None:
        return None
    counts = tokens.values() if tokens is not None else (None,) * len(TOKEN_COLUMNS)
    if cost is None and tokens is not None:
        cost = price_usd(model, *tokens.values(), at=at, shown=shown)
    return (model, *counts, None if cost is None else float(cost))


def unpriced(alias: str) -> str:
    """SQL: the row ``alias`` (a message, or a session) counted tokens and has no cost.
    Such a message makes its session's cost unknown."""
    return (
        f"{alias}.cost_usd IS NULL"
        f" AND ({alias}.input_tokens IS NOT NULL OR {alias}.output_tokens IS NOT NULL)"
    )


def needs_price(accounting: tuple[Any, ...]) -> bool:
    """Does this (model, input, output, cache read, cache write, cost) count tokens
    without a cost?"""
    _, input_tokens, output_tokens, _, _, cost = accounting
    return cost is None and (input_tokens is not None or output_tokens is not None)


def _report_unreadable_usage(usage: Any) -> None:
    if isinstance(usage, dict):
        shape = tuple(sorted(str(k) for k in usage))
    else:
        shape = (type(usage).__name__,)
    if shape in _reported_usage_shapes:
        return
    _reported_usage_shapes.add(shape)
    log.warning(
        "a message's usage has no token counts agentspool can read (keys: %s); it is kept"
        " in the message's metadata and its token columns stay empty (docs/EVENTS.md)",
        ", ".join(shape)[:300] or "none",
    )


def _shown_builtin(text: str) -> str:
    """A version-1 replica's model name as a log line may quote it."""
    return BUILTIN_REDACTOR.text(text, Counter())


def fill_accounting_columns(conn: sqlite3.Connection) -> None:
    """Fill the version-2 columns of a replica that a version-1 worker wrote: each
    message's from its metadata (the same mapping as for new messages), then the
    session's sums. Rows already filled are left alone."""
    filled = []
    for seq, metadata, created_at in conn.execute(
        "SELECT seq, metadata, created_at FROM messages"
        " WHERE metadata IS NOT NULL AND json_valid(metadata)"
        " AND model IS NULL AND input_tokens IS NULL AND output_tokens IS NULL"
    ).fetchall():
        accounting = accounting_of(json.loads(metadata), created_at, _shown_builtin)
        if accounting is not None:
            filled.append((*accounting, seq))
    assignments = ", ".join(f"{c} = ?" for c in ACCOUNTING_COLUMNS)
    # A replica is a local SQLite file: executemany costs no round trips here.
    conn.executemany(f"UPDATE messages SET {assignments} WHERE seq = ?", filled)
    sums = ", ".join(
        f"{c} = coalesce({c}, (SELECT sum(m.{c}) FROM messages m WHERE m.session_id = sessions.id))"
        for c in ACCOUNTING_COLUMNS[1:-1]
    )
    conn.execute(
        f"UPDATE sessions SET {sums}, model = coalesce(model, (SELECT m.model FROM messages m"
        " WHERE m.session_id = sessions.id AND m.model IS NOT NULL ORDER BY m.seq LIMIT 1)),"
        " cost_usd = coalesce(cost_usd, CASE WHEN EXISTS (SELECT 1 FROM messages m"
        f" WHERE m.session_id = sessions.id AND {unpriced('m')})"
        " THEN NULL ELSE (SELECT sum(m.cost_usd) FROM messages m"
        " WHERE m.session_id = sessions.id) END)"
    )


def sum_usage_into_metadata(conn: sqlite3.Connection, session_id: str) -> None:
    """The session's metadata gets ``usage`` (each token count summed over its
    messages) and ``models`` (the models named, sorted). Metadata that is not a
    JSON object (truncated text) is left as it is."""
    # json_valid first: a message's metadata may be truncated text, not JSON.
    usage = {
        key: total
        for key, total in conn.execute(
            "SELECT u.key, sum(u.value) FROM messages, json_each("
            " CASE WHEN json_valid(messages.metadata)"
            "  AND json_type(messages.metadata, '$.usage') = 'object'"
            "  THEN messages.metadata ELSE '{}' END, '$.usage') AS u"
            " WHERE messages.session_id = ? AND u.type IN ('integer', 'real')"
            " GROUP BY u.key ORDER BY u.key",
            (session_id,),
        )
    }
    models = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT json_extract(metadata, '$.model') AS m FROM messages"
            " WHERE session_id = ? AND json_valid(metadata)"
            " AND json_type(metadata, '$.model') = 'text' ORDER BY m",
            (session_id,),
        )
    ]
    if not usage and not models:
        return
    row = conn.execute("SELECT metadata FROM sessions WHERE id = ?", (session_id,)).fetchone()
    try:
        metadata = {} if row is None or row[0] is None else json.loads(row[0])
    except ValueError:
        return
    if not isinstance(metadata, dict):
        return
    if usage:
        metadata[USAGE_KEY] = usage
    if models:
        metadata[MODELS_KEY] = models
    conn.execute(
        "UPDATE sessions SET metadata = ? WHERE id = ?",
        (json.dumps(metadata, ensure_ascii=False), session_id),
    )
