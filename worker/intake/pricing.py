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

A model's lookup in the table is remembered per name (a miss too: a model the table
does not know costs one lookup per process), and the common prices are summed here
rather than by the library's slower general path (see ``_linear_price``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
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
    shown: Callable[[str], str] = str,
) -> float | None:
    """The price in US dollars of one model response with these token counts (the
    columns' meaning), at ``at`` (ISO text; now if absent or unreadable); ``None``
    when the model or a count it needs is unknown. A model without a price is logged
    once, as ``shown`` makes it (the worker's redaction: a name is agent text too)."""
    if model is None or input_tokens is None or output_tokens is None:
        return None
    cache_read = cache_read_tokens or 0
    cache_write = cache_write_tokens or 0
    if cache_read + cache_write > input_tokens:
        return None  # counts that contradict each other: no price rather than a wrong one
    ref = _model_ref(model)
    if ref is None:
        _report_unpriced(model, shown, "not in the price table")
        return None
    name, provider = ref
    moment = _moment(at)
    fast = _linear_price(name, provider, moment, input_tokens, output_tokens, cache_read,
                         cache_write)  # fmt: skip
    if fast is not None:
        return fast
    from genai_prices import Usage, calc_price

    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    try:
        price = calc_price(
            usage, name, provider_id=provider, genai_request_timestamp=moment
        ).total_price
    except (LookupError, ValueError) as exc:  # no price for this usage at this time
        _report_unpriced(model, shown, str(exc))
        return None
    return float(price)


# genai-prices' own calc_price costs ~0.3 ms a call (it validates the price table's
# units and decomposes the usage on every call), three times what applying the message
# costs. For the prices most models have -- per million input, output, cache-read and
# cache-write tokens, flat or in tiers chosen by the prompt's size -- the sum is done
# here, from the same table entry, by the library's own rule (a tier applies to every
# token when the input exceeds its start; cached tokens are taken out of the input
# only where they have a price of their own). tests/intake/test_pricing.py holds it
# equal to calc_price for every model of the table. A price with any other part (a
# fee per request, audio, reasoning...) goes to calc_price.
_TOKEN_PRICES = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
# Parts that price usage agentspool never reports (counted as 0 by calc_price too).
_UNUSED_PRICES = frozenset({"cache_write_1h_mtok", "web_searches_kcount",
                            "storage_searches_kcount"})  # fmt: skip


def _linear_price(
    name: str,
    provider: str | None,
    moment: datetime | None,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
) -> float | None:
    from genai_prices.data_snapshot import get_snapshot
    from genai_prices.types import TieredPrices

    _, info = get_snapshot().find_provider_model(name, None, provider, None)
    prices = info.get_prices(moment or datetime.now(tz=UTC))
    parts = {k: v for k, v in vars(prices).items() if v is not None and not k.startswith("_")}
    if not parts.keys() <= {*_TOKEN_PRICES, *_UNUSED_PRICES}:
        return None
    read_price, write_price = parts.get("cache_read_mtok"), parts.get("cache_write_mtok")
    counts = {
        "input_mtok": input_tokens
        - (cache_read if read_price is not None else 0)
        - (cache_write if write_price is not None else 0),
        "output_mtok": output_tokens,
        "cache_read_mtok": cache_read,
        "cache_write_mtok": cache_write,
    }
    total = Decimal(0)
    for key in _TOKEN_PRICES:
        price = parts.get(key)
        if price is None:
            continue
        if isinstance(price, TieredPrices):
            rate = price.base
            for tier in reversed(price.tiers):
                if input_tokens > tier.start:
                    rate = tier.price
                    break
        else:
            rate = price
        total += rate * counts[key]
    return float(total / 1_000_000)


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
    return None


_reported: set[str] = set()


def _report_unpriced(model: str, shown: Callable[[str], str], why: str) -> None:
    if model in _reported:
        return
    _reported.add(model)
    log.info(
        "no price for model %r (%s): its messages' cost_usd stays empty"
        " unless the source gives one (docs/EVENTS.md)",
        shown(model)[:200],
        shown(why)[:200],
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
