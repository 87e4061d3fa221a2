"""Debian's headless Chromium driven by Playwright, and `agentspool ui` as a real
subprocess: shared by the browser tests and the README screenshot script.

No browser is downloaded: Playwright drives the system's ``chromium`` through
``executable_path`` (``make test`` installs the Debian package where it is missing).
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import AGENTSPOOL, stop_process, wait_until, worker_env

CHROMIUM = os.environ.get("AGENTSPOOL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MISSING_CHROMIUM = (
    f"the browser tests need Debian's chromium at {CHROMIUM}; install it with"
    " `apt-get update && apt-get install -y chromium` (`make test` does this as root),"
    " or point AGENTSPOOL_TEST_CHROMIUM at a Chromium binary"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``)."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(MISSING_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


class UiServer:
    """``agentspool ui`` on a free port, started as a real process."""

    def __init__(self, spool: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [AGENTSPOOL, "ui", "--spool", str(spool), "--port", str(self.port), *args],
            env=env or worker_env(spool),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(self._answers, 30, "agentspool ui to answer", interval=0.1)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            out, err = self.proc.communicate()
            raise AssertionError(f"agentspool ui exited {self.proc.returncode}\n{out}\n{err}")
        try:
            with urllib.request.urlopen(self.url + "/api/info", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        """GET a path; (status, body, headers), errors included."""
        request = urllib.request.Request(self.url + path)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def stop(self) -> tuple[str, str]:
        return stop_process(self.proc)
