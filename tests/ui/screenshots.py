"""Screenshots of `agentspool ui` for the README, with the demo's data:
``make screenshots`` (= ``python -m tests.ui.screenshots``) runs ``agentspool demo``
into a new spool, serves it with ``agentspool ui`` and has headless Chromium save
``docs/screenshots/sessions.png`` and ``docs/screenshots/session.png``; then a week
of sessions (``agentspool emit --ts``: the demo's all start now) with models the
price table knows, for ``docs/screenshots/stats.png``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import AGENTSPOOL, run_cli, worker_env
from tests.ui.browser import UiServer, chromium

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 760}
LIST_VIEWPORT = {"width": 1280, "height": 340}  # the demo has three sessions
STATS_VIEWPORT = {"width": 1280, "height": 820}

# The week: per day, (agent, model, turns, tools) sessions; a tool call fails now and then.
WEEK_AGENTS = (
    ("coder", "claude-sonnet-4-5", 6, ("Bash", "Read", "Edit")),
    ("reviewer", "gpt-4o-mini", 3, ("Read", "WebSearch")),
    ("researcher", "claude-haiku-4-5", 4, ("WebSearch", "Read")),
)


def week_session(spool: Path, day: int, n: int, agent: str, model: str, turns: int,
                 tools: tuple[str, ...]) -> None:  # fmt: skip
    """One session ``day`` days ago, written event by event with ``agentspool emit``."""
    env = worker_env(spool)
    sid = f"{agent}-{day}-{n}"
    at = time.time() - day * 86400 - 3600 * (n + 1)
    events = [("--type", "session_start", "--agent", agent, "--model", model)]
    for turn in range(turns):
        size = 2000 + 700 * ((day * 7 + n * 3 + turn) % 11)
        usage = {"input_tokens": size // 4, "cache_read_input_tokens": size,
                 "output_tokens": 150 + 40 * (turn % 5)}  # fmt: skip
        events.append(("--type", "message", "--role", "assistant", "--content", f"step {turn}",
                       "--model", model, "--usage", json.dumps(usage)))  # fmt: skip
        tool = tools[turn % len(tools)]
        failed = (day + n + turn) % 7 == 0
        duration = 40 + 90 * ((day + turn * 5 + n) % 9) * (3 if tool == "Bash" else 1)
        events.append(("--type", "tool_started", "--call-id", f"c{turn}", "--name", tool))
        events.append(("--type", "tool_finished", "--call-id", f"c{turn}", "--output", "ok",
                       "--duration-ms", str(duration), *(("--error", "exit 1") if failed else ())))  # fmt: skip
    events.append(("--type", "session_end"))
    for seq, event in enumerate(events):
        seq_args = ("--seq", str(seq)) if seq else ()
        run_cli("emit", "--session", sid, "--ts", str(at + seq), *seq_args, *event, env=env,
                check=True)  # fmt: skip


def make_week(spool: Path) -> None:
    jobs = [
        (day, n, *spec)
        for day in range(7)
        for n, spec in enumerate(WEEK_AGENTS)
        if (day + n) % 4 != 3  # not every agent every day
    ]
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(week_session, spool, *job) for job in jobs]:
            future.result()
    result = run_cli("worker", "run", "--burst", env=worker_env(spool), timeout=300)
    assert result.returncode == 0, result.stderr


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentspool-shots-") as tmp:
        spool = Path(tmp) / "demo-spool"
        # cwd: the demo's agents record their working directory in the metadata
        subprocess.run(
            [AGENTSPOOL, "demo", "--spool", str(spool)],
            env=worker_env(spool),
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=300,
        )
        ui = UiServer(spool)
        try:
            status, body, _ = ui.get("/api/sessions?agent=coder")
            coder = json.loads(body)["sessions"][0]["id"]
            with chromium() as browser:
                page = browser.new_page(viewport=LIST_VIEWPORT)
                page.goto(ui.url + "/")
                page.locator("#rows tr").nth(2).wait_for()
                page.screenshot(path=str(OUT / "sessions.png"))
                page.set_viewport_size(VIEWPORT)
                page.goto(ui.url + "/s/" + coder)
                page.locator("#transcript > li").nth(5).wait_for()
                bar = page.locator(".tl-bar.st-error").first
                bar.hover()
                page.locator("#tooltip").wait_for()
                page.screenshot(path=str(OUT / "session.png"))
        finally:
            ui.stop()
        week = Path(tmp) / "week-spool"
        week.mkdir(mode=0o700)
        make_week(week)
        ui = UiServer(week)
        try:
            with chromium() as browser:
                page = browser.new_page(viewport=STATS_VIEWPORT)
                page.goto(ui.url + "/stats?stack=model")
                page.locator("#chart-cost rect.seg").first.wait_for()
                page.locator("#tool-rows tr").nth(2).wait_for()
                page.screenshot(path=str(OUT / "stats.png"), full_page=True)
        finally:
            ui.stop()
    for name in ("sessions.png", "session.png", "stats.png"):
        print(f"wrote {OUT / name} ({(OUT / name).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
