"""The fake OpenAI API on its own, read by the real openai client: chat completions and
the Responses API, streamed and not (usage in a streamed chat completion only when the
request asks for it), routing by the first user message, the answer to an unscripted
request, and the guard that keeps the tests on the loopback. (The frameworks drive it
in tests/integrations/.)"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from openai import APIConnectionError, OpenAI

from tests.fakes.openai_api import FakeOpenAIAPI, answer, call, calls, loopback_only


@pytest.fixture
def api() -> Iterator[FakeOpenAIAPI]:
    with FakeOpenAIAPI() as server:
        yield server


@pytest.fixture
def client(api: FakeOpenAIAPI) -> OpenAI:
    return OpenAI(api_key="sk-secret", base_url=api.url, max_retries=0, timeout=30)


def ask(prompt: str) -> list[Any]:
    return [{"role": "user", "content": prompt}]


def script_two(api: FakeOpenAIAPI) -> None:
    api.script(
        [
            calls(call("get_weather", {"city": "Paris"}, id="call_1"), call("get_time", {}),
                  input_tokens=7, output_tokens=3, cached_tokens=2),
            answer("Sunny at noon.", model="gpt-other"),
        ]
    )  # fmt: skip


def test_chat_completions(api: FakeOpenAIAPI, client: OpenAI) -> None:
    script_two(api)
    first = client.chat.completions.create(model="gpt-asked", messages=ask("hi"))
    assert first.model == "gpt-asked"  # the model the request named
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    made = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in made] == [  # type: ignore[union-attr]
        ("call_1", "get_weather", {"city": "Paris"}),
        (made[1].id, "get_time", {}),
    ]
    assert made[1].id.startswith("call_")  # made up when the script names none
    usage = first.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 3)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 2
    second = client.chat.completions.create(model="gpt-asked", messages=ask("hi"))
    assert second.model == "gpt-other" and second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Sunny at noon."
    assert [r.path for r in api.requests] == ["/v1/chat/completions"] * 2
    assert "authorization" not in api.requests[0].headers  # the key is never kept
    assert api.unscripted == [] and api.remaining() == {}


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_completions_streamed(include_usage: bool, api: FakeOpenAIAPI, client: OpenAI) -> None:
    script_two(api)
    options: Any = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client.chat.completions.create(
            model="gpt-asked", messages=ask("hi"), stream=True, **options
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert api.requests[0].stream
    with_usage = [c for c in chunks if c.usage is not None]
    if include_usage:  # one last chunk, with no choices, as the real API sends it
        assert with_usage == [chunks[-1]] and chunks[-1].choices == []
        usage = with_usage[0].usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (
            7, 3
        )  # fmt: skip
    else:
        assert with_usage == []
    deltas = [c.choices[0] for c in chunks if c.choices]
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]
    assembled: dict[int, dict[str, str]] = {}
    for d in deltas:
        for piece in d.delta.tool_calls or []:
            entry = assembled.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += piece.id or ""
            if piece.function is not None:
                entry["name"] += piece.function.name or ""
                entry["arguments"] += piece.function.arguments or ""
    assert [(e["id"], e["name"], json.loads(e["arguments"])) for e in assembled.values()] == [
        ("call_1", "get_weather", {"city": "Paris"}),
        (assembled[1]["id"], "get_time", {}),
    ]
    text = client.chat.completions.create(model="gpt-asked", messages=ask("hi"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in text if c.choices) == (
        "Sunny at noon."
    )


def test_responses(api: FakeOpenAIAPI, client: OpenAI) -> None:
    script_two(api)
    first = client.responses.create(model="gpt-asked", input=ask("hi"))
    assert first.status == "completed" and first.model == "gpt-asked"
    made = [(item.call_id, item.name, json.loads(item.arguments))  # type: ignore[union-attr, arg-type]
            for item in first.output]  # fmt: skip
    assert made[0] == ("call_1", "get_weather", {"city": "Paris"})
    assert made[1][1:] == ("get_time", {})
    assert first.usage is not None and (first.usage.input_tokens, first.usage.output_tokens) == (
        7, 3
    )  # fmt: skip
    assert first.usage.input_tokens_details.cached_tokens == 2
    second = client.responses.create(model="gpt-asked", input="hi")  # a string input routes too
    assert second.output_text == "Sunny at noon." and second.model == "gpt-other"
    assert [r.path for r in api.requests] == ["/v1/responses"] * 2 and api.unscripted == []


def test_responses_streamed(api: FakeOpenAIAPI, client: OpenAI) -> None:
    script_two(api)
    events = list(client.responses.create(model="gpt-asked", input=ask("hi"), stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.output == [] and events[0].response.usage is None  # type: ignore[union-attr]
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert arguments == json.dumps({"city": "Paris"}) + json.dumps({})
    done = events[-1].response  # type: ignore[union-attr]
    assert [item.name for item in done.output] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.output_tokens == 3
    # The SDK's own accumulator agrees with the events.
    with client.responses.stream(model="gpt-asked", input=ask("hi")) as stream:
        pieces = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(pieces) == 2 and "".join(pieces) == final.output_text == "Sunny at noon."


def test_routes_and_unscripted_requests(api: FakeOpenAIAPI, client: OpenAI) -> None:
    api.script([answer("main 1"), answer("main 2")])
    api.script([answer("sub 1")], when="SUBTASK")
    api.script([answer("sub 2")], when="SUBTASK")  # used once the first SUBTASK route is
    said = [
        client.chat.completions.create(model="m", messages=ask(prompt)).choices[0].message.content
        for prompt in ("SUBTASK: do it", "hello", "SUBTASK again", "hello")
    ]
    assert said == ["sub 1", "main 1", "sub 2", "main 2"]
    assert [r.route for r in api.requests] == ["SUBTASK", "", "SUBTASK", ""]
    assert api.remaining() == {} and api.unscripted == []
    late = client.responses.create(model="m", input="hello")
    assert "no scripted turn" in late.output_text  # an answer, never an error to retry
    assert len(api.unscripted) == 1
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(
            urllib.request.Request(f"{api.url}/embeddings", data=b"{}", method="POST"), timeout=30
        )
    assert missing.value.code == 404


def test_only_the_loopback(api: FakeOpenAIAPI) -> None:
    """The fake listens on the loopback only; inside loopback_only() a connection
    anywhere else fails before it is attempted, and is listed."""
    assert api.url.startswith("http://127.0.0.1:")
    original = socket.socket.connect
    api.script([answer("here")])
    with loopback_only() as refused:
        outside = OpenAI(api_key="sk-x", base_url="http://192.0.2.1:80/v1", max_retries=0)
        with pytest.raises(APIConnectionError):
            outside.chat.completions.create(model="m", messages=ask("hi"))
        with pytest.raises(ConnectionRefusedError), socket.socket() as sock:
            sock.connect(("10.0.0.1", 443))
        inside = OpenAI(api_key="sk-x", base_url=api.url, max_retries=0)
        reply = inside.chat.completions.create(model="m", messages=ask("hi"))
    assert reply.choices[0].message.content == "here"
    assert refused == [("192.0.2.1", 80), ("10.0.0.1", 443)]
    assert socket.socket.connect is original and len(api.requests) == 1  # restored
