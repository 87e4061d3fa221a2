"""The real OpenCode for the tests and the bench: installed once from npm, run offline.

``opencode-ai`` brings a Bun single-file binary (``opencode.exe``, from its optional
native package); ``@opencode-ai/plugin`` must already be in the project's
``.opencode/`` and in ``~/.config/opencode/``, else OpenCode tries to install it at
start and stalls for about 70 s offline. Both are npm-installed once into
``.cache/npm/`` (tests/clients/npm.py); each home gets the plugin package's
``package.json`` and a symlink to its ``node_modules``.

An ``OpenCodeHome`` is a fresh HOME and project whose ``opencode.json`` names a custom
provider (``@ai-sdk/openai-compatible``, built into OpenCode) at a fake OpenAI server
(tests/fakes/openai_chat_stream.py), with a price per token so OpenCode computes a
cost. agentspool's plugin is installed the way a user does it (``agentspool hook
opencode --install``). Runs go through ``nsenter`` into a loopback-only network
namespace (tests/netns.py), with ``PWD`` set (OpenCode takes its project from it) and
``OPENCODE_DISABLE_MODELS_FETCH=1``. OpenCode's own database,
``~/.local/share/opencode/opencode.db``, is the tests' oracle (``oracle()``).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.clients.npm import installed
from tests.netns import LoopbackNamespace

VERSION = "1.18.33"
AGENTSPOOL = str(Path(sys.executable).parent / "agentspool")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_TIMEOUT_S = 180.0
PROVIDER = "fake"
MODEL = "m1"
# US dollars per million tokens (OpenCode's config unit): every count costs something,
# so a wrong count shows in the cost too.
PRICES = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}


def opencode_binary() -> Path:
    return installed(f"opencode-ai@{VERSION}") / "node_modules/opencode-ai/bin/opencode.exe"


def plugin_package() -> Path:
    """The npm install of ``@opencode-ai/plugin`` (``package.json`` + ``node_modules``)."""
    return installed(f"@opencode-ai/plugin@{VERSION}")


def _preinstall_plugin_package(config_dir: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    package = plugin_package()
    (config_dir / "package.json").write_text((package / "package.json").read_text())
    lock = package / "package-lock.json"
    if lock.exists():
        (config_dir / "package-lock.json").write_text(lock.read_text())
    (config_dir / "node_modules").symlink_to(package / "node_modules")


@dataclass
class OpenCodeRun:
    returncode: int
    stdout: str
    stderr: str


class OpenCodeProcess:
    """A started ``opencode run``: wait for it, or SIGKILL it mid-stream."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> OpenCodeRun:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"opencode did not finish within {timeout}s:\n{out}\n{err}") from None
        return OpenCodeRun(self.proc.returncode, out, err)

    def kill(self) -> None:
        """SIGKILL, as an OOM killer or a CI job's timeout would: nsenter execs the
        client, so this pid is OpenCode's own."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


class OpenCodeHome:
    def __init__(
        self,
        binary: Path,
        namespace: LoopbackNamespace,
        base_url: str,
        root: Path,
        spool: Path,
        *,
        with_agentspool: bool = True,
    ) -> None:
        self.binary = binary
        self.namespace = namespace
        self.root = root
        self.home = root / "home"
        self.project = root / "project"
        self.spool = spool
        self.project.mkdir(parents=True, exist_ok=True)
        _preinstall_plugin_package(self.project / ".opencode")
        _preinstall_plugin_package(self.home / ".config" / "opencode")
        model: dict[str, Any] = {"cost": PRICES}
        config = {
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                PROVIDER: {
                    "npm": "@ai-sdk/openai-compatible",
                    "options": {"baseURL": base_url, "apiKey": "sk-fake"},
                    "models": {MODEL: model},
                }
            },
            "model": f"{PROVIDER}/{MODEL}",
            "autoupdate": False,
            "share": "disabled",
        }
        (self.project / "opencode.json").write_text(json.dumps(config, indent=2))
        if with_agentspool:
            subprocess.run(
                [AGENTSPOOL, "hook", "opencode", "--install", "--project", str(self.project)],
                check=True, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": SYSTEM_PATH,
            "HOME": str(self.home),
            "PWD": str(self.project),
            "LANG": "C.UTF-8",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "AGENTSPOOL_DIR": str(self.spool),
            **extra,
        }

    def start(self, prompt: str, session: str | None = None, **env: str) -> OpenCodeProcess:
        args = [str(self.binary), "run"]
        if session is not None:
            args += ["--session", session]
        proc = subprocess.Popen(
            [*self.namespace.prefix(), *args, prompt],
            cwd=self.project, env=self.env(**env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        return OpenCodeProcess(proc)

    def run(self, prompt: str, session: str | None = None, **env: str) -> OpenCodeRun:
        result = self.start(prompt, session, **env).wait()
        assert result.returncode == 0, f"opencode exited {result.returncode}:\n{result.stderr}"
        return result

    def oracle(self) -> Oracle:
        return Oracle(self.home / ".local/share/opencode/opencode.db")


class Oracle:
    """OpenCode's own database, read-only: what agentspool must have recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def sessions(self) -> list[dict[str, Any]]:
        """Every session, oldest first: id, parent_id, title, cost and token sums."""
        return [
            dict(r)
            for r in self._rows(
                "SELECT id, parent_id, title, cost, tokens_input, tokens_output,"
                " tokens_cache_read, tokens_cache_write FROM session ORDER BY time_created, id"
            )
        ]

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        """A session's messages in order, each its ``data`` with ``id`` and ``text`` (its
        text parts joined) and ``tools`` (its tool parts) added."""
        found = []
        for row in self._rows(
            "SELECT id, data FROM message WHERE session_id = ? ORDER BY time_created, id",
            (session_id,),
        ):
            data = json.loads(row["data"])
            parts = [
                json.loads(p["data"])
                for p in self._rows(
                    "SELECT data FROM part WHERE message_id = ? ORDER BY id", (row["id"],)
                )
            ]
            texts = [p["text"] for p in parts if p.get("type") == "text" and p.get("text")]
            data.update(
                id=row["id"],
                text="\n".join(texts) if texts else None,
                tools=[p for p in parts if p.get("type") == "tool"],
            )
            found.append(data)
        return found
