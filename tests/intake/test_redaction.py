"""The detectors of redaction.py on a corpus of real-looking secrets and of text that
only looks a little like them (git SHAs, UUIDs, digests, base64 images, prose, code).

The secrets are built from pieces at run time (``secret_corpus``), so that this file
holds no string a secret scanner would flag; each has the length and alphabet of the
real thing, with seeded random bodies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentspool.producer.events import MAX_FIELD_BYTES
from agentspool.worker.intake.redaction import BUILTIN_KINDS, Redactor
from agentspool.worker.intake.replica import Replica, replica_path
from tests.intake.test_replica import SID, Events

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
URLSAFE = ALNUM + "-_"


def body(alphabet: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url(document: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def pem(label: str, seed: int, lines: int = 6, newline: str = "\n") -> str:
    rows = [body(ALNUM + "+/", 64, seed + i) for i in range(lines)]
    return newline.join(
        [f"-----BEGIN {label}-----", *rows, body(ALNUM, 20, seed) + "==", f"-----END {label}-----"]
    )


def secret_corpus() -> list[tuple[str, str]]:
    """(kind, secret) pairs: every built-in kind, in the forms it takes."""
    jwt = ".".join(
        [
            b64url({"alg": "HS256", "typ": "JWT"}),
            b64url({"sub": "1234567890", "name": "agent", "iat": 1516239022}),
            body(URLSAFE, 43, 7),
        ]
    )
    return [
        ("aws_access_key", "AKIA" + body(UPPER_DIGITS, 16, 1)),
        ("aws_access_key", "ASIA" + body(UPPER_DIGITS, 16, 2)),
        ("github_token", "ghp_" + body(ALNUM, 36, 3)),
        ("github_token", "gho_" + body(ALNUM, 36, 4)),
        ("github_token", "ghs_" + body(ALNUM, 36, 5)),
        ("github_token", "github_pat_" + body(ALNUM, 22, 6) + "_" + body(ALNUM, 59, 6)),
        ("gitlab_token", "glpat-" + body(URLSAFE, 20, 8)),
        ("gitlab_token", "glrt-" + body(URLSAFE, 26, 9)),
        (
            "slack_token",
            "xoxb-"
            + "-".join(
                [body(string.digits, 12, 10), body(string.digits, 13, 11), body(ALNUM, 24, 12)]
            ),
        ),  # fmt: skip
        ("slack_token", "xoxp-" + body(string.digits, 11, 13) + "-" + body(ALNUM, 32, 14)),
        (
            "slack_token",
            "https://hooks.slack.com/services/T"
            + body(UPPER_DIGITS, 8, 15)
            + "/B"
            + body(UPPER_DIGITS, 10, 16)
            + "/"
            + body(ALNUM, 24, 17),
        ),  # fmt: skip
        ("anthropic_api_key", "sk-ant-api03-" + body(URLSAFE, 93, 18) + "AA"),
        ("anthropic_api_key", "sk-ant-admin01-" + body(URLSAFE, 93, 19) + "AA"),
        ("openai_api_key", "sk-" + body(ALNUM, 20, 20) + "T3BlbkFJ" + body(ALNUM, 20, 21)),
        ("openai_api_key", "sk-proj-" + body(URLSAFE, 156, 22)),
        ("openai_api_key", "sk-svcacct-" + body(URLSAFE, 80, 23) + "9"),
        ("google_api_key", "AIza" + body(URLSAFE, 35, 24)),
        ("stripe_key", "sk_live_" + body(ALNUM, 24, 25)),
        ("stripe_key", "sk_test_" + body(ALNUM, 99, 26)),
        ("stripe_key", "rk_live_" + body(ALNUM, 24, 27)),
        ("stripe_key", "whsec_" + body(ALNUM, 32, 28)),
        ("jwt", jwt),
        ("private_key", pem("RSA PRIVATE KEY", 30)),
        ("private_key", pem("PRIVATE KEY", 40)),
        ("private_key", pem("OPENSSH PRIVATE KEY", 50)),
        ("private_key", pem("EC PRIVATE KEY", 60, lines=3)),
        ("private_key", pem("PGP PRIVATE KEY BLOCK", 70)),
        ("private_key", pem("ENCRYPTED PRIVATE KEY", 80, newline="\r\n")),
    ]


SECRETS = secret_corpus()
redactor = Redactor()


def redact(text: str) -> tuple[str, Counter[str]]:
    counts: Counter[str] = Counter()
    return redactor.text(text, counts), counts


def test_the_corpus_has_every_kind() -> None:
    kinds = {kind for kind, _ in SECRETS} | {"url_password"}  # tested on its own below
    assert kinds == BUILTIN_KINDS
    required = {"aws_access_key", "github_token", "gitlab_token", "slack_token",
                "anthropic_api_key", "openai_api_key", "google_api_key", "stripe_key",
                "jwt", "private_key", "url_password"}  # fmt: skip
    assert required <= kinds


SURROUNDINGS = [
    "{}",
    "export TOKEN={}\n",
    'config = {{"api_key": "{}", "retries": 3}}',
    "the key '{}' was printed by env",
    "Authorization: Bearer {}\r\n",
    "<td>{}</td>",
    "key={}&other=1",
    "line one\n{}\nline three",
]


@pytest.mark.parametrize(
    ("kind", "secret"), SECRETS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SECRETS)]
)
@pytest.mark.parametrize("around", SURROUNDINGS)
def test_each_secret_is_replaced_and_the_text_around_kept(
    kind: str, secret: str, around: str
) -> None:
    text = around.format(secret)
    redacted, counts = redact(text)
    assert redacted == around.format(f"[REDACTED:{kind}]")
    assert counts == Counter({kind: 1})


@pytest.mark.parametrize(
    ("kind", "secret"), SECRETS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SECRETS)]
)
def test_a_secret_inside_json_text_is_replaced_and_the_json_stays_valid(
    kind: str, secret: str
) -> None:
    # A dead letter's raw bytes are JSON text: newlines are "\n" escapes there.
    document = json.dumps({"output": f"cat key\n{secret}\ndone", "n": 1})
    redacted, counts = redact(document)
    assert json.loads(redacted) == {"output": f"cat key\n[REDACTED:{kind}]\ndone", "n": 1}
    assert counts == Counter({kind: 1})


URLS = [
    ("postgres://admin:{}@db.internal:5432/app", "s3cr3t-P4ss"),
    ("mysql://root:{}@127.0.0.1/shop", "hunter2"),
    ("redis://:{}@cache:6379/0", "p4ssw0rd"),
    ("https://deploy:{}@git.example.com/org/repo.git", "ghx%40pw"),
    ("amqp+ssl://user.name:{}@mq.example.com", "x;y,z=1"),
]


@pytest.mark.parametrize(("url", "password"), URLS)
def test_only_the_password_of_a_url_goes(url: str, password: str) -> None:
    text = f"connecting to {url.format(password)} now"
    redacted, counts = redact(text)
    assert redacted == f"connecting to {url.format('[REDACTED:url_password]')} now"
    assert counts == Counter({"url_password": 1})
    again, counts = redact(redacted)  # redacting twice changes and counts nothing more
    assert again == redacted and not counts


def test_several_secrets_in_one_text_are_counted_by_kind() -> None:
    by_kind = {kind: secret for kind, secret in SECRETS}
    text = " and ".join([by_kind["github_token"], by_kind["jwt"], by_kind["github_token"]])
    redacted, counts = redact(text)
    assert redacted == "[REDACTED:github_token] and [REDACTED:jwt] and [REDACTED:github_token]"
    assert counts == Counter({"github_token": 2, "jwt": 1})


def test_a_private_key_cut_short_is_redacted_to_the_end_of_its_body() -> None:
    key = pem("RSA PRIVATE KEY", 90)
    cut = key[: key.index("-----END")]
    redacted, counts = redact("$ cat id_rsa\n" + cut)
    assert redacted == "$ cat id_rsa\n[REDACTED:private_key]"
    assert counts == Counter({"private_key": 1})


def _base64_image() -> str:
    rng = random.Random(99)
    png = b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(6000))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _base64url_blob() -> str:
    rng = random.Random(98)
    return base64.urlsafe_b64encode(bytes(rng.randrange(256) for _ in range(6000))).decode()


CLEAN = [
    "commit 3f2a9c1d4e5b6a7c8d9e0f1a2b3c4d5e6f7a8b9c\nAuthor: Dev <dev@example.com>",
    "fixed in a1b2c3d, reverted in 9f8e7d6",
    f"session {uuid.UUID(int=random.Random(1).getrandbits(128))} started",
    "sha256: " + hashlib.sha256(b"agentspool").hexdigest(),
    "sha512 " + hashlib.sha512(b"agentspool").hexdigest(),
    "md5 " + hashlib.md5(b"x").hexdigest(),  # noqa: S324 - a digest to not redact
    _base64_image(),
    _base64url_blob(),
    "The agent reads the failing test, opens the module and proposes a patch; "
    "risk-free task-management for the desk-side team, xoxo.",
    "pip install scikit-learn; import sklearn; sk-learn is not a package",
    "see sk-learn-2024-release-notes-v1-2-3 and task-2024-11-05-migrate-db-v2",
    "xoxo-hugs-and-kisses-from-the-team and xoxb-not-a-token-at-all",
    "def check(line):\n    return line.startswith('-----BEGIN PRIVATE KEY-----')\n",
    "See https://example.com/docs?page=2#top and http://localhost:8080/health",
    "git clone git@github.com:org/repo.git; ssh://git@github.com/org/repo",
    "postgres://reader@db.internal/app (no password) and mailto:dev@example.com",
    "ANTHROPIC_API_KEY=sk-ant-dummy, the fake server's key",
    "AKIA is the prefix of an AWS key id; ghp_ of a GitHub token; eyJ starts a JWT",
    "eyJhbGciOiJIUzI1NiJ9 is only a header",
    "x = {'a': 1}; time 12:30; ratio 3:1; email: user@example.com",
    "export PATH=/usr/local/bin:$PATH\nls -la /tmp",
    "class TokenBucket:\n    def take(self, n: int) -> bool: ...\n",
    "BAKIA" + "A" * 16 + " is inside a longer word",
    "the glpat- prefix, xoxb- prefix and sk_live_ prefix alone",
    "[REDACTED:github_token] stays as it is",
]


@pytest.mark.parametrize("text", CLEAN, ids=[f"clean-{i}" for i in range(len(CLEAN))])
def test_no_false_hits(text: str) -> None:
    redacted, counts = redact(text)
    assert redacted == text
    assert not counts


def test_values_are_redacted_in_every_string_and_key_and_stay_json() -> None:
    token = dict(SECRETS)["github_token"]
    value = {"env": {"GITHUB_TOKEN": token, token: "as a key"}, "args": [1, None, f"-t {token}"]}
    counts: Counter[str] = Counter()
    text = redactor.stored(value, json.dumps(value), counts)
    assert json.loads(text) == {
        "env": {"GITHUB_TOKEN": "[REDACTED:github_token]", "[REDACTED:github_token]": "as a key"},
        "args": [1, None, "-t [REDACTED:github_token]"],
    }
    assert counts == Counter({"github_token": 3})
    clean = {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 10}}
    assert redactor.stored(clean, json.dumps(clean), counts) == json.dumps(clean)


def test_custom_patterns_add_kind_custom() -> None:
    custom = Redactor(["ACME-[0-9]{6}", "internal_[a-z]+_key"])
    counts: Counter[str] = Counter()
    text = custom.text("use ACME-123456 or internal_billing_key, not ACME-12", counts)
    assert text == "use [REDACTED:custom] or [REDACTED:custom], not ACME-12"
    assert counts == Counter({"custom": 2})
    value = {"ACME-000001": ["ACME-000002"]}  # always walked: JSON may hide a match
    assert json.loads(custom.stored(value, json.dumps(value), counts)) == {
        "[REDACTED:custom]": ["[REDACTED:custom]"]
    }


# ---- in a replica: counts by kind, kept across a late start; redacted before a cut ---


def _metadata(replica: Any) -> Any:
    row = replica.conn.execute("SELECT metadata FROM sessions WHERE id = ?", (SID,)).fetchone()
    return json.loads(row[0])


def test_counts_survive_a_start_that_arrives_after_the_messages(spool: Path) -> None:
    # Events of one session from several processes arrive in any order: a message's
    # counts are written before the session_start replaces the metadata.
    token, jwt = dict(SECRETS)["github_token"], dict(SECRETS)["jwt"]
    e = Events()
    start = e.start(metadata={"task": "t", "auth": jwt})
    first, second = e.message(1, "user", f"{token} {token}"), e.message(2, "tool", jwt)
    end = e.make("session_end", 3, status="completed", metadata={"redacted": "mine"})
    replica = Replica(replica_path(spool, SID), Redactor())
    try:
        replica.apply([first])
        assert _metadata(replica) == {"redacted": {"github_token": 2}}
        replica.apply([start, second])
        assert _metadata(replica) == {
            "task": "t", "auth": "[REDACTED:jwt]", "redacted": {"github_token": 2, "jwt": 2},
        }  # fmt: skip
        replica.apply([first, start])  # replays: nothing counted twice
        replica.apply([end])  # an end's metadata is merged; the counts win over its key
        assert _metadata(replica)["redacted"] == {"github_token": 2, "jwt": 2}
    finally:
        replica.close()


def test_a_clean_session_gets_no_counts_and_no_table(spool: Path) -> None:
    e = Events()
    replica = Replica(replica_path(spool, SID), Redactor())
    try:
        replica.apply([e.start(metadata={"task": "t"}), e.message(1, "user", "hello there")])
        assert _metadata(replica) == {"task": "t"}
        names = {r[0] for r in replica.conn.execute("SELECT name FROM sqlite_master")}
        assert "redactions" not in names
    finally:
        replica.close()


def test_a_field_is_redacted_before_it_is_cut_to_size(spool: Path) -> None:
    token = dict(SECRETS)["anthropic_api_key"]
    content = "x" * (MAX_FIELD_BYTES - 20) + " " + token  # the cut falls inside the token
    e = Events()
    replica = Replica(replica_path(spool, SID), Redactor())
    try:
        replica.apply([e.start(), e.message(1, "user", content)])
        stored = replica.conn.execute("SELECT content FROM messages").fetchone()[0]
        # The marker may be cut; no piece of the token is left to cut.
        assert stored.startswith("x" * (MAX_FIELD_BYTES - 20) + " [REDACTED:anthropic")
        assert stored.endswith("…[truncated 9 bytes]")
        assert token[:10] not in stored
    finally:
        replica.close()
