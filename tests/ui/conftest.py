"""Fixtures of the browser tests: headless Chromium, a spool with known sessions,
and `agentspool ui` serving it as a real process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import finish, run_cli, run_python, worker_env
from tests.ui.browser import CHROMIUM, MISSING_CHROMIUM, UiServer, chromium

# Known sessions, oldest first. `alpha-0001` and `alpha-0002` share the prefix
# `alpha-`; `evil-1` carries HTML and script in every field a page shows.
SESSIONS_CODE = """
import time
from agentspool import Spool

spool = Spool(SPOOL)
s = spool.session(agent="alpha", session_id="alpha-0001",
                  metadata={"model": "model-x", "cwd": "/src/project", "ticket": "T-1"})
s.message("user", "find the bug in paging")
c = s.tool_started("read_file", input={"path": "paging.py"})
time.sleep(0.03)
s.tool_finished(c, output="def page(items, n): ...")
c = s.tool_started("run_tests", input={"path": "tests/"})
time.sleep(0.05)
s.tool_finished(c, error="1 failed: test_last_page")
s.message("assistant", "LONG:" + "0123456789" * 1000,
          metadata={"usage": {"input_tokens": 100, "output_tokens": 20}})
s.message("assistant", "fixed it", metadata={"usage": {"input_tokens": 50, "output_tokens": 5}})
assert s.end(timeout=30)
time.sleep(0.01)

s = spool.session(agent="beta", session_id="alpha-0002")
s.message("user", "a needle in this haystack")
assert s.end(status="error", error="it broke", timeout=30)
time.sleep(0.01)

s = spool.session(agent="<b>evil</b>", session_id="evil-1", metadata={"note": "<script>window.__pwned = 4</script>"})
s.message("assistant", '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">')
c = s.tool_started("<i>tool</i>", input="<script>window.__pwned = 3</script>")
s.tool_finished(c, output="</pre><b>bold</b>")
assert s.end(status="error", error="<img src=y onerror=\\"window.__pwned = 5\\">", timeout=30)
time.sleep(0.01)

s = spool.session(agent="bulk", session_id="big-1")
for n in range(BIG):
    s.message("user" if n % 2 else "assistant", f"bulk message {n}")
assert s.end(timeout=60)
"""
BIG_MESSAGES = 450


def make_sessions(spool: Path, env: dict[str, str] | None = None, big: int = BIG_MESSAGES) -> None:
    """The known sessions, drained and synced by a real `worker run --burst` (to the
    embedded database unless ``env`` names another)."""
    finish(run_python(f"BIG = {big}\n" + SESSIONS_CODE, spool))
    result = run_cli("worker", "run", "--burst", env=env or worker_env(spool), timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(MISSING_CHROMIUM, pytrace=False)
    with chromium() as b:
        yield b


class PageErrors(list[str]):
    """Uncaught JS exceptions and console errors of one page."""


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(browser: Any, page_errors: PageErrors) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    p = context.new_page()
    p.on("pageerror", lambda e: page_errors.append(f"pageerror: {e}"))
    p.on("console", lambda m: page_errors.append(m.text) if m.type == "error" else None)
    try:
        yield p
    finally:
        context.close()


@pytest.fixture(scope="module")
def known_spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spool = tmp_path_factory.mktemp("ui") / "spool"
    spool.mkdir(mode=0o700)
    make_sessions(spool)
    return spool


@pytest.fixture(scope="module")
def ui(known_spool: Path) -> Iterator[UiServer]:
    server = UiServer(known_spool)
    try:
        yield server
    finally:
        server.stop()


# A session tree with models, token counts and costs (the source's own figures, so the
# sums are known whatever prices the worker knows): `lead-1` started `sub-1` and
# `sub-2`; `sub-1` started `sub-1a`. `solo-1` and `plain-1` stand alone; `plain-1` has
# neither model nor tokens nor cost, `sub-2` has tokens but no cost.
FAMILY_CODE = """
import time
from agentspool import Spool

spool = Spool(SPOOL)

def usage(i, o, r=None, w=None):
    u = {"input_tokens": i, "output_tokens": o}
    if r is not None:
        u["cache_read_tokens"] = r
    if w is not None:
        u["cache_write_tokens"] = w
    return u

