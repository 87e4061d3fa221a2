"""Redaction end to end: a session that carries a secret of every kind in every field
an agent fills, drained and synced by a real `worker run --burst` into a real sqld.
No secret reaches a replica's bytes, the worker's state, the database, `agentspool
show` (local and --remote), the viewer's JSON API, `queue peek` or the dead-letter
views; the session's metadata counts what was redacted, by kind. A custom pattern file
adds kind `custom`; a bad one stops the worker at start (exit 1, one line);
AGENTSPOOL_REDACT=off keeps the text as it is."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.cli.test_cli_inspect import ev, queue_raw
from tests.helpers import run_cli, worker_db_rows, worker_env
from tests.intake.test_redaction import SECRETS
from tests.sqld import Sqld
from tests.ui.browser import UiServer

# One secret of every kind (the first of each in the corpus) and a URL with a password.
PASSWORD = "pw-" + "Zq7" * 5
_FIRST: dict[str, str] = {}
for _kind, _secret in SECRETS:
    _FIRST.setdefault(_kind, _secret)
ONE_OF_EACH = list(_FIRST.items())
ONE_OF_EACH.append(("url_password", f"postgres://app:{PASSWORD}@db.internal:5432/app"))
# What each field carries: every secret, one a line, with text around them.
BLOB = "\n".join(f"{kind} here: {secret} (end)" for kind, secret in ONE_OF_EACH)
# The parts that must never show: each secret whole, and a long piece of it.
NEEDLES = [PASSWORD] + [s for k, s in ONE_OF_EACH if k != "url_password"]
KEY_TOKEN = dict(ONE_OF_EACH)["github_token"]
SID = "leaky-1"
PRODUCER = "leaky-producer"


def leaky_session(sid: str = SID) -> list[dict[str, Any]]:
    """Every field an agent fills holds BLOB: names, host, model, metadata (values,
    keys, nested), contents (text and JSON), tool input, output and error, the end's
    error and metadata."""
    events = [
        ev(sid, 0, "session_start", agent="agent " + BLOB, host="host " + BLOB, pid=1,
           model="model " + BLOB,
           metadata={"env": BLOB, KEY_TOKEN: "a key", "nested": [{"deep": BLOB}]}),
        ev(sid, 1, "message", role="user", content=BLOB, metadata={"note": BLOB}),
        ev(sid, 2, "message", role="assistant " + BLOB,
           content=[{"type": "text", "text": BLOB}],
           metadata={"model": "m " + BLOB, "usage": {"input_tokens": 5, "output_tokens": 2}}),
        ev(sid, 3, "tool_started", call_id="c1", name="bash " + BLOB, input={"command": BLOB}),
        ev(sid, 4, "tool_finished", call_id="c1", output=BLOB),
        ev(sid, 5, "tool_started", call_id="c2", name="read", input=BLOB),
        ev(sid, 6, "tool_finished", call_id="c2", error=BLOB),
        ev(sid, 7, "session_end", status="error", error=BLOB, metadata={"final": BLOB}),
    ]  # fmt: skip
    return [e | {"producer_id": PRODUCER, "pseq": n} for n, e in enumerate(events)]


# How many fields above hold BLOB: agent, host, model, 3 in the start's metadata;
# content + note; role, content, metadata model; name, input; output; input; error;
# error, final. (The key token adds one github_token.)
BLOB_FIELDS = 6 + 2 + 3 + 2 + 1 + 1 + 1 + 2


def expected_counts() -> dict[str, int]:
    counts = Counter({kind: 0 for kind, _ in ONE_OF_EACH})
    for kind, _ in ONE_OF_EACH:
        counts[kind] += BLOB_FIELDS
    counts["github_token"] += 1
    return dict(counts)


def queue_leaky(spool: Path, sid: str = SID) -> None:
    queue_raw(spool, PRODUCER, [json.dumps(e).encode() for e in leaky_session(sid)])


def leaks(text: str) -> list[str]:
    return [needle[:12] + "..." for needle in NEEDLES if needle in text or needle[4:30] in text]


def spool_bytes(spool: Path, *subdirs: str) -> str:
    data = b"".join(
        p.read_bytes() for d in subdirs for p in sorted((spool / d).rglob("*")) if p.is_file()
    )
    return data.decode("latin-1")


def test_no_secret_reaches_a_replica_the_database_show_or_the_viewer(
    spool: Path, sqld: Sqld
) -> None:
    env = worker_env(spool, sqld.url)
    queue_leaky(spool)
    assert len(leaks(spool_bytes(spool, "queues"))) == len(NEEDLES)  # the check finds them
    peek = run_cli("queue", "peek", "--json", env=env, check=True).stdout
    assert leaks(peek) == [] and "[REDACTED:jwt]" in peek

    done = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert leaks(done.stdout + done.stderr) == []

    # No file left in the spool holds any: the replica, worker.db, their journals
    # (the queue file, raw until applied by design, is gone once its session synced).
    kept = [p for p in spool.rglob("*") if p.is_file() and "queues" not in p.parts]
    assert any(p.suffix == ".db" and p.parent.name == "replicas" for p in kept)
    assert leaks("".join(p.read_bytes().decode("latin-1") for p in kept)) == []
    assert worker_db_rows(spool, "SELECT count(*) FROM dead_letters") == [(0,)]
    assert leaks(str(worker_db_rows(spool, "SELECT * FROM session_state"))) == []

    # The database holds every row, redacted, and the counts by kind.
    rows = [
        sqld.query(f"SELECT * FROM {table}")  # noqa: S608 - the three table names
        for table in ("sessions", "messages", "tool_executions")
    ]
    assert [len(r) for r in rows] == [1, 2, 2]
    assert leaks(json.dumps(rows)) == []
    stored = json.dumps(rows)
    for kind, _ in ONE_OF_EACH:
        assert f"[REDACTED:{kind}]" in stored
    assert "postgres://app:[REDACTED:url_password]@db.internal:5432/app" in stored
    metadata = json.loads(sqld.scalar("SELECT metadata FROM sessions WHERE id = ?", (SID,)))
    assert metadata["redacted"] == expected_counts()
    assert metadata["env"].startswith("aws_access_key here: [REDACTED:aws_access_key] (end)")
    assert metadata["[REDACTED:github_token]"] == "a key"
    assert metadata["final"] == metadata["env"]  # the end's metadata, merged, redacted too

    # `show`, from the replica and from the database, and as JSON.
    for args in (("show", SID, "--full"), ("show", SID, "--json"),
                 ("show", SID, "--remote", "--json"), ("sessions", "--json")):  # fmt: skip
        out = run_cli(*args, env=env, check=True).stdout
        assert leaks(out) == [], args
        assert "[REDACTED:" in out, args

    # The viewer's JSON API.
    ui = UiServer(spool)
    try:
        for path in (
            "/api/sessions",
            f"/api/sessions/{SID}",
            f"/api/sessions/{SID}/details",
            f"/api/sessions/{SID}/events?limit=100",
            f"/api/sessions/{SID}/tools",
            f"/api/sessions/{SID}/messages/1?full=1",
            f"/api/sessions/{SID}/messages/2?full=1",
            f"/api/sessions/{SID}/tools/c1?full=1",
            f"/api/sessions/{SID}/tools/c2?full=1",
        ):
            status, body, _ = ui.get(path)
            assert status == 200, path
            assert leaks(body.decode()) == [], path
    finally:
        ui.stop()


def test_counts_add_up_across_drain_passes_and_replays(spool: Path) -> None:
    # The same events queued twice (a replay) count once; a later pass adds to the sums.
    env = worker_env(spool)
    queue_leaky(spool)
    queue_raw(spool, "replayer", [json.dumps(e).encode() for e in leaky_session()[:3]])
    done = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(run_cli("show", SID, "--json", env=env, check=True).stdout)
    metadata = out["session"]["metadata"]
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    assert metadata["redacted"] == expected_counts()


def test_redaction_off_keeps_the_text_as_it_is(spool: Path) -> None:
    env = worker_env(spool, AGENTSPOOL_REDACT="off")
    queue_leaky(spool)
    assert NEEDLES[0] in run_cli("queue", "peek", "--json", env=env, check=True).stdout
    done = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    out = run_cli("show", SID, "--json", env=env, check=True).stdout
    assert all(needle in json.loads(out)["messages"][0]["content"] for needle in NEEDLES)
    assert "REDACTED" not in out and '"redacted"' not in out


def test_a_custom_pattern_file_adds_kind_custom(spool: Path, tmp_path: Path) -> None:
    patterns = tmp_path / "patterns.txt"
    patterns.write_text("# ACME's internal tokens\n\nACME-[0-9]{6}\n")
    env = worker_env(spool, AGENTSPOOL_REDACT_PATTERNS=str(patterns))
    sid = "acme-1"
    queue_raw(spool, "acme", [json.dumps(e | {"producer_id": "acme", "pseq": n}).encode() for n, e in enumerate([
        ev(sid, 0, "session_start", agent="a"),
        ev(sid, 1, "message", role="user", content="use ACME-123456 and ACME-654321, not ACME-1"),
        ev(sid, 2, "session_end", status="completed"),
    ])])  # fmt: skip
    done = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = json.loads(run_cli("show", sid, "--json", env=env, check=True).stdout)
    content = shown["messages"][0]["content"]
    assert content == "use [REDACTED:custom] and [REDACTED:custom], not ACME-1"
    metadata = shown["session"]["metadata"]
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    assert metadata == {"redacted": {"custom": 2}}


def test_a_bad_pattern_stops_the_worker_at_start_in_one_line(spool: Path, tmp_path: Path) -> None:
    patterns = tmp_path / "patterns.txt"
    patterns.write_text("ACME-[0-9]{6}\n# fine so far\nsecret-(unclosed\n")
    env = worker_env(spool, AGENTSPOOL_REDACT_PATTERNS=str(patterns))
    queue_leaky(spool)
    for args in (("worker", "run", "--burst"), ("worker", "run")):
        result = run_cli(*args, env=env, timeout=60)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines == [
            f"Error: AGENTSPOOL_REDACT_PATTERNS: {patterns}:3: not a regular expression"
            " (missing ), unterminated subpattern)"
        ]
    assert not (spool / "replicas").exists() or not list((spool / "replicas").glob("*.db"))
    missing = worker_env(spool, AGENTSPOOL_REDACT_PATTERNS=str(tmp_path / "nope.txt"))
    result = run_cli("worker", "run", "--burst", env=missing, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: AGENTSPOOL_REDACT_PATTERNS: cannot read the pattern")
    assert len(result.stderr.strip().splitlines()) == 1


def test_dead_letter_views_print_no_secret_and_keep_the_item(spool: Path) -> None:
    env = worker_env(spool)
    token = KEY_TOKEN
    bad = ev("d-1", 1, "message", content=f"no role, and a token {token}") | {
        "producer_id": "bad", "pseq": 0}  # fmt: skip
    queue_raw(spool, "bad", [json.dumps(bad).encode(), f"not json {token}".encode()])
    done = run_cli("worker", "run", "--burst", env=env, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    letters = json.loads(run_cli("dead", "ls", "--json", env=env, check=True).stdout)
    assert letters["total"] == 2
    outputs = [run_cli("dead", "ls", env=env, check=True).stdout]
    for letter in letters["dead_letters"]:
        for extra in ((), ("--json",), ("--raw",)):
            outputs.append(
                run_cli("dead", "show", str(letter["id"]), *extra, env=env, check=True).stdout
            )
    for out in outputs:
        assert token not in out
    assert sum("[REDACTED:github_token]" in out for out in outputs) == 6
    shown = json.loads(run_cli("dead", "show", str(letters["dead_letters"][0]["id"]), "--json",
                               env=env, check=True).stdout)  # fmt: skip
    assert shown["event"]["content"] == "no role, and a token [REDACTED:github_token]"
    # The stored item keeps its bytes (requeue sends it back as it was).
    stored = worker_db_rows(spool, "SELECT data FROM dead_letters ORDER BY id")
    assert token.encode() in stored[0][0] and token.encode() in stored[1][0]
    off = worker_env(spool, AGENTSPOOL_REDACT="off")
    assert token in run_cli("dead", "show", str(letters["dead_letters"][0]["id"]), env=off,
                            check=True).stdout  # fmt: skip
