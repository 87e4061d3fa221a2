"""Every setting the worker reads, validated once, in one typed object.

Each setting comes from a CLI option, else an environment variable (``AGENTSPOOL_*``,
``TURSO_DATABASE_URL``, ``TURSO_AUTH_TOKEN``), else its default. ``.env.example``
lists them all; ``--env-file`` loads such a file first (``read_env_file`` below).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentspool.producer import default_spool_dir
from agentspool.worker.durations import parse_duration
from agentspool.worker.sizes import parse_size

EMBEDDED_DB_FILENAME = "agentspool.db"


class ConfigError(ValueError):
    """A setting has a value the worker cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    spool_dir: Path
    # The remote database; None means the embedded default (a libSQL file in the spool).
    db_url: str | None = None
    # Never printed: repr=False keeps it out of logs and tracebacks.
    auth_token: str | None = field(default=None, repr=False)
    sync_timeout: float = 30.0  # seconds one sync attempt may take before it is killed
    retry_base: float = 1.0  # first retry delay cap (full jitter below it)
    retry_cap: float = 60.0  # the largest retry delay cap
    rescan_interval: float = 30.0  # safety-net rescan when no file-system event came
    liveness_interval: float = 5.0  # how often to look for producers that are gone
    abandon_after: float = 86400.0  # seal sessions silent this long (0: only on producer exit)
    shutdown_timeout: float = 20.0  # SIGTERM: drain and sync for at most this long
    burst_timeout: float = 300.0  # --burst: give up on retrying syncs after this long
    drain_batch: int = 2000  # queue items read per transaction
    retain_synced: float = 7 * 86400.0  # keep a synced session's replica this long (0: forever)
    # Then drop the oldest synced replicas above this total (0: no cap). 1 GiB holds
    # ~100,000 small sessions (a two-event replica is 10.5 KiB) or a few huge ones.
    max_replica_bytes: int = 1 << 30
    metrics_port: int | None = None  # serve Prometheus metrics on this port
    metrics_addr: str = "127.0.0.1"  # ... on this address
    checkpoint_interval: float = 5.0  # send open sessions' news this often (0: only at the end)
    batch_bytes: int = 4 << 20  # bound on one batch request's rows (many sessions, one request)
    redact: bool = True  # secrets in what agents log are redacted before a replica keeps them
    redact_patterns: Path | None = None  # a file of more patterns, one regular expression a line
    # Delete sessions that ended longer ago than this from the database, daily (0: never).
    remote_retention: float = 0.0

    @property
    def embedded(self) -> bool:
        return self.db_url is None

    @property
    def effective_db_url(self) -> str:
        return self.db_url or f"file:{self.spool_dir / EMBEDDED_DB_FILENAME}"


_ENV = {
    "spool_dir": "AGENTSPOOL_DIR",
    "db_url": "TURSO_DATABASE_URL",
    "auth_token": "TURSO_AUTH_TOKEN",
    "sync_timeout": "AGENTSPOOL_SYNC_TIMEOUT",
    "retry_base": "AGENTSPOOL_RETRY_BASE",
    "retry_cap": "AGENTSPOOL_RETRY_CAP",
    "rescan_interval": "AGENTSPOOL_RESCAN_INTERVAL",
    "liveness_interval": "AGENTSPOOL_LIVENESS_INTERVAL",
    "abandon_after": "AGENTSPOOL_ABANDON_AFTER",
    "shutdown_timeout": "AGENTSPOOL_SHUTDOWN_TIMEOUT",
    "burst_timeout": "AGENTSPOOL_BURST_TIMEOUT",
    "drain_batch": "AGENTSPOOL_DRAIN_BATCH",
    "retain_synced": "AGENTSPOOL_RETAIN_SYNCED",
    "max_replica_bytes": "AGENTSPOOL_MAX_REPLICA_BYTES",
    "metrics_port": "AGENTSPOOL_METRICS_PORT",
    "metrics_addr": "AGENTSPOOL_METRICS_ADDR",
    "checkpoint_interval": "AGENTSPOOL_CHECKPOINT_INTERVAL",
    "batch_bytes": "AGENTSPOOL_BATCH_BYTES",
    "redact": "AGENTSPOOL_REDACT",
    "redact_patterns": "AGENTSPOOL_REDACT_PATTERNS",
    "remote_retention": "AGENTSPOOL_REMOTE_RETENTION",
}
_SWITCH = {"on": True, "true": True, "1": True, "yes": True,
           "off": False, "false": False, "0": False, "no": False}  # fmt: skip

