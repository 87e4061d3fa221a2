"""``agentspool stats --json`` against a known workload, in a real sqld (``--remote``)
and in the spool's replicas: exact token sums and counts, costs from known prices,
nearest-rank percentiles, every ``--by``, the ``--since`` and ``--agent`` filters.

The workload goes in through ``agentspool ingest`` with its own times and tool
durations, and out to sqld through the real worker; the expected figures are computed
here from the workload itself (the oracle), not read back from either store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import REPO
from tests.helpers import run_cli, worker_env
from tests.intake.test_pricing import MINI, SONNET, expected
from tests.sqld import Sqld
from tests.sync.test_schema_v2 import ingest

DAY = [datetime(2026, 11, d, 10, tzinfo=UTC).timestamp() for d in (1, 2, 3)]
STATUSES = ("running", "completed", "error", "abandoned")
PRICES = {"claude-sonnet-4-5": SONNET, "gpt-4o-mini": MINI}

# (id, agent, day, status, messages, tools). A message: (model, input, output, cache
# read, cache write, cost given by its source or None). A tool: (name, ms, failed).
WORKLOAD: list[tuple[str, str, int, str, list[tuple[Any, ...]], list[tuple[Any, ...]]]] = [
    ("s1", "planner", 0, "completed",
     [("claude-sonnet-4-5", 10_000, 2_000, 6_000, 1_000, None),
      ("claude-sonnet-4-5", 5_000, 500, 4_000, 0, None)],
     [("Bash", 100.0, False), ("Read", 5.0, False), ("Bash", 300.0, True)]),
    ("s2", "coder", 0, "error",
     [("gpt-4o-mini", 8_000, 1_000, 2_000, 0, None)],
     [("Bash", 50.0, False), ("Bash", 700.0, False)]),
    # One message of a model no price table knows: the session has no price.
    ("s3", "coder", 1, "completed",
     [("local-llama", 1_000, 100, 0, 0, None), ("gpt-4o-mini", 2_000, 300, 0, 0, None)],
     [("Read", 12.0, False), ("Read", 8.0, True)]),
    # The source's own cost, for a model the table does not know.
    ("s4", "planner", 1, "completed",
     [("fake/m1", 3_000, 200, 0, 0, 0.25)],
     [("Bash", 42.0, False)]),
    ("s5", "planner", 2, "completed", [], []),  # no tokens: neither priced nor unpriced
    ("s6", "coder", 2, "error",
     [("claude-sonnet-4-5", 20_000, 4_000, 0, 20_000, None)],
     [("Edit", 1.5, False), ("Bash", 2_500.0, True), ("Bash", 75.25, False)]),
]  # fmt: skip


def ingest_lines() -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for sid, agent, day, status, messages, tools in WORKLOAD:
        ts = DAY[day]
        events: list[dict[str, Any]] = [{"type": "session_start", "agent": agent}]
        events.append({"type": "message", "role": "user", "content": "go"})
        for model, inputs, output, read, write, cost in messages:
            usage = {"input_tokens": inputs, "output_tokens": output,
                     "cache_read_tokens": read, "cache_write_tokens": write}  # fmt: skip
            message = {"type": "message", "role": "assistant", "content": "ok",
                       "model": model, "usage": usage}  # fmt: skip
            if cost is not None:
                message["cost_usd"] = cost
            events.append(message)
        for n, (name, ms, failed) in enumerate(tools):
            call = f"c{n}"
            events.append({"type": "tool_started", "call_id": call, "name": name})
            finished = {"type": "tool_finished", "call_id": call, "duration_ms": ms}
            events.append(finished | ({"error": "it failed"} if failed else {"output": "fine"}))
        end = {"type": "session_end", "status": status}
        events.append(end | ({"error": "it broke"} if status == "error" else {}))
        for seq, event in enumerate(events):
            lines.append({"v": 1, "session_id": sid, "seq": seq, "ts": ts + seq} | event)
    return lines


def nearest_rank(values: list[float], p: int) -> float | None:
    """The value at rank ceil(p/100 * n) of the sorted values (docs/CLI.md)."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = -(-p * len(ordered) // 100)
    return ordered[rank - 1]


def message_cost(model: str, inputs: int, output: int, read: int, write: int, cost: Any) -> Any:
    if cost is not None:
        return cost
    prices = PRICES.get(model)
    return None if prices is None else expected(prices, inputs, output, read, write)


