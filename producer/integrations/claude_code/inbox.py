"""The hook inbox: where Claude Code's hook calls leave their payloads, untouched.

Claude Code waits for every command hook, on the agent's critical path, so the hook
does the least that is durable: it appends the event (the JSON document on its
stdin, as it came) to a file of its own, fsynced, and exits. Everything else --
mapping, reading the transcript, the session's order -- is the worker's
(``collector.py``). The settings run it as one ``dd`` from the shell Claude Code
starts anyway (``hook_command``), which costs about one process start; ``agentspool
hook claude-code`` does the same from Python, where ``dd`` is not GNU's.

Files: ``<spool>/inbox/claude-code/<claude pid>-<writer pid>.json`` (``dd``'s) or
``<claude pid>-<writer pid>.<ns>.json`` (renamed into place whole: ``write_payload``).
- ``<claude pid>`` is the hook's parent, Claude Code itself: the session's owner,
  whose exit without a ``SessionEnd`` makes the session ``abandoned``.
- ``<writer pid>`` is the process that wrote it: while it runs the file may be
  incomplete, so the collector leaves it alone. A pid is unique among running
  processes, so concurrent hooks never share a file; a pid reused later appends to
  a file the worker has not collected yet, which then holds two documents in order.
- Files are taken in the order they were last written (``st_mtime_ns``): Claude Code
  runs one session's hooks one after another, except tool hooks of parallel tool
  calls, whose order does not matter.

Standard library only; imports nothing heavy (the Python hook runs it per call).
"""

from __future__ import annotations

import json
import os
import time
from stat import S_ISREG

TYPE_CHECKING = False  # typing costs milliseconds to import; mypy reads this block
if TYPE_CHECKING:
    from typing import Any

INBOX_DIRNAME = "inbox"
KIND = "claude-code"
SUFFIX = ".json"
MAX_FILE_BYTES = 64 << 20  # a hook payload carries a tool's whole output: room to spare


def inbox_dir(spool_dir: str) -> str:
    return os.path.join(spool_dir, INBOX_DIRNAME, KIND)


def hook_command() -> str:
    """The shell command of every hook entry: the spool as ``agentspool`` finds it
    (``AGENTSPOOL_DIR``, else ``$XDG_STATE_HOME/agentspool``), the inbox made private
    if missing, then ``dd`` writes stdin in one block and fsyncs (GNU coreutils)."""
    spool = "${AGENTSPOOL_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/agentspool}"
    return (
        f's="{spool}"; d="$s/{INBOX_DIRNAME}/{KIND}";'
        f' [ -d "$d" ] || mkdir -p -m 700 "$s" "$s/{INBOX_DIRNAME}" "$d";'
        f' exec dd of="$d/$PPID-$${SUFFIX}" oflag=append conv=notrunc,fsync'
        " bs=64M iflag=fullblock status=none"
    )


def write_payload(spool_dir: str, data: bytes, owner_pid: int) -> str:
    """What ``hook_command`` does, from Python (the hook command, the Agent SDK's
    callbacks): ``data`` in a file of its own, written aside, fsynced and renamed into
    place whole (``<owner>-<pid>.<ns>.json``: complete once listed, whether or not
    the writer still runs). Returns the file's path."""
    directory = inbox_dir(spool_dir)
    if not os.path.isdir(directory):  # each level private, as the shell command does
        for level in (spool_dir, os.path.dirname(directory), directory):
            os.makedirs(level, mode=0o700, exist_ok=True)
    name = f"{owner_pid}-{os.getpid()}.{time.time_ns()}{SUFFIX}"
    path = os.path.join(directory, name)
    building = os.path.join(directory, f".{name}.new")  # a dot-name is never listed
    fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(building, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename survives a power loss
    finally:
        os.close(dir_fd)
    return path


class InboxFile:
    """One inbox file as the collector finds it."""

    def __init__(self, path: str, stat: os.stat_result) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.mtime_ns = stat.st_mtime_ns
        self.size = stat.st_size
        self.inode = stat.st_ino
        stem = self.name[: -len(SUFFIX)]
        owner, _, writer = stem.partition("-")
        writer, _, renamed = writer.partition(".")
        self.owner_pid = int(owner) if owner.isdigit() else None
        self.writer_pid = int(writer) if writer.isdigit() else None
        self.whole = bool(renamed)  # renamed into place whole (write_payload)

    @property
    def key(self) -> str:
        """Identifies this file's content once collected (a pid's next file differs)."""
        return f"{self.name}:{self.inode}:{self.mtime_ns}"

    @property
    def at(self) -> float:
        """When its last payload was written (seconds since 1970)."""
        return self.mtime_ns / 1e9


def pending_files(spool_dir: str) -> list[InboxFile]:
    """The inbox's files, oldest write first (see the module docstring)."""
    directory = inbox_dir(spool_dir)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if not name.endswith(SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            stat = os.lstat(path)
        except FileNotFoundError:
            continue
        if S_ISREG(stat.st_mode):  # a link or a FIFO is not ours: skipped
            found.append(InboxFile(path, stat))
    found.sort(key=lambda f: (f.mtime_ns, f.name))
    return found


def writer_running(file: InboxFile) -> bool:
    """Is the process that writes ``file`` still there (it may not be done)?"""
    if file.whole or file.writer_pid is None:
        return False
    try:
        os.kill(file.writer_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Unreadable(ValueError):
    """An inbox file that does not hold whole JSON objects (a writer killed mid-write)."""


def read_payloads(file: InboxFile) -> list[dict[str, Any]]:
    """The JSON objects ``file`` holds, in order (several after a pid was reused)."""
    fd = os.open(file.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise Unreadable(f"over {MAX_FILE_BYTES} bytes")
    text = data.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()
    payloads: list[dict[str, Any]] = []
    at = 0
    while True:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        if at >= len(text):
            return payloads
        try:
            value, at = decoder.raw_decode(text, at)
        except (ValueError, RecursionError) as exc:
            raise Unreadable(f"not a whole JSON document at byte {at}: {exc}") from None
        if not isinstance(value, dict):
            raise Unreadable(f"a JSON {type(value).__name__}, not an object")
        payloads.append(value)
