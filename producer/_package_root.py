"""agentspool: durable, agent-harmless session logging for AI agents.

The top-level package only re-exports the producer API; the worker lives in
``agentspool.worker`` and is never imported from here. The names are loaded on
first use (PEP 562), so ``import agentspool.<submodule>`` (the Claude Code hook, the
console script) does not pay for the producer's writer thread machinery.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs milliseconds to import; mypy reads this
if TYPE_CHECKING:
    from agentspool.producer import Session, Spool, SpoolStats, ToolCall

__all__ = ["Session", "Spool", "SpoolStats", "ToolCall"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from agentspool import producer

        value = getattr(producer, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'agentspool' has no attribute {name!r}")
