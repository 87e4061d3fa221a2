"""Schema version 2 against a real sqld: model, token and cost columns filled by every
producer, parent sessions, continued sessions, upgrades in place from version 1, and
an additive newer version that an older worker keeps writing to."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentspool import Spool
from agentspool.worker import migrations
from tests.helpers import run_cli, worker_env
from tests.sqld import Sqld

SESSION_COLUMNS = (
    "status ended_at error parent_id model message_count event_count"
    " input_tokens output_tokens cache_read_tokens cache_write_tokens cost_usd"
).split()

# Usages as the providers send them (the shapes agentspool.producer.usage reads).
ANTHROPIC = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 300,
    "cache_read_input_tokens": 4000,
    "output_tokens": 50,
    "service_tier": "standard",
}
OPENAI_CHAT = {
    "prompt_tokens": 1200,
    "completion_tokens": 40,
    "total_tokens": 1240,
    "prompt_tokens_details": {"cached_tokens": 80},
}
OPENCODE = {"input": 1120, "output": 30, "reasoning": 10, "cache": {"read": 80, "write": 0}}


def burst(spool: Path, db_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("worker", "run", "--burst", env=worker_env(spool, db_url, **extra), timeout=180)


def ingest(env: dict[str, str], lines: list[dict[str, Any]]) -> None:
    """`agentspool ingest` of ``lines`` (JSON Lines on stdin); every line must be taken."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "agentspool"), "ingest"],
        input="\n".join(json.dumps(line) for line in lines),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def session_row(sqld: Sqld, session_id: str) -> dict[str, Any]:
    rows = sqld.query(
        "SELECT status, ended_at, error, parent_id, model, message_count, event_count,"
        " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd"
        " FROM sessions WHERE id = ?",
        (session_id,),
    )
    assert rows, f"session {session_id} is not in the database"
    return dict(zip(SESSION_COLUMNS, rows[0], strict=True))


def message_rows(sqld: Sqld, session_id: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in sqld.query(
            "SELECT role, content, model, input_tokens, output_tokens, cache_read_tokens,"
            " cache_write_tokens, cost_usd FROM messages WHERE session_id = ? ORDER BY seq",
            (session_id,),
        )
    ]


# ---- every producer fills every column -------------------------------------------


