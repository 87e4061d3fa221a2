"""The viewer's JSON API (docs/CLI.md, `ui`) over real HTTP, and the command's
safety: headers, the Host check, no secrets, the non-loopback warning."""

from __future__ import annotations

import json
import socket
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import agentspool.worker.ui as ui_package
from tests.helpers import finish, run_cli, run_python, worker_env
from tests.ui.browser import UiServer
from tests.ui.conftest import BIG_MESSAGES

REPO_ROOT = Path(__file__).resolve().parents[2]


def get_json(ui: UiServer, path: str) -> tuple[int, Any]:
    status, body, _ = ui.get(path)
    return status, json.loads(body)


def test_the_sessions_list(ui: UiServer) -> None:
    status, data = get_json(ui, "/api/sessions")
    assert status == 200
    assert [s["id"] for s in data["sessions"]] == ["big-1", "evil-1", "alpha-0002", "alpha-0001"]
    assert data["total"] == 4
    assert data["counts"] == {"running": 0, "completed": 2, "error": 2, "abandoned": 0}
    assert data["agents"] == ["<b>evil</b>", "alpha", "beta", "bulk"]
    alpha = data["sessions"][-1]
    assert alpha["agent"] == "alpha" and alpha["status"] == "completed"
    assert (alpha["message_count"], alpha["tool_count"], alpha["event_count"]) == (3, 2, 9)
    assert alpha["sync_state"] == "synced" and alpha["open"] is False
    assert alpha["duration_ms"] > 0
    assert data["source"] == {"kind": "spool", "where": str(ui_spool(ui))}

    _, filtered = get_json(ui, "/api/sessions?agent=beta")
    assert [s["id"] for s in filtered["sessions"]] == ["alpha-0002"]
    _, by_status = get_json(ui, "/api/sessions?status=error")
    assert [s["id"] for s in by_status["sessions"]] == ["evil-1", "alpha-0002"]
    assert by_status["counts"]["completed"] == 2  # counts ignore the status filter
    _, searched = get_json(ui, "/api/sessions?q=NEEDLE")
    assert [s["id"] for s in searched["sessions"]] == ["alpha-0002"]
    _, literal = get_json(ui, "/api/sessions?q=%25")  # % is a character, not a wildcard
    assert literal["sessions"] == []
    _, recent = get_json(ui, "/api/sessions?since=1h")
    assert recent["total"] == 4
    _, old = get_json(ui, "/api/sessions?since=2000-01-01T00:00:00Z&limit=1&offset=1")
    assert old["total"] == 4 and [s["id"] for s in old["sessions"]] == ["evil-1"]
    assert get_json(ui, "/api/sessions?status=bogus")[0] == 400
    assert get_json(ui, "/api/sessions?since=yesterday")[0] == 400


def ui_spool(ui: UiServer) -> Path:
    return Path(ui.proc.args[ui.proc.args.index("--spool") + 1])


def test_one_session_by_id_or_unique_prefix(ui: UiServer) -> None:
    status, data = get_json(ui, "/api/sessions/alpha-0001")
    assert status == 200
    assert data["session"]["id"] == "alpha-0001"
    assert data["session"]["event_count"] == 9
    assert (data["session"]["message_count"], data["session"]["tool_count"]) == (3, 2)
    assert data["sync"]["sync_state"] == "synced"
    _, details = get_json(ui, "/api/sessions/alpha-0001/details")
    assert details["model"] == "model-x" and details["cwd"] == "/src/project"
    assert details["tokens"] == {
        "input": 150, "output": 25, "cache_read": None, "cache_write": None, "total": 175,
    }  # fmt: skip
    assert details["cost_usd"] is None and details["end_reason"] is None
    assert data["session"]["end_reason"] is None
    # The worker sums the messages' token usage into the session's metadata at its end.
    assert details["metadata"] == {
        "model": "model-x",
        "cwd": "/src/project",
        "ticket": "T-1",
        "usage": {"input_tokens": 150, "output_tokens": 25},
    }
    assert get_json(ui, "/api/sessions/big")[1]["session"]["id"] == "big-1"
    status, ambiguous = get_json(ui, "/api/sessions/alpha-")
    assert status == 409 and ambiguous["candidates"] == ["alpha-0001", "alpha-0002"]
    assert get_json(ui, "/api/sessions/nope")[0] == 404


