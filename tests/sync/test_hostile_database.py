"""A hostile database cannot hang or exhaust the worker (issue 26, item 4).

The server (tests/hostile_server.py, on 127.0.0.1) answers one byte every 2 s (each
byte restarts httpx's per-read timeout, which alone never fires), streams an endless
chunked body, or sends 1.5 GB with and without announcing it. Every request must end
by its total deadline (AGENTSPOOL_SYNC_TIMEOUT) or its size cap, and the worker's
threads, descriptors and memory must stay flat while it retries.

How long: as the issue watched, 10 minutes. The worker test keeps the server
attacking for 600 s (and at least 32 attacks, 8 of each kind) while nothing else
changes in the spool; the old code grew by a thread and a socket per slow-loris
attempt (~6 s apart). It asserts that the second half of the window does not rise
above the first (its floor not at all; its peak by at most the one socket a request
may have in flight at a sample, or the senders the sync's pool may add for requests it
gave up on, MAX_STUCK_SENDERS at most), and that the peak RSS stays far below the
1.5 GB on offer.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentspool.worker.sync.deadline_http import MAX_RESPONSE_BYTES
from agentspool.worker.sync.engine import MAX_STUCK_SENDERS
from agentspool.worker.sync.hrana import MISCONFIGURED, TRANSIENT, HranaClient, HranaError
from tests.helpers import finish, produce, run_cli, stop_process, wait_until, worker_env
from tests.hostile_server import ATTACKS, HostileServer
from tests.sqld import Sqld
from tests.sync.test_network_faults import start_logged_worker

TIMEOUT_S = 1.0
SLACK_S = 1.5  # a busy 2-core machine: scheduling, not the server, may add this much


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer("slowloris") as server:
        yield server


@pytest.mark.parametrize("mode", ATTACKS)
def test_each_attack_ends_by_the_deadline_or_the_cap(hostile: HostileServer, mode: str) -> None:
    hostile.mode = mode
    threads_before = threading.active_count()
    for _ in range(3):
        with HranaClient(hostile.url, None, TIMEOUT_S) as client:
            started = time.monotonic()
            with pytest.raises(HranaError) as caught:
                client.execute("SELECT 1")
            took = time.monotonic() - started
        assert took < TIMEOUT_S + SLACK_S, (mode, took)
        if mode == "slowloris":
            assert caught.value.kind == TRANSIENT
            assert f"within {TIMEOUT_S:g}s" in str(caught.value)
        elif mode == "endless" and caught.value.kind == TRANSIENT:
            # A machine slower than the server at reading 32 MiB hits the deadline first.
            assert f"within {TIMEOUT_S:g}s" in str(caught.value)
        else:
            assert caught.value.kind == MISCONFIGURED
            assert f"larger than {MAX_RESPONSE_BYTES >> 20} MiB" in str(caught.value)
    # Our side of every connection is gone: the server's threads see the hang-up.
    wait_until(lambda: threading.active_count() <= threads_before + 1, 10, "server threads")


def test_abort_wakes_a_request_at_once(hostile: HostileServer) -> None:
    """The engine's last word to a sender past its deadline: abort() from another
    thread fails the request now, even with a long timeout."""
    client = HranaClient(hostile.url, None, 60.0)
    errors: list[HranaError] = []

    def send() -> None:
        try:
            client.execute("SELECT 1")
        except HranaError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: hostile.requests["slowloris"] == 1, 10, "the request to arrive")
    aborted = time.monotonic()
    client.abort()
    sender.join(timeout=10)
    assert not sender.is_alive()
    assert time.monotonic() - aborted < SLACK_S
    assert errors and errors[0].kind == TRANSIENT
    client.close()


def test_remote_reads_end_by_their_deadline(hostile: HostileServer, spool: Path) -> None:
    """``sessions --remote`` and ``show --remote`` use the same client."""
    env = worker_env(spool, hostile.url)
    for mode in ("slowloris", "endless"):
        hostile.mode = mode
        for command in (["sessions", "--remote"], ["show", "--remote", "some-session"]):
            started = time.monotonic()
            result = run_cli(*command, "--timeout", "1s", env=env, timeout=60)
            took = time.monotonic() - started
            assert result.returncode == 1, (command, result.stdout, result.stderr)
            assert took < 1.0 + 5.0, (command, took)  # + the CLI's own start-up


def _proc_counts(pid: int) -> tuple[int, int, int]:
    """(threads, open descriptors, resident KiB) of a live process."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return threads, fds, rss


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _synced(spool: Path, env: dict[str, str]) -> int:
    import json

    result = run_cli("status", "--json", env=env, timeout=30)
    return int(json.loads(result.stdout)["sessions"]["synced"]) if result.returncode == 0 else -1


