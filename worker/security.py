"""The worker refuses a spool it cannot trust.

Whoever can write into the spool can forge events (they become rows in the remote
database under any session id) or replace files the worker opens; a symbolic link in
it sends the worker's writes, renames and quarantines somewhere else (a root worker
once added tables to root's own SQLite file through a linked ``replicas/``). So the
spool and every directory in it must be a real directory owned by the user the
worker runs as, not writable by group or others, and nothing in it may be a link.
The producers create it that way (0700 directories, 0600 files); anything else was
changed by someone, and the worker will not touch the spool until it is fixed.

The check runs before the worker creates or opens anything in the spool. After it,
only the spool's owner can add a link, and files are opened without following one
anyway (``refuse_link``, ``open_nofollow``).
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
from pathlib import Path

from agentspool.worker.exitcodes import EXIT_REFUSED as EXIT_REFUSED  # the worker's, here

log = logging.getLogger("agentspool.worker")


class InsecureSpool(RuntimeError):
    """The spool cannot be trusted; the message (one line) says how to fix it."""


def check_spool_private(spool_dir: Path) -> None:
    """Raise ``InsecureSpool`` if the spool or a directory in it is a link, is owned by
    another user, or is writable by group or others (a sticky bit, as on /tmp, does
    not make it safe), if anything in it is a link, or if a file directly in it (the
    worker's own: ``worker.db``, the lock) is writable by group or others. A spool
    that does not exist yet passes: the worker creates it private."""
    try:
        info = os.lstat(spool_dir)
    except FileNotFoundError:
        return
    _check_directory(spool_dir, spool_dir, info)
    pending = [spool_dir]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue  # removed meanwhile (a queue file drained by a running worker)
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                _refuse_link(spool_dir, path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    _check_directory(spool_dir, path, entry.stat(follow_symlinks=False))
                    pending.append(path)
                elif directory == spool_dir:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    if mode & (stat.S_IWGRP | stat.S_IWOTH):
                        raise InsecureSpool(_writable(spool_dir, path, mode, "0600"))
            except FileNotFoundError:
                continue  # gone meanwhile (a running worker removes drained queues)


def _check_directory(spool_dir: Path, path: Path, info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        _refuse_link(spool_dir, path)
    if not stat.S_ISDIR(info.st_mode):
        raise InsecureSpool(f"refusing to drain {spool_dir}: {path} is not a directory")
    if info.st_uid != os.geteuid():
        owner, me = _user(info.st_uid), _user(os.geteuid())
        raise InsecureSpool(
            f"refusing to drain {spool_dir}: {path} is owned by {owner}, not by {me} who runs"
            f" the worker. Run the worker as the spool's owner: sudo -u {owner} agentspool"
            f" worker run (systemd: User={owner})"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecureSpool(_writable(spool_dir, path, info.st_mode, "0700"))


def _refuse_link(spool_dir: Path, path: Path) -> None:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    raise InsecureSpool(
        f"refusing to drain {spool_dir}: {path} is a symbolic link (to {target}), and the"
        f" worker follows no links in its spool. Fix: replace the link with a real"
        f" {'directory' if path == spool_dir else 'file or directory'}, or point"
        " AGENTSPOOL_DIR at the link's target"
    )


def _writable(spool_dir: Path, path: Path, mode: int, made: str) -> str:
    who = [name for bit, name in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if mode & bit]
    return (
        f"refusing to drain {spool_dir}: {path} is writable by {' and '.join(who)}"
        f" (mode {stat.S_IMODE(mode):04o}), so anyone could forge events. Fix: chmod go-w"
        f" {path} (agentspool creates it {made})"
    )


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def refuse_insecure_spool(spool_dir: Path) -> bool:
    """Log why and return True if the worker must not drain this spool."""
    try:
        check_spool_private(spool_dir)
    except InsecureSpool as exc:
        log.error("%s", exc)
        return True
    return False


def refuse_link(path: Path) -> None:
    """Raise OSError (ELOOP) if ``path`` is a symbolic link: for files SQLite opens,
    which it would otherwise follow."""
    if path.is_symlink():
        raise OSError(errno.ELOOP, "a symbolic link in the spool; not followed", str(path))


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that fails on a symbolic link instead of following it."""
    return os.open(path, flags | os.O_NOFOLLOW, mode)
