"""Callbacks that never raise into the host framework.

A framework calls an integration from inside the agent's run; an exception there
would at best be logged by the framework on every callback and at worst break the
run. ``CallbackGuard.call`` runs a callback, counts what it raised and logs the
first failure once (with its traceback), so a bug costs a log line, not the agent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("agentspool.integrations")


class CallbackGuard:
    def __init__(self, integration: str) -> None:
        self.integration = integration
        self.errors = 0  # callbacks that raised (and were swallowed)
        self._lock = threading.Lock()

    def call(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except Exception:
            with self._lock:
                self.errors += 1
                first = self.errors == 1
            if first:
                log.warning(
                    "agentspool %s integration: %s failed; the run goes on and later"
                    " failures are only counted",
                    self.integration,
                    getattr(callback, "__name__", "a callback"),
                    exc_info=True,
                )
            return None
