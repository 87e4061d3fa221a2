"""agentspool's producer: the small library agents import.

Depends on the standard library only; importing it never imports libsql, click,
watchdog, prometheus_client or httpx.

The public names are loaded on first use (PEP 562): the Claude Code hook imports
``agentspool.producer.sharedqueue`` in a fresh process on every call and must not
pay for ``spool.py``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs milliseconds to import; mypy reads this
if TYPE_CHECKING:
    from .events import InvalidEvent
    from .session import Session
    from .spool import Spool, SpoolStats, default_spool_dir
    from .toolcall import ToolCall

__all__ = ["InvalidEvent", "Session", "Spool", "SpoolStats", "ToolCall", "default_spool_dir"]

_HOMES = {
    "InvalidEvent": "events",
    "Session": "session",
    "Spool": "spool",
    "SpoolStats": "spool",
    "default_spool_dir": "spool",
    "ToolCall": "toolcall",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'agentspool.producer' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
