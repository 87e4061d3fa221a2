"""Claude Code -> agentspool (docs/INTEGRATIONS.md).

The parts, in the order an event goes through them:
- ``hook``: the settings that make every Claude Code hook event a payload in the
  spool's inbox (``inbox``), with nothing else done on Claude Code's time;
- ``collector``: the worker's part: each payload mapped (``mapping``) together with
  the session's transcript (``transcript``) into the shared queue of Claude Code
  sessions, which the worker drains like any queue; also transcripts on disk
  (``agentspool import claude-code``) and sessions whose Claude Code was killed.

Importing this package loads nothing else: the hook command imports ``hook`` alone.
"""

from __future__ import annotations

AGENT = "claude-code"
