"""Is a producer process still there? (For sealing abandoned sessions.)

A producer is gone when it closed its spool (it recorded ``closed_at``), or when it
ran on this host and no process with its pid and its start time exists. Comparing
start times, not only pids, keeps a reused pid from looking alive. Producers on
other hosts (a shared spool) cannot be checked: the silence timeout covers them.
A shared queue file (the Claude Code hook's, see producer/sharedqueue.py) is
written by a new process per event and is never gone: its sessions end with their
end marker or the silence timeout.
"""

from __future__ import annotations

import os
import socket

from agentspool.producer.queuefile import ProducerInfo, process_start_time


def producer_gone(info: ProducerInfo, this_host: str | None = None) -> bool:
    if info.closed_at is not None:
        return True
    if info.shared:
        return False  # written by many short-lived processes; owned by none of them
    if info.host != (this_host or socket.gethostname()):
        return False
    if info.process_start:
        return process_start_time(info.pid) != info.process_start
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
