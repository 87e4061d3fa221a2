"""The Hrana wire format and error kinds, and the embedded database's batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentspool.worker.sync import hrana
from agentspool.worker.sync.database import (
    PERMANENT,
    STATEMENT,
    DatabaseError,
    StepError,
    open_database,
)
from tests.sqld import Sqld


@pytest.mark.parametrize(
    "value",
    [None, 0, -7, 2**62, 1.5, "", "text é \u2603", b"\x00\xffblob", True],
)
def test_values_round_trip(value: object) -> None:
    decoded = hrana.decode_value(hrana.encode_value(value))
    assert decoded == (int(value) if isinstance(value, bool) else value)


def test_integers_travel_as_strings_and_nan_as_null() -> None:
    assert hrana.encode_value(42) == {"type": "integer", "value": "42"}
    assert hrana.encode_value(float("nan")) == {"type": "null"}


def steps_of(body: bytes) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = json.loads(body)["requests"][0]["batch"]["steps"]
    return steps


def test_an_atomic_batch_is_conditioned_step_by_step() -> None:
    body = hrana.atomic_batch_body([("INSERT 1", ()), ("INSERT 2", (5,))])
    assert json.loads(body)["requests"][1] == {"type": "close"}
    steps = steps_of(body)
    assert [s["stmt"]["sql"] for s in steps] == [
        "BEGIN IMMEDIATE", "INSERT 1", "INSERT 2", "COMMIT", "ROLLBACK",
    ]  # fmt: skip
    assert "condition" not in steps[0]
    assert [s["condition"] for s in steps[1:4]] == [
        {"type": "ok", "step": 0},
        {"type": "ok", "step": 1},
        {"type": "ok", "step": 2},
    ]
    assert steps[4]["condition"] == {"type": "not", "cond": {"type": "ok", "step": 3}}
    assert steps[2]["stmt"]["args"] == [{"type": "integer", "value": "5"}]


def reference_body(statements: list[hrana.Statement]) -> bytes:
    """The batch as @libsql/client's batch() builds it, from dicts, through json.dumps:
    what atomic_batch_body must write."""
    steps: list[dict[str, Any]] = [{"stmt": hrana.statement("BEGIN IMMEDIATE")}]
    for sql, args in statements:
        steps.append(
            {
                "stmt": hrana.statement(sql, args),
                "condition": {"type": "ok", "step": len(steps) - 1},
            }
        )
    commit = len(steps)
    steps.append(
        {"stmt": hrana.statement("COMMIT"), "condition": {"type": "ok", "step": commit - 1}}
    )
    steps.append(
        {
            "stmt": hrana.statement("ROLLBACK"),
            "condition": {"type": "not", "cond": {"type": "ok", "step": commit}},
        }
    )
    requests = [{"type": "batch", "batch": {"steps": steps}}, {"type": "close"}]
    body = {"baton": None, "requests": requests}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


SQL_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),  # no lone surrogates
    st.binary(max_size=40),
)


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=30), st.lists(SQL_VALUES, max_size=12)),
        max_size=6,
    )
)
def test_the_direct_batch_encoder_writes_what_json_dumps_would(
    statements: list[tuple[str, list[object]]],
) -> None:
    assert hrana.atomic_batch_body(statements) == reference_body(statements)  # type: ignore[arg-type]


def test_the_direct_batch_encoder_on_awkward_text() -> None:
    texts = [
        '"quoted" \\ back\\slash',
        "line\nbreak\ttab\x00nul\x1f",
        "</script>",
        "\u2028\u2029",
        "é 🧪",
    ]
    statements: list[hrana.Statement] = [
        ("INSERT INTO t VALUES (?, ?)", (t, len(t))) for t in texts
    ]
    body = hrana.atomic_batch_body(statements)
    assert body == reference_body(statements)
    decoded = steps_of(body)
    assert [hrana.decode_value(s["stmt"]["args"][0]) for s in decoded[1:-2]] == texts
    with pytest.raises(TypeError):
        hrana.atomic_batch_body([("INSERT", (object(),))])


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, hrana.PERMANENT), (403, hrana.PERMANENT), (429, hrana.TRANSIENT),
     (500, hrana.TRANSIENT), (502, hrana.TRANSIENT), (503, hrana.TRANSIENT),
     (404, hrana.MISCONFIGURED), (405, hrana.MISCONFIGURED), (501, hrana.MISCONFIGURED)],
)  # fmt: skip
def test_http_statuses_are_classified(status: int, kind: str) -> None:
    assert hrana.classify_status(status) == kind


def test_urls_are_redacted_and_mapped() -> None:
    assert hrana.redact_url("libsql://u:p@db.example:8080/x?authToken=t") == (
        "libsql://db.example:8080/x"
    )
    assert hrana.http_base_url("libsql://db.example") == "https://db.example"
    assert hrana.http_base_url("http://u:p@127.0.0.1:9/") == "http://127.0.0.1:9"
    assert hrana.token_in_url("libsql://db.example?authToken=abc") == "abc"
    with pytest.raises(ValueError, match="not an HTTP"):
        hrana.http_base_url("ftp://db.example")


def test_a_port_number_like_401_is_not_an_auth_error(sqld: Sqld) -> None:
    # A server on a port such as 40123 answering 404 is a wrong URL, not a bad token.
    with open_database(f"{sqld.url}/no/such/path", None, timeout=10) as db:
        with pytest.raises(DatabaseError) as raised:
            db.run_atomic([("SELECT 1", ())])
    assert raised.value.kind == hrana.MISCONFIGURED
    assert "not a libSQL server?" in str(raised.value)


def _both(tmp_path: Path, sqld: Sqld) -> list[str]:
    return [f"file:{tmp_path / 'embedded.db'}", sqld.url]


def test_a_failed_statement_lands_nothing_in_either_database(tmp_path: Path, sqld: Sqld) -> None:
    for url in _both(tmp_path, sqld):
        with open_database(url, None, timeout=10) as db:
            db.run_atomic([("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)", ())])
            with pytest.raises(StepError) as raised:
                db.run_atomic(
                    [
                        ("INSERT INTO t VALUES (?, ?)", (1, "a")),
                        ("INSERT INTO t VALUES (?, ?)", (2, None)),  # NOT NULL: refused
                        ("INSERT INTO t VALUES (?, ?)", (3, "c")),
                    ]
                )
            assert raised.value.kind == STATEMENT, url
            assert raised.value.step == 1, url
            assert db.query("SELECT count(*) AS n FROM t") == [{"n": 0}], url
            db.run_atomic([("INSERT INTO t VALUES (?, ?)", (1, "a"))])
            assert db.query("SELECT k, v FROM t") == [{"k": 1, "v": "a"}], url


def test_a_missing_table_is_a_permanent_schema_error(tmp_path: Path, sqld: Sqld) -> None:
    for url in _both(tmp_path, sqld):
        with open_database(url, None, timeout=10) as db:
            with pytest.raises(DatabaseError) as raised:
                db.run_atomic([("INSERT INTO nowhere VALUES (1)", ())])
        assert raised.value.kind == PERMANENT, url


def test_an_unsupported_scheme_is_refused_by_name() -> None:
    with pytest.raises(DatabaseError, match="unsupported database URL 'postgres://db/x'"):
        open_database("postgres://user:pw@db/x", None)
