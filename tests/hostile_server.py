"""A hostile database server on 127.0.0.1: it answers, but never the way sqld does.

Modes (callers switch them while it runs, from any thread):
- ``slowloris``: the status line and headers, one byte every ``drip_interval``
  seconds, forever (httpx's timeouts are per read: each byte restarts them);
- ``endless``: a 200 with a chunked body that never ends, as fast as the client reads;
- ``huge``: a 200 declaring 1.5 GB and sending it (zeros);
- ``huge_unannounced``: the same 1.5 GB without a length (ends when the server closes);
- ``rotate``: each request gets the next of the four above;
- ``forward``: a well-behaved relay to a real sqld (the attack is over).

It reads each request whole first (the worker's batch must be sent before the
answer starts), counts requests per mode, and stops each connection's thread as
soon as the client hangs up.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections import Counter

HUGE_BYTES = 1_500_000_000
ATTACKS = ("slowloris", "endless", "huge", "huge_unannounced")
_ZEROS = b"0" * (1 << 16)


class HostileServer:
    def __init__(self, mode: str = "rotate", *, drip_interval: float = 2.0,
                 forward_to: str | None = None) -> None:  # fmt: skip
        self.mode = mode
        self.drip_interval = drip_interval
        self.forward_to = forward_to
        self.requests: Counter[str] = Counter()
        self._rotation = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def attacks_served(self) -> int:
        with self._lock:
            return sum(self.requests[m] for m in ATTACKS)

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- serving -----------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(1.0)
        try:
            while not self._stop.is_set():
                request = self._read_request(conn)
                if request is None:
                    return
                mode = self._next_mode()
                with self._lock:
                    self.requests[mode] += 1
                if mode == "forward":
                    self._forward(conn, *request)
                    continue
                getattr(self, f"_{mode}")(conn)
                return  # an attack ends only when the client hangs up
        except OSError:
            return  # the client hung up (or reset): what a deadline should do
        finally:
            conn.close()

    def _next_mode(self) -> str:
        if self.mode != "rotate":
            return self.mode
        with self._lock:
            mode = ATTACKS[self._rotation % len(ATTACKS)]
            self._rotation += 1
        return mode

    def _read_request(self, conn: socket.socket) -> tuple[str, bytes] | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._recv(conn)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = self._recv(conn)
            if not chunk:
                return None
            body += chunk
        return lines[0].split(" ")[1], body

    def _recv(self, conn: socket.socket) -> bytes:
        while not self._stop.is_set():
            try:
                return conn.recv(1 << 16)
            except TimeoutError:
                continue
        return b""

    def _slowloris(self, conn: socket.socket) -> None:
        answer = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 10_000
        )
        for byte in answer:
            conn.sendall(bytes([byte]))
            if self._stop.wait(self.drip_interval):
                return

    def _endless(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"%x\r\n" % len(_ZEROS) + _ZEROS + b"\r\n"
        while not self._stop.is_set():
            conn.sendall(chunk)

    def _huge(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % HUGE_BYTES)  # fmt: skip
        self._send_huge(conn)

    def _huge_unannounced(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\n\r\n")  # fmt: skip
        self._send_huge(conn)

    def _send_huge(self, conn: socket.socket) -> None:
        sent = 0
        while sent < HUGE_BYTES and not self._stop.is_set():
            conn.sendall(_ZEROS)
            sent += len(_ZEROS)

    def _forward(self, conn: socket.socket, path: str, body: bytes) -> None:
        assert self.forward_to is not None
        request = urllib.request.Request(
            self.forward_to + path, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read()
            status = response.status
        conn.sendall(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (status, len(answer)) + answer)  # fmt: skip
