"""The Claude Agent SDK (Python, ``claude-agent-sdk``) -> agentspool, in one line:

    from agentspool.integrations.claude_agent_sdk import logged
    options = logged(ClaudeAgentOptions(...))          # or logged() for the defaults
    async for message in query(prompt=..., options=options): ...

The SDK drives the Claude Code CLI; its Python hook callbacks cover only some events
(no ``SessionStart``, no ``SessionEnd``), so ``logged`` gives the CLI the same hooks
``agentspool hook claude-code --install`` writes into a settings file: they are merged
into the options' ``settings`` (the SDK passes them to the CLI as ``--settings``,
whether or not it loads any settings file), keeping whatever settings and hooks the
options already have. Every session the SDK runs is then logged as a Claude Code
session (docs/INTEGRATIONS.md, "Claude Code"), and the CLI process is its owner: a
session whose CLI is killed is sealed ``abandoned``. ``spool=`` names the spool
(else ``AGENTSPOOL_DIR`` or the default, as for any producer); the worker drains it.

Imports nothing of the SDK's: it copies the options it is given.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from agentspool.integrations.claude_code.hook import merge_settings
from agentspool.integrations.claude_code.inbox import hook_command

Options = TypeVar("Options")


def logged(options: Options | None = None, *, spool: str | Path | None = None) -> Options:
    """``options`` (a ``ClaudeAgentOptions``; a new one when None) with agentspool's
    hooks merged into its ``settings`` and, when given, ``spool`` in its ``env``."""
    if options is None:
        from claude_agent_sdk import ClaudeAgentOptions

        options = ClaudeAgentOptions()  # type: ignore[assignment]
    settings = _settings_of(getattr(options, "settings", None), getattr(options, "cwd", None))
    merged, _ = merge_settings(settings, hook_command())
    changes: dict[str, Any] = {"settings": json.dumps(merged)}
    if spool is not None:
        changes["env"] = {**(getattr(options, "env", None) or {}), "AGENTSPOOL_DIR": str(spool)}
    return dataclasses.replace(options, **changes)  # type: ignore[type-var, return-value]


def _settings_of(settings: str | None, cwd: str | Path | None) -> dict[str, Any]:
    """The options' settings as an object: a JSON string, or a file (as the SDK reads
    it, relative to ``cwd``)."""
    if not settings or not settings.strip():
        return {}
    text = settings.strip()
    if not (text.startswith("{") and text.endswith("}")):
        text = (Path(cwd or "") / text).read_text(encoding="utf-8-sig")
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("the options' settings are not a JSON object")
    return value
