"""The last line of a ``worker run --burst`` that did not sync everything: what
failed, where (the database, without credentials), and the setting to change."""

from __future__ import annotations

from agentspool.worker.config import Settings, display_url
from agentspool.worker.durations import format_duration


def burst_gave_up(settings: Settings, last_error: str | None) -> str:
    """--burst ran out of time retrying a sync that kept failing."""
    return (
        f"--burst: gave up after {format_duration(settings.burst_timeout)} syncing to"
        f" {display_url(settings.effective_db_url)}"
        + (f" (last error: {last_error})" if last_error else "")
        + "; the sessions stay in the spool (more time: worker run --burst --timeout,"
        " or AGENTSPOOL_BURST_TIMEOUT)"
    )


def burst_stopped_misconfigured(settings: Settings) -> str:
    """--burst stopped at once: the URL is not a libSQL server. The error itself was
    logged just before, so it is not repeated."""
    return (
        f"--burst: stopped: {display_url(settings.effective_db_url)} is not a libSQL server"
        " (the error above); the sessions stay pending"
    )
