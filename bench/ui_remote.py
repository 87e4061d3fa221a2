"""Row 20 (issue 25): the viewer over the database, ``agentspool ui --remote``, at scale.

The database of row 19 (bench/stats.py: 100,000 sessions, 2,000,000 messages, 500,000
tool calls, written straight into sqld's data file), with parent links added (every
session but one in nine names the one before it as its parent: families of nine,
a root and eight levels below it, as deep as the viewer's tree goes), served by a real sqld behind tests/proxy.py adding 20 ms to
every request. The real CLI, ``agentspool ui --remote --db``, reads it. Time to
first byte (bench/ui.py's ``ttfb_ms``), median of 3, for

- the sessions list, newest first, and sorted by cost (the database's ORDER BY over
  every session: no index holds cost);
- a session's tree (``/tree``: the session and its parent, then the recursive query
  down ``sessions_by_parent``), for a family's root;
- the stats page's two requests (``/api/stats?by=day,agent&tool_groups=0`` and
  ``by=tool``), which are row 19's ``compute_stats`` behind the viewer's HTTP.
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
from pathlib import Path

from bench import common
from bench.common import AGENTSPOOL_CLI, Config, Ref, Row, clean_env, popen, stop
from bench.stats import RTT, build_database
from bench.ui import free_port, ttfb_ms
from tests.helpers import wait_until
from tests.proxy import FaultProxy

GROUP = "ui_remote"
FAMILY = 9  # sessions per family: a root and a chain of eight below it (family.MAX_DEPTH)


def add_parents(path: Path) -> None:
    """Every session but each ninth names the one before it (ids are numbered)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "UPDATE sessions SET parent_id = printf('bench-stats-%07d',"
            " CAST(substr(id, 13) AS INTEGER) - 1) WHERE CAST(substr(id, 13) AS INTEGER) % ? != 0",
            (FAMILY,),
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def run(cfg: Config) -> list[Row]:
    sessions = cfg.size(100_000, 1_000)
    repeats = 3
    workdir = cfg.workdir("ui-remote-sqld")
    data = workdir / "db" / "dbs" / "default" / "data"
    build_database(data, sessions)
    add_parents(data)
    spool = cfg.workdir("ui-remote-spool")
    with common.sqld_server(workdir) as sqld:
        proxy = FaultProxy(sqld.port)
        proxy.set_latency(RTT)
        proxy.start()
        port = free_port()
        ui = popen(
            [AGENTSPOOL_CLI, "ui", "--spool", str(spool), "--port", str(port), "--remote",
             "--db", proxy.url],
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: _answers(port), 60, "agentspool ui --remote to answer", 0.1)
            paths = {
                "list": "/api/sessions",
                "sort_cost": "/api/sessions?sort=cost",
                "tree": "/api/sessions/bench-stats-0000000/tree",
                "stats_day_agent": "/api/stats?by=day,agent&tool_groups=0",
                "stats_tool": "/api/stats?by=tool",
            }
            timings = {
                name: statistics.median(ttfb_ms(port, path) for _ in range(repeats))
                for name, path in paths.items()
            }
        finally:
            stop(ui)
            proxy.stop()
    scale = f"{sessions:,} sessions at 20 ms"
    floor = Ref(RTT * 1000, "1 round trip")
    stats_page = timings["stats_day_agent"] + timings["stats_tool"]
    return [
        Row(GROUP, "ui_remote.list_ms", f"20. ui --remote: /api/sessions, {scale}",
            timings["list"], "ms", floor=floor, target=1000.0,
            note="newest first: a walk along the start-time index, then the page's counts"),
        Row(GROUP, "ui_remote.sort_cost_ms", f"20. ui --remote: /api/sessions?sort=cost, {scale}",
            timings["sort_cost"], "ms", floor=floor, target=1000.0,
            note="ORDER BY cost over every session (no index holds it), then the page's counts"),
        Row(GROUP, "ui_remote.tree_ms",
            f"20. ui --remote: a session's tree (9 sessions, 8 levels), {scale}",
            timings["tree"], "ms", floor=floor, target=500.0,
            note="two requests: the session and its parent; the recursive walk down parent_id"),
        Row(GROUP, "ui_remote.stats_page_ms",
            f"20. ui --remote: the stats page's two /api/stats, {scale}",
            stats_page, "ms", floor=floor,
            note=f"by=day,agent {timings['stats_day_agent']:.0f} ms + by=tool "
            f"{timings['stats_tool']:.0f} ms, one after the other (the page sends them "
            "together); row 19's compute_stats"),
    ]  # fmt: skip


def _answers(port: int) -> bool:
    try:
        ttfb_ms(port, "/api/info")
        return True
    except OSError:
        return False
