"""agentspool's benchmark harness: each measurement beside its floor and anchor, in
the same run. ``python -m bench`` (``make bench``), ``--smoke`` for a quick pass over
every code path, ``--only NAME``. See docs/PERFORMANCE.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.common import Config, Row


def _group(module: str) -> Callable[[Config], list[Row]]:
    """Import a group's module only when it runs (children import ``bench`` too)."""

    def run(cfg: Config) -> list[Row]:
        import importlib

        return importlib.import_module(f"bench.{module}").run(cfg)

    return run


GROUPS: dict[str, Callable[[Config], list[Row]]] = {
    "emit": _group("emit"),
    "throughput": _group("throughput"),
    "drain": _group("drain"),
    "wake": _group("wake"),
    "sync": _group("sync"),
    "live": _group("live"),
    "e2e": _group("e2e"),
    "memory": _group("memory"),
    "ui": _group("ui"),
    "hook": _group("hook"),
    "integrations": _group("integrations"),
    "claude_code": _group("claude_code"),
    "claude_import": _group("claude_import"),
    "opencode": _group("opencode"),
    "lifecycle": _group("lifecycle"),
    "stats": _group("stats"),
    "ui_remote": _group("ui_remote"),
}
