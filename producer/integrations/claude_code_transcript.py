"""Claude Code's transcript (JSON Lines at the hook's ``transcript_path``): the text of
the assistant's last reply, for a ``Stop`` event that does not carry it.

The path comes from the hook's input, so it is read with suspicion: never blocking,
regular files only, a bounded tail. Standard library only (the hook path).
"""

from __future__ import annotations

import json
import os
import stat

TYPE_CHECKING = False  # typing costs milliseconds to import; mypy reads this block
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

TRANSCRIPT_TAIL_BYTES = 4 << 20  # how much of the transcript's end is read for a reply


def transcript_reply(path: object, warn: Callable[[str], None]) -> tuple[str | None, str | None]:
    """The text of the assistant's last reply in a Claude Code transcript (JSON Lines),
    and the id of the entry it ends with: assistant entries after the last user entry,
    read from the file's end. (None, None) when there is none."""
    if not isinstance(path, str) or not path:
        return None, None
    found = transcript_tail(path, warn)
    if found is None:
        return None, None
    tail, start = found
    lines = tail.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line is cut
    texts: list[str] = []
    last_id: str | None = None
    for line in reversed(lines):
        entry = _entry(line)
        if entry is None or entry.get("isSidechain"):
            continue  # not an entry, or a subagent's
        kind = entry.get("type")
        if kind == "user":
            break
        if kind != "assistant":
            continue
        message = entry.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts = [content]
        elif isinstance(content, list):
            parts = [
                block["text"]
                for block in content
                if isinstance(block, dict)
                and block.get("type") == "text"
                and isinstance(block.get("text"), str)
            ]
        else:
            parts = []
        if parts and last_id is None:
            uuid = entry.get("uuid")
            last_id = uuid if isinstance(uuid, str) else str(len(tail))
        texts[:0] = parts
    text = "\n\n".join(t for t in texts if t)
    return (text or None), (last_id if text else None)


def transcript_tail(path: str, warn: Callable[[str], None]) -> tuple[bytes, int] | None:
    """The last ``TRANSCRIPT_TAIL_BYTES`` of a regular file and where they start.

    The path comes from the hook's input: opened without blocking (a FIFO would
    wait for a writer forever) and read only if it is a regular file (a FIFO, a
    device such as /dev/zero or a directory is refused with one line on stderr),
    at most the tail's size (the file may grow while it is read)."""
    try:
        fd = os.open(
            os.path.expanduser(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        )
    except OSError:
        return None  # not there (yet): no reply to take from it
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            warn(f"transcript_path {path!r} is not a regular file: not read")
            return None
        start = max(0, info.st_size - TRANSCRIPT_TAIL_BYTES)
        chunks = []
        offset, end = start, info.st_size
        while offset < end:
            chunk = os.pread(fd, min(end - offset, 1 << 20), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks), start
    except OSError:
        return None
    finally:
        os.close(fd)


def _entry(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
