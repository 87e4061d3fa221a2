"""Row 9: memory.

- Worker: 10 producer processes each keep 100 sessions open at once and emit into them
  round-robin (1,000 sessions of 20 events), then the real CLI, ``agentspool worker
  run --burst`` with the embedded database, drains, syncs and exits. It runs in a
  wrapper that calls the CLI's own ``main`` and, on the way out, reads the process's
  peak RSS (VmHWM in /proc/self/status). The worker is one process: its sender
  threads, not a child, talk to the database. (Row 11 measures one huge session.)
- Producer: a fresh interpreter reads its VmRSS, then imports agentspool, opens a
  Spool, logs a session of a few events, ends it (the writer thread has written and
  fsynced them) and reads VmRSS again. Nothing is imported before the first reading.
  Anchor: the same with persist-queue's ``SQLiteAckQueue`` and ``put``.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bench.common import PYTHON, Child, Config, Ref, Row, clean_env, popen

GROUP = "memory"

_WORKER_WRAPPER = """
import json
from agentspool.worker.cli import main
try:
    main(["worker", "run", "--burst"])
    code = 0
except SystemExit as exc:
    code = exc.code
with open("/proc/self/status") as f:
    hwm = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")][0]
print(json.dumps({"code": code, "worker_hwm_kb": hwm}))
"""

_PRODUCER_RSS = """
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
before = rss()
import sys
KIND, SPOOL = sys.argv[1], sys.argv[2]
content = "x" * 400
if KIND == "agentspool":
    import agentspool
    spool = agentspool.Spool(SPOOL)
    session = spool.session(agent="memory")
    for _ in range(10):
        session.message("assistant", content)
    ok = session.end()
else:
    import persistqueue
    q = persistqueue.SQLiteAckQueue(SPOOL)
    for _ in range(10):
        q.put({"type": "message", "content": content})
    ok = True
after = rss()
import json
print(json.dumps({"before_kb": before, "after_kb": after, "ok": ok}))
"""


def run(cfg: Config) -> list[Row]:
    return [worker_row(cfg), *producer_rows(cfg)]


def worker_row(cfg: Config) -> Row:
    producers = cfg.size(10, 2)
    per_producer = cfg.size(100, 10)
    events = cfg.size(20, 10)
    sessions = producers * per_producer
    spool = cfg.workdir("memory-spool")
    children = [
        Child(
            "workload:produce",
            spool=str(spool),
            sessions=per_producer,
            events=events,
            tag=f"m{n}",
            interleave=per_producer,
        )
        for n in range(producers)
    ]
    for child in children:
        r = child.result(timeout=300)
        if r["dropped"] or not r["confirmed"]:
            raise AssertionError(f"memory: a producer lost events: {r}")
    log_path = cfg.tmp / "memory-worker.log"
    with open(log_path, "ab") as log:
        proc = popen(
            [PYTHON, "-c", _WORKER_WRAPPER],
            env=clean_env(AGENTSPOOL_DIR=str(spool)),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        out, _ = proc.communicate(timeout=300)
    r = json.loads(out.strip().splitlines()[-1])
    if r["code"] != 0:
        raise AssertionError(f"memory: worker --burst exited with {r['code']}; see {log_path}")
    synced = log_path.read_text().count("synced session ")
    if synced != sessions:
        raise AssertionError(f"memory: {synced} of {sessions} sessions synced")
    return Row(
        GROUP,
        "memory.worker_peak_mb",
        f"9. worker peak RSS, draining and syncing {sessions:,} sessions (--burst)",
        r["worker_hwm_kb"] / 1024,
        "MB",
        target=100.0,
        note=f"{sessions:,} sessions of {events} events, {per_producer} open at once in each "
        f"of {producers} producers; one process (no sync child)",
    )


def producer_rows(cfg: Config) -> list[Row]:
    ours = _producer_rss(cfg, "agentspool")
    anchor = _producer_rss(cfg, "persistqueue")
    if not ours["ok"]:
        raise AssertionError("memory: the producer's end() did not confirm")
    return [
        Row(
            GROUP,
            "memory.producer_added_mb",
            "9. producer RSS added by import + Spool + a 10-event session",
            (ours["after_kb"] - ours["before_kb"]) / 1024,
            "MB",
            anchor=Ref(
                (anchor["after_kb"] - anchor["before_kb"]) / 1024,
                "persist-queue import + queue + 10 puts",
            ),
            target=10.0,
            note=f"VmRSS {ours['before_kb'] / 1024:.1f} MB before any import, "
            f"{ours['after_kb'] / 1024:.1f} MB after",
        )
    ]


def _producer_rss(cfg: Config, kind: str) -> dict[str, Any]:
    proc = popen(
        [PYTHON, "-c", _PRODUCER_RSS, kind, str(cfg.workdir(f"rss-{kind}"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"memory: the {kind} RSS probe exited with {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))
