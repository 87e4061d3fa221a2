"""The Claude Code hook as settings and as a command.

``settings_block`` is what ``agentspool hook claude-code --print-settings`` prints and
``--install`` merges into a settings file: every event worth keeping
(``mapping.HOOK_EVENTS``) runs ``inbox.hook_command()``, one ``dd`` that appends the
event to the inbox, fsynced, and prints nothing. ``run_hook`` is the same from Python
(``agentspool hook claude-code``, the command of settings an older agentspool
installed, and of systems without GNU ``dd``): it reads stdin, writes it to the inbox
and exits 0 whatever happens (Claude Code reads another status as a verdict on its
own action), a problem being one line on stderr; it checks nothing it does not need
to (the worker checks the payload), reads nothing else and takes no lock.
"""

from __future__ import annotations

import os
import sys

from agentspool.producer import layout

from . import inbox

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO, Any

# Commands that log to agentspool, whichever way they were installed: the merge
# leaves an event that already runs one of them as it is.
PYTHON_COMMAND_TAIL = "hook claude-code"


def run_hook(stdin: IO[bytes] | None = None, environ: Mapping[str, str] | None = None) -> int:
    spool_dir = None
    try:
        if stdin is None and os.isatty(0):
            _say("expects one Claude Code hook event (JSON) on stdin")
            return 0
        data = (stdin if stdin is not None else sys.stdin.buffer).read()
        if not data.strip():
            _say("ignored an empty event")
            return 0
        spool_dir = layout.spool_path(environ)
        inbox.write_payload(spool_dir, data, claude_pid())
    except Exception as exc:  # never a traceback, never a non-zero exit
        where = f" in the spool {spool_dir}" if spool_dir else ""
        _say(f"cannot record the event{where}: {_one_line(exc)}")
    return 0


SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh"})


def claude_pid() -> int:
    """The Claude Code process this hook runs for: the parent, or the parent's parent
    when the parent is the shell Claude Code ran the command with."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return parent
    name = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
    if name not in SHELLS:
        return parent
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else parent


def settings_block(command: str | None = None) -> dict[str, Any]:
    """The ``hooks`` block for ``.claude/settings.json`` that sends every event to
    ``command`` (default: the inbox's ``dd``). Tool events take a matcher (``*``:
    every tool); the others do not."""
    from .mapping import HOOK_EVENTS, TOOL_EVENTS  # not on the hook's own path

    command = command or inbox.hook_command()
    hooks: dict[str, Any] = {}
    for event in HOOK_EVENTS:
        entry: dict[str, Any] = {"hooks": [{"type": "command", "command": command}]}
        if event in TOOL_EVENTS or event == "PermissionDenied":
            entry = {"matcher": "*", **entry}
        hooks[event] = [entry]
    return {"hooks": hooks}


def merge_settings(
    existing: dict[str, Any], command: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``existing`` settings with this hook added to every event, keeping every other
    key and hook; an event that already runs an agentspool hook (either form, any
    path) is left as it is. Returns the new settings and the events added."""
    merged = dict(existing)
    hooks = merged.get("hooks")
    if hooks is None:
        hooks = {}
    if not isinstance(hooks, dict):
        raise ValueError('its "hooks" is not an object')
    hooks = dict(hooks)
    added = []
    for event, entries in settings_block(command)["hooks"].items():
        current = hooks.get(event, [])
        if not isinstance(current, list):
            raise ValueError(f'its "hooks.{event}" is not a list')
        if any(_runs_this_hook(entry) for entry in current):
            continue
        hooks[event] = [*current, *entries]
        added.append(event)
    merged["hooks"] = hooks
    return merged, added


def _runs_this_hook(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("hooks"), list):
        return False
    marker = f"/{inbox.INBOX_DIRNAME}/{inbox.KIND}"
    return any(
        isinstance(h, dict)
        and isinstance(h.get("command"), str)
        and (h["command"].rstrip().endswith(PYTHON_COMMAND_TAIL) or marker in h["command"])
        for h in entry["hooks"]
    )


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"agentspool hook claude-code: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
