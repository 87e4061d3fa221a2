"""Durations as people type them: ``90``, ``30s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m``.

One parser for every duration agentspool reads (command options such as
``prune --older-than`` and ``status --max-age``, ``sessions --since``, and the
``AGENTSPOOL_*`` settings in seconds), so each accepts the same forms.
"""

from __future__ import annotations

import math
import re

UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
DURATION_FORMS = "a number of seconds or a duration such as 30s, 15m, 2h, 7d, 1w, 1h30m"

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|[smhdw])")
_COMPOUND = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|[smhdw])\s*)+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a bare number is seconds; units may be combined (``1h30m``).
    Raises ``ValueError`` naming the accepted forms for anything else, including
    negative, NaN and infinite values."""
    cleaned = str(text).strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        if not cleaned or not _COMPOUND.fullmatch(cleaned):
            raise ValueError(f"{text!r} is not {DURATION_FORMS}") from None
        seconds = sum(float(n) * UNIT_SECONDS[unit] for n, unit in _PART.findall(cleaned))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not {DURATION_FORMS}")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` the way people type it back: 600 -> ``10m``, 90 -> ``90s``, 604800 -> ``7d``
    (the largest unit it is a whole number of; help texts show defaults this way)."""
    for unit in ("w", "d", "h", "m", "s"):
        count = seconds / UNIT_SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def has_unit(text: str) -> bool:
    """Whether ``text`` names its unit (``10m``), as opposed to a bare number (``10``)."""
    try:
        float(str(text).strip())
    except ValueError:
        return True
    return False
