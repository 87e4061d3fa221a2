"""The worker's main loop: wake on file-system events, drain, seal, sync.

The loop runs on one thread and never waits on the network (syncs run in the sync
child). Signal handlers only set flags: the first SIGTERM/SIGINT makes the loop
drain and sync what is ready within ``shutdown_timeout``; a second stops at once.
``--burst`` drains everything, seals sessions whose producers are gone, syncs, and
exits with 0 only if nothing is left open, pending or failed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from watchdog.observers.api import BaseObserver

from agentspool.producer import queuefile
from agentspool.worker import state as st
from agentspool.worker.config import Settings, display_url, redact_patterns_of
from agentspool.worker.daemon.burst_report import burst_gave_up, burst_stopped_misconfigured
from agentspool.worker.daemon.deletion import apply_tombstones
from agentspool.worker.daemon.lock import SpoolLock
from agentspool.worker.daemon.metrics import WorkerMetrics
from agentspool.worker.daemon.notify import SystemdNotifier
from agentspool.worker.daemon.remote_retention import RemoteRetention
from agentspool.worker.daemon.retention import prune
from agentspool.worker.daemon.sealing import gone_producers, seal_abandoned
from agentspool.worker.exitcodes import EXIT_LEFT_PENDING, EXIT_OK, EXIT_REFUSED
from agentspool.worker.intake.drain import Drainer
from agentspool.worker.intake.quarantine import list_quarantined, open_state_store
from agentspool.worker.intake.redaction import Redactor
from agentspool.worker.intake.replica import REPLICAS_DIRNAME, Replica
from agentspool.worker.security import refuse_insecure_spool
from agentspool.worker.sync.batch import Batch
from agentspool.worker.sync.database import DatabaseError
from agentspool.worker.sync.engine import MAX_IN_FLIGHT, SyncEngine

log = logging.getLogger("agentspool.worker")

_WAKING_EVENTS = frozenset({"created", "modified", "moved", "closed", "deleted"})

ERROR_PAUSE_S = 1.0
FINISH_SIGNAL = signal.SIGUSR1  # sent by `agentspool drain`
RETRY_SIGNAL = signal.SIGUSR2  # sent by `agentspool retry`: drop the sync backoff
PRUNE_INTERVAL_S = 3600.0
EMBEDDED_BATCH_BYTES = 1 << 20
RECHECK_DELAYS_S = (0.005, 0.025, 0.1, 0.5)  # after a file event (see _loop)


@dataclass
class LoopStats:
    drained: int = 0
    synced: int = 0
    sync_failures: int = 0
    sealed: int = 0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        burst: bool = False,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.burst = burst
        self.now = now
        self.monotonic = monotonic
        self.spool_dir = settings.spool_dir
        self.wake = threading.Event()
        self.stats = LoopStats()
        self._stop_requests = 0
        self._finish_requested = False
        self._host = socket.gethostname()
        self._next_liveness_check = 0.0
        self._next_prune = 0.0
        self._progress_on_tty = sys.stderr.isatty()
        self._started_at = now()
        self._file_event = False  # set by the watchdog thread
        self._rechecks: list[float] = []  # follow-up passes after a file event
        self._final_round_done = False  # --burst: open sessions checkpointed before exit
        self._retry_requested = False  # set by the SIGUSR2 handler
        self.notifier = SystemdNotifier(monotonic=monotonic)
        self.metrics: WorkerMetrics | None = None

    # ---- signals -----------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        self._stop_requests += 1
        self.wake.set()

    def request_finish(self, signum: int = signal.SIGUSR1, frame: FrameType | None = None) -> None:
        """``agentspool drain``: finish as ``--burst`` would (drain, seal, sync, exit)."""
        self._finish_requested = True
        self.wake.set()

    def request_retry(self, signum: int = signal.SIGUSR2, frame: FrameType | None = None) -> None:
        """``agentspool retry``: the cause was fixed; sync now, not after the backoff."""
        self._retry_requested = True
        self.wake.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(FINISH_SIGNAL, self.request_finish)
            signal.signal(RETRY_SIGNAL, self.request_retry)

    # ---- the loop ----------------------------------------------------------

    def run(self) -> int:
        os.umask(0o077)  # replicas, state and lock: readable by this user only
        # Checked before anything is created: a linked spool or replicas/ must not get
        # even an empty directory; then again, for what mkdir made.
        if refuse_insecure_spool(self.spool_dir):
            return EXIT_REFUSED
        for sub in ("", queuefile.QUEUES_DIRNAME, REPLICAS_DIRNAME):
            (self.spool_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        if refuse_insecure_spool(self.spool_dir):
            return EXIT_REFUSED
        lock = SpoolLock(self.spool_dir)
        lock.acquire()  # raises WorkerAlreadyRunning
        self.state = open_state_store(self.spool_dir)  # a damaged one is rebuilt
        self.drainer = Drainer(
            self.spool_dir,
            self.state,
            batch_size=self.settings.drain_batch,
            redactor=(
                Redactor(redact_patterns_of(self.settings)) if self.settings.redact else None
            ),
            now=self.now,
            monotonic=self.monotonic,
        )
        self.drainer.hook_inbox.final = self.burst  # Claude Code has exited: ends at once
        self.syncer = SyncEngine(
            self.spool_dir,
            self.state,
            db_url=self.settings.effective_db_url,
            auth_token=self.settings.auth_token,
            timeout=self.settings.sync_timeout,
            retry_base=self.settings.retry_base,
            retry_cap=self.settings.retry_cap,
            checkpoint_interval=self.settings.checkpoint_interval,
            # A local file has no round trips to hide and takes one writer at a time:
            # smaller batches, one at a time, hold less in memory and wait for nothing.
            max_batch_bytes=(
                min(self.settings.batch_bytes, EMBEDDED_BATCH_BYTES)
                if self.settings.embedded
                else self.settings.batch_bytes
            ),
            max_in_flight=1 if self.settings.embedded else MAX_IN_FLIGHT,
            wake=self.wake,
            now=self.now,
            monotonic=self.monotonic,
            on_batch=self._record_batch,
            on_broken=self.drainer.recover_if_damaged,
        )
        self.remote_retention = RemoteRetention(self.settings, self.state, now=self.now)
        observer = self._watch_queues()
        self._install_signal_handlers()
        if self.settings.embedded:
            log.info(
                "no TURSO_DATABASE_URL set: syncing to the embedded database %s",
                self.spool_dir / "agentspool.db",
            )
        else:  # named without credentials or query string (either may carry a token)
            log.info("syncing to the database %s", display_url(self.settings.effective_db_url))
        log.info(
            "worker %d draining %s%s", os.getpid(), self.spool_dir, " (burst)" if self.burst else ""
        )
        self.state.set_meta("worker_pid", str(os.getpid()))
        self.state.set_meta("worker_started_at", repr(self.now()))
        if self.settings.metrics_port is not None:
            self.metrics = WorkerMetrics()
            self.metrics.serve(self.settings.metrics_port, self.settings.metrics_addr)
            log.info(
                "serving metrics on http://%s:%d/metrics",
                self.settings.metrics_addr,
                self.settings.metrics_port,
            )
        self.notifier.ready(self._status_line())
        try:
            return self._loop()
        finally:
            self.notifier.stopping()
            self.notifier.close()
            observer.stop()
            self.syncer.close()
            self.drainer.close()
            self.state.close()
            lock.release()

    def _loop(self) -> int:
        stop_deadline: float | None = None
        burst_deadline = self.monotonic() + self.settings.burst_timeout
        while True:
            if self._stop_requests >= 2:
                log.warning("second stop signal: stopping now")
                return EXIT_OK if not self.burst else EXIT_LEFT_PENDING
            if self._finish_requested and not self.burst:
                log.info("finish requested: draining, sealing and syncing everything, then exiting")
                self.burst = True
                self.drainer.hook_inbox.final = True
                burst_deadline = self.monotonic() + self.settings.burst_timeout
            if self._stop_requests == 1 and stop_deadline is None:
                self.notifier.stopping()
                log.info(
                    "stop requested: draining and syncing for up to %gs (signal again to stop now)",
                    self.settings.shutdown_timeout,
                )
                stop_deadline = self.monotonic() + self.settings.shutdown_timeout
            self.wake.clear()
            if self._file_event:
                # inotify fires when a producer writes its WAL frames, which can be
                # before the commit is visible to readers (an fsynced commit is made
                # visible only after the fsync). Look again shortly after, or such a
                # commit would wait for the next rescan.
                self._file_event = False
                now_mono = self.monotonic()
                self._rechecks = [now_mono + delay for delay in RECHECK_DELAYS_S]
            self.notifier.heartbeat()
            more_to_drain = False
            failures_before = self.drainer.failures
            failed = False
            try:
                self._apply_deletions()
                drained = self.drainer.drain_all()
                self.stats.drained += drained.items
                if self.metrics is not None:
                    self.metrics.events_drained.inc(drained.items)
                more_to_drain = drained.items > 0
                if self.burst or self.monotonic() >= self._next_liveness_check:
                    self._next_liveness_check = self.monotonic() + self.settings.liveness_interval
                    self._seal_abandoned_sessions()
                    self._remove_finished_queues()
                    self._prune_if_due()
                    if not self.burst:  # a service's daily chore, not a CI job's
                        self.remote_retention.poll()
                    self._report_progress()
                self._advance_syncs()
            except Exception:
                # One bad pass (a full disk, a locked file) must not end the worker:
                # nothing was acked that is not applied, so the next pass redoes it.
                log.exception("worker pass failed; retrying in %gs", ERROR_PAUSE_S)
                failed = True
            failed = failed or self.drainer.failures != failures_before
            if more_to_drain:
                continue
            if stop_deadline is not None:
                if (
                    not self._sync_work_left(include_backoff=False)
                    or self.monotonic() >= stop_deadline
                ):
                    self._log_leftovers("stopping")
                    return EXIT_OK
            elif self.burst:
                if self.syncer.misconfigured is not None and not self.syncer.busy():
                    code = self._burst_exit_code()
                    log.error(burst_stopped_misconfigured(self.settings))
                    return code
                if not self._sync_work_left(include_backoff=True) and not self._undrained():
                    if not self._final_round_done:
                        self._final_round_done = True  # checkpoint what is still open
                        self.syncer.checkpoint_now()
                        continue
                    return self._burst_exit_code()
                if self.monotonic() >= burst_deadline:
                    code = self._burst_exit_code()
                    log.error(burst_gave_up(self.settings, self.syncer.last_error))
                    return code
            if failed:
                self._pause_after_failure(stop_deadline)
            else:
                self.wake.wait(self._sleep_time(stop_deadline))

    def _pause_after_failure(self, stop_deadline: float | None) -> None:
        """After a pass that could not open, read or write a file (a full disk, an I/O
        error), wait ERROR_PAUSE_S before the next one, whatever file events arrive:
        the failed attempts themselves create and close files under queues/ (SQLite's
        -wal and -shm), and waking on those retried, and logged, in a tight loop. A
        signal, a sync deadline or the stop deadline ends the pause early."""
        until = self.monotonic() + ERROR_PAUSE_S
        if stop_deadline is not None:
            until = min(until, stop_deadline)
        stops, finish = self._stop_requests, self._finish_requested
        while self._stop_requests == stops and self._finish_requested == finish:
            left = until - self.monotonic()
            if left <= 0:
                break
            self.wake.wait(left)
            self.wake.clear()

    def _sleep_time(self, stop_deadline: float | None) -> float:
        now_mono = self.monotonic()
        wait = self.settings.rescan_interval
        self._rechecks = [t for t in self._rechecks if t > now_mono]
        if self._rechecks:
            wait = min(wait, self._rechecks[0] - now_mono)
        wait = min(wait, max(0.0, self._next_liveness_check - now_mono))
        engine_wait = self.syncer.next_wakeup()
        if engine_wait is not None:
            wait = min(wait, engine_wait)
        if stop_deadline is not None:
            wait = min(wait, max(0.0, stop_deadline - now_mono))
        heartbeat = self.notifier.seconds_to_next_heartbeat()
        if heartbeat is not None:
            wait = min(wait, heartbeat)
        if self.burst:
            wait = min(wait, 0.5)
        return max(wait, 0.001)

    # ---- reporting ---------------------------------------------------------

    def _status_line(self) -> str:
        counts = self.state.counts()
        return (
            f"{counts[st.OPEN]} open, {counts[st.PENDING]} pending sync, "
            f"{counts[st.SYNCED]} synced, {counts[st.FAILED]} failed"
        )

    def _report_progress(self) -> None:
        """systemd STATUS=, the metrics gauges and, for a burst on a terminal, a
        progress line; refreshed on the periodic check."""
        self.notifier.status(self._status_line())
        if self.burst and self._progress_on_tty:
            sys.stderr.write(f"\r{self.stats.drained} events drained; {self._status_line()}   ")
            sys.stderr.flush()
        if self.metrics is None:
            return
        producers = {}
        for cursor in list(self.drainer.cursors.values()):
            try:
                counts = queuefile.count_by_status(cursor.conn)
            except Exception:
                continue
            depth = counts.get(queuefile.STATUS_INITED, 0) + counts.get(queuefile.STATUS_READY, 0)
            dropped = cursor.info.dropped if cursor.info else 0
            producers[cursor.queue_dir.name] = (depth, dropped)
        self.metrics.refresh(self.state, producers)

    # ---- syncing -----------------------------------------------------------

    def _advance_syncs(self) -> None:
        if self._retry_requested:
            self._retry_requested = False
            self.syncer.reset_backoff()
        self.syncer.poll()

    def _record_batch(self, batch: Batch, seconds: float, error: DatabaseError | None) -> None:
        if self.metrics is None:
            return
        self.metrics.sync_attempts.inc()
        if error is None:
            self.metrics.sync_seconds.observe(seconds)
            self.metrics.last_sync_success.set(self.now())
        else:
            self.metrics.sync_failures.labels(kind=error.kind).inc()

    def _sync_work_left(self, *, include_backoff: bool) -> bool:
        return self.syncer.work_left(include_backoff=include_backoff)

    def _undrained(self) -> bool:
        """Items still waiting in a queue file (e.g. their replica cannot be written),
        or Claude Code hook calls still in the inbox."""
        if self.drainer.hook_inbox.waiting:
            return True
        for cursor in list(self.drainer.cursors.values()):
            try:
                if queuefile.read_pending(cursor.conn, cursor.last_id, 1):
                    return True
            except Exception:
                return True
        return False

    def _burst_exit_code(self) -> int:
        if self._progress_on_tty:
            sys.stderr.write("\n")
        counts = self.state.counts()
        left = counts[st.OPEN] + counts[st.PENDING] + counts[st.FAILED] + self._undrained()
        # A queue file quarantined during this run may hold events that never arrived.
        # (Damaged replicas and worker.db are rebuilt from the queues and replicas.)
        quarantined = [
            q
            for q in list_quarantined(self.spool_dir)
            if q.at >= self._started_at and ".db." not in q.name
        ]
        for q in quarantined:
            log.error("quarantined during this run: %s (%s)", q.name, q.reason)
        self._log_leftovers("burst finished")
        return EXIT_OK if left == 0 and not quarantined else EXIT_LEFT_PENDING

    def _log_leftovers(self, when: str) -> None:
        counts = self.state.counts()
        log.info(
            "%s: %d synced, %d pending, %d open, %d failed, %d dead letters",
            when,
            counts[st.SYNCED],
            counts[st.PENDING],
            counts[st.OPEN],
            counts[st.FAILED],
            self.state.dead_letter_count(),
        )

    # ---- abandoned sessions and finished queues ----------------------------

    def _seal_abandoned_sessions(self) -> None:
        self.stats.sealed += seal_abandoned(
            self.spool_dir, self.state, self.drainer, host=self._host, now=self.now(),
            abandon_after=self.settings.abandon_after,
        )  # fmt: skip

    def _apply_deletions(self) -> None:
        """Sessions deleted by `agentspool delete` since the last pass (deletion.py)."""
        removed = apply_tombstones(self.spool_dir, self.state, now=self.now(),
                                   sending=self.syncer.sending,
                                   forget_replica=self.drainer.forget_replica)  # fmt: skip
        for session_id in removed:
            log.info("deleted session %s locally (agentspool delete)", session_id)

    def _prune_if_due(self) -> None:
        """Retention of synced replicas, at most once per PRUNE_INTERVAL_S."""
        if self.monotonic() < self._next_prune:
            return
        self._next_prune = self.monotonic() + PRUNE_INTERVAL_S
        report = prune(
            self.spool_dir,
            self.state,
            retain_synced=self.settings.retain_synced,
            max_bytes=self.settings.max_replica_bytes,
            now=self.now(),
            before_delete=self.drainer.forget_replica,
        )
        if report.deleted:
            log.info(
                "retention: deleted %d synced replica(s), %d bytes",
                len(report.deleted),
                report.freed_bytes,
            )

    def _remove_finished_queues(self) -> None:
        """Delete the queue file of a producer that is gone, once everything it wrote
        is applied and every session it started is synced (the file is the last local
        copy that survives a power loss before the replicas are checkpointed)."""
        gone = gone_producers(self.spool_dir, self.drainer, self._host)
        if not gone:
            return
        unsynced = {
            s.producer_id
            for state in (st.OPEN, st.PENDING, st.FAILED)
            for s in self.state.sessions(state)
        }
        for producer_id in gone - unsynced:
            queue_dir = self.spool_dir / queuefile.QUEUES_DIRNAME / producer_id
            self.drainer.forget(queue_dir)
            shutil.rmtree(queue_dir, ignore_errors=True)
            log.info("removed the drained queue of producer %s", producer_id)

    def _watch_queues(self) -> BaseObserver:
        """Wake the loop on any change under queues/ (inotify via watchdog)."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        worker = self

        class _Wake(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # Opens and read-only closes come from readers (us, `status`): ignore.
                if event.event_type in _WAKING_EVENTS:
                    worker._file_event = True
                    worker.wake.set()

        # watchdog logs an error when a watched queue directory is moved away
        # (quarantine, removal); the wake-up is a hint, the rescan the safety net.
        logging.getLogger("watchdog").setLevel(logging.CRITICAL)
        observer = Observer()
        observer.schedule(_Wake(), str(self.spool_dir / queuefile.QUEUES_DIRNAME), recursive=True)
        observer.daemon = True
        observer.start()
        return observer


def open_replica(spool_dir: Path, replica_name: str) -> Replica:
    return Replica(spool_dir / REPLICAS_DIRNAME / replica_name)
