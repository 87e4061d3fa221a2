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
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.clients.npm import installed
from tests.helpers import communicate_or_fail, sigkill
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
        out, err = communicate_or_fail(self.proc, timeout, "opencode")
        return OpenCodeRun(self.proc.returncode, out, err)

    def kill(self) -> None:
        """SIGKILL, as an OOM killer or a CI job's timeout would: nsenter execs the
        client, so this pid is OpenCode's own."""
        sigkill(self.proc)


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


# ---- the plugin outside OpenCode: hook calls replayed in OpenCode's own Bun --------

REPLAY_SCRIPT = Path(__file__).with_name("opencode_replay.js")


def plugin_file() -> Path:
    """The plugin as the installed package ships it."""
    import agentspool.integrations.opencode as package

    return Path(package.__file__).parent / package.PLUGIN_NAME


def replay(calls: list[list[Any]], spool: Path, workdir: Path) -> list[int]:
    """Run ``calls`` (hook calls as OpenCode makes them) through the plugin in a Bun
    process of its own writing to ``spool``; returns each call's duration in ns."""
    workdir.mkdir(parents=True, exist_ok=True)
    calls_file, out_file = workdir / "calls.json", workdir / "timings.json"
    calls_file.write_text(json.dumps(calls))
    env = {
        "PATH": SYSTEM_PATH,
        "HOME": str(workdir),
        "BUN_BE_BUN": "1",
        "AGENTSPOOL_DIR": str(spool),
    }
    result = subprocess.run(
        [str(opencode_binary()), str(REPLAY_SCRIPT), str(plugin_file()), str(calls_file), str(out_file)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    timings: list[int] = json.loads(out_file.read_text())["ns"]
    return timings


class ScriptedEvents:
    """Hook calls shaped as OpenCode 1.18.33 makes them (see a real run's with a plugin
    that logs its arguments), for one session: ``calls`` after the builders ran."""

    def __init__(
        self, session_id: str, parent_id: str | None = None, start_ms: int = 1_800_000_000_000
    ) -> None:
        self.session_id = session_id
        self.parent_id = parent_id
        self.now = start_ms
        self.calls: list[list[Any]] = []
        self._ids = 0

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self.session_id}_{self._ids:06d}"

    def _tick(self) -> int:
        self.now += 7
        return self.now

    def _event(self, kind: str, **properties: Any) -> None:
        self.calls.append(["event", {"type": kind, "properties": properties}])

    def created(self, title: str = "New session") -> None:
        info: dict[str, Any] = {"id": self.session_id, "title": title, "directory": "/project",
                                "version": VERSION, "time": {"created": self._tick()}}  # fmt: skip
        if self.parent_id:
            info["parentID"] = self.parent_id
        self._event("session.created", sessionID=self.session_id, info=info)

    def user(self, text: str) -> None:
        message = {"id": self._id("msg"), "role": "user", "sessionID": self.session_id,
                   "time": {"created": self._tick()}, "agent": "build"}  # fmt: skip
        part = {"id": self._id("prt"), "type": "text", "text": text,
                "messageID": message["id"], "sessionID": self.session_id}  # fmt: skip
        self.calls.append(
            ["chat.message", {"sessionID": self.session_id}, {"message": message, "parts": [part]}]
        )
        self._event("message.updated", sessionID=self.session_id, info=message)
        self._event("message.part.updated", sessionID=self.session_id, part=part)

    def assistant(self, text: str | None, tools: list[dict[str, Any]] = (), **tokens: int) -> None:  # type: ignore[assignment]
        """One model response: streamed text (deltas, then the final part), tool calls
        (each ``{"name", "input", "output" | "error"}``) pending -> running -> done, and
        the completed message with tokens and cost."""
        sid = self.session_id
        info: dict[str, Any] = {"id": self._id("msg"), "role": "assistant", "sessionID": sid,
                                "modelID": MODEL, "providerID": PROVIDER, "cost": 0,
                                "tokens": {"input": 0, "output": 0, "reasoning": 0,
                                           "cache": {"read": 0, "write": 0}},
                                "time": {"created": self._tick()}}  # fmt: skip
        self._event("message.updated", sessionID=sid, info=dict(info))
        self._event(
            "message.part.updated",
            sessionID=sid,
            part={
                "id": self._id("prt"),
                "type": "step-start",
                "messageID": info["id"],
                "sessionID": sid,
            },
        )
        if text:
            part = {
                "id": self._id("prt"),
                "messageID": info["id"],
                "sessionID": sid,
                "type": "text",
                "text": "",
                "time": {"start": self._tick()},
            }
            self._event("message.part.updated", sessionID=sid, part=dict(part))
            for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                self._event(
                    "message.part.delta",
                    sessionID=sid,
                    messageID=info["id"],
                    partID=part["id"],
                    field="text",
                    delta=piece,
                )
            self._event(
                "message.part.updated",
                sessionID=sid,
                part={
                    **part,
                    "text": text,
                    "time": {"start": part["time"]["start"], "end": self._tick()},
                },
            )
        for tool in tools:
            base = {"id": self._id("prt"), "messageID": info["id"], "sessionID": sid, "type": "tool",
                    "tool": tool["name"], "callID": self._id("call")}  # fmt: skip
            self._event(
                "message.part.updated",
                sessionID=sid,
                part={**base, "state": {"status": "pending", "input": {}, "raw": ""}},
            )
            start = self._tick()
            running = {"status": "running", "input": tool["input"], "time": {"start": start}}
            self._event("message.part.updated", sessionID=sid, part={**base, "state": running})
            done: dict[str, Any] = {
                "input": tool["input"],
                "time": {"start": start, "end": self._tick()},
            }
            if "error" in tool:
                done.update(status="error", error=tool["error"])
            else:
                done.update(
                    status="completed",
                    output=tool.get("output", ""),
                    metadata={},
                    title=tool["name"],
                )
            self._event("message.part.updated", sessionID=sid, part={**base, "state": done})
        usage = {"total": 0, "input": tokens.get("input", 100), "output": tokens.get("output", 20),
                 "reasoning": 0, "cache": {"read": tokens.get("cache_read", 0), "write": 0}}  # fmt: skip
        usage["total"] = usage["input"] + usage["output"] + usage["cache"]["read"]
        finish = "tool-calls" if tools else "stop"
        self._event(
            "message.part.updated",
            sessionID=sid,
            part={
                "id": self._id("prt"),
                "type": "step-finish",
                "reason": finish,
                "messageID": info["id"],
                "sessionID": sid,
                "tokens": usage,
                "cost": 0.001,
            },
        )
        info.update(tokens=usage, cost=0.001, finish=finish)
        self._event("message.updated", sessionID=sid, info=dict(info))
        info["time"] = {"created": info["time"]["created"], "completed": self._tick()}
        self._event("message.updated", sessionID=sid, info=info)

    def idle(self) -> None:
        self._event("session.status", sessionID=self.session_id, status={"type": "idle"})
        self._event("session.idle", sessionID=self.session_id)
