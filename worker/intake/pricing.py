"""What a model response cost, when its source did not say: genai-prices' price table.

``genai-prices`` (Pydantic's, pinned in pyproject.toml) bundles the providers' published
prices by model, with their history, tiers and cache prices; the worker reads only that
bundled table (never its auto-update, which would go to the network). It finds the
provider from the model name itself ("claude-sonnet-4-5" -> Anthropic, "gpt-4o-mini" ->
OpenAI); a name it does not know, also as ``provider/model``, has no price: ``None``,
never 0.

Token meanings agree: genai-prices' ``input_tokens`` counts every input token, cached
ones included, and ``cache_read_tokens`` / ``cache_write_tokens`` break out the cached
part, exactly the columns' meaning (agentspool.producer.usage). So a message's four
counts go across unchanged and each part is priced at its own rate (a cache read at the
provider's cache-read price, ...). An unknown cache count is taken as 0 (the provider
did not report caching); unknown input or output counts leave the message unpriced.
The price is the one in force at the message's time (prices change; some by hour).

Looking a model up in the table costs ~0.1-0.6 ms and a miss ~0.1-0.2 ms: misses are
remembered per name, so a model the table does not know costs one lookup per process.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

log = logging.getLogger("agentspool.worker")

PRICES_DISTRIBUTION = "genai-prices"


def price_usd(
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read_tokens: int | None,
    cache_write_tokens: int | None,
    at: str | None = None,
) -> float | None:
    """The price in US dollars of one model response with these token counts (the
    columns' meaning), at ``at`` (ISO text; now if absent or unreadable); ``None``
    when the model or a count it needs is unknown."""
    if model is None or input_tokens is None or output_tokens is None:
        return None
    cache_read = cache_read_tokens or 0
    cache_write = cache_write_tokens or 0
    if cache_read + cache_write > input_tokens:
        return None  # counts that contradict each other: no price rather than a wrong one
    ref = _model_ref(model)
    if ref is None:
        return None
    from genai_prices import Usage, calc_price

    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    name, provider = ref
    try:
        price = calc_price(
            usage, name, provider_id=provider, genai_request_timestamp=_moment(at)
        ).total_price
    except (LookupError, ValueError) as exc:  # no price for this usage at this time
        _report_unpriced(model, str(exc))
        return None
    return float(price)


@lru_cache(maxsize=4096)
def _model_ref(model: str) -> tuple[str, str | None] | None:
    """(model name, provider id or None) as the table knows the model; None: unknown.
    ``provider/model`` names (OpenCode's, OpenRouter's) are tried whole first."""
    from genai_prices.data_snapshot import get_snapshot

    snapshot = get_snapshot()
    candidates: list[tuple[str, str | None]] = [(model, None)]
    if "/" in model:
        prefix, _, rest = model.partition("/")
        candidates.append((rest, prefix))
    for name, provider in candidates:
        try:
            snapshot.find_provider_model(name, None, provider, None)
        except LookupError:
            continue
        return name, provider
    _report_unpriced(model, "not in the price table")
    return None


_reported: set[str] = set()


def _report_unpriced(model: str, why: str) -> None:
    if model in _reported:
        return
    _reported.add(model)
    log.info(
        "no price for model %r (%s): its messages' cost_usd stays empty"
        " unless the source gives one (docs/EVENTS.md)",
        model[:200],
        why[:200],
    )


def _moment(at: str | None) -> datetime | None:
    if not at:
        return None
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def prices_version() -> dict[str, Any]:
    """Which price table is in use (for docs and ``agentspool stats``)."""
    from importlib.metadata import version

    return {"package": PRICES_DISTRIBUTION, "version": version(PRICES_DISTRIBUTION)}
