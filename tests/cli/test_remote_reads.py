"""Reading what was synced (issue 13): ``sessions --remote`` and ``show ID --remote``
against a real sqld, after the spool that wrote the sessions is gone; and session
id prefixes, locally and remotely."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.helpers import finish, run_cli, run_python, worker_env
from tests.sqld import Sqld

AGENTS = """
from agentspool import Spool
spool = Spool(SPOOL)
for sid, agent in (("abc12345-one", "planner"), ("abc12399-two", "coder"), ("ffe00001-three", "coder")):
    with spool.session(agent=agent, session_id=sid, metadata={"task": sid}) as s:
        s.message("user", f"task {sid}")
        s.message("assistant", "on it", model="model-a", usage={"input_tokens": 40, "output_tokens": 9})
        with s.tool("search", {"q": sid}) as call:
            call.output = {"hits": 3}
        if agent == "coder":
            try:
                with s.tool("compile", {"file": "x.c"}):
                    raise OSError("cc not found")
            except OSError:
                pass
assert spool.flush(30)
"""


def synced_then_deleted(tmp_path: Path, sqld: Sqld) -> dict[str, str]:
    """Sessions written, synced to sqld with the real worker, then the spool deleted;
    returns an environment that points at the database and at no spool."""
    spool = tmp_path / "spool"
    finish(run_python(AGENTS, spool))
    env = worker_env(spool, sqld.url)
    run_cli("worker", "run", "--burst", env=env, check=True, timeout=300)
    assert sqld.scalar("SELECT count(*) FROM sessions") == 3
    shutil.rmtree(spool)
    return worker_env(tmp_path / "another-machine", sqld.url)


def cli_json(env: dict[str, str], *args: str) -> Any:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


def test_sessions_and_show_from_the_database_after_the_spool_is_gone(
    tmp_path: Path, sqld: Sqld
) -> None:
    env = synced_then_deleted(tmp_path, sqld)
    listing = cli_json(env, "sessions", "--remote")
    assert listing["database"] == sqld.url
    rows = {s["session_id"]: s for s in listing["sessions"]}
    assert set(rows) == {"abc12345-one", "abc12399-two", "ffe00001-three"}
    two = rows["abc12399-two"]
    assert (two["agent"], two["status"]) == ("coder", "completed")
    assert (two["message_count"], two["tool_count"]) == (2, 2)
    assert two["duration_s"] is not None and two["duration_s"] >= 0
    assert two["started_at"] <= two["ended_at"]

    # the same filters as the local listing
    coders = cli_json(env, "sessions", "--remote", "--agent", "coder")
    assert {s["session_id"] for s in coders["sessions"]} == {"abc12399-two", "ffe00001-three"}
    assert len(cli_json(env, "sessions", "--remote", "--limit", "1")["sessions"]) == 1
    assert cli_json(env, "sessions", "--remote", "--status", "error")["sessions"] == []
    assert len(cli_json(env, "sessions", "--remote", "--since", "1h")["sessions"]) == 3
    assert cli_json(env, "sessions", "--remote", "--since", "2000-01-01")["sessions"] != []

    text = run_cli("sessions", "--remote", env=env, check=True).stdout
    header = text.splitlines()[0].split()
    assert header == ["STARTED", "SESSION", "AGENT", "STATUS", "DURATION", "MESSAGES", "TOOLS"]
    assert "abc12399-two" in text and "coder" in text

    # show, by a unique prefix
    shown = cli_json(env, "show", "abc12399", "--remote")
    assert shown["session"]["id"] == "abc12399-two"
    assert shown["replica"] is None and shown["database"] == sqld.url
    assert [m["content"] for m in shown["messages"]] == ["task abc12399-two", "on it"]
    tools = {t["name"]: t for t in shown["tool_executions"]}
    assert tools["compile"]["status"] == "error"
    assert tools["compile"]["error"] == "OSError: cc not found"
    assert json.loads(tools["search"]["output"]) == {"hits": 3}
    metadata = json.loads(shown["session"]["metadata"])
    assert metadata["usage"] == {"input_tokens": 40, "output_tokens": 9}
    transcript = run_cli("show", "ffe", "--remote", env=env, check=True).stdout
    assert "session  ffe00001-three" in transcript and f"from     {sqld.url}" in transcript
    assert "tool compile" in transcript and "OSError: cc not found" in transcript

    # an ambiguous prefix lists the candidates; an unknown one says where it looked
    ambiguous = run_cli("show", "abc123", "--remote", env=env)
    assert ambiguous.returncode == 1
    assert "abc12345-one" in ambiguous.stderr and "abc12399-two" in ambiguous.stderr
    assert "several sessions" in ambiguous.stderr
    missing = run_cli("show", "zzz", "--remote", env=env)
    assert missing.returncode == 1 and f"no session 'zzz' in {sqld.url}" in missing.stderr


def test_remote_reads_explain_what_is_wrong(tmp_path: Path, sqld: Sqld) -> None:
    env = worker_env(tmp_path / "nothing-here")
    no_db = run_cli("sessions", "--remote", env=env)
    assert no_db.returncode == 1 and "give --db URL" in no_db.stderr
    empty = run_cli("sessions", "--remote", "--db", sqld.url, env=env)
    assert empty.returncode == 1, empty.stderr
    assert "has no agentspool tables" in empty.stderr and "Traceback" not in empty.stderr
    state = run_cli("sessions", "--remote", "--state", "synced", "--db", sqld.url, env=env)
    assert state.returncode == 2 and "--status" in state.stderr


def test_local_prefixes_work_everywhere_an_id_is_taken(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    finish(run_python(AGENTS, spool))
    env = worker_env(spool)
    run_cli("worker", "run", "--burst", env=env, check=True)
    shown = cli_json(env, "show", "ffe0")
    assert shown["session"]["id"] == "ffe00001-three"
    exact = cli_json(env, "show", "abc12345-one")
    assert exact["session"]["id"] == "abc12345-one"
    ambiguous = run_cli("show", "abc", env=env)
    assert ambiguous.returncode == 1
    assert "abc12345-one" in ambiguous.stderr and "abc12399-two" in ambiguous.stderr
    retry = run_cli("retry", "abc", env=env)
    assert retry.returncode == 1 and "several sessions" in retry.stderr
    not_failed = run_cli("retry", "ffe0", env=env)
    assert not_failed.returncode == 1
    assert "session ffe00001-three is neither failed nor pending" in not_failed.stderr


BIG_SESSION = """
from agentspool import Spool
spool = Spool(SPOOL)
with spool.session(agent="big", session_id="big-1") as s:
    for i in range(14):
        s.message("assistant", f"{i:02d}" + "x" * 900_000)
    with s.tool("dump", {"n": 1}) as call:
        call.output = "y" * 900_000
