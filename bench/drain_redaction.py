"""Rows 5r (group drain): what redaction costs the drain, off and on, in the same run.

Four producer processes write a backlog of sessions whose events look like an agent's:
prose, code, tool inputs and outputs of a few KB (listings, test logs, file contents),
assistant metadata with usage, and now and then a secret (a token in an environment
dump, a password in a URL). The backlog's queue files are then copied, and the same
events are drained with redaction off and on, alternately (off, on, off, on, ...: a
busy machine slows both alike); each side's best round counts, and the share kept is
taken from the draining process's CPU time (the clock is noted beside it: on a shared
machine it also counts what other processes take). The drain is the worker's
``Drainer``, driven in a loop as in drain.py.
"""

from __future__ import annotations

import random
import shutil
import string
import time
from pathlib import Path
from typing import Any

from bench.common import Child, Config, Ref, Row, message_content

GROUP = "drain"
PRODUCERS = 4
ROUNDS = 5  # of each side, alternating

_PROSE = (
    "I looked at the failing test first: the pagination helper returns one item too "
    "few when the page size divides the total. The fix is to compute the last page "
    "with a ceiling division and to add a regression test for the boundary. "
)
_CODE = '''def paginate(items: list[str], page: int, size: int = 20) -> list[str]:
    """Return one page of items (pages count from 1)."""
    if page < 1 or size < 1:
        raise ValueError(f"bad page {page} or size {size}")
    start = (page - 1) * size
    return items[start : start + size]

'''
_LISTING = "-rw-r--r-- 1 dev dev  {size:>6} Dec  6 19:24 src/module_{n:03d}.py\n"
_TEST_LOG = "tests/test_pages.py::test_page_{n} PASSED                          [{pct:>3}%]\n"


