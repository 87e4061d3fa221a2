"""Token usage, mapped once: every provider's usage object -> four token counts.

Providers count tokens differently, and a sum of their raw key names is wrong:
Anthropic's ``input_tokens`` leaves the cached part out, OpenAI's ``prompt_tokens``
and ``input_tokens`` keep it in, OpenCode's ``tokens.input`` leaves it out. agentspool
stores one meaning everywhere (the version-2 columns, docs/EVENTS.md), the one
OpenTelemetry's GenAI conventions define:

    input_tokens        every input token, cached ones included
    output_tokens       every output token, reasoning included
    cache_read_tokens   the part of input_tokens read from the provider's cache
    cache_write_tokens  the part of input_tokens written to it

A count the usage does not give is ``None`` (unknown), never 0. The worker applies
``tokens_of`` to every message's usage, whichever producer wrote it; integrations
that need counts on the agent's side use it too. It reads dicts and the SDKs'
objects alike (attributes), and guesses nothing: a usage with none of the names
below gives ``None``, and the caller reports it (once) and keeps it as it is.

Standard library only (the producer's rule); imports nothing at run time.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds to import (see events.py)
if TYPE_CHECKING:
    from typing import Any

TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

# Top-level keys ``tokens_of`` reads as counts (an input check can hold them to it;
# other keys of a provider's usage are text or objects, kept as they are).
COUNT_KEYS = frozenset(
    {
        *TOKEN_COLUMNS,
        "total_tokens",
        "prompt_tokens",
        "completion_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "input",
        "output",
        "reasoning",
    }
)


class Tokens:
    """Four token counts (see the module's docstring), each an int >= 0 or None."""

    __slots__ = TOKEN_COLUMNS

    def __init__(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_tokens = cache_read_tokens
        self.cache_write_tokens = cache_write_tokens

    def values(self) -> tuple[int | None, int | None, int | None, int | None]:
        """The counts in ``TOKEN_COLUMNS`` order (the columns' parameters)."""
        return (
            self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens
        )  # fmt: skip

    def as_dict(self) -> dict[str, int]:
        """The known counts by column name (unknown ones left out)."""
        return {k: v for k, v in zip(TOKEN_COLUMNS, self.values(), strict=True) if v is not None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokens) and self.values() == other.values()

    def __hash__(self) -> int:
        return hash(self.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in zip(TOKEN_COLUMNS, self.values(), strict=True))
        return f"Tokens({counts})"


def tokens_of(usage: Any) -> Tokens | None:
    """``usage`` as a provider, framework or OTel span gave it -> ``Tokens``; ``None``
    when it holds none of the known counts (the caller keeps it and reports it).

    Recognized, in this order (the first whose keys are present decides):
    - agentspool's own names: ``cache_read_tokens`` / ``cache_write_tokens`` (with
      ``input_tokens`` / ``output_tokens`` meaning as above);
    - OpenTelemetry GenAI span attributes (``gen_ai.usage.input_tokens``,
      ``gen_ai.usage.output_tokens``, the older ``prompt_tokens`` / ``completion_tokens``,
      ``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``)
      and OpenInference's (``llm.token_count.prompt`` / ``completion``,
      ``llm.token_count.prompt_details.cache_read`` / ``cache_write``);
    - Anthropic (``cache_creation_input_tokens`` / ``cache_read_input_tokens`` beside an
      ``input_tokens`` that excludes them);
    - OpenCode (``input``, ``output``, ``reasoning``, ``cache: {read, write}``; input and
      output both exclude the rest);
    - OpenAI chat completions (``prompt_tokens`` with ``prompt_tokens_details.cached_tokens``
      and ``.cache_write_tokens``, ``completion_tokens``);
    - OpenAI Responses and the Agents SDK (``input_tokens`` with
      ``input_tokens_details.cached_tokens`` and ``.cache_write_tokens``, ``output_tokens``),
      LangChain's
      ``usage_metadata`` (``input_token_details: {cache_read, cache_creation}``), and a
      plain ``{"input_tokens": ..., "output_tokens": ...}``.
    """
    if usage is None or isinstance(usage, str | bytes | int | float | list | tuple):
        return None
    get = _getter(usage)
    if _any(get, "cache_read_tokens", "cache_write_tokens"):
        return _complete(
            get("input_tokens"), get("output_tokens"),
            get("cache_read_tokens"), get("cache_write_tokens"),
        )  # fmt: skip
    otel = _otel(get)
    if otel is not None:
        return otel
    if _any(get, "cache_creation_input_tokens", "cache_read_input_tokens"):  # Anthropic
        read, write = get("cache_read_input_tokens"), get("cache_creation_input_tokens")
        uncached = get("input_tokens")
        total = None if uncached is None else uncached + (read or 0) + (write or 0)
        return _complete(total, get("output_tokens"), read, write)
    if _any(get, "input", "output") or _nested(usage, "cache") is not None:  # OpenCode
        cache = _getter(_nested(usage, "cache"))
        read, write = cache("read"), cache("write")
        uncached, output, reasoning = get("input"), get("output"), get("reasoning")
        total = None if uncached is None else uncached + (read or 0) + (write or 0)
        if output is not None and reasoning is not None:
            output += reasoning
        return _complete(total, output, read, write)
    if _any(get, "prompt_tokens", "completion_tokens"):  # OpenAI chat completions
        details = _getter(_nested(usage, "prompt_tokens_details"))
        return _complete(
            get("prompt_tokens"),
            get("completion_tokens"),
            details("cached_tokens"),
            details("cache_write_tokens"),
        )
    if _any(get, "input_tokens", "output_tokens"):  # OpenAI Responses, LangChain, plain
        details = _getter(_nested(usage, "input_tokens_details"))
        langchain = _getter(_nested(usage, "input_token_details"))
        read, write = details("cached_tokens"), details("cache_write_tokens")
        if read is None:
            read = langchain("cache_read")
        if write is None:
            write = langchain("cache_creation")
        return _complete(get("input_tokens"), get("output_tokens"), read, write)
    return None


def _otel(get: Any) -> Tokens | None:
    """GenAI (``gen_ai.usage.*``) or OpenInference (``llm.token_count.*``) attributes."""
    if _any(get, "llm.token_count.prompt", "llm.token_count.completion"):
        return _complete(
            get("llm.token_count.prompt"),
            get("llm.token_count.completion"),
            get("llm.token_count.prompt_details.cache_read"),
            get("llm.token_count.prompt_details.cache_write"),
        )
    inputs = _first(get, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    outputs = _first(get, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
    if inputs is None and outputs is None:
        return None
    return _complete(
        inputs,
        outputs,
        get("gen_ai.usage.cache_read.input_tokens"),
        get("gen_ai.usage.cache_creation.input_tokens"),
    )


def _complete(
    inputs: int | None, outputs: int | None, read: int | None, write: int | None
) -> Tokens | None:
    if inputs is None and outputs is None and read is None and write is None:
        return None
    return Tokens(inputs, outputs, read, write)


def _getter(source: Any) -> Any:
    """A reader of token counts from a dict or an object: a count is an int (or an
    integral float) of 0 or more; anything else reads as unknown."""
    if source is None:
        return lambda name: None
    lookup: Any = source.get if isinstance(source, dict) else getattr(source, "get", None)
    if not callable(lookup):  # an SDK's object: its attributes

        def lookup(name: str) -> Any:
            return getattr(source, name, None)

    def count(name: str) -> int | None:
        try:
            value = lookup(name)
        except Exception:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if value != value or value < 0 or value >= 2**62:  # NaN, negative, absurd
            return None
        if isinstance(value, float) and not value.is_integer():
            return None
        return int(value)

    return count


def _nested(source: Any, name: str) -> Any:
    try:
        value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
    except Exception:
        return None
    return None if isinstance(value, str | bytes | int | float | list | tuple) else value


def _any(get: Any, *names: str) -> bool:
    return any(get(name) is not None for name in names)


def _first(get: Any, *names: str) -> int | None:
    for name in names:
        value = get(name)
        if value is not None:
            return value
    return None
