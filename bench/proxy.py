"""A loopback TCP proxy that adds network latency and counts HTTP requests.

Every chunk is forwarded ``one_way_delay`` seconds after it arrived, in each
direction, so a request/response round trip costs ``2 * one_way_delay`` more than on
plain loopback (latency, not bandwidth: chunks of one large request travel together).
Connection set-up is not delayed; the libSQL client keeps its connection open.

HTTP requests are counted by their request lines (``POST /v2/pipeline HTTP/1.1``) in
the client-to-server stream. A request line cannot appear inside a JSON body (JSON
escapes CR LF), and HTTP/1.1 clients start each request in a new write. An HTTP/2
preface is noticed and reported, since it would make the count meaningless.

Listens on 127.0.0.1 only and forwards only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass

_REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS) /\S* HTTP/1\.[01]\r\n")
_H2_PREFACE = b"PRI * HTTP/2.0"


@dataclass(frozen=True)
class ProxyCounts:
    requests: int
    connections: int
    bytes_up: int
    bytes_down: int
    http2: bool


class LatencyProxy:
    def __init__(self, target_port: int, round_trip_delay: float) -> None:
        self.target_port = target_port
        self.one_way_delay = round_trip_delay / 2.0
        self.port = 0
        self._requests = 0
        self._connections = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._http2 = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    # ---- control (any thread) ---------------------------------------------

    def start(self, timeout: float = 10.0) -> int:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the proxy did not start")
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def counts(self) -> ProxyCounts:
        with self._lock:
            return ProxyCounts(
                self._requests, self._connections, self._bytes_up, self._bytes_down, self._http2
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- the event loop thread ---------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        server_w: asyncio.StreamWriter | None = None
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(
                self._pipe(client_r, server_w, upstream=True),
                self._pipe(server_r, client_w, upstream=False),
            )
        except (OSError, asyncio.CancelledError):
            # Cancelled only when the proxy stops; swallowing it keeps asyncio's
            # start_server callback from logging a spurious traceback.
            pass
        finally:
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
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
                    if not data:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                return  # the receiving side went away

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(1 << 16)
                self._count(data, upstream)
                chunks.put_nowait((loop.time() + self.one_way_delay, data))
                if not data:
                    break
            await delivering
        except (ConnectionError, OSError):
            delivering.cancel()

    def _count(self, data: bytes, upstream: bool) -> None:
        with self._lock:
            if upstream:
                self._bytes_up += len(data)
                self._requests += len(_REQUEST_LINE.findall(data))
                if data.startswith(_H2_PREFACE):
                    self._http2 = True
            else:
                self._bytes_down += len(data)
