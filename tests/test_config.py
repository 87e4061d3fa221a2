"""Worker settings: environment, CLI overrides, validation, secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentspool.worker import config
from agentspool.worker.config import ConfigError, Settings, load_settings

TOKEN = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"

# Every setting with a valid non-default environment value and the value it becomes.
ENV_VALUES: dict[str, tuple[str, str, Any]] = {
    "spool_dir": ("AGENTSPOOL_DIR", "/srv/spool", Path("/srv/spool")),
    "db_url": ("TURSO_DATABASE_URL", " libsql://db.example.io ", "libsql://db.example.io"),
    "auth_token": ("TURSO_AUTH_TOKEN", TOKEN, TOKEN),
    "sync_timeout": ("AGENTSPOOL_SYNC_TIMEOUT", "3.5", 3.5),
    "retry_base": ("AGENTSPOOL_RETRY_BASE", "0.25", 0.25),
    "retry_cap": ("AGENTSPOOL_RETRY_CAP", "7", 7.0),
    "rescan_interval": ("AGENTSPOOL_RESCAN_INTERVAL", "11", 11.0),
    "liveness_interval": ("AGENTSPOOL_LIVENESS_INTERVAL", "0.5", 0.5),
    "abandon_after": ("AGENTSPOOL_ABANDON_AFTER", "0", 0.0),
    "shutdown_timeout": ("AGENTSPOOL_SHUTDOWN_TIMEOUT", "9", 9.0),
    "burst_timeout": ("AGENTSPOOL_BURST_TIMEOUT", "1e3", 1000.0),
    "drain_batch": ("AGENTSPOOL_DRAIN_BATCH", "17", 17),
    "retain_synced": ("AGENTSPOOL_RETAIN_SYNCED", "3600", 3600.0),
    "max_replica_bytes": ("AGENTSPOOL_MAX_REPLICA_BYTES", "1000000", 1_000_000),
    "metrics_port": ("AGENTSPOOL_METRICS_PORT", "9464", 9464),
    "metrics_addr": ("AGENTSPOOL_METRICS_ADDR", " 0.0.0.0 ", "0.0.0.0"),
    "checkpoint_interval": ("AGENTSPOOL_CHECKPOINT_INTERVAL", "2.5", 2.5),
    "batch_bytes": ("AGENTSPOOL_BATCH_BYTES", "65536", 65536),
    "redact": ("AGENTSPOOL_REDACT", " Off ", False),
    # a file the test writes (the patterns are read when the settings are loaded)
    "redact_patterns": ("AGENTSPOOL_REDACT_PATTERNS", "patterns.txt", Path("patterns.txt")),
    "remote_retention": ("AGENTSPOOL_REMOTE_RETENTION", "90d", 90 * 86400.0),
}

NUMERIC = [
    name
    for name in ENV_VALUES
    if name
    not in ("spool_dir", "db_url", "auth_token", "metrics_addr", "redact", "redact_patterns")
]


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"AGENTSPOOL_DIR": str(tmp_path / "spool"), **extra}


def test_every_setting_has_an_env_var_and_a_test_value() -> None:
    names = {f for f in Settings.__dataclass_fields__}
    assert names == set(ENV_VALUES)
    for name, (var, _, _) in ENV_VALUES.items():
        assert config.env_var(name) == var


def test_env_example_lists_every_env_var() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    text = example.read_text()
    for var, _, _ in ENV_VALUES.values():
        # a placeholder (the database URL) is there commented out, never as a value
        assert f"\n{var}=" in text or f"\n# {var}=" in text, f"{var} is missing from .env.example"


def test_defaults(tmp_path: Path) -> None:
    s = load_settings({}, base_env(tmp_path))
    assert s.spool_dir == tmp_path / "spool"
    assert s.db_url is None and s.auth_token is None
    assert s.embedded is True
    assert s.sync_timeout == 30.0
    assert (s.retry_base, s.retry_cap) == (1.0, 60.0)
    assert s.drain_batch == 2000
    assert isinstance(s.drain_batch, int)


@pytest.mark.parametrize("name", sorted(ENV_VALUES))
def test_env_var_is_read(tmp_path: Path, name: str) -> None:
    var, raw, expected = ENV_VALUES[name]
    env = base_env(tmp_path, **{var: raw})
    if name == "retry_base":
        env["AGENTSPOOL_RETRY_CAP"] = "1"
    if name == "redact_patterns":
        (tmp_path / raw).write_text("ACME-[0-9]+\n")
        env[var] = str(tmp_path / raw)
        expected = tmp_path / raw
    s = load_settings(None, env)
    assert getattr(s, name) == expected
    assert type(getattr(s, name)) is type(expected)


def test_all_env_vars_together(tmp_path: Path) -> None:
    env = {var: raw for var, raw, _ in ENV_VALUES.values()}
    s = load_settings({}, env)
    for name, (_, _, expected) in ENV_VALUES.items():
        assert getattr(s, name) == expected, name


def test_cli_overrides_win(tmp_path: Path) -> None:
    env = base_env(
        tmp_path,
        AGENTSPOOL_SYNC_TIMEOUT="3",
        TURSO_DATABASE_URL="http://127.0.0.1:1",
        AGENTSPOOL_DRAIN_BATCH="10",
    )
    s = load_settings(
        {
            "spool_dir": tmp_path / "other",
            "sync_timeout": 7,
            "db_url": "libsql://override.example.io",
            "drain_batch": "25",
        },
        env,
    )
    assert s.spool_dir == tmp_path / "other"
    assert s.sync_timeout == 7.0
    assert s.db_url == "libsql://override.example.io"
    assert s.drain_batch == 25


def test_none_override_means_not_given(tmp_path: Path) -> None:
    env = base_env(tmp_path, AGENTSPOOL_SYNC_TIMEOUT="3")
    s = load_settings({"sync_timeout": None, "db_url": None}, env)
    assert s.sync_timeout == 3.0
    assert s.db_url is None


def test_empty_env_var_means_unset(tmp_path: Path) -> None:
    env = base_env(tmp_path, AGENTSPOOL_SYNC_TIMEOUT="", TURSO_DATABASE_URL="")
    s = load_settings({}, env)
    assert s.sync_timeout == 30.0
    assert s.embedded


def test_blank_token_is_none(tmp_path: Path) -> None:
    s = load_settings({}, base_env(tmp_path, TURSO_AUTH_TOKEN="   "))
    assert s.auth_token is None


def test_spool_dir_expands_user(tmp_path: Path) -> None:
    s = load_settings({}, {"AGENTSPOOL_DIR": "~/somewhere"})
    assert s.spool_dir == Path.home() / "somewhere"


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("raw", ["abc", "1,5", "ten seconds"])
def test_bad_number_names_the_env_var(tmp_path: Path, name: str, raw: str) -> None:
    var = config.env_var(name)
    with pytest.raises(ConfigError) as info:
        load_settings({}, base_env(tmp_path, **{var: raw}))
    assert var in str(info.value)
    assert repr(raw) in str(info.value)


def test_drain_batch_must_be_an_integer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGENTSPOOL_DRAIN_BATCH"):
        load_settings({}, base_env(tmp_path, AGENTSPOOL_DRAIN_BATCH="2.5"))


@pytest.mark.parametrize("name", ["sync_timeout", "retry_base", "rescan_interval",
                                  "liveness_interval", "shutdown_timeout", "burst_timeout"])  # fmt: skip
@pytest.mark.parametrize("raw", ["0", "-1"])
def test_non_positive_durations_rejected(tmp_path: Path, name: str, raw: str) -> None:
    var = config.env_var(name)
    with pytest.raises(ConfigError, match=var):
        load_settings({}, base_env(tmp_path, **{var: raw}))


FLOAT_SETTINGS = [name for name in NUMERIC if name != "drain_batch"]


def test_nan_rejected(tmp_path: Path) -> None:
    # float("nan") parses, and every `value <= 0` / `cap < base` check is false for
    # it. A NaN sync deadline never expires (`now >= nan` is always false), so a hung
    # sync child would never be killed. One test for every setting (one bug).
    accepted = []
    for name in FLOAT_SETTINGS:
        var = config.env_var(name)
        for raw in ("nan", "-NaN"):
            try:
                load_settings({}, base_env(tmp_path, **{var: raw}))
            except ConfigError as exc:
                assert var in str(exc)
            else:
                accepted.append(f"{var}={raw}")
    assert accepted == [], f"NaN accepted for: {', '.join(accepted)}"


def test_infinite_sync_timeout_rejected(tmp_path: Path) -> None:
    # The design requires every remote call to run under a deadline.
    for raw in ("inf", "Infinity", "1e999"):
        with pytest.raises(ConfigError, match="AGENTSPOOL_SYNC_TIMEOUT"):
            load_settings({}, base_env(tmp_path, AGENTSPOOL_SYNC_TIMEOUT=raw))


def test_negative_abandon_after_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGENTSPOOL_ABANDON_AFTER"):
        load_settings({}, base_env(tmp_path, AGENTSPOOL_ABANDON_AFTER="-5"))


def test_drain_batch_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGENTSPOOL_DRAIN_BATCH"):
        load_settings({}, base_env(tmp_path, AGENTSPOOL_DRAIN_BATCH="0"))
    assert load_settings({}, base_env(tmp_path, AGENTSPOOL_DRAIN_BATCH="1")).drain_batch == 1


def test_retry_cap_below_base_rejected(tmp_path: Path) -> None:
    env = base_env(tmp_path, AGENTSPOOL_RETRY_BASE="5", AGENTSPOOL_RETRY_CAP="2")
    with pytest.raises(ConfigError, match="AGENTSPOOL_RETRY_CAP"):
        load_settings({}, env)
    # ...also when only one of them comes from the CLI
    with pytest.raises(ConfigError, match="AGENTSPOOL_RETRY_CAP"):
        load_settings({"retry_cap": 0.5}, base_env(tmp_path))
    equal = load_settings(
        {}, base_env(tmp_path, AGENTSPOOL_RETRY_BASE="2", AGENTSPOOL_RETRY_CAP="2")
    )
    assert equal.retry_cap == equal.retry_base == 2.0


@pytest.mark.parametrize(
    "url",
    [
        "libsql://db-org.turso.io",
        "https://db-org.turso.io",
        "http://127.0.0.1:8080",
        "wss://db-org.turso.io",
        "ws://127.0.0.1:8080",
        "file:/var/lib/agentspool/remote.db",
    ],
)
def test_good_url_schemes(tmp_path: Path, url: str) -> None:
    s = load_settings({}, base_env(tmp_path, TURSO_DATABASE_URL=url))
    assert s.db_url == url
    assert s.effective_db_url == url
    assert not s.embedded


@pytest.mark.parametrize(
    "url",
    ["postgres://u@h/db", "mysql://h", "ftp://h", "db-org.turso.io", "127.0.0.1:8080", "/tmp/x.db"],
)
def test_bad_url_scheme_rejected(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="TURSO_DATABASE_URL"):
        load_settings({}, base_env(tmp_path, TURSO_DATABASE_URL=url))
    with pytest.raises(ConfigError, match="TURSO_DATABASE_URL"):
        load_settings({"db_url": url}, base_env(tmp_path))


def test_bad_url_error_does_not_echo_credentials(tmp_path: Path) -> None:
    # A URL may carry credentials (user:password@, ?authToken=); an error message
    # about its scheme must not print them, with or without a "://".
    for url in (
        "postgres://user:hunter2-SECRET@host/db",
        "db-org.turso.io?authToken=hunter2-SECRET",
    ):
        with pytest.raises(ConfigError) as info:
            load_settings({}, base_env(tmp_path, TURSO_DATABASE_URL=url))
        assert "TURSO_DATABASE_URL" in str(info.value)
        assert "hunter2-SECRET" not in str(info.value), url


def test_auth_token_not_in_repr(tmp_path: Path) -> None:
    env = base_env(tmp_path, TURSO_AUTH_TOKEN=TOKEN, TURSO_DATABASE_URL="libsql://x.turso.io")
    s = load_settings({}, env)
    assert s.auth_token == TOKEN
    assert TOKEN not in repr(s)
    assert TOKEN not in str(s)
    assert "auth_token=" not in repr(s)
    assert "libsql://x.turso.io" in repr(s)  # the rest is still there for debugging


def test_embedded_default_url(tmp_path: Path) -> None:
    s = load_settings({}, base_env(tmp_path))
    assert s.embedded
    assert s.db_url is None
    assert s.effective_db_url == f"file:{tmp_path / 'spool'}/agentspool.db"
    assert s.effective_db_url == f"file:{s.spool_dir / config.EMBEDDED_DB_FILENAME}"
    # follows a CLI spool override too
    other = load_settings({"spool_dir": str(tmp_path / "x")}, base_env(tmp_path))
    assert other.effective_db_url == f"file:{tmp_path / 'x'}/agentspool.db"


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings({}, base_env(tmp_path))
    with pytest.raises(AttributeError):
        s.sync_timeout = 1.0  # type: ignore[misc]


def test_default_spool_dir_comes_from_the_given_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # load_settings(environ=...) must read the spool's default location from that
    # mapping, not from the process environment.
    monkeypatch.setenv("AGENTSPOOL_DIR", str(tmp_path / "from-process-env"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "process-state"))
    s = load_settings({}, {"XDG_STATE_HOME": str(tmp_path / "given-state")})
    assert s.spool_dir == tmp_path / "given-state" / "agentspool"


def test_redaction_is_on_by_default_and_takes_on_and_off(tmp_path: Path) -> None:
    assert load_settings({}, base_env(tmp_path)).redact is True
    for raw, expected in (("on", True), ("TRUE", True), ("1", True), ("off", False), ("no", False)):
        s = load_settings({}, base_env(tmp_path, AGENTSPOOL_REDACT=raw))
        assert s.redact is expected
    patterns = tmp_path / "patterns.txt"
    patterns.write_text("# ours\n\nACME-[0-9]{6}\n   \n  internal_[a-z]+_key  \n")
    s = load_settings({}, base_env(tmp_path, AGENTSPOOL_REDACT_PATTERNS=str(patterns)))
    assert config.redact_patterns_of(s) == ["ACME-[0-9]{6}", "internal_[a-z]+_key"]
    off = {"AGENTSPOOL_REDACT": "off", "AGENTSPOOL_REDACT_PATTERNS": str(tmp_path / "none")}
    assert config.redact_patterns_of(load_settings({}, base_env(tmp_path, **off))) == []
    with pytest.raises(ConfigError, match="AGENTSPOOL_REDACT must be on or off, got 'maybe'"):
        load_settings({}, base_env(tmp_path, AGENTSPOOL_REDACT="maybe"))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read the pattern file"),
        ("fine\n[unclosed\n", ":2: not a regular expression"),
        ("(?P<x>a)|\n", ":1: the pattern matches empty text"),
    ],
)
def test_a_bad_pattern_file_is_a_config_error(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "patterns.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings({}, base_env(tmp_path, AGENTSPOOL_REDACT_PATTERNS=str(path)))
    message = str(info.value)
    assert message.startswith("AGENTSPOOL_REDACT_PATTERNS: ") and problem in message
    assert "\n" not in message and "unclosed" not in message  # one line, no pattern text
