"""The ``agentspool`` command: click commands only, each calling the library.

``run`` is the console script's entry point (``agentspool.worker.cli:run``). A hook
call, ``agentspool hook claude-code`` with nothing after it, goes straight to the
hook without importing click or the worker: Claude Code runs it as a new process
for every event, in the user's loop, so its start-up time is the user's wait.
Everything else goes to the click group ``main`` (app.py), loaded on first use.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs milliseconds to import; mypy reads this block
if TYPE_CHECKING:
    from agentspool.worker.cli.app import main

__all__ = ["main", "run"]

HOOK_FAST_PATH = ["hook", "claude-code"]


def run() -> None:
    """The console script: the hook's fast path, else the click CLI."""
    if sys.argv[1:] == HOOK_FAST_PATH:
        from agentspool.integrations.claude_code.hook import run_hook

        sys.exit(run_hook())
    from agentspool.worker.cli.app import main

    main()


def __getattr__(name: str) -> object:
    if name == "main":
        from agentspool.worker.cli.app import main

        return main
    raise AttributeError(f"module 'agentspool.worker.cli' has no attribute {name!r}")