def test_events_since_a_cursor_page_through_everything_once(ui: UiServer) -> None:
    seen: list[Any] = []
    cursor = None
    for _ in range(BIG_MESSAGES):
        query = "limit=64" + (f"&after={urllib.request.quote(cursor)}" if cursor else "")
        status, page = get_json(ui, f"/api/sessions/big-1/events?{query}")
        assert status == 200
        assert len(page["items"]) <= 64
        seen += [item["seq"] for item in page["items"]]
        cursor = page["cursor"]
        if not page["more"]:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == BIG_MESSAGES
    # nothing after the last cursor (what a live page asks every few seconds)
    _, after_end = get_json(ui, f"/api/sessions/big-1/events?after={urllib.request.quote(cursor)}")
    assert after_end["items"] == [] and after_end["cursor"] == cursor
    assert after_end["session"]["message_count"] == BIG_MESSAGES
    assert get_json(ui, "/api/sessions/big-1/events?after=garbage")[0] == 400


def test_previews_the_full_text_and_the_timeline(ui: UiServer) -> None:
    _, page = get_json(ui, "/api/sessions/alpha-0001/events")
    kinds = [(i["kind"], i.get("name") or i.get("role")) for i in page["items"]]
    assert kinds == [
        ("message", "user"), ("tool", "read_file"), ("tool", "run_tests"),
        ("message", "assistant"), ("message", "assistant"),
    ]  # fmt: skip
    long = page["items"][3]
    assert long["truncated"] is True and long["content_chars"] == 10_005
    assert len(long["content"]) < 10_005
    _, full = get_json(ui, f"/api/sessions/alpha-0001/messages/{long['seq']}?full=1")
    assert full["content"] == "LONG:" + "0123456789" * 1000 and full["truncated"] is False
    _, tools = get_json(ui, "/api/sessions/alpha-0001/tools")
    assert [(t["name"], t["status"]) for t in tools["tools"]] == [
        ("read_file", "completed"), ("run_tests", "error"),
    ]  # fmt: skip
    assert tools["total"] == 2 and all(t["duration_ms"] > 0 for t in tools["tools"])
    call = tools["tools"][1]["call_id"]
    _, one = get_json(ui, f"/api/sessions/alpha-0001/tools/{call}")
    assert one["error"] == "1 failed: test_last_page" and one["input"] == '{"path": "tests/"}'
    assert get_json(ui, "/api/sessions/alpha-0001/tools/nope")[0] == 404
    assert get_json(ui, "/api/sessions/alpha-0001/messages/999")[0] == 404


def test_pages_and_static_files_come_from_the_installed_package(ui: UiServer) -> None:
    # the tests run against the non-editable install: the page must ship in the wheel
    installed = Path(ui_package.__file__).resolve().parent
    assert installed != REPO_ROOT / "worker" / "ui" and "site-packages" in installed.parts
    assert {"index.html", "session.html", "app.css", "session.js"} <= {
        p.name for p in (installed / "static").iterdir()
    }
    for path, kind in [("/", "text/html"), ("/s/anything", "text/html"),
                       ("/static/app.css", "text/css"), ("/static/session.js", "text/javascript")]:  # fmt: skip
        status, body, headers = ui.get(path)
        assert status == 200 and headers["Content-Type"].startswith(kind), path
        assert b"http://" not in body and b"https://" not in body  # no CDN, nothing remote
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert ui.get("/static/nothing.js")[0] == 404
    assert ui.get("/nowhere")[0] == 404


def test_requests_for_another_host_name_are_refused(ui: UiServer) -> None:
    with socket.create_connection(("127.0.0.1", ui.port), timeout=10) as s:
        s.sendall(
            b"GET /api/sessions HTTP/1.1\r\nHost: attacker.example:80\r\nConnection: close\r\n\r\n"
        )
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 403")
    assert b"alpha-0001" not in reply


