"""Bad input written straight into a queue file: every item gets one clear, recorded
outcome (applied, ignored as a replay, or dead-lettered with a reason), and the drain
never stops. The Drainer runs in-process against a temporary spool, for speed;
hypothesis generates the fuzz."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentspool.producer import events as ev
from agentspool.producer import queuefile
from agentspool.worker.intake.drain import Drainer
from agentspool.worker.intake.replica import replica_path, to_text
from agentspool.worker.state import StateStore
from tests.helpers import finish, run_python

PRODUCER = "fuzzhost-1-0000beef"
T0 = 1_764_135_270.0


# ---- a spool with one queue file, and an in-process drain ------------------------


@dataclass
class Outcome:
    dead: dict[int, tuple[bytes, str]]  # item id -> (data kept, reason)
    left: int  # items neither acked nor dead-lettered
    items: int
    failures: int = 0  # passes that failed and would be retried (a stalled queue)


class FuzzSpool:
    """A spool with one producer queue file that tests write raw items into."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.queue_dir = root / queuefile.QUEUES_DIRNAME / PRODUCER
        queuefile.create_queue_file(
            self.queue_dir,
            queuefile.ProducerInfo(PRODUCER, os.getpid(), "fuzzhost", "", T0),
        )
        self.conn = sqlite3.connect(queuefile.queue_db_path(self.queue_dir), timeout=10)

    def put(self, *items: Any) -> list[int]:
        ids = []
        with self.conn:
            for item in items:
                cur = self.conn.execute(
                    f"INSERT INTO {queuefile.TABLE} (data, timestamp, status) VALUES (?, ?, 0)",  # noqa: S608
                    (item, time.time()),
                )
                ids.append(int(cur.lastrowid or 0))
        return ids

    def drain(self) -> Outcome:
        state = StateStore(self.root)
        drainer = Drainer(self.root, state)
        try:
            for _ in range(100):
                if drainer.drain_all().items == 0:
                    break
            failures = drainer.failures
            dead = {
                item_id: (bytes(data), reason)
                for _, _, item_id, data, reason, _ in state.dead_letters(limit=10**6)
            }
        finally:
            drainer.close()
            state.close()
        counts = dict(
            self.conn.execute(
                f"SELECT status, count(*) FROM {queuefile.TABLE} GROUP BY status"  # noqa: S608
            ).fetchall()
        )
        left = sum(n for status, n in counts.items() if status < queuefile.STATUS_ACKED)
        return Outcome(dead, left, sum(counts.values()), failures)

    def replica(self, session_id: str) -> sqlite3.Connection:
        return sqlite3.connect(replica_path(self.root, session_id))

    def close(self) -> None:
        self.conn.close()


@contextmanager
def fuzz_spool() -> Iterator[FuzzSpool]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "spool"
        root.mkdir(mode=0o700)
        spool = FuzzSpool(root)
        try:
            yield spool
        finally:
            spool.close()


def event(kind: str, seq: int, session_id: str = "s1", pseq: int | None = None, **fields: Any):
    e = {
        "v": 1,
        "type": kind,
        "session_id": session_id,
        "seq": seq,
        "producer_id": PRODUCER,
        "pseq": seq if pseq is None else pseq,
        "ts": T0 + seq % 100_000,
    }
    defaults = {
        ev.SESSION_START: {"agent": "fuzzer"},
        ev.MESSAGE: {"role": "user", "content": f"message {seq}"},
        ev.TOOL_STARTED: {"call_id": f"c{seq}", "name": "tool"},
        ev.TOOL_FINISHED: {"call_id": f"c{seq}"},
        ev.SESSION_END: {"status": "completed"},
    }.get(kind, {})
    e.update(defaults)
    e.update(fields)
    return e


def raw(e: Any) -> bytes:
    return json.dumps(e).encode()


def good_session(session_id: str, messages: int = 3) -> list[bytes]:
    items = [raw(event(ev.SESSION_START, 0, session_id, pseq=10_000))]
    items += [
        raw(event(ev.MESSAGE, n, session_id, pseq=10_000 + n)) for n in range(1, messages + 1)
    ]
    items.append(raw(event(ev.SESSION_END, messages + 1, session_id, pseq=20_000)))
    return items


