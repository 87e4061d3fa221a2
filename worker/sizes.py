"""Sizes as people type them: ``1048576``, ``500K``, ``64M``, ``1G``, ``4MiB``, ``2GB``.

One parser for every size agentspool reads (``prune --max-bytes`` and the byte
settings such as ``AGENTSPOOL_MAX_REPLICA_BYTES``). Units are binary (K = KiB = 1024
bytes), as the defaults in .env.example are.
"""

from __future__ import annotations

import re

SIZE_FORMS = "a number of bytes or a size such as 500K, 64M, 1G (K = 1024 bytes)"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?")


def parse_size(text: str) -> int:
    """Bytes in ``text``; raises ``ValueError`` naming the accepted forms."""
    match = _SIZE.fullmatch(str(text).strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not {SIZE_FORMS}")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit])
