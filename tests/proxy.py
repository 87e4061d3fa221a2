"""A loopback TCP proxy that injects network faults between the worker and sqld.

The tests and the benchmarks (bench/sync.py: latency and request counts) share it.
It counts connections, bytes and HTTP requests (by their request lines, in the
client-to-server stream: a request line cannot appear inside a JSON body, which
escapes CR LF; an HTTP/2 preface is noticed, as it would make the count
meaningless), and injects four faults that callers switch on and off while it runs
(any thread):

- latency: every chunk is forwarded ``one_way_delay`` seconds after it arrived, in
  each direction;
- cuts: with probability ``probability`` a connection is given a cut point N (bytes
  of client-to-server data, uniform in ``[min_bytes, max_bytes]``, counted from
  when the connection drew it); once N bytes are forwarded, the proxy forwards no
  more and closes both sides, half the time with a reset (RST), half with a FIN.
  As a request is rarely exactly N bytes long, most cuts fall mid-request; a cut
  after a complete request (e.g. a COMMIT) loses the response instead;
- commit cuts: with probability ``commit_probability``, right after the proxy
  forwarded a request that executes ``COMMIT``, it stops forwarding answers and
  closes both sides: the commit may have landed but the client never hears of it;
- a stall: the proxy accepts connections but forwards nothing in either direction
  until ``resume()`` (a half-open, black-holed network).

Listens on 127.0.0.1 only and forwards only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import threading
from dataclasses import dataclass

_REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS) /\S* HTTP/1\.[01]\r\n")
_H2_PREFACE = b"PRI * HTTP/2.0"
_CHUNK = 1 << 16
_LINGER_ZERO = struct.pack("ii", 1, 0)
# A request that executes COMMIT: libsql's interactive one, or a Hrana batch's step.
_COMMIT = re.compile(rb'"sql": ?"COMMIT;?"')
# How long a commit cut waits (after forwarding the COMMIT) before closing the
# connection, so that the server has received and most likely executed it.
COMMIT_CUT_WAIT_S = 0.05


@dataclass(frozen=True)
class ProxyCounts:
    connections: int
    requests: int  # HTTP request lines seen client -> server
    cuts: int  # connections the proxy cut
    cut_points: tuple[int, ...]  # N (bytes forwarded client -> server before each cut)
    commit_cuts: int  # connections cut right after a COMMIT was forwarded
    bytes_up: int
    bytes_down: int
    http2: bool = False  # a client spoke HTTP/2: the request count means nothing


class _Connection:
    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.forwarded_up = 0
        self.cut_at: int | None = None  # absolute forwarded_up at which to cut
        self.generation = -1  # of the cut settings this connection drew from
        self.closed = False
        self.mute_down = False  # forward nothing more to the client


class FaultProxy:
    def __init__(self, target_port: int, *, seed: int = 0) -> None:
        self.target_port = target_port
        self.port = 0
        self.one_way_delay = 0.0
        self._rng = random.Random(seed)
        self._cut: tuple[float, int, int] | None = None  # probability, min, max
        self._generation = 0
        self._lock = threading.Lock()
        self._connections = 0
        self._requests = 0
        self._cut_points: list[int] = []
        self._commit_probability = 0.0
        self._commit_cuts = 0
        self._commit_limit: int | None = None
        self._canned: tuple[int, int, float | None] = (0, 0, None)
        self._canned_sent = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._http2 = False
        self._live: set[_Connection] = set()
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    # ---- control (any thread) ------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> FaultProxy:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the proxy did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def set_latency(self, round_trip: float) -> None:
        self.one_way_delay = round_trip / 2.0

    def set_cuts(self, probability: float, min_bytes: int = 1, max_bytes: int = 1) -> None:
        """Cut connections at random points from now on (open ones draw again)."""
        with self._lock:
            self._cut = (probability, min_bytes, max_bytes) if probability > 0 else None
            self._generation += 1

    def set_commit_cuts(self, probability: float, limit: int | None = None) -> None:
        """Cut the answer to requests that execute COMMIT, with this probability,
        at most ``limit`` more times (None: no limit)."""
        with self._lock:
            self._commit_probability = probability
            self._commit_limit = None if limit is None else self._commit_cuts + limit

    def answer_next(self, n: int, status: int = 429, retry_after: float | None = None) -> None:
        """Answer the next ``n`` HTTP requests with this status instead of forwarding
        them (an overloaded server or gateway: 429, 503)."""
        with self._lock:
            self._canned = (n, status, retry_after)

    def stop_cuts(self) -> None:
        self.set_cuts(0.0)
        self.set_commit_cuts(0.0)

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def counts(self) -> ProxyCounts:
        with self._lock:
            return ProxyCounts(
                self._connections,
                self._requests,
                len(self._cut_points),
                tuple(self._cut_points),
                self._commit_cuts,
                self._bytes_up,
                self._bytes_down,
                self._http2,
            )

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the event loop thread -------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for conn in list(self._live):
                self._close(conn, reset=True)
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    def _draw_cut(self, conn: _Connection) -> None:
        with self._lock:
            if conn.generation == self._generation:
                return
            conn.generation = self._generation
            cut = self._cut
            if cut is None or self._rng.random() >= cut[0]:
                conn.cut_at = None
            else:
                conn.cut_at = conn.forwarded_up + self._rng.randint(cut[1], cut[2])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        conn = _Connection()
        conn.writers.append(client_w)
        self._live.add(conn)
        with self._lock:
            self._connections += 1
        try:
            await self._flowing.wait()  # stalled: accepted, never connected through
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            conn.writers.append(server_w)
            await asyncio.gather(
                self._pipe(conn, client_r, server_w, upstream=True),
                self._pipe(conn, server_r, client_w, upstream=False),
            )
        except (OSError, asyncio.CancelledError):
            pass  # cancelled only when the proxy stops
        finally:
            self._close(conn, reset=False)
            self._live.discard(conn)

    def _close(self, conn: _Connection, *, reset: bool) -> None:
        conn.closed = True
        for writer in conn.writers:
            try:
                if reset:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:  # linger 0: close() sends a RST, not a FIN
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                    writer.transport.abort()
                else:
                    writer.close()
            except (OSError, RuntimeError):
                pass

    async def _pipe(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            try:
                while True:
                    due, data = await chunks.get()
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._flowing.wait()
                    if conn.closed or (conn.mute_down and not upstream):
                        return
                    if not data:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    if upstream:
                        self._draw_cut(conn)
                        if conn.cut_at is not None and conn.forwarded_up + len(data) >= conn.cut_at:
                            keep = conn.cut_at - conn.forwarded_up
                            writer.write(data[:keep])
                            await writer.drain()
                            await asyncio.sleep(0.005)  # let the kernel send it
                            conn.forwarded_up += keep
                            with self._lock:
                                self._cut_points.append(conn.cut_at)
                            self._close(conn, reset=self._rng.random() < 0.5)
                            return
                        conn.forwarded_up += len(data)
                        if _REQUEST_LINE.search(data) and self._take_canned(conn):
                            return
                        if (
                            self._commit_probability > 0
                            and _COMMIT.search(data)
                            and self._commit_allowed()
                            and self._rng.random() < self._commit_probability
                        ):
                            conn.mute_down = True
                            writer.write(data)
                            await writer.drain()
                            await asyncio.sleep(COMMIT_CUT_WAIT_S)
                            with self._lock:
                                self._commit_cuts += 1
                            self._close(conn, reset=self._rng.random() < 0.5)
                            return
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                return  # the receiving side went away

        delivering = asyncio.create_task(deliver())
        try:
            while not conn.closed:
                data = await reader.read(_CHUNK)
                self._count(data, upstream)
                chunks.put_nowait((loop.time() + self.one_way_delay, data))
                if not data:
                    break
            await delivering
        except (ConnectionError, OSError):
            delivering.cancel()
        finally:
            if conn.closed:
                delivering.cancel()

    def _commit_allowed(self) -> bool:
        with self._lock:
            return self._commit_limit is None or self._commit_cuts < self._commit_limit

    def _take_canned(self, conn: _Connection) -> bool:
        """Answer this request ourselves if a canned answer is armed; close after."""
        with self._lock:
            n, status, retry_after = self._canned
            if n <= 0:
                return False
            self._canned = (n - 1, status, retry_after)
            self._canned_sent += 1
        headers = f"HTTP/1.1 {status} Canned\r\nContent-Length: 0\r\nConnection: close\r\n"
        if retry_after is not None:
            headers += f"Retry-After: {retry_after:g}\r\n"
        client = conn.writers[0]
        conn.mute_down = True
        try:
            client.write((headers + "\r\n").encode())
        except (OSError, RuntimeError):
            pass
        self._close(conn, reset=False)
        return True

    @property
    def canned_answers(self) -> int:
        with self._lock:
            return self._canned_sent

    def _count(self, data: bytes, upstream: bool) -> None:
        with self._lock:
            if upstream:
                self._bytes_up += len(data)
                self._requests += len(_REQUEST_LINE.findall(data))
                if data.startswith(_H2_PREFACE):
                    self._http2 = True
            else:
                self._bytes_down += len(data)
