"""The worker refuses a spool that other users can write to.

Whoever can write into the spool can forge events (they become rows in the remote
database under any session id) or replace files the worker opens. The producer
creates the spool private (0700 directories, 0600 files); a spool directory or its
``queues/`` directory that group or others may write to was changed by someone, and
the worker will not drain it until the owner fixes the mode.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from agentspool.producer import queuefile
from agentspool.worker.exitcodes import EXIT_REFUSED as EXIT_REFUSED  # the worker's, here

log = logging.getLogger("agentspool.worker")


class InsecureSpool(RuntimeError):
    """The spool can be written by other users; the message says how to fix it."""


def check_spool_private(spool_dir: Path) -> None:
    """Raise ``InsecureSpool`` if the spool or its queues directory is writable by
    group or others (a sticky bit, as on /tmp, does not make it safe)."""
    for path in (spool_dir, spool_dir / queuefile.QUEUES_DIRNAME):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InsecureSpool(
                f"refusing to drain {spool_dir}: {path} is writable by"
                f" {_who(mode)} (mode {stat.S_IMODE(mode):04o}), so anyone could forge"
                f" events. Fix: chmod go-w {path} (agentspool creates it 0700)"
            )


def _who(mode: int) -> str:
    who = [name for bit, name in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if mode & bit]
    return " and ".join(who)


def refuse_insecure_spool(spool_dir: Path) -> bool:
    """Log why and return True if the worker must not drain this spool."""
    try:
        check_spool_private(spool_dir)
    except InsecureSpool as exc:
        log.error("%s", exc)
        return True
    return False
