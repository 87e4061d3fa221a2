"""HTTP with a total deadline and a size cap: what a hostile server cannot outlast.

httpx's timeouts are per operation: a server that answers one byte every two seconds
never trips a 30 s read timeout, and holds the request (and its thread and socket)
for as long as it likes; an endless or 1.5 GB body is read into memory whole. So
every request here runs under one deadline that covers connecting, sending and the
whole answer, and the answer is read in pieces up to a cap.

The deadline is enforced where the waiting happens: a network backend for httpcore
whose streams give each socket operation the smaller of its own timeout and the time
left, and raise a timeout once none is left. ``abort()`` shuts the sockets down from
another thread (the sync engine does this to a sender it gave up on), which wakes a
thread blocked in ``recv`` at once.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpcore
import httpx

# sqld caps a response at 10 MB (DESIGN.md); a few times that leaves room for Turso
# and for future servers, and bounds what a hostile one can make the worker hold.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024  # enough for any error page's gist
_WRITE_PIECE = 64 * 1024  # each piece of a body gets the time left, not a fresh timeout


class ResponseTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit // (1024 * 1024)} MiB")


class Deadline:
    """The end of the current request (monotonic), shared by one client's streams."""

    def __init__(self) -> None:
        self.at: float | None = None
        self._streams: set[_DeadlineStream] = set()
        self._lock = threading.Lock()

    def limit(self, timeout: float | None, exc: type[Exception]) -> float | None:
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise exc("the request's total deadline passed")
        return left if timeout is None else min(timeout, left)

    def track(self, stream: _DeadlineStream) -> None:
        with self._lock:
            self._streams.add(stream)

    def forget(self, stream: _DeadlineStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def abort(self) -> None:
        """Wake and fail whatever waits on these streams (from any thread)."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.shutdown()


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline
        deadline.track(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.limit(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        for start in range(0, len(view), _WRITE_PIECE):
            piece = bytes(view[start : start + _WRITE_PIECE])
            self._inner.write(piece, self._deadline.limit(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._deadline.forget(self)
        self._inner.close()

    def shutdown(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed or never connected

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self._deadline.forget(self)
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._deadline.limit(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host,
            port,
            self._deadline.limit(timeout, httpcore.ConnectTimeout),
            local_address,
            socket_options,
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, self._deadline.limit(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (its request/response mapping and error translation),
    over a connection pool whose sockets obey ``deadline``. No proxy: the client
    never takes one from the environment (a proxy must not see the token)."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__(trust_env=False)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=httpx.Limits().max_connections,
            max_keepalive_connections=4,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(deadline),
        )


@contextmanager
def within(deadline: Deadline, seconds: float) -> Iterator[None]:
    """Run one request (and the reading of its answer) within ``seconds``."""
    deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        deadline.at = None


def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The (decoded) body, or ResponseTooLarge as soon as it passes ``limit``: a
    declared length over the cap is refused before a byte of the body is read."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(limit)
    pieces: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(limit)
        pieces.append(chunk)
    return b"".join(pieces)


def read_gist(response: httpx.Response, limit: int = MAX_ERROR_BODY_BYTES) -> str:
    """The start of an error body, as text (what a message needs, never more)."""
    pieces: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        pieces.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(pieces)[:limit].decode(response.encoding or "utf-8", errors="replace")
