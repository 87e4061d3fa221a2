"""A network namespace with nothing but a loopback, for real clients that must stay offline.

``unshare -n`` makes the namespace and ``ip link set lo up`` brings its loopback up; a
small holder process keeps it alive (it ends when its stdin closes, so a crashed test
leaves nothing behind). A listening socket for a fake server is made *inside* it from
a thread of this process (``setns`` applies to the calling thread only, and a socket
stays in the namespace it was made in), so the server runs in-process and scriptable
while the client, started through ``nsenter --net``, reaches 127.0.0.1 and nothing else.
Needs root (CI runs as root).
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
START_TIMEOUT_S = 30.0


class LoopbackNamespace:
    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec cat >/dev/null"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.holder.stdout is not None
        line = _readline_within(self.holder, START_TIMEOUT_S)
        if line.strip() != b"up":
            self.close()
            raise RuntimeError(f"cannot make a network namespace (root needed): {line!r}")
        self.path = Path(f"/proc/{self.holder.pid}/ns/net")

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["nsenter", f"--net={self.path}", "--"]

    def listen(self, backlog: int = 64) -> socket.socket:
        """A TCP socket listening on a free 127.0.0.1 port inside the namespace."""
        made: list[socket.socket | BaseException] = []

        def inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns into the namespace failed")
                finally:
                    os.close(fd)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                sock.listen(backlog)
                made.append(sock)
            except BaseException as exc:
                made.append(exc)

        # This thread ends inside the namespace; the rest of the process never enters it.
        thread = threading.Thread(target=inside, name="netns-listen")
        thread.start()
        thread.join(START_TIMEOUT_S)
        if not made:
            raise TimeoutError("no socket made inside the namespace")
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    def close(self) -> None:
        if self.holder.poll() is None:
            assert self.holder.stdin is not None
            self.holder.stdin.close()
            try:
                self.holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait(timeout=10)

    def __enter__(self) -> LoopbackNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readline_within(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    result: list[bytes] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        proc.kill()
        return b""
    if not result[0]:
        _, err = proc.communicate(timeout=10)
        return err
    return result[0]