# ---- 1. the table of bad inputs: one outcome each --------------------------------

BIG = "€" * (ev.MAX_FIELD_BYTES // 3 + 1000)  # 3 bytes a character: over 1 MiB
DEEP_TO_PARSE = b"[" * 100_000 + b"]" * 100_000


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def with_raw_field(e: dict[str, Any], name: str, value_json: str) -> bytes:
    """An event's JSON with one field's value spliced in as raw JSON text."""
    return raw(e)[:-1] + f', "{name}": {value_json}}}'.encode()


DEAD = "dead"

# (case id, item, expected outcome, a phrase the dead letter's reason contains)
CASES: list[tuple[str, Any, str, str]] = [
    ("not-json", b"{not json", DEAD, "invalid event"),
    ("json-array", b"[1, 2]", DEAD, "not a JSON object"),
    ("json-null", b"null", DEAD, "not a JSON object"),
    ("empty", b"", DEAD, "invalid event"),
    ("sql-null-data", None, DEAD, "invalid event"),
    ("sql-integer-data", 42, DEAD, "not a JSON object"),
    ("invalid-utf8", b'{"v": 1, "type": "message\xff\xfe"}', DEAD, "invalid event"),
    ("raw-nul-byte", b'{"v": 1,\x00 "type": "message"}', DEAD, "invalid event"),
    ("unknown-type", raw(event("teleport", 5)), DEAD, "unknown event type 'teleport'"),
    ("future-version", raw(event(ev.MESSAGE, 5, v=2)), DEAD, "unsupported format version"),
    ("missing-seq", raw({k: v for k, v in event(ev.MESSAGE, 5).items() if k != "seq"}), DEAD,
     "missing field 'seq'"),
    ("missing-role", raw({k: v for k, v in event(ev.MESSAGE, 5).items() if k != "role"}), DEAD,
     "missing field 'role'"),
    ("seq-as-string", raw({**event(ev.MESSAGE, 5), "seq": "5"}), DEAD, "field 'seq' has type str"),
    ("ts-as-bool", raw(event(ev.MESSAGE, 5, ts=True)), DEAD, "field 'ts' has type bool"),
    ("ts-nan", with_raw_field(event(ev.MESSAGE, 5), "ts", "NaN"), DEAD, "ts must be"),
    ("negative-seq", raw(event(ev.MESSAGE, -3)), DEAD, "seq and pseq"),
    ("huge-seq", raw(event(ev.MESSAGE, 2**70)), DEAD, "seq and pseq"),
    ("session-id-int", raw(event(ev.MESSAGE, 5, session_id=7)), DEAD, "session_id"),
    ("metadata-list", raw(event(ev.MESSAGE, 5, metadata=[1])), DEAD, "field 'metadata'"),
    ("end-status-bogus", raw(event(ev.SESSION_END, 5, status="exploded")), DEAD,
     "session_end status"),
    ("start-not-seq-0", raw(event(ev.SESSION_START, 5)), DEAD, "seq 0"),
    ("deep-to-parse", with_raw_field(event(ev.MESSAGE, 5), "metadata", "[" * 100_000),
     DEAD, "invalid event"),
    ("deep-to-parse-closed", DEEP_TO_PARSE, DEAD, "recursion"),
    ("too-big-item", raw(event(ev.MESSAGE, 5, content="x" * (ev.MAX_ITEM_BYTES + 1))), DEAD,
     f"over the {ev.MAX_ITEM_BYTES} byte limit"),
]  # fmt: skip


@pytest.mark.parametrize("name,item,expected,phrase", CASES, ids=[c[0] for c in CASES])
def test_each_bad_item_is_dead_lettered_with_its_reason_and_the_drain_goes_on(
    name: str, item: Any, expected: str, phrase: str
) -> None:
    with fuzz_spool() as spool:
        before = spool.put(*good_session("before"))
        (bad_id,) = spool.put(item)
        after = spool.put(*good_session("after", messages=5))
        outcome = spool.drain()

        assert outcome.left == 0, "an item was neither applied nor dead-lettered"
        assert set(outcome.dead) == {bad_id}, outcome.dead.keys()
        data, reason = outcome.dead[bad_id]
        assert phrase.lower() in reason.lower(), reason
        if isinstance(item, bytes):
            assert data == item  # kept verbatim, inert
        for session_id, n_messages in (("before", 3), ("after", 5)):
            conn = spool.replica(session_id)
            assert conn.execute("SELECT status FROM sessions").fetchall() == [("completed",)]
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == n_messages
            conn.close()
        assert len(before) + 1 + len(after) == outcome.items


def test_out_of_order_seq_is_applied_in_place() -> None:
    with fuzz_spool() as spool:
        items = good_session("s1", messages=4)
        spool.put(items[0], items[3], items[5], items[1], items[4], items[2])
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        conn = spool.replica("s1")
        assert [r[0] for r in conn.execute("SELECT seq FROM messages ORDER BY seq")] == [1, 2, 3, 4]
        assert conn.execute("SELECT status FROM sessions").fetchone() == ("completed",)


def test_a_replayed_event_is_ignored_and_a_conflicting_one_dead_lettered() -> None:
    with fuzz_spool() as spool:
        items = good_session("s1", messages=2)
        spool.put(*items)
        (replay,) = spool.put(items[1])  # the same event again: harmless
        conflict = raw(event(ev.MESSAGE, 1, "s1", pseq=77_777, content="an impostor"))
        (impostor,) = spool.put(conflict)
        outcome = spool.drain()
        assert outcome.left == 0
        assert set(outcome.dead) == {impostor}
        assert "already holds another event" in outcome.dead[impostor][1]
        conn = spool.replica("s1")
        assert conn.execute("SELECT content FROM messages WHERE seq = 1").fetchone() == (
            "message 1",
        )


def test_a_later_session_end_decides_and_an_earlier_one_arriving_late_does_not() -> None:
    with fuzz_spool() as spool:
        spool.put(*good_session("s1", messages=1))  # ends "completed" at seq 2
        spool.put(raw(event(ev.SESSION_END, 4, "s1", status="error", error="went on, failed")))
        spool.put(raw(event(ev.SESSION_END, 3, "s1", status="completed")))  # late, older
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        conn = spool.replica("s1")
        assert conn.execute("SELECT status, error FROM sessions").fetchone() == (
            "error",
            "went on, failed",
        )


def test_tool_finished_without_tool_started_records_the_outcome() -> None:
    with fuzz_spool() as spool:
        spool.put(
            raw(event(ev.SESSION_START, 0)),
            raw(event(ev.TOOL_FINISHED, 1, call_id="orphan", output="42", error="boom")),
        )
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        conn = spool.replica("s1")
        row = conn.execute(
            "SELECT name, output, status, error, started_at FROM tool_executions"
        ).fetchone()
        assert row == ("", "42", "error", "boom", None)


def test_events_without_their_session_start_are_kept() -> None:
    with fuzz_spool() as spool:
        spool.put(raw(event(ev.MESSAGE, 3, "headless")), raw(event(ev.SESSION_END, 4, "headless")))
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        conn = spool.replica("headless")
        assert conn.execute("SELECT agent, status FROM sessions").fetchone() == ("", "completed")
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_nul_characters_and_sql_looking_text_are_stored_verbatim() -> None:
    nasty = [
        "'; DROP TABLE messages; --",
        'Robert"); DELETE FROM sessions WHERE ("1"="1',
        "\x00leading NUL and a middle \x00 one",
        "SELECT * FROM sessions; -- /* */ ' \" `",
        "\u202etext with bidi control\u202c and \U0001f600",
    ]
    with fuzz_spool() as spool:
        items = [raw(event(ev.SESSION_START, 0, agent="x'); DROP TABLE sessions;--"))]
        items += [
            raw(event(ev.MESSAGE, n + 1, role=text, content=text, metadata={text: text}))
            for n, text in enumerate(nasty)
        ]
        items.append(raw(event(ev.TOOL_STARTED, 10, call_id="'; --", name=nasty[0], input=nasty)))
        spool.put(*items)
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        conn = spool.replica("s1")
        rows = conn.execute("SELECT role, content, metadata FROM messages ORDER BY seq").fetchall()
        assert [(r, c) for r, c, _ in rows] == [(t, t) for t in nasty]
        assert [json.loads(m) for _, _, m in rows] == [{t: t} for t in nasty]
        assert conn.execute("SELECT agent FROM sessions").fetchone() == (
            "x'); DROP TABLE sessions;--",
        )
        assert conn.execute("SELECT call_id, name FROM tool_executions").fetchone() == (
            "'; --",
            nasty[0],
        )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"sessions", "messages", "tool_executions"} <= tables