def sum_or_none(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def tool_figures(tools: list[tuple[Any, ...]]) -> dict[str, Any]:
    errors = sum(1 for t in tools if t[2])
    durations = [t[1] for t in tools]
    return {
        "tool_calls": len(tools),
        "tool_errors": errors,
        "tool_error_rate": errors / len(tools) if tools else None,
        "tool_duration_p50_ms": nearest_rank(durations, 50),
        "tool_duration_p95_ms": nearest_rank(durations, 95),
    }


def figures(sessions: list[tuple[Any, ...]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sessions": len(sessions),
        "sessions_by_status": {s: sum(1 for r in sessions if r[3] == s) for s in STATUSES},
    }
    for i, key in enumerate(("input_tokens", "output_tokens", "cache_read_tokens",
                             "cache_write_tokens"), start=1):  # fmt: skip
        out[key] = sum_or_none([m[i] for r in sessions for m in r[4]])
    costs = []
    for r in sessions:
        each = [message_cost(*m) for m in r[4]]
        costs.append(None if not each or None in each else sum(each))
    out["cost_usd"] = sum_or_none(costs)
    out["sessions_priced"] = sum(1 for c in costs if c is not None)
    out["sessions_unpriced"] = sum(1 for r, c in zip(sessions, costs, strict=True)
                                   if c is None and r[4])  # fmt: skip
    return out | tool_figures([t for r in sessions for t in r[5]])


def session_key(row: tuple[Any, ...], dim: str) -> Any:
    if dim == "agent":
        return row[1]
    if dim == "model":
        return row[4][0][0] if row[4] else None
    return datetime.fromtimestamp(DAY[row[2]], UTC).date().isoformat()


def oracle(since_day: int | None = None, agent: str | None = None, by: str | None = None) -> Any:
    chosen = [r for r in WORKLOAD
              if (since_day is None or r[2] >= since_day) and (agent is None or r[1] == agent)]  # fmt: skip
    groups: list[dict[str, Any]] = []
    if by == "tool":
        names = sorted({t[0] for r in chosen for t in r[5]})
        groups = [{"tool": n} | tool_figures([t for r in chosen for t in r[5] if t[0] == n])
                  for n in names]  # fmt: skip
    elif by:
        keys = sorted({session_key(r, by) for r in chosen}, key=lambda k: (k is None, k or ""))
        groups = [{by: k} | figures([r for r in chosen if session_key(r, by) == k]) for k in keys]
    return figures(chosen), groups


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Counts and token sums exactly; dollars to the last few bits (float sums)."""
    assert set(got) == set(want), set(got) ^ set(want)
    for key, value in want.items():
        if key == "cost_usd" and value is not None:
            assert got[key] == pytest.approx(value, rel=1e-9), key
        else:
            assert got[key] == value, key


@pytest.fixture(scope="module")
def stores(sqld_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The workload in a spool's replicas and, synced by the real worker, in sqld."""
    tmp = tmp_path_factory.mktemp("stats")
    (tmp / "sqld").mkdir()
    server = Sqld(sqld_bin, tmp / "sqld")
    server.start()
    try:
        spool = tmp / "spool"
        env = worker_env(spool, server.url, AGENTSPOOL_OWNER_PID="1")
        ingest(env, ingest_lines())
        run_cli("worker", "run", "--burst", env=env, check=True, timeout=180)
        assert server.scalar("SELECT count(*) FROM sessions") == len(WORKLOAD)
        yield {"env": env, "sqld": server}
    finally:
        server.stop()


def stats_json(stores: dict[str, Any], remote: bool, *args: str) -> dict[str, Any]:
    result = run_cli("stats", *(["--remote"] if remote else []), *args, "--json",
                     env=stores["env"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("remote", [True, False], ids=["sqld", "replicas"])
@pytest.mark.parametrize(
    "args, since_day, agent, by",
    [
        ((), None, None, None),
        (("--by", "agent"), None, None, "agent"),
        (("--by", "model"), None, None, "model"),
        (("--by", "day"), None, None, "day"),
        (("--by", "tool"), None, None, "tool"),
        (("--since", "2026-11-02T00:00:00Z"), 1, None, None),
        (("--agent", "coder", "--by", "tool"), None, "coder", "tool"),
        (("--since", "2026-11-02", "--agent", "planner", "--by", "day"), 1, "planner", "day"),
    ],
)
def test_stats_json_equals_the_workload(
    stores: dict[str, Any],
    remote: bool,
    args: tuple[str, ...],
    since_day: int | None,
    agent: str | None,
    by: str | None,
) -> None:
    got = stats_json(stores, remote, *args)
    want_totals, want_groups = oracle(since_day, agent, by)
    assert_same(got["totals"], want_totals)
    assert [g.get(by) for g in got["groups"]] == [g[by] for g in _ordered(want_groups, by)]
    for g, w in zip(got["groups"], _ordered(want_groups, by), strict=True):
        assert_same(g, w)
    assert got["by"] == ([by] if by else [])
    assert got["filters"]["agent"] == agent
    where = "database" if remote else "spool"
    assert where in got and got["prices"] == {"package": "genai-prices", "version": "0.2.3"}


def _ordered(groups: list[dict[str, Any]], by: str | None) -> list[dict[str, Any]]:
    """The documented order: days in order; agents and models by sessions, then name;
    tools by calls, then name."""
    if by == "day" or by is None:
        return groups
    if by == "tool":
        return sorted(groups, key=lambda g: (-g["tool_calls"], g["tool"]))
    return sorted(groups, key=lambda g: (-g["sessions"], g[by] is None, g[by] or ""))


def test_the_json_keys_are_the_documented_ones(stores: dict[str, Any]) -> None:
    doc = (REPO / "docs" / "CLI.md").read_text()
    got = stats_json(stores, True, "--by", "agent")
    for key in [*got, *got["totals"], *got["totals"]["sessions_by_status"], *got["filters"]]:
        assert f"`{key}`" in doc, f"stats --json key {key!r} is not in docs/CLI.md"


def test_the_text_report_reads_both_stores(stores: dict[str, Any]) -> None:
    for remote in (True, False):
        flags = ["--remote"] if remote else []
        result = run_cli("stats", *flags, "--by", "model", env=stores["env"], check=True)
        assert "sessions    6  (completed 4, error 2)" in result.stdout
        assert "local-llama" in result.stdout and "claude-sonnet-4-5" in result.stdout
        assert "1 session with tokens and no price" in result.stdout
