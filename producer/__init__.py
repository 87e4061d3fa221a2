"""agentspool's producer: the small library agents import.

Depends on persist-queue and the standard library only; importing it never
imports libsql, click or watchdog.
"""

from .events import InvalidEvent
from .spool import Session, Spool, SpoolStats, default_spool_dir
from .toolcall import ToolCall

__all__ = ["InvalidEvent", "Session", "Spool", "SpoolStats", "ToolCall", "default_spool_dir"]