def _drained(spool: Path, env: dict[str, str], count: int) -> bool:
    import json

    result = run_cli("status", "--json", env=env, timeout=30)
    if result.returncode != 0:
        return False
    sessions = json.loads(result.stdout)["sessions"]
    return int(sessions.get("pending", 0)) + int(sessions.get("synced", 0)) >= count


SOAK_SECONDS = 600.0
MIN_ATTACKS = 32


@pytest.mark.timeout(SOAK_SECONDS + 600)
def test_worker_stays_flat_against_a_hostile_database(
    spool: Path, sqld: Sqld, tmp_path: Path
) -> None:
    sync_timeout = 3.0  # > the 2 s drip: httpx's per-read timeout alone would never fire
    with HostileServer("forward", forward_to=sqld.url) as server:
        env = worker_env(spool, server.url, AGENTSPOOL_SYNC_TIMEOUT=f"{sync_timeout:g}")
        log = tmp_path / "worker.log"
        worker = start_logged_worker(env, log)
        samples: list[tuple[int, int, int]] = []
        try:
            # Healthy first: the schema is in place and one session landed, so the
            # attack meets batches (several in flight), not only the schema check.
            finish(produce(spool, "warm", 1, 6), timeout=60)
            wait_until(lambda: _synced(spool, env) == 1, 60, "the warm-up session to land")
            server.mode = "rotate"
            # Under attack, the worker still drains what producers write.
            finish(produce(spool, "during", 6, 6), timeout=60)
            wait_until(lambda: _drained(spool, env, 7), 60, "the sessions drained")
            # Then nothing changes but the attacks, for 10 minutes: threads and
            # descriptors must not grow.
            first = server.attacks_served()
            soak_end = time.monotonic() + SOAK_SECONDS
            while time.monotonic() < soak_end:
                assert worker.poll() is None, log.read_text()[-3000:]
                samples.append(_proc_counts(worker.pid))
                time.sleep(1.0)  # the sampling period of the soak, not a wait for an event
            attacks = server.attacks_served() - first
            assert attacks >= MIN_ATTACKS, f"only {attacks} attacks in {SOAK_SECONDS:g} s"
            peak_kib = _peak_rss_kib(worker.pid)
            server.mode = "forward"  # the attack is over: everything must land
            wait_until(lambda: _synced(spool, env) == 7, 120, "every session to land")
        finally:
            stop_process(worker)
    text = log.read_text()
    half = len(samples) // 2
    first_half, second_half = samples[:half], samples[half:]
    for index, what, in_flight in ((0, "threads", MAX_STUCK_SENDERS), (1, "descriptors", 1)):
        first_peak = max(s[index] for s in first_half)
        seen = sorted(Counter(s[index] for s in second_half).items())
        # What a leak keeps, it keeps: the second half's floor would rise with the
        # attacks (the old code: a thread and a socket per attempt, ~100 in 10 minutes).
        # Beyond that, one socket may be caught in flight beside one being closed (a
        # second half peaked at 16 descriptors once against 15, in a fresh-clone run),
        # and the sync's sender pool (sync/senders.py) may start a thread for each sender
        # the engine gave up on that is still waking, up to MAX_STUCK_SENDERS beyond its
        # bound (another run: 7 threads in 258 samples, 8 in 42, against 7 in the first
        # half).
        assert min(s[index] for s in second_half) <= first_peak, (what, first_peak, seen)
        assert max(s[index] for s in second_half) <= first_peak + in_flight, (
            what,
            first_peak,
            seen,
        )
    assert peak_kib < 300 * 1024, f"peak RSS {peak_kib} KiB"
    assert "no answer from the database within 3s" in text
    assert "larger than 32 MiB" in text
    assert worker.returncode == 0, text[-3000:]
