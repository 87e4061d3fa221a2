"""Security: the worker refuses a spool other users can write to, and a valid auth
token never appears in any output or file (the bad-token case is in
test_worker_faults.py, the pickle payload too)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from agentspool import Spool
from agentspool.producer import queuefile
from agentspool.worker.security import InsecureSpool, check_spool_private
from tests.daemon.test_worker_faults import (
    add_counts,
    expected_counts,
    produce,
    remote_counts,
    remote_counts_or_none,
    status_json,
    wait_worker_up,
)
from tests.helpers import finish, run_cli, start_worker, stop_process, wait_until, worker_env
from tests.sqld import eddsa_jwt, start_auth_sqld

# ---- 1. a spool others can write to is refused -----------------------------------

INSECURE = [
    ("spool-group-writable", "", 0o770),
    ("spool-world-writable", "", 0o707),
    ("spool-sticky-like-tmp", "", 0o1777),
    ("queues-group-writable", queuefile.QUEUES_DIRNAME, 0o720),
    ("queues-world-writable", queuefile.QUEUES_DIRNAME, 0o777),
]


@pytest.mark.parametrize("sub,mode", [c[1:] for c in INSECURE], ids=[c[0] for c in INSECURE])
def test_worker_refuses_a_spool_others_can_write(spool: Path, sub: str, mode: int) -> None:
    producer = Spool(spool)
    session = producer.session(agent="a", session_id="kept")
    assert session.end(timeout=30)
    producer.close()
    target = spool / sub
    os.chmod(target, mode)
    env = worker_env(spool)
    for args in (["--burst"], []):  # burst and service mode alike
        result = run_cli("worker", "run", *args, env=env, timeout=60)
        assert result.returncode == 1, (args, result.returncode, result.stderr)
        assert "refusing to drain" in result.stderr, result.stderr
        assert f"chmod go-w {target}" in result.stderr
        assert f"{stat.S_IMODE(mode):04o}" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (spool / "worker.db").exists(), "the worker touched the spool before refusing"
    assert len(queuefile.list_queue_dirs(spool)) == 1  # nothing drained, nothing removed

    os.chmod(target, 0o700)  # the fix the message names
    fixed = run_cli("worker", "run", "--burst", env=env, timeout=60)
    assert fixed.returncode == 0, fixed.stderr
    assert status_json(env)["sessions"]["synced"] == 1


def test_private_and_read_only_shared_spools_are_accepted(tmp_path: Path) -> None:
    for mode in (0o700, 0o750, 0o755, 0o500):
        spool = tmp_path / f"spool-{mode:o}"
        (spool / queuefile.QUEUES_DIRNAME).mkdir(parents=True)
        os.chmod(spool, mode)
        check_spool_private(spool)  # no raise
    missing = tmp_path / "not-created-yet"
    check_spool_private(missing)  # the worker creates it 0700
    os.chmod(tmp_path / "spool-500", 0o722)
    with pytest.raises(InsecureSpool, match="group and others"):
        check_spool_private(tmp_path / "spool-500")


def test_the_producer_creates_the_spool_private(tmp_path: Path) -> None:
    spool = tmp_path / "fresh" / "spool"
    producer = Spool(spool)
    assert producer.session(agent="a").end(timeout=30)
    producer.close()
    queue_dir = spool / queuefile.QUEUES_DIRNAME / producer.producer_id
    for path in (spool, spool / queuefile.QUEUES_DIRNAME, queue_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE(queuefile.queue_db_path(queue_dir).stat().st_mode) == 0o600
    check_spool_private(spool)


# ---- 2. a valid token is never printed or stored ---------------------------------


def test_a_valid_token_never_appears_in_any_output_or_file(
    spool: Path, sqld_bin: Path, tmp_path: Path
) -> None:
    server, key = start_auth_sqld(sqld_bin, tmp_path / "sqld-auth")
    token = eddsa_jwt(key, {"a": "rw", "nonce": os.urandom(8).hex()})
    signature = token.rsplit(".", 1)[1]  # the secret part, on its own
    server.auth_token = token
    outputs: list[str] = []
    expected = add_counts(expected_counts(2, 40), (1, 1, 0, 3))
    try:
        # Dead letters and a failed session in the spool too: every place that stores
        # or prints a reason is exercised.
        producer = Spool(spool)
        s = producer.session(agent="token-test", session_id="with-junk")
        s.message("user", "hello")
        assert s.end(timeout=30)
        producer.close()
        queue_db = queuefile.queue_db_path(spool / queuefile.QUEUES_DIRNAME / producer.producer_id)
        conn = sqlite3.connect(queue_db)
        with conn:
            conn.execute(
                f"INSERT INTO {queuefile.TABLE} (data, timestamp, status) VALUES (?, ?, 0)",  # noqa: S608
                (b"{not json", time.time()),
            )
        conn.close()

        env = worker_env(spool, server.url, TURSO_AUTH_TOKEN=token, RUST_LOG="")
        worker = start_worker(env, "--verbose")
        try:
            wait_worker_up(env, worker)
            finish(produce(spool, "tok", 2, 40))
            wait_until(
                lambda: remote_counts_or_none(server) == expected,
                60,
                "the sessions to sync with the valid token",
            )
            # Command lines are visible to every user (ps): the token must not be there.
            cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes()
            assert token.encode() not in cmdline and signature.encode() not in cmdline
            for args in (["status"], ["status", "--json"]):
                result = run_cli(*args, env=env, timeout=30, check=True)
                outputs += [result.stdout, result.stderr]
        finally:
            out, err = stop_process(worker)
        outputs += [out, err]
        assert worker.returncode == 0, err
        assert "synced session" in err  # the verbose log did talk about the sync

        burst = run_cli("worker", "run", "--burst", "--verbose", env=env, timeout=60)
        outputs += [burst.stdout, burst.stderr]
        assert burst.returncode == 0, burst.stderr
        report = status_json(env)
        outputs.append(json.dumps(report))
        assert report["dead_letters"] == 1 and report["sessions"]["synced"] == 3
        assert remote_counts(server) == expected
    finally:
        server.stop()

    for text in outputs:
        assert token not in text and signature not in text, "the token leaked into output"
    files = [p for p in spool.rglob("*") if p.is_file()]
    assert any(p.name == "worker.db" for p in files) and any(p.suffix == ".db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert token.encode() not in data and signature.encode() not in data, path
