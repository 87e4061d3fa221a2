"""Screenshots of `agentspool ui` for the README, with the demo's data:
``make screenshots`` (= ``python -m tests.ui.screenshots``) runs ``agentspool demo``
into a new spool, serves it with ``agentspool ui`` and has headless Chromium save
``docs/screenshots/sessions.png`` and ``docs/screenshots/session.png``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers import AGENTSPOOL, worker_env
from tests.ui.browser import UiServer, chromium

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 760}
LIST_VIEWPORT = {"width": 1280, "height": 340}  # the demo has three sessions


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
    for name in ("sessions.png", "session.png"):
        print(f"wrote {OUT / name} ({(OUT / name).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
