"""`agentspool ui --remote`: the same pages and API over the sessions database, here
a real sqld that requires a token, filled by a real `worker run --burst`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from playwright.sync_api import expect

from tests.helpers import worker_env
from tests.sqld import eddsa_jwt, free_port, start_auth_sqld
from tests.ui.browser import UiServer
from tests.ui.conftest import PageErrors, make_sessions

BIG = 120


def test_the_remote_database_through_the_viewer(
    spool: Path, sqld_bin: Path, tmp_path: Path, page: Any, page_errors: PageErrors
) -> None:
    server, key = start_auth_sqld(sqld_bin, tmp_path / "sqld-auth")
    token = eddsa_jwt(key, {"a": "rw", "nonce": os.urandom(8).hex()})
    signature = token.rsplit(".", 1)[1]
    try:
        env = worker_env(spool, server.url, TURSO_AUTH_TOKEN=token)
        make_sessions(spool, env, big=BIG)
        # The viewer must read the database, not the spool: take the spool away.
        shutil.rmtree(spool / "replicas")
        ui = UiServer(spool, "--remote", env=env)
        try:
            bodies: list[bytes] = []

            def get_json(path: str) -> tuple[int, Any]:
                status, body, _ = ui.get(path)
                bodies.append(body)
                return status, json.loads(body)

            status, data = get_json("/api/sessions")
            assert status == 200
            assert [s["id"] for s in data["sessions"]] == [
                "big-1",
                "evil-1",
                "alpha-0002",
                "alpha-0001",
            ]
            assert data["counts"] == {"running": 0, "completed": 2, "error": 2, "abandoned": 0}
            assert data["source"] == {"kind": "remote", "where": server.url}
            alpha = data["sessions"][-1]
            assert (alpha["message_count"], alpha["tool_count"], alpha["event_count"]) == (3, 2, 9)
            assert get_json("/api/sessions?q=needle")[1]["total"] == 1
            assert get_json("/api/sessions?agent=alpha&status=completed")[1]["total"] == 1
            assert get_json("/api/sessions/alpha-")[0] == 409
            assert get_json("/api/sessions/nope")[0] == 404
            assert get_json("/api/sessions/big")[1]["session"]["id"] == "big-1"
            _, one = get_json("/api/sessions/alpha-0001")
            assert one["sync"] is None and one["session"]["message_count"] == 3
            _, details = get_json("/api/sessions/alpha-0001/details")
            assert details["model"] == "model-x" and details["tokens"]["total"] == 175
            seqs: list[int] = []
            cursor = ""
            while True:
                _, page_data = get_json(f"/api/sessions/big-1/events?limit=50&after={cursor}")
                seqs += [i["seq"] for i in page_data["items"]]
                cursor = quote(page_data["cursor"])
                if not page_data["more"]:
                    break
            assert len(seqs) == len(set(seqs)) == BIG

            page.goto(ui.url + "/s/alpha-0001")
            expect(page.locator("#transcript > li")).to_have_count(5)
            expect(page.locator(".tl-bar")).to_have_count(2)
            expect(page.locator(".tl-bar.st-error")).to_have_count(1)
            expect(page.locator("#side")).to_contain_text("in the database")
            page.goto(ui.url + "/s/evil")
            expect(page.locator("#transcript li.message pre")).to_contain_text("<script>")
            assert page.evaluate("typeof window.__pwned") == "undefined"
            page.goto(ui.url + "/")
            expect(page.locator("#rows tr")).to_have_count(4)
            expect(page.locator("#where")).to_have_text(f"remote: {server.url}")
            assert not page_errors
            for path in ("/", "/s/alpha-0001", "/api/info"):
                bodies.append(ui.get(path)[1])
        finally:
            out, err = ui.stop()
    finally:
        server.stop()
    for body in bodies:
        assert signature.encode() not in body
    assert signature not in out + err


def test_an_unreachable_database_is_a_clear_error(spool: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ui = UiServer(spool, "--remote", "--db", url, env=worker_env(spool))
    try:
        status, body, _ = ui.get("/api/sessions")
        assert status == 502
        assert "127.0.0.1" in json.loads(body)["error"]
    finally:
        ui.stop()
