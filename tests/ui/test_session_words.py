"""The words a session's page shows (issue 23, item 8): counts in the singular and the
plural, one unit on the timeline's axis, the side panel without repeats, the end
reason, a call whose start never arrived, tool output that was a JSON string, and an
unknown session id. Sessions come through a real `agentspool ingest` and a real
`worker run --burst`; the pages run in headless Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.helpers import run_cli, worker_env
from tests.ui.browser import UiServer
from tests.ui.conftest import PageErrors

T0 = 1_800_000_000.0  # the sessions' clock: seconds since 1970, fixed so times are known

# "cc-1": a Claude Code session shape: a model and a cwd in its metadata, usage on its
# reply, a JSON-string tool output, a call whose tool_started ingest rejects (line 6:
# an unknown field), and an end with its reason. 2.71 s long.
CC_SESSION = [
    {"v": 1, "type": "session_start", "session_id": "cc-1", "seq": 0, "ts": T0,
     "agent": "claude-code", "host": "vm", "model": "m-1",
     "metadata": {"cwd": "/w/project", "model": "m-1", "ticket": "T-9"}},
    {"v": 1, "type": "message", "session_id": "cc-1", "seq": 1, "ts": T0 + 0.1,
     "role": "user", "content": "list the files"},
    {"v": 1, "type": "tool_started", "session_id": "cc-1", "seq": 2, "ts": T0 + 0.5,
     "call_id": "c1", "name": "Bash", "input": {"command": "ls -l"}},
    {"v": 1, "type": "tool_finished", "session_id": "cc-1", "seq": 3, "ts": T0 + 1.2,
     "call_id": "c1", "output": json.dumps("total 8\n-rw-r--r-- 1 a a 12 notes.txt")},
    {"v": 1, "type": "message", "session_id": "cc-1", "seq": 4, "ts": T0 + 1.5,
     "role": "assistant", "content": "one file", "model": "m-1",
     "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 3}},
    {"v": 1, "type": "tool_started", "session_id": "cc-1", "seq": 5, "ts": T0 + 2.1,
     "call_id": "c2", "name": "Read", "bogus": 1},
    {"v": 1, "type": "tool_finished", "session_id": "cc-1", "seq": 6, "ts": T0 + 2.5,
     "call_id": "c2", "output": "x", "duration_ms": 400.0},
    {"v": 1, "type": "session_end", "session_id": "cc-1", "seq": 7, "ts": T0 + 2.71,
     "status": "completed", "metadata": {"end_reason": "prompt_input_exit"}},
]  # fmt: skip

# "one-1": one message, one tool call.
ONE_SESSION = [
    {"v": 1, "type": "session_start", "session_id": "one-1", "seq": 0, "ts": T0 + 10,
     "agent": "solo"},
    {"v": 1, "type": "message", "session_id": "one-1", "seq": 1, "ts": T0 + 10.1,
     "role": "user", "content": "hi"},
    {"v": 1, "type": "tool_started", "session_id": "one-1", "seq": 2, "ts": T0 + 10.2,
     "call_id": "k1", "name": "echo", "input": "hi"},
    {"v": 1, "type": "tool_finished", "session_id": "one-1", "seq": 3, "ts": T0 + 10.3,
     "call_id": "k1", "output": "hi"},
    {"v": 1, "type": "session_end", "session_id": "one-1", "seq": 4, "ts": T0 + 10.4,
     "status": "completed"},
]  # fmt: skip


@pytest.fixture(scope="module")
def words_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    root = tmp_path_factory.mktemp("words")
    spool = root / "spool"
    spool.mkdir(mode=0o700)
    env = worker_env(spool)
    source = root / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in CC_SESSION + ONE_SESSION))
    ingested = run_cli("ingest", str(source), env=env, timeout=60)
    assert ingested.returncode == 4, ingested.stderr  # line 6 rejected, the rest kept
    assert "line 6: unknown field(s) for tool_started: bogus" in ingested.stderr
    run_cli("worker", "run", "--burst", env=env, timeout=120, check=True)
    server = UiServer(spool)
    try:
        yield server
    finally:
        server.stop()


def test_counts_read_in_the_singular_and_the_plural(
    words_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(words_ui.url + "/")
    expect(page.locator("#counts .total")).to_have_text("2 sessions")
    page.select_option("#f-agent", "solo")
    expect(page.locator("#counts .total")).to_have_text("1 session")

    page.goto(words_ui.url + "/s/one-1")
    expect(page.locator("#tl-note")).to_have_text("1 call")
    expect(page.locator("#tr-note")).to_have_text("2 of 2 items (1 message, 1 tool call)")
    page.goto(words_ui.url + "/s/cc-1")
    expect(page.locator("#tl-note")).to_have_text("2 calls")
    expect(page.locator("#tr-note")).to_have_text("4 of 4 items (2 messages, 2 tool calls)")
    assert not page_errors


def test_the_timeline_axis_has_one_unit(
    words_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(words_ui.url + "/s/cc-1")
    ticks = page.locator(".tl-axis .tick")
    expect(ticks).to_have_count(5)
    texts = ticks.all_text_contents()
    assert texts[0] == "+0.00 s" and texts[-1] == "+2.71 s", texts
    assert all(re.fullmatch(r"\+\d\.\d\d s", t) for t in texts), texts
    # the tooltip's offset reads on the axis's scale
    page.locator('.tl-bar[data-call="c1"]').hover()
    expect(page.locator("#tooltip")).to_contain_text("started +0.50 s")
    assert not page_errors


def test_the_side_panel_says_each_thing_once_and_why_the_session_ended(
    words_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(words_ui.url + "/s/cc-1")
    facts = page.locator("#side dl.facts").first
    expect(facts).to_contain_text("End reason")
    expect(facts.locator('[data-field="end-reason"]')).to_have_text("prompt_input_exit")
    expect(facts).to_contain_text("m-1")
    expect(facts).to_contain_text("/w/project")
    # Anthropic's input_tokens leaves the cache out; the session's columns count it in
    expect(facts).to_contain_text("110 in, 3 out (113); cache: 100 read")
    meta = page.locator("#side dl.meta")
    expect(meta).to_contain_text("ticket")
    expect(meta).to_contain_text("T-9")
    keys = meta.locator("dt").all_text_contents()
    assert keys == ["ticket"], keys  # model, models, cwd, usage and end_reason are above

    # a session without a reason shows no empty "End reason" line
    page.goto(words_ui.url + "/s/one-1")
    expect(page.locator("#side")).to_contain_text("Tool calls")
    expect(page.locator('#side [data-field="end-reason"]')).to_be_hidden()
    expect(page.locator("#side dt", has_text="End reason")).to_be_hidden()
    expect(page.locator("#side")).not_to_contain_text("null")  # no metadata, no "null"
    assert not page_errors


def test_a_call_without_its_start_is_shown_as_half_a_call(
    words_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(words_ui.url + "/s/cc-1")
    half = page.locator('#transcript li.tool[data-call="c2"]')
    expect(half.locator(".item-head")).to_contain_text("tool (start missing)")
    expect(half).to_contain_text("its tool_started event never arrived")
    expect(half.locator(".item-head time")).to_contain_text("ended ")
    expect(half.locator(".tool-name b")).to_have_count(0)
    whole = page.locator('#transcript li.tool[data-call="c1"]')
    expect(whole.locator(".tool-name")).to_have_text("tool Bash")
    expect(whole).not_to_contain_text("never arrived")

    expect(page.locator(".tl-label", has_text="(start missing)")).to_have_count(1)
    bar = page.locator('.tl-bar[data-call="c2"]')
    expect(bar).to_have_class(re.compile(r"\bstart-missing\b"))
    bar.hover()
    expect(page.locator("#tooltip")).to_contain_text("(start missing)")
    expect(page.locator("#tooltip")).to_contain_text("start missing (drawn back from its end)")
    bar.click()
    expect(page.locator("#tl-detail")).to_contain_text("its tool_started event never arrived")
    expect(page.locator("#tl-detail")).not_to_contain_text("started -")
    expect(page.locator("#tl-detail")).not_to_contain_text("null")
    assert not page_errors


def test_tool_output_stored_as_a_json_string_is_shown_as_its_text(
    words_ui: UiServer, page: Any, page_errors: PageErrors
) -> None:
    page.goto(words_ui.url + "/s/cc-1")
    output = page.locator('#transcript li.tool[data-call="c1"] .tool-output pre')
    expect(output).to_have_text("total 8\n-rw-r--r-- 1 a a 12 notes.txt")
    status, body, _ = words_ui.get("/api/sessions/cc-1/tools/c1?full=1")
    assert status == 200
    call = json.loads(body)
    assert call["output"] == "total 8\n-rw-r--r-- 1 a a 12 notes.txt"
    assert call["output_chars"] == len(call["output"]) and not call["truncated"]
    assert not page_errors


@pytest.mark.parametrize("ref", ["nothing-like-it", "cc-1-but-longer"])
def test_an_unknown_session_is_one_message_with_the_way_back(
    words_ui: UiServer, page: Any, page_errors: PageErrors, ref: str
) -> None:
    page.goto(words_ui.url + "/s/" + ref)
    message = page.locator("#error")
    expect(message).to_have_text(f"No session '{ref}'. Back to the sessions")
    expect(page.locator("#page")).to_be_hidden()
    for panel in ("#timeline", "#transcript", "#side", ".session-title"):
        expect(page.locator(panel)).to_be_hidden()
    message.locator("a", has_text="Back to the sessions").click()
    expect(page).to_have_url(words_ui.url + "/")
    expect(page.locator("#rows tr")).to_have_count(2)
    # the 404 of the API call is the one console error the browser logs itself
    assert all("404" in e for e in page_errors), page_errors