def test_lone_surrogates_are_stored_as_question_marks() -> None:
    with fuzz_spool() as spool:
        spool.put(raw(event(ev.SESSION_START, 0)), raw(event(ev.MESSAGE, 1, content="a\udc80b")))
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        conn = spool.replica("s1")
        assert conn.execute("SELECT content FROM messages").fetchone() == ("a?b",)


def test_a_session_id_that_is_not_utf8_is_dead_lettered_and_the_queue_goes_on() -> None:
    """Issue 26: sessions ``before``, a lone surrogate and ``after`` in one hand-written
    queue file. The bad session's items are dead-lettered with the reason, in one pass
    that fails nowhere; the sessions around it land."""
    with fuzz_spool() as spool:
        spool.put(*good_session("before"), *good_session("\udc80"), *good_session("after"))
        spool.put(raw(event(ev.MESSAGE, 9, "before", producer_id="p\udc80")))
        outcome = spool.drain()
        assert outcome.left == 0 and outcome.failures == 0
        reasons = [reason for _, reason in outcome.dead.values()]
        assert len(reasons) == 5 + 1
        assert reasons.count("invalid event: session_id is not valid UTF-8 text"
                             " (it holds a lone surrogate)") == 5  # fmt: skip
        assert "producer_id is not valid UTF-8 text" in reasons[-1]
        for sid in ("before", "after"):
            conn = spool.replica(sid)
            assert conn.execute("SELECT status FROM sessions").fetchone() == ("completed",)
            conn.close()


