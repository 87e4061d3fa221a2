"""The shared mapping: each message of a repeated history once, roles, text, usage."""

from __future__ import annotations

from agentspool.integrations._mapping import (
    Message,
    ToolCall,
    Transcript,
    Usage,
    arguments_of,
    epoch_of_iso,
    role_of,
    text_of,
)


def texts(messages: list[Message]) -> list[str]:
    return [f"{m.role}:{m.content}" for m in messages]


def test_a_growing_history_yields_only_what_is_new() -> None:
    t = Transcript()
    q = Message("user", "hi")
    assert texts(t.new_in([Message("system", "be kind"), q])) == ["system:be kind", "user:hi"]
    reply = Message("assistant", None, [ToolCall("c1", "search", {"q": "x"})])
    t.record([reply])
    # The next call repeats everything, the reply as the framework echoes it (extra
    # fields, "" for None), plus the tool's result.
    echo = Message("assistant", "", [ToolCall("c1", "search", '{"q": "x"}')], metadata={"x": 1})
    history = [Message("system", "be kind"), q, echo, Message("tool", "3 hits", tool_call_id="c1")]
    assert texts(t.new_in(history)) == ["tool:3 hits"]
    assert t.new_in(history) == []


def test_the_same_question_twice_is_two_messages() -> None:
    t = Transcript()
    t.new_in([Message("user", "yes")])
    t.record([Message("assistant", "sure?")])
    new = t.new_in([Message("user", "yes"), Message("assistant", "sure?"), Message("user", "yes")])
    assert texts(new) == ["user:yes"]


def test_a_trimmed_history_logs_nothing_again() -> None:
    t = Transcript()
    t.new_in([Message("user", "a"), Message("user", "b"), Message("user", "c")])
    assert texts(t.new_in([Message("user", "c"), Message("user", "d")])) == ["user:d"]


def test_a_call_without_an_id_is_told_apart_by_name_and_arguments() -> None:
    t = Transcript()
    t.record([Message("assistant", None, [ToolCall(None, "f", {"a": 1})])])
    new = t.new_in(
        [
            Message("assistant", None, [ToolCall(None, "f", '{"a": 1}')]),
            Message("assistant", None, [ToolCall(None, "f", {"a": 2})]),
        ]
    )
    assert [m.tool_calls[0].arguments for m in new] == [{"a": 2}]


def test_roles() -> None:
    assert [role_of(k) for k in ("human", "ai", "developer", "function", "AI", None, "critic")] == [
        "user", "assistant", "system", "tool", "assistant", "unknown", "critic",
    ]  # fmt: skip


def test_text_of() -> None:
    assert text_of("x") == "x" and text_of(None) is None
    parts = [{"type": "text", "text": "a"}, {"type": "output_text", "text": "b"}, "c"]
    assert text_of(parts) == "abc"
    image = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "u"}}]
    assert text_of(image) == image  # not text: kept as the parts

    class Part:  # an SDK's object
        type = "output_text"
        text = "from an object"

    assert text_of([Part()]) == "from an object"


def test_arguments_and_times() -> None:
    assert arguments_of('{"a": 1}') == {"a": 1}
    assert arguments_of("not json") == "not json"
    assert arguments_of({"a": 1}) == {"a": 1}
    assert epoch_of_iso("2026-01-02T03:04:05.500000+00:00") == 1767323045.5
    assert epoch_of_iso("yesterday") is None and epoch_of_iso(None) is None


def test_usage_reads_every_naming_and_sums() -> None:
    a = Usage.from_mapping({"input_tokens": 10, "output_tokens": 5})
    b = Usage.from_mapping({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    assert a is not None and b is not None
    a.add(b)
    assert a.as_dict() == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert a.calls == 2
    assert Usage.from_mapping({"input_tokens": None}) is None
    assert Usage.from_mapping({"input_tokens": True}) is None  # a bool is no count
    assert Usage.from_mapping(None) is None
