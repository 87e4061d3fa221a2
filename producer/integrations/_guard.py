"""Callbacks that never raise into the host framework, and nothing lost in silence.

A framework calls an integration from inside the agent's run; an exception there
would at best be logged by the framework on every callback and at worst break the
run. ``CallbackGuard.call`` runs a callback, counts what it raised and logs the
first failure once (with its traceback), so a bug costs a log line, not the agent.

What a callback cannot map (an item of a shape it does not know, a model call that
reports no usage, a source that gives no message content) is not an exception, but
it must not vanish either: ``unmapped`` counts it and logs the first of each kind
once, and ``notice`` logs a one-time line (say, the setting that turns content on).
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
        self.unmapped = 0  # items a callback got but could not map (and left out)
        self._told: set[str] = set()  # what was already logged once
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

    def skip(self, what: str) -> None:
        """Count an item left out because it could not be mapped; log each kind once."""
        with self._lock:
            self.unmapped += 1
        self.notice(
            f"unmapped:{what}",
            "agentspool %s integration: left out %s (not a shape it maps); later ones"
            " are only counted in its `unmapped` attribute",
            what,
        )

    def notice(self, key: str, message: str, *args: Any, missed: bool = False) -> None:
        """Log ``message`` the first time ``key`` is noticed, never again; ``missed``:
        something was left out, count it in ``unmapped``."""
        with self._lock:
            self.unmapped += missed
            if key in self._told:
                return
            self._told.add(key)
        log.warning(message, self.integration, *args)
