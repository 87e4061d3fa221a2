"""The fake Messages API on its own, over plain HTTP: the SSE stream a scripted turn
makes, routing by the first user message, the answer to an unscripted request, and a
stalled response released. (The real Claude Code drives it in tests/integrations/.)"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.anthropic_api import FakeAnthropicAPI, text, thinking, tool_use, turn


@pytest.fixture
def api() -> Iterator[FakeAnthropicAPI]:
    with FakeAnthropicAPI() as server:
        yield server


def post(api: FakeAnthropicAPI, prompt: str, stream: bool = True) -> Any:
    body = {
        "model": "claude-test-model",
        "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "metadata": {"user_id": json.dumps({"session_id": "s-1"})},
    }
    request = urllib.request.Request(
        f"{api.url}/v1/messages?beta=true",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": "sk-secret"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["request-id"].startswith("req_")
        raw = response.read().decode()
    if not stream:
        return json.loads(raw)
    events = []
    for chunk in raw.strip().split("\n\n"):
        name, data = chunk.split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def test_a_turn_streams_as_the_messages_api_does(api: FakeAnthropicAPI) -> None:
    api.script([turn(thinking("hmm"), text("Hello."), tool_use("Bash", {"command": "ls"}),
                     input_tokens=7, output_tokens=3, cache_read_input_tokens=2)])  # fmt: skip
    events = post(api, "hi")
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["model"] == "claude-test-model"  # the model the request named
    assert start["usage"]["input_tokens"] == 7 and start["usage"]["cache_read_input_tokens"] == 2
    blocks = [e["content_block"] for n, e in events if n == "content_block_start"]
    assert [b["type"] for b in blocks] == ["thinking", "text", "tool_use"]
    deltas = [e["delta"] for n, e in events if n == "content_block_delta"]
    assert "".join(d.get("text", "") for d in deltas) == "Hello."
    assert "".join(d.get("thinking", "") for d in deltas) == "hmm"
    arguments = "".join(d.get("partial_json", "") for d in deltas)
    assert json.loads(arguments) == {"command": "ls"}
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use" and final["usage"]["output_tokens"] == 3
    (request,) = api.messages_requests()
    assert request.tool_use_ids == [blocks[2]["id"]] and request.response_id == start["id"]
    assert request.session_id == "s-1"
    assert "x-api-key" not in request.headers  # the key is never kept


def test_routes_by_first_user_message_and_unscripted_requests(api: FakeAnthropicAPI) -> None:
    api.script([turn(text("main 1")), turn(text("main 2"))])
    api.script([turn(text("sub 1"))], when="SUBTASK")
    assert post(api, "SUBTASK: do it", stream=False)["content"] == [
        {"type": "text", "text": "sub 1"}
    ]
    assert post(api, "hello", stream=False)["content"][0]["text"] == "main 1"
    assert post(api, "hello", stream=False)["content"][0]["text"] == "main 2"
    assert api.remaining() == {} and api.unscripted == []
    answer = post(api, "hello", stream=False)
    assert (
        answer["stop_reason"] == "end_turn" and "no scripted turn" in answer["content"][0]["text"]
    )
    assert len(api.unscripted) == 1
    assert [r.route for r in api.messages_requests()] == ["SUBTASK", "", "", ""]


def test_a_stalled_turn_hangs_until_released(api: FakeAnthropicAPI) -> None:
    api.script([turn(text("slow"), stall=True)])
    got: list[Any] = []
    client = threading.Thread(target=lambda: got.append(post(api, "hi")))
    client.start()
    assert api.stalled.wait(30)
    assert got == []  # the stream is open, without message_stop, until the release
    api.release()
    client.join(30)
    assert [name for name, _ in got[0]][-1] == "message_stop"