def test_a_failure_while_recording_a_session_dead_letters_its_items_not_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever raises after a session's events are applied (here: reading its summary
    back) stays with that session's items: they are dead-lettered with the reason and
    the next session in the queue is drained in the same pass."""
    from agentspool.worker.intake.replica import Replica

    real_summary = Replica.summary

    def summary(self: Replica, session_id: str) -> Any:
        if session_id == "cursed":
            raise UnicodeEncodeError("utf-8", session_id, 0, 1, "surrogates not allowed")
        return real_summary(self, session_id)

    monkeypatch.setattr(Replica, "summary", summary)
    with fuzz_spool() as spool:
        spool.put(*good_session("cursed"), *good_session("after"))
        outcome = spool.drain()
        assert outcome.left == 0 and outcome.failures == 0
        assert len(outcome.dead) == 5
        assert all("cannot record: UnicodeEncodeError" in r for _, r in outcome.dead.values())
        conn = spool.replica("after")
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (3,)
        conn.close()


def test_a_field_over_the_limit_is_truncated_with_a_marker() -> None:
    with fuzz_spool() as spool:
        structured = {"parts": ["y" * (ev.MAX_FIELD_BYTES + 10)]}
        spool.put(
            raw(event(ev.SESSION_START, 0, metadata={"blob": "m" * (2 * ev.MAX_FIELD_BYTES)})),
            raw(event(ev.MESSAGE, 1, content=BIG)),
            raw(event(ev.MESSAGE, 2, content=structured)),
            raw(event(ev.MESSAGE, 3, content="fits")),
        )
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        conn = spool.replica("s1")
        contents = [r[0] for r in conn.execute("SELECT content FROM messages ORDER BY seq")]
        big_bytes = len(BIG.encode())
        kept = ev.MAX_FIELD_BYTES // 3 * 3  # whole 3-byte characters only
        assert contents[0] == BIG[: kept // 3] + f"…[truncated {big_bytes - kept} bytes]"
        assert len(contents[1].encode()) < ev.MAX_FIELD_BYTES + 40
        assert contents[1].endswith(" bytes]") and "…[truncated " in contents[1]
        assert contents[2] == "fits"
        (metadata,) = conn.execute("SELECT metadata FROM sessions").fetchone()
        assert metadata.startswith('{"blob": "mmm') and "…[truncated " in metadata


def test_nesting_that_parses_but_cannot_be_stored_is_dead_lettered() -> None:
    """Between the depth json.loads accepts and the depth json.dumps can write back
    (the worker's stack is deeper there), an event used to make every drain pass
    raise RecursionError: the worker retried the same batch forever."""
    with fuzz_spool() as spool:
        spool.put(raw(event(ev.SESSION_START, 0)))
        ids = spool.put(
            *[
                with_raw_field(event(ev.MESSAGE, n + 1), "metadata", deep_json(depth))
                for n, depth in enumerate(range(900, 1000, 4))
            ]
        )
        spool.put(raw(event(ev.SESSION_END, 100)))
        outcome = spool.drain()
        assert outcome.left == 0
        assert outcome.dead and set(outcome.dead) <= set(ids)
        for _data, reason in outcome.dead.values():
            assert "nested too deeply" in reason or "recursion" in reason, reason
        conn = spool.replica("s1")
        applied = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        assert applied + len(outcome.dead) == len(ids)
        assert conn.execute("SELECT status FROM sessions").fetchone() == ("completed",)


def test_data_stored_as_text_is_read_like_bytes() -> None:
    with fuzz_spool() as spool:
        spool.put(raw(event(ev.SESSION_START, 0)).decode(), raw(event(ev.MESSAGE, 1)).decode())
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0


# ---- 2. a 50 MB content: the producer shrugs, the worker stays bounded -------------

HUGE_PRODUCER = """
import json, resource, time
from agentspool import Spool

spool = Spool(SPOOL)
s = spool.session(agent="huge", session_id="huge-1")
s.message("user", "before")
t0 = time.perf_counter()
s.message("tool", "z" * (50 * 1024 * 1024))
emit_s = time.perf_counter() - t0
s.message("user", "after")
ended = s.end(timeout=60)
# VmHWM is this process's own peak: getrusage's ru_maxrss would also count the RSS
# of the pytest process it was started from (Linux carries it across execve).
hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM:"))
print(json.dumps({"ended": ended, "emit_s": emit_s, "dropped": spool.stats().dropped,
                  "maxrss_mb": hwm_kib / 1024}))
"""

# Runs a command as the child of a small process and reports the child's peak RSS: the
# child's ru_maxrss then starts from that small process's, not from pytest's.
PEAK_RSS_OF = """
import json, resource, subprocess, sys
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"returncode": result.returncode, "stderr": result.stderr,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


@pytest.mark.slow
def test_a_50_mb_content_does_not_hurt_the_producer_or_the_worker(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    report = json.loads(finish(run_python(HUGE_PRODUCER, spool_dir)))
    print("50 MB producer:", report)
    assert report["ended"] is True and report["dropped"] == 0
    assert report["maxrss_mb"] < 400, report  # a few copies of 50 MB at most

    # The worker, as a process of its own, so that its peak memory can be measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSPOOL_", "TURSO_"))}
    env["AGENTSPOOL_DIR"] = str(spool_dir)
    measured = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF,
         str(Path(sys.executable).parent / "agentspool"), "worker", "run", "--burst"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr
    worker = json.loads(measured.stdout)
    stderr = worker["stderr"]
    print(f"worker peak RSS with a 50 MB item: {worker['maxrss_kib'] / 1024:.0f} MB")
    assert worker["returncode"] == 0, stderr
    assert worker["maxrss_kib"] / 1024 < 500
    assert "over the 8388608 byte limit" in stderr

    state = sqlite3.connect(spool_dir / "worker.db")
    ((size, reason),) = state.execute("SELECT length(data), reason FROM dead_letters").fetchall()
    assert size > 50 * 1024 * 1024 and "byte limit" in reason  # kept whole, not parsed
    conn = sqlite3.connect(replica_path(spool_dir, "huge-1"))
    assert [r[0] for r in conn.execute("SELECT content FROM messages ORDER BY seq")] == [
        "before",
        "after",
    ]


# ---- 3. properties ---------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

FIELD_NAMES = sorted(
    {*ev.ENVELOPE_FIELDS}
    | {f for fields in ev.REQUIRED_FIELDS.values() for f in fields}
    | {f for fields in ev.OPTIONAL_FIELDS.values() for f in fields}
)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with a few fields deleted or replaced by any JSON value."""
    kind = draw(st.sampled_from(sorted(ev.EVENT_TYPES)))
    seq = 0 if kind == ev.SESSION_START else draw(st.integers(1, 50))
    e = event(kind, seq, draw(st.sampled_from(["s1", "s2", "x" * 250, "é/../\x00"])))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(FIELD_NAMES))
        if draw(st.booleans()):
            e.pop(name, None)
        else:
            e[name] = draw(json_values)
    return e


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_validate_accepts_or_says_why_for_any_json_value(value: Any) -> None:
    try:
        result = ev.validate(value)
    except ev.InvalidEvent as exc:
        assert str(exc)
    else:
        assert result is value


@given(mutated_events())
@settings(max_examples=300, deadline=None)
def test_validate_accepts_or_says_why_for_mutated_events(e: dict[str, Any]) -> None:
    try:
        ev.validate(e)
    except ev.InvalidEvent as exc:
        assert str(exc)


@given(st.text(), st.integers(min_value=4, max_value=64))
@settings(max_examples=300, deadline=None)
def test_truncation_keeps_a_utf8_prefix_and_says_how_much_was_cut(text: str, limit: int) -> None:
    result = ev.truncate_text(text, limit)
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        assert result == text
    else:
        kept, _, marker = result.partition("…[truncated ")
        assert text.startswith(kept)
        kept_bytes = len(kept.encode("utf-8", "surrogatepass"))
        assert limit - 3 <= kept_bytes <= limit
        assert marker == f"{len(data) - kept_bytes} bytes]"


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_to_text_never_fails_on_json_values(value: Any) -> None:
    text = to_text(value)
    assert text is None or isinstance(text, str)
    if text is not None:
        text.encode("utf-8")  # storable as SQLite text


queue_items = st.one_of(
    mutated_events().map(raw),
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@given(st.lists(queue_items, min_size=1, max_size=25))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_any_mix_of_items_gets_one_outcome_each_and_good_sessions_survive(
    items: list[bytes],
) -> None:
    with fuzz_spool() as spool:
        ids = spool.put(*items)
        spool.put(*good_session("canary", messages=2))
        outcome = spool.drain()
        assert outcome.left == 0, "the drain left items behind"
        assert set(outcome.dead) <= set(ids)
        for _data, reason in outcome.dead.values():
            assert reason
        conn = spool.replica("canary")
        try:
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
        finally:
            conn.close()


# Values an attacker (or a buggy producer) can put in any field: text SQLite or UTF-8
# cannot hold, NULs, terminal escapes, huge text and numbers no column holds.
hostile_values = st.one_of(
    st.text(st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=8),
    st.sampled_from(
        [
            "\udc80",
            "ok\ud800",
            "\x00",
            "a\x00b",
            "\x1b]52;c;aGFjaw==\x07\x1b[2J",
            "line\nforged: worker log\r",
            "x" * (ev.MAX_FIELD_BYTES + 7),
            "€" * (ev.MAX_ITEM_BYTES // 3 + 10),
            2**63,
            -(2**80),
            1e308,
            -0.0,
            {"\udc80": ["\x00", {"k\x1b": "\udfff"}]},
        ]
    ),
)


@st.composite
def hostile_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of a session ``victim-N`` with one or two of its fields (any field
    its type has, envelope included) replaced by a hostile value."""
    kind = draw(st.sampled_from(sorted(ev.EVENT_TYPES)))
    seq = 0 if kind == ev.SESSION_START else draw(st.integers(1, 20))
    e = event(kind, seq, f"victim-{draw(st.integers(0, 2))}", pseq=draw(st.integers(0, 10**6)))
    fields = sorted({*ev.ENVELOPE_FIELDS, *ev.REQUIRED_FIELDS[kind], *ev.OPTIONAL_FIELDS[kind]})
    for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2, unique=True)):
        e[name] = draw(hostile_values)
    return e


