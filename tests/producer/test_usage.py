"""The one usage mapping (agentspool.producer.usage): every provider's usage -> four
counts with one meaning. Real SDK objects where the SDK is installed."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.completion_usage import CompletionUsage, PromptTokensDetails
from openai.types.responses.response_usage import (
    InputTokensDetails,
    OutputTokensDetails,
    ResponseUsage,
)

from agentspool.producer.usage import Tokens, tokens_of


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Anthropic: input_tokens leaves the cache out; the column counts all input.
        (
            {"input_tokens": 12, "output_tokens": 50, "cache_creation_input_tokens": 300,
             "cache_read_input_tokens": 4000, "service_tier": "standard",
             "cache_creation": {"ephemeral_5m_input_tokens": 300}},
            Tokens(4312, 50, 4000, 300),
        ),
        ({"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 0},
         Tokens(3, 1, 0, None)),
        # OpenAI chat completions: prompt_tokens already counts the cached part.
        (
            {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
             "prompt_tokens_details": {"cached_tokens": 80, "audio_tokens": 0}},
            Tokens(1200, 40, 80, None),
        ),
        ({"prompt_tokens": 9, "completion_tokens": 2}, Tokens(9, 2, None, None)),
        # OpenAI Responses / the Agents SDK.
        (
            {"input_tokens": 1200, "output_tokens": 40, "total_tokens": 1240,
             "input_tokens_details": {"cached_tokens": 80},
             "output_tokens_details": {"reasoning_tokens": 7}},
            Tokens(1200, 40, 80, None),
        ),
        # LangChain's usage_metadata.
        (
            {"input_tokens": 100, "output_tokens": 5, "total_tokens": 105,
             "input_token_details": {"cache_read": 60, "cache_creation": 10}},
            Tokens(100, 5, 60, 10),
        ),
        # OpenCode: input and output both leave the rest out.
        ({"input": 1120, "output": 30, "reasoning": 10, "cache": {"read": 80, "write": 4}},
         Tokens(1204, 40, 80, 4)),
        # OpenTelemetry GenAI span attributes, current and older names.
        (
            {"gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 12,
             "gen_ai.usage.cache_read.input_tokens": 30,
             "gen_ai.usage.cache_creation.input_tokens": 2, "gen_ai.request.model": "m"},
            Tokens(40, 12, 30, 2),
        ),
        ({"gen_ai.usage.prompt_tokens": 8, "gen_ai.usage.completion_tokens": 3},
         Tokens(8, 3, None, None)),
        # OpenInference.
        (
            {"llm.token_count.prompt": 50, "llm.token_count.completion": 9,
             "llm.token_count.prompt_details.cache_read": 20},
            Tokens(50, 9, 20, None),
        ),
        # agentspool's own names come back as they are.
        ({"input_tokens": 5, "output_tokens": 1, "cache_read_tokens": 2, "cache_write_tokens": 0},
         Tokens(5, 1, 2, 0)),
        # Counts as integral floats (JavaScript numbers); a bad count reads as unknown.
        ({"input_tokens": 5.0, "output_tokens": -1}, Tokens(5, None, None, None)),
    ],
)  # fmt: skip
def test_each_provider_maps_to_one_meaning(usage: dict[str, Any], expected: Tokens) -> None:
    assert tokens_of(usage) == expected


@pytest.mark.parametrize(
    "usage",
    [None, "12 tokens", 12, [1, 2], {}, {"tokens_in": 5}, {"input_tokens": True},
     {"input_tokens": "12"}, {"input_tokens": float("nan")}, {"input_tokens": 1.5}],
)  # fmt: skip
def test_what_it_cannot_read_is_none_not_a_guess(usage: Any) -> None:
    assert tokens_of(usage) is None


def test_the_openai_sdks_objects() -> None:
    chat = CompletionUsage(
        prompt_tokens=1200,
        completion_tokens=40,
        total_tokens=1240,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=80),
    )
    assert tokens_of(chat) == Tokens(1200, 40, 80, None)  # no cache writes reported
    responses = ResponseUsage(
        input_tokens=300,
        output_tokens=20,
        total_tokens=320,
        input_tokens_details=InputTokensDetails(cached_tokens=100, cache_write_tokens=50),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=5),
    )
    assert tokens_of(responses) == Tokens(300, 20, 100, 50)


def test_tokens_as_dict_leaves_unknown_counts_out() -> None:
    assert Tokens(5, None, 2, None).as_dict() == {"input_tokens": 5, "cache_read_tokens": 2}
    assert tokens_of(Tokens(5, 1, 2, 3).as_dict()) == Tokens(5, 1, 2, 3)
