"""The first hour (issue 13): each mistake a new user makes gets a clear answer from
the real command (exit status and words), and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import AGENTSPOOL, run_cli, worker_env

REPO = Path(__file__).resolve().parents[2]
ACCEPTED = "accepted: libsql://"


def no_settings_env(home: Path, **extra: str) -> dict[str, str]:
    """HOME only: none of agentspool's settings, no XDG directories."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENTSPOOL_", "TURSO_", "XDG_")) and k != "HOME"
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


# ---- 1. a malformed database URL -----------------------------------------------


@pytest.mark.parametrize(
    "given,shown",
    [
        ("not a url", "'not a url'"),
        ("htps://db.example.io", "'htps://db.example.io'"),
        ("libsq://db-org.turso.io", "'libsq://db-org.turso.io'"),
        ("https://", "'https://'"),
        # credentials and query strings are never echoed
        ("htps://user:hunter2-SECRET@db.example.io/x?authToken=hunter2-SECRET",
         "'htps://db.example.io/x'"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("how", ["--db", "env"])
def test_a_malformed_database_url_is_one_line_naming_it(
    spool: Path, given: str, shown: str, how: str
) -> None:
    env = worker_env(spool, **({"TURSO_DATABASE_URL": given} if how == "env" else {}))
    args = ["--db", given] if how == "--db" else []
    started = time.monotonic()
    result = run_cli("worker", "run", "--burst", *args, env=env, timeout=30)
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback, no retry loop
    assert shown in lines[0] and ACCEPTED in lines[0] and "https://" in lines[0]
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_every_command_shares_the_url_check(spool: Path) -> None:
    env = worker_env(spool, TURSO_DATABASE_URL="libsq://db-org.turso.io")
    for args in (["migrate", "--dry-run"], ["sessions", "--remote"], ["worker", "run", "--burst"]):
        result = run_cli(*args, env=env, timeout=30)
        assert result.returncode == 1, (args, result.stderr)
        assert "'libsq://db-org.turso.io' is not a database URL" in result.stderr, args
        assert "Traceback" not in result.stderr


# ---- 3. a spool path that cannot be used ---------------------------------------


def unusable_spools(tmp_path: Path) -> dict[str, tuple[list[str], Path]]:
    """name -> (command prefix that runs as the user who meets it, spool path)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    cases: dict[str, tuple[list[str], Path]] = {"parent is a file": ([], blocker / "spool")}
    private = tmp_path / "roots-only"
    private.mkdir(mode=0o700)
    setpriv = shutil.which("setpriv")
    if setpriv and os.geteuid() == 0:  # root may read anything: be somebody else
        tmp_path.chmod(0o755)
        cases["no permission"] = (
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
            private / "spool",
        )
    elif os.geteuid() != 0:
        cases["no permission"] = ([], private / "spool")
        private.chmod(0o000)
    return cases


def read_only_mount(tmp_path: Path) -> Path | None:
    """A read-only tmpfs in a private mount namespace (root only), or None."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return None
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {tmp_path}"],
        capture_output=True,
        timeout=30,
    )
    return tmp_path if probe.returncode == 0 else None


def run_as(prefix: list[str], *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, AGENTSPOOL, *args], env=env, capture_output=True, text=True, timeout=60
    )


def assert_one_line_reason(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    for word in words:
        assert word in error_lines[0], (word, error_lines[0])


def test_status_check_and_burst_on_an_unusable_spool(tmp_path: Path) -> None:
    cases = unusable_spools(tmp_path)
    assert "no permission" in cases  # this test must cover permissions where it runs
    for name, (prefix, path) in cases.items():
        env = worker_env(path)
        env.pop("AGENTSPOOL_DIR")
        for args in (["status", "--check"], ["worker", "run", "--burst"]):
            result = run_as(prefix, *args, "--spool", str(path), env=env)
            reason = "regular file" if name == "parent is a file" else "permission denied"
            assert_one_line_reason(result, f"cannot use the spool {path}", reason)
        for args in (["drain", "--timeout", "5s"], ["status"]):
            result = run_as(prefix, *args, "--spool", str(path), env=env)
            assert_one_line_reason(result, f"cannot use the spool {path}")
        # the reading commands answer in one line too (an empty answer, or the reason)
        for args in (["sessions"], ["show", "x"], ["queue", "ls"], ["dead", "ls"], ["verify"],
                     ["retry", "--failed"], ["prune"]):  # fmt: skip
            result = run_as(prefix, *args, "--spool", str(path), env=env)
            assert "Traceback" not in result.stderr, (name, args, result.stderr)
            assert len(result.stderr.strip().splitlines()) <= 1, (name, args, result.stderr)


def test_status_check_and_burst_on_a_read_only_mount(tmp_path: Path) -> None:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    if read_only_mount(mount_point) is None:
        pytest.skip("cannot mount a read-only tmpfs here (needs root and unshare)")
    spool = mount_point / "spool"
    env = worker_env(spool)
    script = textwrap.dedent(f"""
        mount -t tmpfs -o ro tmpfs {mount_point}
        {AGENTSPOOL} status --check --spool {spool} >status.out 2>status.err; echo $? >status.rc
        {AGENTSPOOL} worker run --burst --spool {spool} >burst.out 2>burst.err; echo $? >burst.rc
    """)
    subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, env=env, timeout=60,
                   check=True)  # fmt: skip
    status_out = (tmp_path / "status.out").read_text()
    assert (tmp_path / "status.rc").read_text().strip() == "1"
    assert "producers cannot write to the spool" in status_out
    assert "read-only file system" in status_out
    assert "Traceback" not in (tmp_path / "status.err").read_text()
    burst_err = (tmp_path / "burst.err").read_text()
    assert (tmp_path / "burst.rc").read_text().strip() == "1"
    assert burst_err.count("\n") == 1 and "read-only file system" in burst_err, burst_err


PRODUCER_ON_BAD_SPOOL = """
import json, logging, sys
from agentspool import Spool
spool = Spool(sys.argv[1])
ends = []
for n in range(5):
    s = spool.session(agent="first-hour")
    for i in range(20):
        s.message("user", f"message {i}")
    ends.append(s.end(timeout=0.3))
stats = spool.stats()
print(json.dumps({"ends": ends, "write_errors": stats.write_errors, "last_error": stats.last_error}))
"""


def test_a_producer_on_an_unusable_spool_warns_once_and_end_says_false(tmp_path: Path) -> None:
    for name, (prefix, path) in unusable_spools(tmp_path).items():
        result = subprocess.run(
            [*prefix, sys.executable, "-c", PRODUCER_ON_BAD_SPOOL, str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, (name, result.stderr)
        report = json.loads(result.stdout)
        assert report["ends"] == [False] * 5, name
        assert report["write_errors"] >= 1 and report["last_error"], name
        warnings = [line for line in result.stderr.splitlines() if "cannot write" in line]
        assert len(warnings) == 1, (name, result.stderr)
        assert str(path) in warnings[0], (name, warnings[0])


# ---- 5. no settings at all -----------------------------------------------------

PRODUCER_WITH_DEFAULTS = """
from agentspool import Spool
spool = Spool()
print(spool.path)
with spool.session(agent="defaults", session_id="defaults-1") as s:
    s.message("user", "where does this go?")
assert spool.flush(10)
"""


@pytest.mark.parametrize("xdg", [False, True])
def test_producer_and_cli_agree_on_the_default_spool(tmp_path: Path, xdg: bool) -> None:
    home = tmp_path / "home"
    home.mkdir()
    extra = {"XDG_STATE_HOME": str(tmp_path / "state")} if xdg else {}
    env = no_settings_env(home, **extra)
    expected = (tmp_path / "state" if xdg else home / ".local" / "state") / "agentspool"
    produced = subprocess.run([sys.executable, "-c", PRODUCER_WITH_DEFAULTS], env=env,
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.strip() == str(expected)
    burst = run_cli("worker", "run", "--burst", env=env)
    assert burst.returncode == 0, burst.stderr
    assert str(expected) in burst.stderr  # "draining <spool>"
    listing = json.loads(run_cli("sessions", "--json", env=env, check=True).stdout)
    assert listing["spool"] == str(expected)
    assert [s["session_id"] for s in listing["sessions"]] == ["defaults-1"]
    status = json.loads(run_cli("status", "--json", env=env, check=True).stdout)
    assert status["spool"] == str(expected) and status["sessions"]["synced"] == 1


def test_docs_unit_and_example_agree_on_the_default_spool() -> None:
    user_default = "~/.local/state/agentspool"
    for doc in ("README.md", "docs/CLI.md", ".env.example"):
        assert user_default in (REPO / doc).read_text(), doc
    example = (REPO / ".env.example").read_text()
    assert "\nAGENTSPOOL_DIR=\n" in example  # an empty value: the same default as Spool()
    for unit in (REPO / "systemd").glob("*.service"):
        text = unit.read_text()
        # /var/lib/agentspool only where the unit creates it and says so
        assert "StateDirectory=agentspool" in text, unit.name
        assert "Environment=AGENTSPOOL_DIR=/var/lib/agentspool" in text, unit.name


# ---- 6. CLI habits: --spool before the command, durations with units -----------


def test_spool_before_the_command_works_for_every_spool_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agentspool.worker.cli import main
    from tests.cli.test_cli import COMMANDS

    takes_spool = [name for name, cmd in COMMANDS if any(p.name == "spool_dir" for p in cmd.params)]
    assert {"status", "sessions", "prune", "worker run", "queue ls", "dead ls"} <= set(takes_spool)
    spool = tmp_path / "before"
    runner = CliRunner()
    for name in takes_spool:
        command = next(cmd for n, cmd in COMMANDS if n == name)
        seen: list[Path | None] = []
        callback = command.callback
        assert callback is not None

        def record(*args: object, _seen: list[Path | None] = seen, **kwargs: object) -> None:
            _seen.append(kwargs.get("spool_dir"))  # type: ignore[arg-type]

        command.callback = record
        try:
            extra = {"show": ["x"], "retry": ["x"], "delete": ["x"], "dead show": ["1"],
                     "emit": []}.get(name, [])  # fmt: skip
            result = runner.invoke(main, ["--spool", str(spool), *name.split(), *extra])
        finally:
            command.callback = callback
        if name == "emit":  # its required options are checked before the callback
            continue
        assert result.exit_code == 0, (name, result.output)
        assert seen == [spool], name


def test_spool_before_the_command_real_process(tmp_path: Path) -> None:
    spool = tmp_path / "s"
    env = worker_env(tmp_path / "not-this-one")
    produced = subprocess.run(
        [sys.executable, "-c", PRODUCER_WITH_DEFAULTS], env=dict(env, AGENTSPOOL_DIR=str(spool)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    run_cli("--spool", str(spool), "worker", "run", "--burst", env=env, check=True)
    status = json.loads(run_cli("--spool", str(spool), "status", "--json", env=env).stdout)
    assert status["spool"] == str(spool) and status["sessions"]["synced"] == 1
    # the command's own --spool wins over the one before it
    other = json.loads(
        run_cli(
            "--spool", str(spool), "status", "--json", "--spool", str(tmp_path / "o"), env=env
        ).stdout  # fmt: skip
    )
    assert other["spool"] == str(tmp_path / "o")
    assert not (tmp_path / "not-this-one").exists()


def test_durations_take_units_everywhere(tmp_path: Path) -> None:
    spool = tmp_path / "s"
    env = worker_env(spool)
    subprocess.run([sys.executable, "-c", PRODUCER_WITH_DEFAULTS], env=env, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    run_cli("worker", "run", "--burst", "--sync-timeout", "30s", env=env, check=True)
    kept = run_cli("prune", "--older-than", "7d", "--dry-run", env=env, check=True)
    assert "would delete 0 replica(s)" in kept.stdout
    gone = run_cli("prune", "--older-than", "1ms", "--dry-run", env=env, check=True)
    assert "would delete 1 replica(s)" in gone.stdout
    assert run_cli("status", "--check", "--max-age", "10m", env=env).returncode == 0
    assert run_cli("sessions", "--since", "1h30m", env=env, check=True).stdout.count("defaults-1")
    bad = run_cli("prune", "--older-than", "7 days", env=env)
    assert bad.returncode == 2 and "'7 days' is not a number of seconds or a duration" in bad.stderr
    # the settings in seconds read the same forms
    assert run_cli("status", env=dict(env, AGENTSPOOL_RETAIN_SYNCED="7d")).returncode == 0
    bad_env = run_cli("status", env=dict(env, AGENTSPOOL_RETAIN_SYNCED="a week"))
    assert bad_env.returncode == 1 and "AGENTSPOOL_RETAIN_SYNCED must be" in bad_env.stderr