lead = spool.session(agent="lead", session_id="lead-1", model="model-a")
lead.message("user", "plan the work")
lead.message("assistant", "starting two helpers", model="model-a",
             usage=usage(1000, 200, 300, 50), cost_usd=0.5)
time.sleep(0.01)
sub1 = spool.session(agent="helper", session_id="sub-1", parent_id="lead-1", model="model-b")
sub1.message("assistant", "reading", model="model-b", usage=usage(300, 40, 100), cost_usd=0.125)
c = sub1.tool_started("read_file", input={"path": "a.py"})
sub1.tool_finished(c, output="ok")
time.sleep(0.01)
sub1a = spool.session(agent="helper", session_id="sub-1a", parent_id="sub-1", model="model-a")
sub1a.message("assistant", "a nested look", model="model-a", usage=usage(50, 5), cost_usd=0.02)
assert sub1a.end(status="error", error="gave up", timeout=30)
assert sub1.end(timeout=30)
time.sleep(0.01)
sub2 = spool.session(agent="helper", session_id="sub-2", parent_id="lead-1", model="model-b")
sub2.message("assistant", "no price for this one", model="model-b", usage=usage(200, 10))
assert sub2.end(timeout=30)
lead.message("assistant", "done", model="model-a", usage=usage(400, 100), cost_usd=0.25)
assert lead.end(timeout=30)
time.sleep(0.01)
solo = spool.session(agent="solo", session_id="solo-1", model="model-c")
solo.message("assistant", "cheap", model="model-c", usage=usage(10, 1), cost_usd=0.001)
assert solo.end(timeout=30)
time.sleep(0.01)
plain = spool.session(agent="solo", session_id="plain-1")
plain.message("user", "no usage at all")
assert plain.end(timeout=30)
"""


# Two sessions on earlier days, written with `agentspool emit --ts` (the producer
# library stamps events with the present): (id, days ago, agent, model, usage, cost,
# tool, duration in ms, tool error).
HISTORY = (
    ("old-2", 2, "lead", "model-a", {"input_tokens": 500, "output_tokens": 50}, 0.2,
     "run_tests", 120.0, "1 failed"),
    ("old-1", 1, "solo", "model-c", {"input_tokens": 70, "output_tokens": 7}, None,
     "read_file", 30.0, None),
)  # fmt: skip


def make_history(spool: Path, env: dict[str, str]) -> None:
    for sid, days_ago, agent, model, usage, cost, tool, duration, error in HISTORY:
        at = time.time() - days_ago * 86400
        events: list[tuple[str, ...]] = [
            ("--type", "session_start", "--agent", agent, "--model", model),
            ("--type", "message", "--seq", "1", "--role", "assistant", "--content", "old work",
             "--model", model, "--usage", json.dumps(usage),
             *(("--cost-usd", str(cost)) if cost is not None else ())),
            ("--type", "tool_started", "--seq", "2", "--call-id", "c1", "--name", tool),
            ("--type", "tool_finished", "--seq", "3", "--call-id", "c1", "--output", "done",
             "--duration-ms", str(duration), *(("--error", error) if error else ())),
            ("--type", "session_end", "--seq", "4"),
        ]  # fmt: skip
        for n, event in enumerate(events):
            run_cli("emit", "--session", sid, "--ts", str(at + n), *event, env=env, check=True)


def make_family(spool: Path, env: dict[str, str] | None = None, history: bool = False) -> None:
    finish(run_python(FAMILY_CODE, spool))
    if history:
        make_history(spool, env or worker_env(spool))
    result = run_cli("worker", "run", "--burst", env=env or worker_env(spool), timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def family_spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spool = tmp_path_factory.mktemp("family") / "spool"
    spool.mkdir(mode=0o700)
    make_family(spool)
    return spool


@pytest.fixture(scope="module")
def stats_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """The family and two sessions of earlier days, served."""
    spool = tmp_path_factory.mktemp("stats") / "spool"
    spool.mkdir(mode=0o700)
    make_family(spool, history=True)
    server = UiServer(spool)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def family_ui(family_spool: Path) -> Iterator[UiServer]:
    server = UiServer(family_spool)
    try:
        yield server
    finally:
        server.stop()
