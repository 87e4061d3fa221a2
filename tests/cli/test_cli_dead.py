"""`agentspool dead`: list and read dead letters, requeue them after fixing the cause
(the events then land in a real sqld), purge them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentspool.producer import queuefile
from agentspool.worker import state as st
from tests.cli.test_cli_inspect import ev, queue_raw
from tests.helpers import run_cli, worker_env
from tests.sqld import Sqld


def item(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def identified(event: dict[str, Any], pseq: int) -> dict[str, Any]:
    return event | {"producer_id": "foreign-1", "pseq": pseq}


def cli_json(env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == code, (args, result.returncode, result.stderr)
    return json.loads(result.stdout)


def test_dead_letters_listed_fixed_requeued_and_synced(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    env = worker_env(spool, sqld.url)
    assert run_cli("dead", "ls", env=env, check=True).stdout.strip() == "no dead letters"
    # A producer that bypasses the checks writes a session whose end is invalid, and
    # an item that is not JSON at all.
    bad_end = identified(ev("f-1", 2, "session_end", status="cancelled"), 2)
    queue_raw(spool, "foreign-1", [
        item(identified(ev("f-1", 0, "session_start", agent="foreign"), 0)),
        item(identified(ev("f-1", 1, "message", role="user", content="hi"), 1)),
        item(bad_end),
        b"\x00garbage",
    ])  # fmt: skip
    first = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert first.returncode == 0, first.stderr  # f-1 is sealed abandoned and synced
    assert sqld.query("SELECT id, status FROM sessions") == [["f-1", "abandoned"]]

    listed = cli_json(env, "dead", "ls")
    assert listed["total"] == 2
    end_letter, garbage = listed["dead_letters"]
    assert (end_letter["producer_id"], end_letter["item_id"], end_letter["session_id"],
            end_letter["type"], end_letter["seq"]) == ("foreign-1", 3, "f-1", "session_end", 2)  # fmt: skip
    assert "session_end status must be one of" in end_letter["reason"]
    assert garbage["session_id"] is None and garbage["bytes"] == 8
    text = run_cli("dead", "ls", env=env, check=True).stdout
    assert "session_end of session f-1 seq 2" in text and "8 bytes, not an event" in text

    shown = cli_json(env, "dead", "show", str(end_letter["id"]))
    assert shown["event"] == bad_end and shown["reason"] == end_letter["reason"]
    raw = run_cli("dead", "show", str(end_letter["id"]), "--raw", env=env, check=True).stdout
    assert raw.encode() == item(bad_end)
    assert "cancelled" in run_cli("dead", "show", str(end_letter["id"]), env=env, check=True).stdout
    missing = run_cli("dead", "show", "99", env=env)
    assert missing.returncode == 1 and "agentspool dead ls" in missing.stderr

    # Requeued as it is, the end is still invalid: kept, with the way to fix it.
    still = run_cli("dead", "requeue", str(end_letter["id"]), env=env)
    assert still.returncode == 1
    assert "still invalid: session_end status must be one of" in still.stderr
    assert f"agentspool dead requeue {end_letter['id']} --event e.json" in still.stderr
    assert cli_json(env, "dead", "ls")["total"] == 2
    assert len(queuefile.list_queue_dirs(spool)) <= 1  # no requeue queue file was made

    # Fixed: the corrected event goes in, the dead letter goes away.
    fixed = tmp_path / "e.json"
    fixed.write_text(raw.replace('"cancelled"', '"error"')[:-1] + ',"error":"stopped by user"}')
    requeued = cli_json(env, "dead", "requeue", str(end_letter["id"]), "--event", str(fixed))
    assert requeued["requeued"] == [end_letter["id"]] and requeued["refused"] == []
    assert requeued["producer_id"].startswith("requeue-")
    assert [d["id"] for d in cli_json(env, "dead", "ls")["dead_letters"]] == [garbage["id"]]
    second = run_cli("worker", "run", "--burst", "--db", sqld.url, env=env)
    assert second.returncode == 0, second.stderr
    assert sqld.query("SELECT id, status, error, event_count FROM sessions") == [
        ["f-1", "error", "stopped by user", 3]
    ]

    # The garbage cannot be requeued; purge asks first, and without a terminal stops.
    assert run_cli("dead", "requeue", "--all", env=env).returncode == 1
    declined = run_cli("dead", "purge", str(garbage["id"]), env=env)
    assert declined.returncode == 1 and "Aborted" in declined.stderr
    assert cli_json(env, "dead", "purge", str(garbage["id"]), "--yes") == {"deleted": 1}
    assert run_cli("dead", "ls", env=env, check=True).stdout.strip() == "no dead letters"


def test_dead_requeue_puts_the_stored_bytes_back(spool: Path, tmp_path: Path) -> None:
    """A dead letter whose cause was on the worker's side (here: recorded by hand, as
    an older worker would have) goes back byte for byte, identity included."""
    env = worker_env(spool)
    events = [
        identified(ev("r-1", 0, "session_start", agent="a"), 0),
        identified(ev("r-1", 1, "message", role="user", content="kept"), 1),
        identified(ev("r-1", 2, "session_end", status="completed"), 2),
    ]
    store = st.StateStore(spool)
    for n, event in enumerate(events, start=1):
        store.add_dead_letter("old-producer", n, item(event), "unknown event type (old worker)")
    store.close()
    assert run_cli("dead", "requeue", env=env).returncode == 2
    assert run_cli("dead", "requeue", "1", "--all", env=env).returncode == 2
    assert run_cli("dead", "requeue", "--all", "--event", str(tmp_path), env=env).returncode == 2

    result = run_cli("dead", "requeue", "--all", env=env, check=True)
    assert "requeued 3 dead letter(s)" in result.stdout
    assert cli_json(env, "dead", "ls")["total"] == 0
    peeked = cli_json(env, "queue", "peek")["events"]
    assert [p["event"] for p in peeked] == events  # the stored bytes, identity and all
    assert run_cli("worker", "run", "--burst", env=env).returncode == 0
    synced = cli_json(env, "sessions")["sessions"][0]
    assert (synced["session_id"], synced["status"], synced["event_count"]) == (
        "r-1",
        "completed",
        3,
    )
    # Requeueing a copy again is a replay: nothing changes, nothing is dead-lettered.
    store = st.StateStore(spool)
    store.add_dead_letter("old-producer", 9, item(events[1]), "a replay")
    store.close()
    gone = run_cli("dead", "requeue", "1", env=env)
    assert (
        gone.returncode == 1
        and "no dead letter 1; list them with: agentspool dead ls" in gone.stderr
    )
    dead_id = cli_json(env, "dead", "ls")["dead_letters"][0]["id"]
    run_cli("dead", "requeue", str(dead_id), env=env, check=True)
    assert run_cli("worker", "run", "--burst", env=env).returncode == 0
    assert cli_json(env, "status")["dead_letters"] == 0
