"""The worker trusts nothing in the spool it did not make (issue 26, item 3): a spool,
or a directory in it, that is a link, is owned by another user or is writable by
group or others is refused with one line and exit 1, by ``worker run`` and by
``verify``, before anything in it is created, opened or moved. (The issue's attack: a
root worker given a ``replicas/`` linked to a root-only directory added agentspool
tables to root's SQLite file there, moved root's ``junk.db`` into the spool's
quarantine and created files in root's directory.)"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from agentspool import Spool
from agentspool.producer import queuefile
from agentspool.worker.intake.replica import Replica
from tests.helpers import run_cli, worker_env

NOBODY = 65534


def _with_one_session(spool: Path) -> None:
    producer = Spool(spool)
    assert producer.session(agent="a", session_id="kept").end(timeout=30)
    producer.close()


def _foreign_dir(tmp_path: Path) -> Path:
    """A directory of someone else's: a SQLite file and a file that is not one."""
    other = tmp_path / "root-only"
    other.mkdir(mode=0o700)
    conn = sqlite3.connect(other / "precious.db")
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    (other / "junk.db").write_bytes(b"not a database")
    return other


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def _refused(spool: Path, env: dict[str, str], expected: str) -> None:
    """``worker run`` (burst and service) and ``verify`` refuse: exit 1, one line."""
    for args in (["worker", "run", "--burst"], ["worker", "run"], ["verify"]):
        result = run_cli(*args, env=env, timeout=60)
        assert result.returncode == 1, (args, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)


@pytest.mark.parametrize("linked", ["replicas", "queues"])
def test_a_linked_directory_in_the_spool_is_refused_and_its_target_untouched(
    spool: Path, tmp_path: Path, linked: str
) -> None:
    _with_one_session(spool)
    other = _foreign_dir(tmp_path)
    before = _snapshot(other)
    if (spool / linked).exists():
        os.rename(spool / linked, tmp_path / f"{linked}-moved-away")
    (spool / linked).symlink_to(other)
    _refused(spool, worker_env(spool), f"{spool / linked} is a symbolic link (to {other})")
    assert _snapshot(other) == before
    assert sorted(p.name for p in other.iterdir()) == ["junk.db", "precious.db"]
    assert not (spool / "worker.db").exists()


def test_a_linked_spool_is_refused(tmp_path: Path) -> None:
    other = _foreign_dir(tmp_path)
    before = _snapshot(other)
    link = tmp_path / "spool"
    link.symlink_to(other)
    _refused(link, worker_env(link), f"{link} is a symbolic link")
    assert _snapshot(other) == before
    assert sorted(p.name for p in other.iterdir()) == ["junk.db", "precious.db"]


def test_a_linked_file_in_the_spool_is_refused(spool: Path, tmp_path: Path) -> None:
    _with_one_session(spool)
    other = _foreign_dir(tmp_path)
    before = _snapshot(other)
    (spool / "replicas").mkdir(mode=0o700, exist_ok=True)
    (spool / "replicas" / "kept.db").symlink_to(other / "precious.db")
    _refused(spool, worker_env(spool), "is a symbolic link")
    assert _snapshot(other) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_spool_owned_by_another_user_is_refused(spool: Path) -> None:
    _with_one_session(spool)
    for path in [spool, *spool.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    _refused(spool, worker_env(spool), "Run the worker as the spool's owner: sudo -u")
    for path in [spool, *spool.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
    fixed = run_cli("worker", "run", "--burst", env=worker_env(spool), timeout=60)
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.parametrize(
    "path,mode,expected",
    [
        ("replicas", 0o777, "replicas is writable by group and others (mode 0777)"),
        ("replicas/.template", 0o770, ".template is writable by group (mode 0770)"),
        ("worker.db", 0o666, "worker.db is writable by group and others (mode 0666)"),
    ],
)
def test_writable_directories_and_worker_files_are_refused(
    spool: Path, path: str, mode: int, expected: str
) -> None:
    _with_one_session(spool)
    env = worker_env(spool)
    assert run_cli("worker", "run", "--burst", env=env, timeout=60).returncode == 0
    os.chmod(spool / path, mode)
    _refused(spool, env, expected)


def test_files_are_opened_without_following_links(tmp_path: Path) -> None:
    """After the start-up check only the spool's owner can add a link; the files
    SQLite opens are still checked, since SQLite would follow one."""
    other = _foreign_dir(tmp_path)
    replicas = tmp_path / "spool" / "replicas"
    replicas.mkdir(parents=True)
    (replicas / "s.db").symlink_to(other / "precious.db")
    with pytest.raises(OSError, match="symbolic link"):
        Replica(replicas / "s.db")
    queue_dir = tmp_path / "spool" / queuefile.QUEUES_DIRNAME / "p-1"
    queue_dir.parent.mkdir(parents=True)
    queue_dir.symlink_to(other)
    with pytest.raises(OSError, match="symbolic link"):
        queuefile.connect(queue_dir)
    assert sorted(p.name for p in other.iterdir()) == ["junk.db", "precious.db"]