def test_the_producer_api_fills_every_column(spool: Path, sqld: Sqld) -> None:
    producer = Spool(spool)
    with producer.session("planner", session_id="parent", model="claude-main") as parent:
        parent.message("user", "plan it")
        parent.message("assistant", "on it", model="claude-x", usage=ANTHROPIC, cost_usd=0.25)
        with producer.session("coder", session_id="child", parent_id="parent") as child:
            child.message("assistant", "done", model="gpt-y", usage=OPENAI_CHAT)
            child.message("assistant", "again", model="gpt-y", usage=OPENCODE, cost_usd=0.5)
    producer.close()
    assert burst(spool, sqld.url).returncode == 0

    parent_row = session_row(sqld, "parent")
    # The start named the model; Anthropic's input counts its cache reads and writes.
    assert parent_row["model"] == "claude-main" and parent_row["parent_id"] is None
    assert [parent_row[k] for k in ("input_tokens", "output_tokens")] == [4312, 50]
    assert [parent_row[k] for k in ("cache_read_tokens", "cache_write_tokens")] == [4000, 300]
    assert parent_row["cost_usd"] == 0.25
    assert message_rows(sqld, "parent") == [
        ("user", "plan it", None, None, None, None, None, None),
        ("assistant", "on it", "claude-x", 4312, 50, 4000, 300, 0.25),
    ]
    child_row = session_row(sqld, "child")
    assert child_row["parent_id"] == "parent"
    assert child_row["model"] == "gpt-y"  # no model at the start: its first message's
    # A session's sums are its own messages' (the child's are not in the parent's); a
    # count one provider leaves unknown (OpenAI's cache writes) is not taken as 0.
    assert message_rows(sqld, "child") == [
        ("assistant", "done", "gpt-y", 1200, 40, 80, None, None),
        ("assistant", "again", "gpt-y", 1200, 40, 80, 0, 0.5),
    ]
    assert [child_row[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens")] == [
        2400,
        80,
        160,
    ]
    # "done" counted tokens of a model no price table knows: the child's cost is
    # unknown, not the 0.5 of the message that had one (a partial sum looks whole).
    assert child_row["cache_write_tokens"] == 0 and child_row["cost_usd"] is None
    assert sqld.query("SELECT id FROM sessions WHERE parent_id = 'parent'") == [["child"]]


def test_emit_and_ingest_fill_every_column(spool: Path, sqld: Sqld) -> None:
    env = worker_env(spool, sqld.url, AGENTSPOOL_OWNER_PID="1")
    emits = [
        ["--type", "session_start", "--agent", "sh", "--parent-id", "root", "--model", "m0"],
        ["--type", "message", "--seq", "1", "--role", "assistant", "--content", "hi",
         "--model", "m1", "--usage", json.dumps(ANTHROPIC), "--cost-usd", "0.125"],
        ["--type", "session_end", "--seq", "2"],
    ]  # fmt: skip
    for args in emits:
        result = run_cli("emit", "--session", "emitted", *args, env=env)
        assert result.returncode == 0, result.stderr
    lines = [
        {"v": 1, "type": "session_start", "session_id": "ingested", "seq": 0, "agent": "py",
         "parent_id": "emitted"},
        {"v": 1, "type": "message", "session_id": "ingested", "seq": 1, "role": "assistant",
         "content": "ok", "model": "m2", "usage": OPENAI_CHAT, "cost_usd": 2},
        {"v": 1, "type": "session_end", "session_id": "ingested", "seq": 2, "status": "completed"},
    ]  # fmt: skip
    ingest(env, lines)
    assert burst(spool, sqld.url).returncode == 0

    emitted = session_row(sqld, "emitted")
    assert (emitted["parent_id"], emitted["model"], emitted["cost_usd"]) == ("root", "m0", 0.125)
    assert message_rows(sqld, "emitted") == [("assistant", "hi", "m1", 4312, 50, 4000, 300, 0.125)]
    ingested = session_row(sqld, "ingested")
    assert (ingested["parent_id"], ingested["model"], ingested["input_tokens"]) == (
        "emitted",
        "m2",
        1200,
    )
    assert message_rows(sqld, "ingested") == [("assistant", "ok", "m2", 1200, 40, 80, None, 2.0)]


def test_a_usage_nobody_can_read_is_kept_and_reported_once(spool: Path, sqld: Sqld) -> None:
    producer = Spool(spool)
    with producer.session("odd", session_id="odd") as session:
        session.message("assistant", "a", usage={"tokens_in": 5})
        session.message("assistant", "b", usage={"tokens_in": 6})
    producer.close()
    result = burst(spool, sqld.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no token counts agentspool can read (keys: tokens_in)") == 1
    assert session_row(sqld, "odd")["input_tokens"] is None
    metadata = sqld.query("SELECT metadata FROM messages WHERE session_id = 'odd' ORDER BY seq")
    assert [json.loads(m[0])["usage"] for m in metadata] == [{"tokens_in": 5}, {"tokens_in": 6}]


# ---- sessions that go on after they end ------------------------------------------


def test_a_session_ended_continued_and_ended_again_lands_whole(spool: Path, sqld: Sqld) -> None:
    first = Spool(spool)
    with first.session("agent", session_id="long") as session:
        session.message("user", "one")
    first.close()
    assert burst(spool, sqld.url).returncode == 0
    first_end = session_row(sqld, "long")["ended_at"]
    assert session_row(sqld, "long")["status"] == "completed"

    time.sleep(0.01)  # the second part's times must differ from the first's by a tick
    second = Spool(spool)  # another process goes on with the same session (a resume)
    resumed = second.session("agent", session_id="long", resume=True)
    resumed.message("user", "two")
    resumed.message("assistant", "three", model="m", usage={"input_tokens": 3})
    assert second.flush(10)
    assert burst(spool, sqld.url).returncode == 0
    # The rows in between are sent; the final status stays final meanwhile.
    row = session_row(sqld, "long")
    assert (row["status"], row["ended_at"], row["message_count"]) == ("completed", first_end, 3)

    resumed.end("error", "failed the second time")
    second.close()
    assert burst(spool, sqld.url).returncode == 0
    row = session_row(sqld, "long")
    assert (row["status"], row["error"], row["message_count"]) == (
        "error",
        "failed the second time",
        3,
    )
    assert row["ended_at"] > first_end  # the last end's time
    assert row["input_tokens"] == 3 and row["model"] == "m"
    assert [m[1] for m in message_rows(sqld, "long")] == ["one", "two", "three"]
    dead = run_cli("dead", "ls", env=worker_env(spool))
    assert "already" not in dead.stdout + dead.stderr


def test_a_replayed_end_changes_nothing(spool: Path, sqld: Sqld) -> None:
    events = [
        {"v": 1, "type": "session_start", "session_id": "r", "seq": 0, "agent": "a", "ts": 100},
        {"v": 1, "type": "session_end", "session_id": "r", "seq": 1, "status": "completed",
         "ts": 200, "producer_id": "exported", "pseq": 7},
    ]  # fmt: skip
    env = worker_env(spool, sqld.url)
    for lines in (events, events[1:]):  # the same end, with its identity, twice
        ingest(env, lines)
        assert burst(spool, sqld.url).returncode == 0
    row = session_row(sqld, "r")
    assert (row["status"], row["ended_at"], row["event_count"]) == (
        "completed",
        "1970-01-01T00:03:20.000Z",
        2,
    )
    assert "already holds" not in run_cli("dead", "ls", env=env).stdout


# ---- newer versions -----------------------------------------------------------------

LATEST = migrations.latest_version()
NEWER = LATEST + 1  # a version this agentspool does not know


def _add_made_up_newer_version(sqld: Sqld, compatible_from: int | None) -> None:
    sqld.query("ALTER TABLE sessions ADD COLUMN team TEXT")
    sqld.query(
        "INSERT INTO schema_version (version, applied_at, compatible_from) VALUES (?, ?, ?)",
        (NEWER, "2027-01-01T00:00:00.000Z", compatible_from),
    )


@pytest.mark.parametrize("compatible", [True, False], ids=["additive", "breaking"])
def test_an_older_worker_meets_a_newer_version(spool: Path, sqld: Sqld, compatible: bool) -> None:
    producer = Spool(spool)
    with producer.session("a", session_id="before") as session:
        session.message("user", "x")
    assert burst(spool, sqld.url).returncode == 0  # the database is at our latest now
    _add_made_up_newer_version(sqld, LATEST if compatible else None)
    with producer.session("a", session_id="after") as session:
        session.message("user", "y", usage={"input_tokens": 1})
    producer.close()
    result = burst(spool, sqld.url)
    if compatible:
        assert result.returncode == 0, result.stderr
        assert session_row(sqld, "after")["input_tokens"] == 1
    else:
        assert result.returncode != 0
        assert f"schema version {NEWER} is newer than this agentspool" in result.stderr
        assert "not compatible" in result.stderr
        assert sqld.query("SELECT id FROM sessions") == [["before"]]
    versions = sqld.query("SELECT version FROM schema_version ORDER BY version")
    assert versions == [[v] for v in range(1, NEWER + 1)]