@given(st.lists(hostile_events(), min_size=1, max_size=12))
@example([event(ev.SESSION_START, 0, "\udc80"), event(ev.MESSAGE, 1, "\udc80")])  # issue 26
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_hostile_values_in_any_field_never_stall_the_drain(events: list[dict[str, Any]]) -> None:
    """Issue 26: one pass over a queue holding hostile events between good sessions
    fails nowhere (no retry, nothing left behind), every bad item is applied or
    dead-lettered with a reason, and the good sessions land whole."""
    with fuzz_spool() as spool:
        spool.put(*good_session("good-before", messages=2))
        ids = spool.put(*(json.dumps(e).encode() for e in events))
        spool.put(*good_session("good-after", messages=2))
        outcome = spool.drain()
        assert outcome.left == 0 and outcome.failures == 0
        assert set(outcome.dead) <= set(ids)
        assert all(reason for _, reason in outcome.dead.values())
        for sid in ("good-before", "good-after"):
            conn = spool.replica(sid)
            try:
                assert conn.execute("SELECT count(*) FROM messages").fetchone() == (2,)
                assert conn.execute("SELECT status FROM sessions").fetchone() == ("completed",)
            finally:
                conn.close()


def test_an_id_shaped_like_a_hashed_name_never_shares_a_replica() -> None:
    """Issue 26, item 7: ``h-`` + 40 hex of sha256(``../../x``) was a safe name equal to
    the hashed name of ``../../x``; the second session's events were dead-lettered as
    conflicts and both sessions' rows sat in one file. Now each has its own replica."""
    import hashlib

    traversal = "../../x"
    lookalike = "h-" + hashlib.sha256(traversal.encode()).hexdigest()[:40]
    with fuzz_spool() as spool:
        assert replica_path(spool.root, traversal) != replica_path(spool.root, lookalike)
        spool.put(*good_session(traversal), *good_session(lookalike))
        outcome = spool.drain()
        assert outcome.dead == {} and outcome.left == 0
        for sid in (traversal, lookalike):
            conn = spool.replica(sid)
            assert conn.execute("SELECT id FROM sessions").fetchall() == [(sid,)]
            assert conn.execute("SELECT count(*) FROM messages").fetchone() == (3,)
            conn.close()


