"""Redaction: secrets in what agents log become ``[REDACTED:<kind>]`` before anything
keeps them.

Agents read files, environment variables and command output, so their messages and
tool calls carry API keys, tokens, private keys and passwords in URLs. The worker runs
every text an event brings (content, tool input, output and error, metadata values and
keys, session error, names) through a ``Redactor`` before the replica is written
(intake/replica.py), so no replica, remote database, viewer or CLI ever sees them; the
producer's queue file, which lives only until the worker has applied it, still holds
the raw text.

The detectors are a small table of patterns (``BUILTIN_DETECTORS``), one regular
expression for each literal prefix: clean text costs a few fast substring searches
(docs/PERFORMANCE.md, rows 5r). Each pattern is anchored on a fixed
prefix or shape that ordinary prose, code, git SHAs, UUIDs, hex digests and base64
data do not have (tests/intake/test_redaction.py holds the corpus of positives and
negatives). ``AGENTSPOOL_REDACT_PATTERNS`` adds one regular expression per line, kind
``custom`` (read and checked with the settings: config.redact_patterns_of).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable
from functools import partial
from typing import Any

MARKER = "[REDACTED:{}]"
CUSTOM_KIND = "custom"
_REDACTED_PREFIX = MARKER.split("{")[0]

# No token character may follow a token (checked in the pattern) or precede it
# (checked in _replace: a pattern that begins with a look-behind loses the fast
# search for its literal prefix, which makes it ~50 times slower on clean text).
_END = r"(?![A-Za-z0-9_\-])"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_PEM_LABEL = r"{}[A-Z0-9 ]{{0,40}}PRIVATE KEY(?: BLOCK)?-----"
# In a URL: no separator, quote or backslash (so a match never ends inside a JSON
# escape); the user part has no colon either.
_URL_USER = r"[^\s:/?#@\"'<>\\`]*"
_URL_PASSWORD = r"[^\s/?#@\"'<>\\`]+"

# The detectors: (literal prefix, ((kind, rest of the pattern), ...)), each compiled
# as one regular expression that starts with its literal, which Python's re finds with
# a fast substring search: clean text costs well under 1 µs per detector per KB. (One
# alternation of all of them is ~10 times slower: re then tries every branch at every
# position.) Branches are tried in order: Anthropic's ``sk-ant-`` before OpenAI's ``sk-``.
BUILTIN_DETECTORS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    # The whole block. A block cut short (no END line: truncated output) goes up to
    # the end of its base64 body; a BEGIN line alone (code that looks for one) stays.
    (
        "-----BEGIN",
        (
            (
                "private_key",
                _PEM_LABEL.format("")
                + r"(?:(?:(?!-----)[\s\S])*?"
                + _PEM_LABEL.format("-----END")
                + r"|(?:[A-Za-z0-9+/=\s]|\\[nrt]){40,})",
            ),
        ),
    ),
    (
        "A",
        (
            ("aws_access_key", r"(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}" + _END),
            ("google_api_key", r"Iza[0-9A-Za-z_\-]{35}" + _END),
        ),
    ),
    (
        "g",
        (
            ("github_token", r"h[pousr]_[A-Za-z0-9]{36,251}" + _END),
            ("github_token", r"ithub_pat_[A-Za-z0-9_]{22,251}" + _END),
            (
                "gitlab_token",
                r"l(?:pat|dt|rt|ptt|ft|soat|cbt|imt|agent|oas)-"
                r"[A-Za-z0-9_\-]{20,}(?:\.[A-Za-z0-9_\-]+)*" + _END,
            ),
        ),
    ),
    # Slack's tokens have digits after the type (xoxb-123…-…, xapp-1-…): "xoxo-hugs" is none.
    (
        "x",
        (("slack_token", r"(?:ox[abposre]-[0-9]{6,}-|app-[0-9]-)[A-Za-z0-9\-]{8,250}" + _END),),
    ),
    (
        "https://hooks.slack.com/",
        (("slack_token", r"(?:services|workflows)/[A-Za-z0-9_/]{20,}" + _END),),
    ),
    (
        "sk",
        (
            ("anthropic_api_key", r"-ant-[A-Za-z0-9_\-]{20,}" + _END),
            # Legacy keys (sk- and 48 letters and digits, a digit among them) and
            # project, service-account and admin keys; hyphenated words
            # (sk-learn-2024-notes) are neither.
            (
                "openai_api_key",
                r"-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{40,}"
                r"|(?=[A-Za-z]*[0-9])[A-Za-z0-9]{32,})" + _END,
            ),
            # Secret keys; restricted keys and webhook secrets below (publishable pk_
            # keys are public by design).
            ("stripe_key", r"_(?:live|test)_[0-9A-Za-z]{10,}" + _END),
        ),
    ),
    ("rk_", (("stripe_key", r"(?:live|test)_[0-9A-Za-z]{10,}" + _END),)),
    ("whsec_", (("stripe_key", r"[0-9A-Za-z]{20,}" + _END),)),
    # header.payload.signature, both JSON parts base64url of '{"'.
    ("eyJ", (("jwt", r"[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*" + _END),)),
    # scheme://user:password@host: only the password goes.
    (
        "://",
        (("url_password", r"(?<=[A-Za-z0-9]://)" + _URL_USER + ":(?P<pw>" + _URL_PASSWORD + ")@"),),
    ),
)
BUILTIN_KINDS = frozenset(kind for _, branches in BUILTIN_DETECTORS for kind, _ in branches)
# Kinds that bring their own edges (the others are whole tokens).
_EDGELESS = frozenset({"private_key", "url_password"})
# Texts shorter than this hold no secret of any built-in kind ("a://:p@" is 7).
_SHORTEST = 7


def _after_escape(text: str, start: int) -> bool:
    """Does a JSON escape end right before ``start`` (``\\n``, ``\\t``, ``\\u00e9``)? In
    JSON text (a dead letter's bytes) a token may follow one."""
    if start >= 2 and text[start - 2] == "\\" and text[start - 1] in "nrt":
        return True
    return start >= 6 and text[start - 6 : start - 4] == "\\u"


class Redactor:
    """Replaces secrets in text with ``[REDACTED:<kind>]`` and counts them by kind."""

    def __init__(self, custom_patterns: Iterable[str] = ()) -> None:
        self._kinds: dict[str, str] = {}  # a branch's group name -> its kind
        self._detectors: list[re.Pattern[str]] = []
        for prefix, branches in BUILTIN_DETECTORS:
            alternatives = []
            for kind, rest in branches:
                group = f"k{len(self._kinds)}"
                self._kinds[group] = kind
                alternatives.append(f"(?P<{group}>{rest})")
            self._detectors.append(
                re.compile(re.escape(prefix) + "(?:" + "|".join(alternatives) + ")")
            )
        # Each on its own: joined, their groups and back-references would clash.
        self._custom = [re.compile(p) for p in custom_patterns]
        self._shortest = 1 if self._custom else _SHORTEST

    def text(self, text: str, counts: Counter[str]) -> str:
        """``text`` with every secret replaced; ``counts`` gets one per replacement."""
        if len(text) < self._shortest:
            return text
        for pattern in self._detectors:
            if pattern.search(text) is not None:  # the rare case pays for the callback
                text = pattern.sub(partial(self._replace, counts), text)
        for pattern in self._custom:
            text, n = pattern.subn(MARKER.format(CUSTOM_KIND), text)
            if n:
                counts[CUSTOM_KIND] += n
        return text

    def _replace(self, counts: Counter[str], match: re.Match[str]) -> str:
        kind = self._kinds[match.lastgroup or ""]
        whole = match.string
        start = match.start()
        if kind not in _EDGELESS and start and whole[start - 1] in _TOKEN_CHARS:
            if not _after_escape(whole, start):
                return match.group(0)  # the middle of a longer token: no secret of this kind
        if kind == "url_password":
            if match.group("pw").startswith(_REDACTED_PREFIX):  # redacted before
                return match.group(0)
            counts[kind] += 1
            pw_start, pw_end = match.span("pw")
            return whole[start:pw_start] + MARKER.format(kind) + whole[pw_end : match.end()]
        counts[kind] += 1
        return MARKER.format(kind)

    def raw(self, data: bytes) -> bytes:
        """Bytes as they were queued (a dead letter), redacted as text; bytes that are
        not UTF-8 pass through unchanged."""
        text = data.decode("utf-8", "surrogateescape")
        return self.text(text, Counter()).encode("utf-8", "surrogateescape")

    def found_in(self, text: str) -> bool:
        """Does any detector match somewhere in ``text``? (A quick check of a value's
        JSON text before its strings are redacted one by one.)"""
        return any(p.search(text) is not None for p in (*self._detectors, *self._custom))

    def value(self, value: Any, counts: Counter[str]) -> Any:
        """``value`` (a string, or JSON: dicts, lists, numbers) with every string in
        it redacted, dict keys included; what holds no string comes back as it is."""
        if isinstance(value, str):
            return self.text(value, counts)
        if isinstance(value, dict):
            return {
                (self.text(k, counts) if isinstance(k, str) else k): self.value(v, counts)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.value(v, counts) for v in value]
        return value

    def stored(self, value: Any, text: str, counts: Counter[str]) -> str:
        """The text to store for ``value``, given ``text``, the form it would be stored
        in (the string itself, or its JSON): redacted, and JSON stays JSON. A value's
        JSON is checked whole first; only one that may hold a secret is walked."""
        if isinstance(value, str):
            return self.text(text, counts)
        if not self._custom and not self.found_in(text):  # a custom pattern may see
            return text  # a string differently in its JSON: those are always walked
        return json.dumps(self.value(value, counts), ensure_ascii=False)


# The built-in detectors alone: what the worker uses unless told otherwise.
BUILTIN_REDACTOR = Redactor()


# ---- counting what was redacted, per session ---------------------------------------
# The session's metadata says what was redacted, by kind: ``metadata.redacted`` =
# {"github_token": 2, ...}. The counts live in a replica-only table (created with the
# first redaction, so a clean session's replica stays as small as it was) and are
# written into the metadata after every apply that counted something or rewrote the
# metadata (a session_start replaces it, a session_end patches it); the metadata then
# syncs with the session row. Replays are never counted: only new events are redacted.

REDACTED_KEY = "redacted"
_COUNTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS redactions"
    " (kind TEXT PRIMARY KEY, count INTEGER NOT NULL) WITHOUT ROWID"
)


def record_redactions(conn: sqlite3.Connection, session_id: str, counts: Counter[str]) -> None:
    """Add ``counts`` to the replica's totals and write the totals into the session's
    metadata (metadata that is not a JSON object, cut to size, is left as it is)."""
    if counts:
        conn.execute(_COUNTS_TABLE)
        conn.executemany(  # a local file: no round trips
            "INSERT INTO redactions (kind, count) VALUES (?, ?)"
            " ON CONFLICT (kind) DO UPDATE SET count = count + excluded.count",
            sorted(counts.items()),
        )
    elif not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'redactions'").fetchone():
        return
    totals = dict(conn.execute("SELECT kind, count FROM redactions ORDER BY kind").fetchall())
    conn.execute(
        "UPDATE sessions SET metadata = json_set(coalesce(metadata, '{}'), ?, json(?))"
        " WHERE id = ? AND CASE WHEN json_valid(coalesce(metadata, '{}'))"
        " THEN json_type(coalesce(metadata, '{}')) END = 'object'",
        (f"$.{REDACTED_KEY}", json.dumps(totals), session_id),
    )
