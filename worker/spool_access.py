"""Can this user use this spool directory? One-line reasons instead of tracebacks.

A spool path goes wrong in a few ways a new user meets in the first hour: a parent
of it is a regular file, a directory on the way is not this user's, or it is on a
read-only mount. ``status`` and ``worker run`` ask here first and print the reason
in one line (the producer, which never raises, counts the failure and warns once).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def unreadable_reason(spool_dir: Path) -> str | None:
    """Why ``spool_dir`` cannot be read, or None. A spool that does not exist yet is
    readable (as empty) when it could be created."""
    path = Path(os.path.abspath(spool_dir))
    for ancestor in (path, *path.parents):
        kind = _kind(ancestor)
        if kind == "missing":
            continue
        if kind == "denied":
            continue  # the first directory we may look into names the problem
        if kind != "directory":
            return f"{ancestor} is {kind}, not a directory"
        if not os.access(ancestor, os.X_OK | (os.R_OK if ancestor == path else 0)):
            return f"permission denied on {ancestor} ({_owner_and_mode(ancestor)})"
        return None
    return None


def unwritable_reason(spool_dir: Path) -> str | None:
    """Why producers and the worker cannot write into (or create) ``spool_dir``, or None."""
    unreadable = unreadable_reason(spool_dir)
    if unreadable is not None:
        return unreadable
    path = Path(os.path.abspath(spool_dir))
    existing = next((a for a in (path, *path.parents) if _kind(a) == "directory"), None)
    if existing is None or os.access(existing, os.W_OK | os.X_OK):
        return None
    where = "a read-only file system" if _read_only_mount(existing) else _owner_and_mode(existing)
    if existing == path:
        return f"{path} is not writable ({where})"
    return f"{path} cannot be created: {existing} is not writable ({where})"


def _kind(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except PermissionError:
        return "denied"
    except NotADirectoryError:
        return "missing"  # a parent is a file: that parent names the problem
    except OSError as exc:
        return f"unusable ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "directory"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _owner_and_mode(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"owner uid {info.st_uid}, mode {info.st_mode & 0o7777:04o}; you are uid {os.geteuid()}"
