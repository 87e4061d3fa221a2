"""Upgrading in place from schema version 1, with the real version-1 agentspool.

The last release with schema version 1 is taken from this repository's history
(``git archive``) and run from its source, laid out as its wheel installs it. It
syncs sessions to a real sqld and leaves others waiting in its spool; this
agentspool then meets both: the database and the replicas are migrated in place,
every row is kept, and the waiting sessions land with their version-2 columns
filled from what the old worker kept in the messages' metadata."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from agentspool.worker import migrations
from tests.helpers import run_cli, worker_env
from tests.sqld import REPO, Sqld, free_port

# The last commit whose agentspool had schema version 1 only.
VERSION_1_COMMIT = "a0b9205"

# Where each source directory goes in the installed package (pyproject.toml's wheel map).
_LAYOUT = {
    "producer/_package_root.py": "agentspool/__init__.py",
    "producer/integrations": "agentspool/integrations",
    "producer": "agentspool/producer",
    "worker": "agentspool/worker",
    "schema": "agentspool/schema",
}


@pytest.fixture(scope="module")
def version_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The version-1 agentspool's package, importable from the returned directory."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", VERSION_1_COMMIT, *_LAYOUT_SOURCES],
        capture_output=True,
        timeout=60,
    )
    assert archive.returncode == 0, archive.stderr.decode()
    root = tmp_path_factory.mktemp("agentspool-v1")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            target = _installed_path(member.name)
            dest = root / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            dest.write_bytes(source.read())
    return root


_LAYOUT_SOURCES = ["producer", "worker", "schema"]


def _installed_path(name: str) -> str:
    for source, target in _LAYOUT.items():
        if name == source or name.startswith(source + "/"):
            return target + name[len(source) :]
    raise AssertionError(f"unexpected file {name} in the archive")


def old_cli(version_1: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(env, PYTHONPATH=str(version_1), PYTHONSAFEPATH="1")
    code = "import sys; from agentspool.worker.cli import run; sys.argv[0] = 'agentspool'; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=180
    )


def old_producer(version_1: Path, spool: Path, session_id: str, usage: dict[str, int]) -> None:
    code = (
        "import sys; from agentspool import Spool\n"
        "spool = Spool(sys.argv[1])\n"
        "with spool.session('legacy', session_id=sys.argv[2]) as s:\n"
        "    s.message('user', 'question')\n"
        "    s.message('assistant', 'answer', model='claude-x', usage=eval(sys.argv[3]))\n"
        "    s.tool_call('grep', {'q': 'x'}, output='1 match')\n"
        "spool.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(version_1), PYTHONSAFEPATH="1")
    done = subprocess.run(
        [sys.executable, "-c", code, str(spool), session_id, repr(usage)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


ANTHROPIC = {
    "input_tokens": 10,
    "output_tokens": 20,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 5,
}


def test_a_version_1_database_and_spool_upgrade_in_place(
    version_1: Path, spool: Path, sqld: Sqld
) -> None:
    # The old worker syncs one session: the database is at version 1, with data.
    old_producer(version_1, spool, "synced-by-v1", ANTHROPIC)
    result = old_cli(version_1, worker_env(spool, sqld.url), "worker", "run", "--burst")
    assert result.returncode == 0, result.stderr
    assert sqld.query("SELECT version FROM schema_version") == [[1]]
    # ... and leaves another waiting in its spool (the database is unreachable then).
    old_producer(version_1, spool, "waiting-in-v1-spool", ANTHROPIC)
    closed = f"http://127.0.0.1:{free_port()}"
    result = old_cli(
        version_1,
        worker_env(spool, closed, AGENTSPOOL_BURST_TIMEOUT="3"),
        "worker",
        "run",
        "--burst",
    )
    assert result.returncode != 0  # gave up: the session is still pending
    old_columns = {r[1] for r in _table_info(spool, "waiting-in-v1-spool", "messages")}
    assert "input_tokens" not in old_columns  # a real version-1 replica
    # This agentspool reads it before any worker of its own has touched it.
    shown = run_cli("show", "waiting-in-v1-spool", env=worker_env(spool))
    assert shown.returncode == 0 and "answer" in shown.stdout, shown.stderr
    # So does `stats`: the replica has no token columns yet, which read as unknown.
    counted = run_cli("stats", "--json", env=worker_env(spool))
    assert counted.returncode == 0, counted.stderr
    totals = json.loads(counted.stdout)["totals"]
    assert totals["sessions"] >= 1 and totals["input_tokens"] is None

    result = run_cli("worker", "run", "--burst", env=worker_env(spool, sqld.url), timeout=180)
    assert result.returncode == 0, result.stderr

    versions = sqld.query("SELECT version FROM schema_version ORDER BY version")
    assert versions == [[v] for v in range(1, migrations.latest_version() + 1)]
    counts = sqld.query(
        "SELECT s.id, s.status, s.message_count, s.tool_count,"
        " (SELECT count(*) FROM messages m WHERE m.session_id = s.id),"
        " (SELECT count(*) FROM tool_executions t WHERE t.session_id = s.id)"
        " FROM sessions s ORDER BY s.id"
    )
    assert counts == [
        ["synced-by-v1", "completed", 2, 1, 2, 1],
        ["waiting-in-v1-spool", "completed", 2, 1, 2, 1],
    ]
    # The session that waited in the old spool lands with the new columns filled from
    # the metadata the old worker kept; the one synced before keeps its rows as they
    # were (its token columns are unknown: NULL, its metadata still has the usage).
    rows = sqld.query(
        "SELECT id, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens"
        " FROM sessions ORDER BY id"
    )
    assert rows == [
        ["synced-by-v1", None, None, None, None, None],
        ["waiting-in-v1-spool", "claude-x", 115, 20, 100, 5],
    ]
    usage = json.loads(
        sqld.scalar("SELECT metadata FROM messages WHERE session_id = 'synced-by-v1' AND seq = 2")
    )["usage"]
    assert usage == ANTHROPIC


def _table_info(spool: Path, session_id: str, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{spool / 'replicas' / f'{session_id}.db'}?mode=ro", uri=True)
    try:
        return conn.execute(f"PRAGMA table_info({table})").fetchall()
    finally:
        conn.close()