_DB_SCHEMES = ("libsql://", "https://", "http://", "wss://", "ws://", "file:")
_ACCEPTED_URLS = "libsql://HOST, https://HOST[:PORT], http://HOST:PORT, wss:// or ws://, file:PATH"
_USERINFO = re.compile(r"^[^/]*@")


def redact_patterns_of(settings: Settings) -> list[str]:
    """The patterns ``AGENTSPOOL_REDACT_PATTERNS`` names (none when redaction is off):
    one regular expression a line; blank lines and lines whose first non-blank
    character is ``#`` are skipped. Each is compiled here, so that a bad one stops the
    worker at start, named by its line number (never its text: it may spell a secret)."""
    path = settings.redact_patterns
    if not settings.redact or path is None:
        return []
    where = "AGENTSPOOL_REDACT_PATTERNS"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the pattern file {path}: {exc}") from None
    patterns = []
    for number, line in enumerate(text.splitlines(), start=1):
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{where}: {path}:{number}: not a regular expression ({exc.msg})"
            ) from None
        if compiled.search("") is not None:  # it would "redact" between every character
            raise ConfigError(f"{where}: {path}:{number}: the pattern matches empty text")
        patterns.append(pattern)
    return patterns


def env_var(setting: str) -> str:
    return _ENV[setting]


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from CLI overrides (None = not given), then the environment."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name in overrides:
            raw: Any = overrides[f.name]
        elif environ.get(_ENV[f.name], "") != "":
            raw = environ[_ENV[f.name]]
        else:
            continue
        values[f.name] = _convert(f.name, raw)
    values.setdefault("spool_dir", default_spool_dir(environ))
    settings = Settings(**values)
    _validate(settings)
    return settings


_BYTE_SETTINGS = ("max_replica_bytes", "batch_bytes")
_INT_FORMS = {name: "a number of bytes or a size (64M, 1G)" for name in _BYTE_SETTINGS}


def _convert(name: str, raw: Any) -> Any:
    if name == "spool_dir":
        return Path(raw).expanduser()
    if name in ("db_url", "auth_token"):
        return str(raw).strip() or None
    if name == "metrics_addr":
        return str(raw).strip()
    if name == "redact":
        if isinstance(raw, bool):
            return raw
        switch = _SWITCH.get(str(raw).strip().lower())
        if switch is None:
            raise ConfigError(f"AGENTSPOOL_REDACT must be on or off, got {raw!r}")
        return switch
    if name == "redact_patterns":
        return Path(raw).expanduser()
    kind = (
        int
        if name in ("drain_batch", "metrics_port", "max_replica_bytes", "batch_bytes")
        else float
    )
    value: float | None
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        value = None
    if value is None and name in _BYTE_SETTINGS and isinstance(raw, str):
        try:  # sizes take units: 64M, 1G (sizes.py)
            value = parse_size(raw)
        except ValueError:
            value = None
    if value is None and kind is float and isinstance(raw, str):
        try:  # every float setting is seconds: 90, 15m, 7d, ... (durations.py)
            value = parse_duration(raw)
        except ValueError:
            value = None
    # NaN and infinity compare false with every bound: reject them here.
    if value is None or not math.isfinite(value):
        raise ConfigError(
            f"{_ENV[name]} must be"
            f" {_INT_FORMS.get(name, 'a whole number') if kind is int else 'a number of seconds or a duration (15m, 2h, 7d)'},"
            f" got {raw!r}"
        )
    return value


