"""A session that is still running: its page and the list update without a reload
while a real producer emits and a real worker drains (its subagent's session too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.helpers import finish, start_worker, stop_process, wait_until, worker_env
from tests.ui.browser import UiServer
from tests.ui.conftest import PageErrors

# The producer waits for a file per step (bounded), so the test decides when each
# event happens; flush() makes each step durable before the worker can see it.
LIVE_PRODUCER = """
import os, sys, time
from agentspool import Spool

GATES = sys.argv[1]

def wait_for(name):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(GATES, name)):
        if time.monotonic() > deadline:
            sys.exit(f"gate {name} never opened")
        time.sleep(0.02)

spool = Spool(SPOOL)
s = spool.session(agent="live-agent", session_id="live-1")
s.message("user", "start watching")
assert spool.flush(30)
wait_for("step-1")
call = s.tool_started("slow_tool", input={"n": 1})
s.message("assistant", "live message 1")
sub = spool.session(agent="live-helper", session_id="live-sub", parent_id="live-1")
sub.message("assistant", "helping", usage={"input_tokens": 40, "output_tokens": 4})
assert spool.flush(30)
wait_for("step-2")
s.tool_finished(call, output="slow tool finished")
s.message("assistant", "live message 2")
assert sub.end(timeout=30)
assert spool.flush(30)
wait_for("end")
assert s.end(timeout=30)
"""


def test_an_open_session_updates_without_a_reload(
    spool: Path, tmp_path: Path, page: Any, browser: Any, page_errors: PageErrors
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    env = worker_env(spool)
    worker = start_worker(env)
    producer = subprocess.Popen(
        [sys.executable, "-c", f"SPOOL = {str(spool)!r}\n" + LIVE_PRODUCER, str(gates)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ui = UiServer(spool)
    try:
        wait_until(
            lambda: ui.get("/api/sessions/live-1")[0] == 200, 30, "the worker to drain live-1"
        )
        listing = browser.new_page()
        listing.goto(ui.url + "/")
        row = listing.locator('#rows tr[data-session="live-1"]')
        expect(row).to_have_class("open")
        expect(row.locator(".live")).to_be_visible()
        expect(row.locator(".messages")).to_have_text("1")

        page.goto(ui.url + "/s/live-1")
        expect(page.locator("#live")).to_be_visible()
        expect(page.locator("#status")).to_have_text("running")
        expect(page.locator("#transcript > li")).to_have_count(1)
        page.evaluate("window.__same_page = true")  # gone if the page reloads

        (gates / "step-1").touch()
        expect(page.locator("#transcript li.message", has_text="live message 1")).to_be_visible(
            timeout=20_000
        )
        tool = page.locator("#transcript li.tool[data-call]")
        expect(tool.locator(".badge")).to_have_text("running", timeout=20_000)
        expect(page.locator(".tl-bar.st-running")).to_have_count(1, timeout=20_000)
        expect(row.locator(".messages")).to_have_text("2", timeout=20_000)
        expect(row.locator(".tools")).to_have_text("1")
        # a subagent started: the tree appears, its child running, its tokens rolled up
        child = page.locator('#tree-box .tree-line[data-session="live-sub"]')
        expect(child.locator(".badge")).to_have_text("running", timeout=20_000)
        expect(page.locator('#tree-box tr[data-total="descendants"] .input')).to_have_text("40")

        (gates / "step-2").touch()
        expect(page.locator("#transcript li.message", has_text="live message 2")).to_be_visible(
            timeout=20_000
        )
        expect(tool.locator(".badge")).to_have_text("completed", timeout=20_000)
        expect(tool.locator(".tool-output")).to_contain_text("slow tool finished")
        expect(child.locator(".badge")).to_have_text("completed", timeout=20_000)
        expect(page.locator(".tl-bar.st-completed")).to_have_count(1, timeout=20_000)

        (gates / "end").touch()
        finish(producer)
        expect(page.locator("#status")).to_have_text("completed", timeout=20_000)
        expect(page.locator("#live")).to_be_hidden()
        expect(page.locator("#tr-end")).to_have_text("end of the session")
        expect(row.locator(".badge")).to_have_text("completed", timeout=20_000)
        expect(row.locator(".live")).to_have_count(0)
        assert page.evaluate("window.__same_page") is True
        assert page.locator("#transcript > li").count() == 4
        assert not page_errors
        listing.close()
    finally:
        ui.stop()
        if producer.poll() is None:
            producer.kill()
            producer.communicate(timeout=10)
        stop_process(worker)
