"""Text from agents, queue files and the database, made safe for a terminal or a log.

Anything an agent wrote (messages, tool output, session ids, errors) is shown, never
obeyed: control characters become visible escapes (``\\x1b``, ``\\u202e``) before they
reach a terminal or a log line, so agent text cannot write the clipboard (OSC 52),
retitle the window, clear the screen, move the cursor, reorder text (bidi controls)
or forge a log line (a newline in a session id). Transcripts keep their tabs and
newlines as text; one-line fields (ids, names, log messages) escape those too.
"""

from __future__ import annotations

import logging
import re

# C0 controls (but tab and newline), DEL, C1 controls, line and paragraph separators,
# and the bidirectional overrides and isolates.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_IN_TEXT = re.compile(f"[{_CONTROLS}]")
_IN_LINE = re.compile(f"[{_CONTROLS}\t\n]")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``value`` as one line of inert text: every control character escaped."""
    return _IN_LINE.sub(_escape, str(value))


def visible_text(value: object) -> str:
    """``value`` as inert text that keeps its lines and tabs."""
    return _IN_TEXT.sub(_escape, str(value))


class VisibleFormatter(logging.Formatter):
    """One log record, one line: the message's control characters (a newline in a
    session id) are escaped; a traceback that follows keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = visible(record.message)
        return super().formatMessage(record)
