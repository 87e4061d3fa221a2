"""The systemd notify protocol (sd_notify), without libsystemd.

With ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a datagram socket path, or
an abstract one starting with "@") and, with ``WatchdogSec=``, ``WATCHDOG_USEC``.
The worker sends ``READY=1`` once it is draining, ``WATCHDOG=1`` from its main loop
(so a hung loop gets the unit restarted), ``STATUS=...`` lines, and ``STOPPING=1``.
Outside systemd every call is a no-op. Sending never raises: a monitoring channel
must not take the worker down.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("agentspool.worker")


class SystemdNotifier:
    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.monotonic = monotonic
        self._address: str | bytes | None = None
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()  # Linux abstract namespace
        elif address.startswith("/"):
            self._address = address
        self._socket: socket.socket | None = None
        self.watchdog_interval: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and watchdog_pid in ("", str(os.getpid())):
            # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._next_ping = 0.0
        self._last_status = ""

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")
        self._last_status = status

    def status(self, status: str) -> None:
        if status != self._last_status:
            self.notify(f"STATUS={status}")
            self._last_status = status

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=stopping: draining and syncing what is ready")

    def heartbeat(self) -> None:
        """Send WATCHDOG=1 if it is due; the main loop calls this every pass."""
        if self.watchdog_interval is None or self._address is None:
            return
        now = self.monotonic()
        if now >= self._next_ping:
            self.notify("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval

    def seconds_to_next_heartbeat(self) -> float | None:
        if self.watchdog_interval is None or self._address is None:
            return None
        return max(0.0, self._next_ping - self.monotonic())

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
