"""Prices from genai-prices' table, checked against the providers' published prices
(US dollars per million tokens) for models whose prices are well known."""

from __future__ import annotations

import pytest

from agentspool.worker.intake.accounting import accounting_of
from agentspool.worker.intake.pricing import price_usd

AT = "2026-11-01T10:00:00.000Z"
MTOK = 1_000_000
# Anthropic, Claude Sonnet 4.5 (prompts up to 200k tokens): input $3, output $15,
# cache reads $0.30, 5-minute cache writes $3.75; over 200k: $6, $22.50, $0.60, $7.50.
SONNET = {"input": 3.0, "output": 15.0, "read": 0.30, "write": 3.75}
SONNET_LONG = {"input": 6.0, "output": 22.5, "read": 0.60, "write": 7.50}
# OpenAI, gpt-4o-mini: input $0.15, cached input $0.075, output $0.60.
MINI = {"input": 0.15, "output": 0.60, "read": 0.075, "write": 0.0}


def expected(p: dict[str, float], inputs: int, output: int, read: int, write: int) -> float:
    """Our input_tokens include the cached ones: only the rest is priced as input."""
    uncached = inputs - read - write
    return (
        uncached * p["input"] + read * p["read"] + write * p["write"] + output * p["output"]
    ) / MTOK


def test_anthropic_cache_reads_and_writes_are_priced_at_their_own_rates() -> None:
    price = price_usd("claude-sonnet-4-5", 10_000, 2_000, 6_000, 1_000, AT)
    assert price == pytest.approx(expected(SONNET, 10_000, 2_000, 6_000, 1_000), rel=1e-12)
    # A dated model id finds the same model.
    assert price_usd("claude-sonnet-4-5-20250929", 10_000, 2_000, 6_000, 1_000, AT) == price


def test_a_prompt_past_the_long_context_tier_pays_the_tier_price_for_all_of_it() -> None:
    price = price_usd("claude-sonnet-4-5", 300_000, 1_000, 0, 0, AT)
    assert price == pytest.approx(expected(SONNET_LONG, 300_000, 1_000, 0, 0), rel=1e-12)


def test_openai_cached_input_and_an_unknown_cache_write_count() -> None:
    price = price_usd("gpt-4o-mini", 10_000, 2_000, 4_000, None, AT)
    assert price == pytest.approx(expected(MINI, 10_000, 2_000, 4_000, 0), rel=1e-12)
    assert price_usd("openai/gpt-4o-mini", 10_000, 2_000, 4_000, None, AT) == price


def test_what_cannot_be_priced_is_none_never_zero() -> None:
    assert price_usd("a-model-nobody-prices", 100, 10, None, None, AT) is None
    assert price_usd("fake/m1", 100, 10, None, None, AT) is None
    assert price_usd(None, 100, 10, None, None, AT) is None
    assert price_usd("gpt-4o-mini", None, 10, None, None, AT) is None  # input unknown
    assert price_usd("gpt-4o-mini", 100, None, None, None, AT) is None  # output unknown
    assert price_usd("gpt-4o-mini", 100, 10, 90, 20, AT) is None  # cached > input


def test_a_message_is_priced_unless_its_source_gave_a_cost() -> None:
    usage = {
        "input_tokens": 3_000,
        "cache_read_input_tokens": 6_000,
        "cache_creation_input_tokens": 1_000,
        "output_tokens": 2_000,
    }
    computed = accounting_of({"model": "claude-sonnet-4-5", "usage": usage}, AT)
    assert computed is not None
    assert computed[:5] == ("claude-sonnet-4-5", 10_000, 2_000, 6_000, 1_000)
    assert computed[5] == pytest.approx(expected(SONNET, 10_000, 2_000, 6_000, 1_000), rel=1e-12)
    given = accounting_of({"model": "claude-sonnet-4-5", "usage": usage, "cost_usd": 0.5}, AT)
    assert given is not None and given[5] == 0.5  # the source's own figure wins
    unknown = accounting_of({"model": "m1", "usage": usage}, AT)
    assert unknown is not None and unknown[5] is None


def test_the_quick_sum_equals_genai_prices_own_calc_price_for_every_model() -> None:
    """pricing.py sums the common prices itself (the library's general path costs
    ~0.3 ms a message); for every model of the table, at several sizes (tiers
    included), the sum must be the library's to the last digit."""
    import random
    import warnings
    from datetime import UTC, datetime

    from genai_prices import Usage, calc_price
    from genai_prices.data_snapshot import get_snapshot

    from agentspool.worker.intake.pricing import _linear_price

    rng = random.Random(25)
    moment = datetime(2026, 11, 1, tzinfo=UTC)
    checked = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            for base in (0, 900, 150_000, 250_000, 1_200_000):
                inputs = base + rng.randint(0, 999)
                read = rng.randint(0, inputs // 2)
                write = rng.randint(0, (inputs - read) // 2)
                output = rng.randint(0, 50_000)
                try:
                    quick = _linear_price(
                        model.id, provider.id, moment, inputs, output, read, write
                    )
                except LookupError:
                    break  # an id the table's own matching does not find: never priced
                if quick is None:
                    continue  # a price with other parts: calc_price prices it
                usage = Usage(input_tokens=inputs, output_tokens=output,
                              cache_read_tokens=read, cache_write_tokens=write)  # fmt: skip
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    library = calc_price(usage, model.id, provider_id=provider.id,
                                         genai_request_timestamp=moment)  # fmt: skip
                assert quick == float(library.total_price), (provider.id, model.id, usage)
                checked += 1
    assert checked > 5_000
