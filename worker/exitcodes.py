"""The exit statuses of ``agentspool`` and its worker, in one place (docs/CLI.md).

click itself exits 1 for a ``ClickException`` and 2 for a usage error.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1  # also "another worker is running", and status --check finding a problem
EXIT_USAGE: Final = 2
EXIT_LEFT_PENDING: Final = (
    3  # worker run --burst / drain: something is left open, pending or failed
)
EXIT_REJECTED: Final = 4  # emit / ingest: an input event was rejected (the good ones were written)
EXIT_REFUSED: Final = EXIT_ERROR  # the worker refuses a spool others can write to