def test_no_secret_reaches_a_page_or_the_api(known_spool: Path) -> None:
    secret = "tok-SECRET-123"
    env = worker_env(
        known_spool, f"http://user:{secret}@127.0.0.1:9/db?authToken={secret}",
        TURSO_AUTH_TOKEN=secret,
    )  # fmt: skip
    ui = UiServer(known_spool, env=env)
    try:
        for path in ["/", "/s/alpha-0001", "/api/info", "/api/sessions",
                     "/api/sessions/alpha-0001", "/api/sessions/alpha-0001/events"]:  # fmt: skip
            status, body, _ = ui.get(path)
            assert status == 200 and secret.encode() not in body, path
    finally:
        out, err = ui.stop()
    assert secret not in out + err


def test_a_non_loopback_host_is_warned_about(spool: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails after the warning.
    result = run_cli("ui", "--spool", str(spool), "--host", "192.0.2.1", "--port", "0",
                     env=worker_env(spool), timeout=60)  # fmt: skip
    assert "warning: listening on 192.0.2.1" in result.stderr
    assert result.returncode == 1 and "cannot listen on 192.0.2.1" in result.stderr


def test_a_port_in_use_is_a_clear_error(spool: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "ui", "--spool", str(spool), "--port", str(port), env=worker_env(spool), timeout=60
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "warning" not in result.stderr


def test_an_empty_spool_lists_nothing(spool: Path) -> None:
    ui = UiServer(spool)
    try:
        status, data = get_json(ui, "/api/sessions")
        assert status == 200 and data["sessions"] == [] and data["total"] == 0
    finally:
        ui.stop()


def test_a_pruned_session_is_listed_and_says_where_its_rows_are(spool: Path) -> None:
    finish(run_python(
        "from agentspool import Spool\n"
        "s = Spool(SPOOL).session(agent='old', session_id='pruned-1')\n"
        "s.message('user', 'hi')\n"
        "assert s.end(timeout=30)\n",
        spool,
    ))  # fmt: skip
    env = worker_env(spool)
    assert run_cli("worker", "run", "--burst", env=env).returncode == 0
    pruned = run_cli("prune", "--older-than", "0.001", env=env)
    assert pruned.returncode == 0 and "pruned-1" in pruned.stdout, pruned.stderr
    ui = UiServer(spool)
    try:
        _, data = get_json(ui, "/api/sessions")
        [s] = data["sessions"]
        assert (s["id"], s["replica"], s["sync_state"], s["message_count"]) == (
            "pruned-1", False, "synced", None,
        )  # fmt: skip
        status, gone = get_json(ui, "/api/sessions/pruned-1")
        assert status == 410 and "agentspool ui --remote" in gone["error"]
    finally:
        ui.stop()


def test_details_of_a_replica_without_the_version_2_columns(tmp_path: Path) -> None:
    """A replica a version-1 worker wrote (no token columns) still shows its usage,
    summed from its messages' metadata."""
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    finish(run_python(
        "from agentspool import Spool\n"
        "s = Spool(SPOOL).session(agent='old', session_id='v1-1', metadata={'model': 'm'})\n"
        "s.message('assistant', 'a', metadata={'usage': {'prompt_tokens': 7,"
        " 'completion_tokens': 2}})\n"
        "assert s.end(timeout=30)\n",
        spool,
    ))  # fmt: skip
    run_cli("worker", "run", "--burst", env=worker_env(spool), timeout=120, check=True)
    (replica,) = (spool / "replicas").glob("*.db")
    conn = sqlite3.connect(replica)
    with conn:
        conn.execute(
            "DROP INDEX IF EXISTS sessions_by_model_started"
        )  # replicas keep only their keys
        for column in ("input_tokens", "output_tokens", "cache_read_tokens",
                       "cache_write_tokens", "cost_usd", "model"):  # fmt: skip
            conn.execute(f"ALTER TABLE sessions DROP COLUMN {column}")
    conn.close()
    server = UiServer(spool)
    try:
        status, details = get_json(server, "/api/sessions/v1-1/details")
    finally:
        server.stop()
    assert status == 200
    assert details["model"] == "m" and details["cost_usd"] is None
    assert details["tokens"] == {
        "input": 7, "output": 2, "cache_read": None, "cache_write": None, "total": 9,
    }  # fmt: skip