assert spool.flush(60)
"""


def test_a_transcript_bigger_than_one_response_is_read_in_pages(tmp_path: Path, sqld: Sqld) -> None:
    """sqld caps a response at 10 MB: 13 MB of messages must come back whole."""
    spool = tmp_path / "spool"
    finish(run_python(BIG_SESSION, spool))
    env = worker_env(spool, sqld.url)
    run_cli("worker", "run", "--burst", env=env, check=True, timeout=300)
    shutil.rmtree(spool)
    shown = cli_json(worker_env(tmp_path / "elsewhere", sqld.url), "show", "big", "--remote")
    contents = [m["content"] for m in shown["messages"]]
    assert [c[:2] for c in contents] == [f"{i:02d}" for i in range(14)]
    assert all(len(c) == 900_002 for c in contents)
    assert len(shown["tool_executions"][0]["output"]) == 900_000


def test_pages_hold_at_most_page_bytes() -> None:
    from agentspool.worker.reports.remote_sessions import PAGE_BYTES, _pages

    sizes = [(n, PAGE_BYTES // 3) for n in range(7)] + [(7, PAGE_BYTES * 2), (8, 1)]
    assert list(_pages(sizes)) == [(0, 2), (3, 5), (6, 6), (7, 7), (8, 8)]
    assert list(_pages([])) == []