def _text(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


def _secret(rng: random.Random) -> str:
    """A line with one secret of some kind, built from pieces (no literal here)."""
    alnum = string.ascii_letters + string.digits
    pick = rng.randrange(4)
    if pick == 0:
        return "GITHUB_TOKEN=" + "ghp_" + "".join(rng.choice(alnum) for _ in range(36))
    if pick == 1:
        return (
            "AWS_ACCESS_KEY_ID="
            + "AKIA"
            + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
        )
    if pick == 2:
        return (
            "DATABASE_URL=postgres://app:"
            + "".join(rng.choice(alnum) for _ in range(16))
            + "@db:5432/app"
        )
    return "OPENAI_API_KEY=" + "sk-" + "proj-" + "".join(rng.choice(alnum) for _ in range(60)) + "7"


def _tool_output(rng: random.Random, step: int) -> str:
    kind = step % 3
    if kind == 0:
        out = "".join(_LISTING.format(size=rng.randrange(100, 90000), n=i) for i in range(40))
    elif kind == 1:
        out = "".join(_TEST_LOG.format(n=i, pct=i * 2) for i in range(50))
    else:
        out = _text(_CODE, rng.randrange(1500, 5000))
    if rng.random() < 0.05:  # an environment dump or a config file with a secret in it
        out += _secret(rng) + "\n"
    return out


def produce_realistic(spool: str, sessions: int, events: int, tag: str) -> dict[str, Any]:
    from agentspool import Spool

    rng = random.Random(tag)
    sp = Spool(spool)
    confirmed = True
    for n in range(sessions):
        s = sp.session(agent=f"agent-{tag}", session_id=f"{tag}-r{n}", metadata={"n": n})
        step = 0
        while step < events - 2:
            if step % 4 == 3 and step < events - 3:
                call = s.tool_started("bash", input={"command": f"pytest -q tests/ -k page_{step}"})
                s.tool_finished(call, output=_tool_output(rng, step))
                step += 2
                continue
            if step % 2:
                content = _text(_PROSE, rng.randrange(300, 1500)) + "\n" + _text(_CODE, 600)
                usage = {
                    "input_tokens": 1200 + step,
                    "output_tokens": 300,
                    "cache_read_input_tokens": 800,
                }
                s.message(
                    "assistant", content, metadata={"model": "claude-sonnet-4-5", "usage": usage}
                )
            else:
                s.message("user", message_content(rng.randrange(100, 600), salt=tag))
            step += 1
        confirmed = s.end(timeout=120) and confirmed
    stats = sp.stats()
    sp.close()
    return {"emitted": stats.emitted, "dropped": stats.dropped, "confirmed": confirmed}


def _drain_once(spool: Path, expected: int, redact: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to drain the spool's backlog."""
    from agentspool.worker.intake.drain import Drainer
    from agentspool.worker.intake.redaction import BUILTIN_REDACTOR
    from agentspool.worker.state import StateStore

    state = StateStore(spool)
    drainer = Drainer(spool, state, redactor=BUILTIN_REDACTOR if redact else None)
    applied = 0
    try:
        t0, cpu0 = time.monotonic(), time.process_time()
        while applied < expected:
            result = drainer.drain_all()
            applied += result.applied
            if result.dead_lettered or (result.items == 0 and applied < expected):
                raise AssertionError(f"drain: {applied} of {expected} applied")
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    finally:
        drainer.close()
        state.close()
    return elapsed, cpu


def measure(cfg: Config) -> list[Row]:
    sessions = cfg.size(10, 1)  # per producer
    events = cfg.size(500, 60)
    source = cfg.workdir("drain-redaction")
    results = [
        Child(
            "drain_redaction:produce_realistic",
            spool=str(source),
            sessions=sessions,
            events=events,
            tag=f"p{n}",
        )  # fmt: skip
        for n in range(PRODUCERS)
    ]
    emitted = 0
    for r in (c.result(timeout=600) for c in results):
        if r["dropped"] or not r["confirmed"]:
            raise AssertionError(f"a producer lost events: {r}")
        emitted += r["emitted"]
    queue_bytes = sum(f.stat().st_size for f in (source / "queues").rglob("*") if f.is_file())
    best = {False: float("inf"), True: float("inf")}
    cpu = {False: float("inf"), True: float("inf")}
    for round_no in range(cfg.size(ROUNDS, 1)):
        for redact in (False, True):
            spool = cfg.workdir(f"drain-redaction-{round_no}-{int(redact)}")
            shutil.copytree(source / "queues", spool / "queues")
            wall, used = _drain_once(spool, emitted, redact)
            best[redact], cpu[redact] = min(best[redact], wall), min(cpu[redact], used)
            shutil.rmtree(spool, ignore_errors=True)
    off, on = emitted / best[False], emitted / best[True]
    cpu_kept = 100.0 * cpu[False] / cpu[True]
    shape = f"{PRODUCERS} x {sessions} sessions x {events} events, {queue_bytes / emitted / 1024:.1f} KiB/event in the queue"
    off_ref = Ref(off, "redaction off")
    return [
        Row(GROUP, "drain.redaction_off.events_per_s",
            f"5r. drain of agent-like events, redaction off, events/s ({shape})",
            off, "/s", higher_is_better=True,
            note=f"{emitted:,} events (prose, code, tool output of a few KB, a secret in ~1 "
            f"tool output of 20), best of {cfg.size(ROUNDS, 1)} rounds, alternating with redaction on"),
        Row(GROUP, "drain.redaction_on.events_per_s",
            f"5r. drain of agent-like events, redaction on (built-in detectors), events/s ({shape})",
            on, "/s", higher_is_better=True, anchor=off_ref),
        Row(GROUP, "drain.redaction_kept_pct",
            "5r. drain rate kept with redaction on, by the drain's CPU time (on / off, same events)",
            cpu_kept, "%", higher_is_better=True, target=80.0,
            note=f"events per CPU second of the draining process: {cpu[False] * 1e6 / emitted:.0f} µs "
            f"an event off, {cpu[True] * 1e6 / emitted:.0f} µs on; by the clock {100.0 * on / off:.0f} % "
            "(the clock also counts what other processes take from the 2 CPUs)"),
    ]  # fmt: skip