def display_url(url: str) -> str:
    """``url`` as it may be shown: without ``user:password@``, query string or fragment
    (any of which may carry a token), with or without a ``scheme://``."""
    shown = re.split(r"[?#]", url, maxsplit=1)[0]
    scheme, sep, rest = shown.partition("://")
    if not sep:
        scheme, rest = "", shown
    rest = _USERINFO.sub("", rest)
    shown = f"{scheme}{sep}{rest}"
    return shown if len(shown) <= 200 else shown[:199] + "…"


def db_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the database URL, or None if it can."""
    if not url.startswith(_DB_SCHEMES):
        if "://" in url or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:[^0-9]", url):
            return "unknown scheme"
        return "no scheme"
    if url.startswith("file:"):
        return None if url[len("file:") :].strip("/") else "no file path"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "its port is not a number"
    return None if parts.hostname else "no host"


def _validate(s: Settings) -> None:
    problem = None if s.db_url is None else db_url_problem(s.db_url)
    if s.db_url is not None and problem is not None:
        # Named without credentials or query string: either may carry a token.
        raise ConfigError(
            f"TURSO_DATABASE_URL / --db {display_url(s.db_url)!r} is not a database URL"
            f" ({problem}); accepted: {_ACCEPTED_URLS}"
        )
    for name in ("sync_timeout", "retry_base", "retry_cap", "rescan_interval",
                 "liveness_interval", "shutdown_timeout", "burst_timeout"):  # fmt: skip
        if getattr(s, name) <= 0:
            raise ConfigError(f"{_ENV[name]} must be greater than 0")
    if s.retain_synced < 0 or s.max_replica_bytes < 0:
        raise ConfigError(
            "AGENTSPOOL_RETAIN_SYNCED and AGENTSPOOL_MAX_REPLICA_BYTES must be 0 (off) or positive"
        )
    if s.checkpoint_interval < 0:
        raise ConfigError("AGENTSPOOL_CHECKPOINT_INTERVAL must be 0 (off) or a number of seconds")
    if s.remote_retention < 0:
        raise ConfigError("AGENTSPOOL_REMOTE_RETENTION must be 0 (off) or a duration (90d)")
    if s.abandon_after < 0:
        raise ConfigError("AGENTSPOOL_ABANDON_AFTER must be 0 (off) or a number of seconds")
    if s.retry_cap < s.retry_base:
        raise ConfigError("AGENTSPOOL_RETRY_CAP must be at least AGENTSPOOL_RETRY_BASE")
    if s.metrics_port is not None and not 0 < s.metrics_port < 65536:
        raise ConfigError("AGENTSPOOL_METRICS_PORT must be a TCP port (1-65535)")
    if not 1024 <= s.batch_bytes <= 64 << 20:
        raise ConfigError("AGENTSPOOL_BATCH_BYTES must be between 1024 and 67108864 (64 MiB)")
    if s.drain_batch < 1:
        raise ConfigError("AGENTSPOOL_DRAIN_BATCH must be at least 1")
    redact_patterns_of(s)  # read and compiled at start: a bad pattern file stops every command


# ---- --env-file -----------------------------------------------------------------
# ``--env-file``: settings from a file in the format of ``.env.example``.
#
# One ``KEY=VALUE`` per line; blank lines and lines starting with ``#`` are skipped;
# an optional ``export `` prefix is allowed; a value wrapped in matching single or
# double quotes loses them. Nothing else is interpreted (no ``$VAR`` expansion, no
# comment after a value): the same file works as systemd's ``EnvironmentFile=``.
# Errors name the file and line, never a value (values may be secrets).


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(ValueError):
    pass


def read_env_file(path: Path) -> list[tuple[int, str, str]]:
    """The file's (line number, key, value) assignments, in order."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"cannot read {path}: {exc}") from None
    assignments = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise EnvFileError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        assignments.append((number, key, value))
    return assignments
