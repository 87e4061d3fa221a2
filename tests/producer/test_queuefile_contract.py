"""Contract: our batched SQL (queuefile) and persist-queue 1.1.0's own API see one queue.

The producer writes through ``queuefile.append_batch`` and the worker reads and acks
through ``queuefile.read_pending``/``ack``/``clear_acked``; persist-queue's
``SQLiteAckQueue`` must see exactly the same items, order, statuses and counts.

The format has two writers, and every test runs against each: the Python producer
(``Spool``) and the OpenCode plugin (``integrations/opencode/agentspool.js``, writing
through ``bun:sqlite`` in OpenCode's own Bun), which writes the same session from
hook calls shaped as OpenCode makes them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import persistqueue
import persistqueue.serializers.json
import pytest
from persistqueue.sqlackqueue import AckStatus

from agentspool import Spool
from agentspool.producer import queuefile
from agentspool.producer.events import validate

SESSION_ID = "contract-session"
MESSAGES = 12
ODD_TEXT = "h\u00e9llo \U0001f600 lone \udc80 surrogate"


def open_pq(queue_dir: Path) -> persistqueue.SQLiteAckQueue:
    return persistqueue.SQLiteAckQueue(
        str(queue_dir),
        name="default",
        auto_resume=False,
        multithreading=True,
        serializer=persistqueue.serializers.json,
    )


class Written:
    def __init__(self, producer_id: str, pid: int | None, queue_dir: Path, count: int) -> None:
        self.producer_id = producer_id
        self.pid = pid  # None: the writer's process is gone
        self.queue_dir = queue_dir
        self.count = count


WRITERS = ("python", "opencode-plugin")


@pytest.fixture(params=WRITERS)
def written(request: pytest.FixtureRequest, spool: Path, tmp_path: Path) -> Iterator[Written]:
    """One session (start, messages, a tool call, end), as each writer writes it."""
    if request.param == "python":
        yield from _written_by_spool(spool)
    else:
        yield _written_by_plugin(spool, tmp_path / "bun")


def _written_by_plugin(spool: Path, workdir: Path) -> Written:
    from tests.clients.opencode import ScriptedEvents, replay

    events = ScriptedEvents(SESSION_ID)
    events.created()
    for i in range(MESSAGES):
        if i % 2:
            events.user(f"message {i}")
        else:
            events.assistant(f"message {i}")
    events.user(ODD_TEXT)
    events.assistant(None, tools=[{"name": "grep", "input": {"q": "x"}, "output": "1 hit"}])
    events.idle()
    replay(events.calls, spool, workdir)
    dirs = queuefile.list_queue_dirs(spool)
    assert len(dirs) == 1 and dirs[0].name.startswith("opencode-")
    # start, 12 messages, the odd one, the tool call (2), the reply calling it, the end
    return Written(dirs[0].name, None, dirs[0], 1 + MESSAGES + 1 + 2 + 1 + 1)


def _written_by_spool(spool: Path) -> Iterator[Written]:
    producer = Spool(spool)
    try:
        s = producer.session(agent="contract", session_id=SESSION_ID, metadata={"k": [1, 2]})
        for i in range(MESSAGES):
            s.message("user" if i % 2 else "assistant", f"message {i}")
        s.message("user", ODD_TEXT, metadata={"odd": ODD_TEXT})
        call = s.tool_started("grep", input={"q": "x"})
        s.tool_finished(call, output={"hits": 1})
        assert s.end(timeout=30) is True
        assert producer.flush(timeout=30) is True
        dirs = queuefile.list_queue_dirs(spool)
        assert dirs == [spool / queuefile.QUEUES_DIRNAME / producer.producer_id]
        yield Written(producer.producer_id, os.getpid(), dirs[0], 1 + MESSAGES + 1 + 2 + 1)
    finally:
        assert producer.close(timeout=30) is True


@pytest.fixture
def conn(written: Written) -> Iterator[sqlite3.Connection]:
    c = queuefile.connect(written.queue_dir)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def pq(written: Written) -> Iterator[persistqueue.SQLiteAckQueue]:
    q = open_pq(written.queue_dir)
    try:
        yield q
    finally:
        q.close()


def pending(conn: sqlite3.Connection, limit: int = 1_000_000) -> list[queuefile.QueueItem]:
    return queuefile.read_pending(conn, 0, limit)


def decoded(items: list[queuefile.QueueItem]) -> list[tuple[int, dict[str, Any]]]:
    return [(item.item_id, json.loads(item.data)) for item in items]


def test_format_constants_match_persist_queue(written: Written) -> None:
    assert persistqueue.__version__ == "1.1.0"
    assert queuefile.TABLE == f"{persistqueue.SQLiteAckQueue._TABLE_NAME}_{queuefile.QUEUE_NAME}"
    assert (
        queuefile.STATUS_INITED,
        queuefile.STATUS_READY,
        queuefile.STATUS_UNACK,
        queuefile.STATUS_ACKED,
        queuefile.STATUS_ACK_FAILED,
    ) == tuple(
        int(s)
        for s in (
            AckStatus.inited,
            AckStatus.ready,
            AckStatus.unack,
            AckStatus.acked,
            AckStatus.ack_failed,
        )
    )
    assert queuefile.queue_db_path(written.queue_dir).is_file()
    # The producer's metadata table sits next to persist-queue's table.
    c = queuefile.connect(written.queue_dir, readonly=True)
    try:
        info = queuefile.read_producer_info(c)
    finally:
        c.close()
    assert info is not None
    assert info.producer_id == written.producer_id == written.queue_dir.name
    if written.pid is not None:
        assert info.pid == written.pid
    assert info.process_start  # with the pid, how the worker tells the producer is gone


def test_same_items_in_the_same_order(
    written: Written, conn: sqlite3.Connection, pq: persistqueue.SQLiteAckQueue
) -> None:
    ours = decoded(pending(conn))
    assert len(ours) == written.count
    # Paging with after_id gives the same sequence as one big read.
    paged: list[queuefile.QueueItem] = []
    last = 0
    while page := queuefile.read_pending(conn, last, 4):
        paged.extend(page)
        last = page[-1].item_id
    assert decoded(paged) == ours
    # They are this session's events, gapless, and valid.
    assert [e["seq"] for _, e in ours] == list(range(written.count))
    assert all(validate(e)["session_id"] == SESSION_ID for _, e in ours)
    assert ours[0][1]["type"] == "session_start"
    assert ours[-1][1]["type"] == "session_end"
    assert any(e.get("content") == ODD_TEXT for _, e in ours)

    # persist-queue's own non-consuming view...
    assert [(row["id"], row["data"]) for row in pq.queue()] == ours
    # ...and its consuming get(), item by item.
    got = []
    while True:
        try:
            got.append(pq.get(block=False, raw=True))
        except persistqueue.Empty:
            break
    assert [(g["pqid"], g["data"]) for g in got] == ours
    assert all(isinstance(g["data"], dict) for g in got)
    # Items persist-queue holds in flight (unack) are not pending for us either.
    assert pending(conn) == []
    assert queuefile.count_by_status(conn) == {queuefile.STATUS_UNACK: written.count}
    # nack puts them back: we see all of them again, in order.
    for g in got:
        pq.nack(id=g["pqid"])
    assert decoded(pending(conn)) == ours
    assert queuefile.count_by_status(conn) == {queuefile.STATUS_READY: written.count}
    assert pq.ready_count() == written.count


def test_counts_match(
    written: Written, conn: sqlite3.Connection, pq: persistqueue.SQLiteAckQueue
) -> None:
    counts = queuefile.count_by_status(conn)
    assert counts == {queuefile.STATUS_INITED: written.count}
    not_taken = counts.get(queuefile.STATUS_INITED, 0) + counts.get(queuefile.STATUS_READY, 0)
    assert pq.qsize() == not_taken == written.count
    assert len(pq) == written.count
    assert pq.ready_count() == counts.get(queuefile.STATUS_READY, 0)
    assert pq.unack_count() == 0
    assert pq.acked_count() == 0
    assert not pq.empty()


def test_batch_ack_seen_by_persist_queue(written: Written, conn: sqlite3.Connection) -> None:
    items = pending(conn)
    queuefile.ack(conn, [i.item_id for i in items[:3]])
    queuefile.ack(conn, [items[3].item_id], status=queuefile.STATUS_ACK_FAILED)
    queuefile.ack(conn, [])  # a no-op, not an error
    assert not conn.in_transaction
    assert queuefile.count_by_status(conn) == {
        queuefile.STATUS_ACKED: 3,
        queuefile.STATUS_ACK_FAILED: 1,
        queuefile.STATUS_INITED: written.count - 4,
    }
    q = open_pq(written.queue_dir)  # persist-queue counts its total when opened
    try:
        assert q.acked_count() == 3
        assert q.ack_failed_count() == 1
        assert q.qsize() == written.count - 4
        first = q.get(block=False, raw=True)
        assert first["pqid"] == items[4].item_id
        assert first["data"] == json.loads(items[4].data)
    finally:
        q.close()
    assert [i.item_id for i in pending(conn)] == [i.item_id for i in items[5:]]


def test_persist_queue_ack_seen_by_read_pending(
    written: Written, conn: sqlite3.Connection, pq: persistqueue.SQLiteAckQueue
) -> None:
    before = pending(conn)
    item = pq.get(block=False)
    assert item == json.loads(before[0].data)
    assert pq.ack(item) == before[0].item_id
    assert pq.acked_count() == 1
    after = pending(conn)
    assert before[0].item_id not in {i.item_id for i in after}
    assert after == before[1:]
    assert queuefile.count_by_status(conn) == {
        queuefile.STATUS_ACKED: 1,
        queuefile.STATUS_INITED: written.count - 1,
    }
    # read_pending after a later id skips earlier items whatever their status.
    assert queuefile.read_pending(conn, before[5].item_id, 100) == before[6:]


def test_data_column_is_json_bytes_never_pickle(
    written: Written, pq: persistqueue.SQLiteAckQueue
) -> None:
    raw = sqlite3.connect(queuefile.queue_db_path(written.queue_dir))
    try:
        rows = raw.execute(
            f"SELECT _id, data, typeof(data) FROM {queuefile.TABLE} ORDER BY _id"  # noqa: S608
        ).fetchall()
    finally:
        raw.close()
    assert len(rows) == written.count
    by_pq = {row["id"]: row["data"] for row in pq.queue()}
    for item_id, data, kind in rows:
        assert kind == "blob"
        assert isinstance(data, bytes)
        assert data[:1] == b"{"
        assert not data.startswith(b"\x80")  # the pickle protocol marker
        assert json.loads(data) == by_pq[item_id]


def test_persist_queue_put_is_readable_by_us(
    written: Written, conn: sqlite3.Connection, pq: persistqueue.SQLiteAckQueue
) -> None:
    event = {"v": 1, "type": "message", "session_id": "pq", "seq": 1, "producer_id": "x",
             "pseq": 0, "ts": 1.5, "role": "user", "content": ODD_TEXT}  # fmt: skip
    pq_id = pq.put(event)
    items = pending(conn)
    assert len(items) == written.count + 1
    assert items[-1].item_id == pq_id
    assert items[-1].data[:1] == b"{"
    assert json.loads(items[-1].data) == event


def test_clear_acked_deletes_only_acked_rows(written: Written, conn: sqlite3.Connection) -> None:
    items = pending(conn)
    ids = [i.item_id for i in items]
    queuefile.ack(conn, ids[0:4])  # acked
    queuefile.ack(conn, ids[4:5], status=queuefile.STATUS_ACK_FAILED)
    queuefile.ack(conn, ids[5:6], status=queuefile.STATUS_UNACK)  # in flight elsewhere
    queuefile.ack(conn, ids[6:7], status=queuefile.STATUS_READY)
    queuefile.ack(conn, ids[8:10])  # acked, but after the bound below
    # ids[7] and ids[10:] stay inited

    assert queuefile.clear_acked(conn, ids[7]) == 4
    remaining = dict(conn.execute(f"SELECT _id, status FROM {queuefile.TABLE}").fetchall())  # noqa: S608
    assert set(remaining) == set(ids[4:])
    assert remaining[ids[4]] == queuefile.STATUS_ACK_FAILED
    assert remaining[ids[5]] == queuefile.STATUS_UNACK
    assert remaining[ids[6]] == queuefile.STATUS_READY
    assert remaining[ids[8]] == remaining[ids[9]] == queuefile.STATUS_ACKED

    q = open_pq(written.queue_dir)
    try:
        assert q.acked_count() == 2
        assert q.ack_failed_count() == 1
        assert q.unack_count() == 1
        assert q.ready_count() == 1
        assert q.qsize() == 1 + 1 + len(ids[10:])  # ready + inited
    finally:
        q.close()

    assert queuefile.clear_acked(conn, ids[-1]) == 2
    assert queuefile.clear_acked(conn, ids[-1]) == 0
    assert [i.item_id for i in pending(conn)] == [ids[6], ids[7], *ids[10:]]


def test_requeued_acked_items_are_ready_again_for_persist_queue(
    written: Written, conn: sqlite3.Connection
) -> None:
    """The worker rebuilds a quarantined replica by marking acked items ready again."""
    items = pending(conn)
    queuefile.ack(conn, [i.item_id for i in items])
    messages = {i.item_id for i in items if json.loads(i.data)["type"] == "message"}
    requeued = queuefile.requeue_acked(conn, lambda data: json.loads(data)["type"] == "message")
    assert requeued == sorted(messages)
    assert [i.item_id for i in pending(conn)] == requeued
    q = open_pq(written.queue_dir)
    try:
        assert q.ready_count() == len(messages)
        assert q.acked_count() == written.count - len(messages)
        assert q.get(block=False)["type"] == "message"
    finally:
        q.close()
