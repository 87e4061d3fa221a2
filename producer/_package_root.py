"""agentspool: durable, agent-harmless session logging for AI agents.

The top-level package only re-exports the producer API; the worker lives in
``agentspool.worker`` and is never imported from here.
"""

from agentspool.producer import Session, Spool, SpoolStats, ToolCall

__all__ = ["Session", "Spool", "SpoolStats", "ToolCall"]