def test_a_replica_an_older_version_named_h_dash_is_still_used_for_its_session() -> None:
    """Upgrading orphans nothing: a hashed replica named ``h-<hex>.db`` by an older
    agentspool keeps receiving its session's events; a file of that name holding
    another session (a literal id of that shape) is never handed to a hashed id."""
    import hashlib

    from agentspool.worker.intake.replica import REPLICAS_DIRNAME, Replica

    traversal = "../../x"
    digest = hashlib.sha256(traversal.encode()).hexdigest()[:40]
    with fuzz_spool() as spool:
        legacy = spool.root / REPLICAS_DIRNAME / f"h-{digest}.db"
        old = Replica(legacy)  # as an older agentspool wrote it
        old.apply([event(ev.SESSION_START, 0, traversal), event(ev.MESSAGE, 1, traversal)])
        old.close()
        assert replica_path(spool.root, traversal) == legacy
        spool.put(raw(event(ev.MESSAGE, 2, traversal)))
        assert spool.drain().dead == {}
        conn = sqlite3.connect(legacy)
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (2,)
        conn.close()
        # The same file name holding the literal session h-<digest> instead:
        legacy.unlink()
        lookalike = Replica(legacy)
        lookalike.apply([event(ev.SESSION_START, 0, f"h-{digest}")])
        lookalike.close()
        assert replica_path(spool.root, f"h-{digest}") == legacy
        assert replica_path(spool.root, traversal).name == f"h~{digest}.db"
