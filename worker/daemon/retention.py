"""Retention: delete replicas of synced sessions by age and by total size.

Only replicas of sessions the remote database has committed (sync state
``synced``) are ever deleted; open, pending and failed sessions are never touched,
whatever the budget. The worker runs this itself every hour with the settings
``AGENTSPOOL_RETAIN_SYNCED`` and ``AGENTSPOOL_MAX_REPLICA_BYTES``;
``agentspool prune`` runs it by hand (only while no worker runs, since the worker
may hold a replica open).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentspool.producer import queuefile
from agentspool.worker import state as st
from agentspool.worker.intake.replica import REPLICAS_DIRNAME

STALE_BUILD_S = 3600.0  # a queue file still being built after an hour: its producer died


@dataclass
class PruneReport:
    deleted: list[tuple[str, int]] = field(default_factory=list)  # (session id, bytes)
    kept_bytes: int = 0  # bytes of replicas left
    stale_builds: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(size for _, size in self.deleted)


def replica_files(replica: Path) -> list[Path]:
    return [
        replica,
        replica.with_name(replica.name + "-wal"),
        replica.with_name(replica.name + "-shm"),
    ]


def replica_size(replica: Path) -> int:
    return sum(p.stat().st_size for p in replica_files(replica) if p.exists())


def prune(
    spool_dir: Path,
    state: st.StateStore,
    *,
    retain_synced: float,
    max_bytes: int,
    now: float | None = None,
    dry_run: bool = False,
    before_delete: Callable[[str], None] = lambda session_id: None,
) -> PruneReport:
    """Delete synced replicas older than ``retain_synced`` seconds (0: keep by age),
    then the oldest synced ones until all replicas fit in ``max_bytes`` (0: no limit)."""
    now = time.time() if now is None else now
    replicas = spool_dir / REPLICAS_DIRNAME
    report = PruneReport()
    synced = sorted(
        (s for s in state.sessions(st.SYNCED) if (replicas / s.replica).exists()),
        key=lambda s: s.synced_at or 0.0,
    )
    total = sum(replica_size(p) for p in replicas.glob("*.db"))
    for session in synced:
        path = replicas / session.replica
        too_old = retain_synced > 0 and now - (session.synced_at or now) > retain_synced
        too_big = max_bytes > 0 and total > max_bytes
        if not (too_old or too_big):
            continue
        size = replica_size(path)
        if not dry_run:
            before_delete(session.session_id)
            for part in replica_files(path):
                part.unlink(missing_ok=True)
        report.deleted.append((session.session_id, size))
        total -= size
    report.kept_bytes = total
    report.stale_builds = _remove_stale_builds(spool_dir, now, dry_run)
    return report


def _remove_stale_builds(spool_dir: Path, now: float, dry_run: bool) -> list[str]:
    """Queue files a producer began to build but never renamed into place."""
    removed = []
    for path in (spool_dir / queuefile.QUEUES_DIRNAME).glob(".new-*"):
        try:
            if now - path.stat().st_mtime > STALE_BUILD_S:
                if not dry_run:
                    shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        except FileNotFoundError:
            continue
    return removed
