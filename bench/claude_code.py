"""Row 15: what hooks cost the real Claude Code, per hook event (tests/claude_cli.py).

A scripted ``claude -p`` session of 8 Bash calls (8 model turns each calling Bash
``true``, then a final text) against the fake Messages API, offline, timed from spawn
to exit. Each round runs three variants back to back, so each sees the same load: no
hooks; ``/bin/true`` as the command of every event agentspool's settings register (the
floor: what any command hook costs Claude Code); and agentspool's own hook, as
``agentspool hook claude-code --print-settings`` configures it (one ``dd`` appending
the event to the spool's inbox; the worker does the rest, off Claude Code's time). Added wall time per
event = (median of a variant - median without hooks) / hook events per session. The
events are counted once, from Claude Code's own debug log of an untimed agentspool run
("Hooks: <event> … finished with status 0 (N ms)"), which also gives how long Claude
Code saw each hook run. Every agentspool run must land its session in the spool.
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Config, Ref, Row, percentile

GROUP = "claude_code"
BASH_CALLS = 8
TARGET_BEYOND_NOOP_MS = 5.0  # issue 20: at most 5 ms per event beyond a no-op command hook
HOOK_RUN = re.compile(r"Hooks: (\w+)\S* \[(.*)\] finished with status (\d+) \((\d+)ms\)")
# SessionEnd hooks run as Claude Code exits and are logged apart, without a duration.
SESSION_END_RUN = re.compile(r"\] (SessionEnd)\S* \[(.*)\] completed with status (\d+)")


def run(cfg: Config) -> list[Row]:
    import sys

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.claude_cli import ClaudeHome, claude_binary, hook_settings
    from tests.fakes.anthropic_api import FakeAnthropicAPI
    from tests.netns import LoopbackNamespace

    rounds = cfg.size(9, 1)
    t0 = time.monotonic()
    binary = claude_binary()
    install_s = time.monotonic() - t0
    spool = cfg.workdir("claude-code-spool")
    variants: dict[str, Any] = {
        "none": None,
        "noop": hook_settings("/bin/true"),
        "agentspool": hook_settings(),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with LoopbackNamespace() as namespace, FakeAnthropicAPI(namespace.listen()) as api:
        homes = {
            name: ClaudeHome(
                binary, namespace, api.url, cfg.workdir(f"claude-{name}"), spool, settings
            )
            for name, settings in variants.items()
        }
        runs = 0

        def session(name: str, debug_file: Path | None = None) -> float:
            nonlocal runs
            runs += 1
            prompt = f"bench run {runs}: {BASH_CALLS} Bash calls"
            api.script(_turns(), when=prompt)
            started = time.perf_counter()
            homes[name].run(prompt, debug_file=debug_file)
            return (time.perf_counter() - started) * 1000.0

        warm_ups = [] if cfg.smoke else list(variants)
        for name in warm_ups:  # first runs in a fresh HOME do extra work
            session(name)
        debug_log = cfg.workdir("claude-debug") / "debug.log"
        session("agentspool", debug_log)
        events, hook_ms = _hook_runs(debug_log)
        for _ in range(rounds):
            for name in variants:
                times[name].append(session(name))
        if api.unscripted:
            raise AssertionError(f"{len(api.unscripted)} requests had no scripted turn")
    agentspool_runs = rounds + 1 + warm_ups.count("agentspool")  # + the debug-logged run
    landed = _sessions_in_spool(spool)
    if landed != agentspool_runs:
        raise AssertionError(f"{agentspool_runs} sessions expected in the spool, found {landed}")

    median = {name: statistics.median(samples) for name, samples in times.items()}
    per_event = {name: (median[name] - median["none"]) / events for name in ("noop", "agentspool")}
    seen = sorted(hook_ms)
    note_runs = (
        f"{rounds} interleaved rounds of an {BASH_CALLS}-Bash-call `claude -p` session with "
        f"{events} hook events; medians: no hooks {median['none']:.0f} ms, /bin/true "
        f"{median['noop']:.0f} ms, agentspool {median['agentspool']:.0f} ms per session"
    )
    return [
        Row(
            GROUP,
            "claude_code.session.no_hooks.p50",
            f"15. Claude Code, an {BASH_CALLS}-Bash-call session without hooks, median",
            median["none"],
            "ms",
            note=f"npm install (or the cached one) took {install_s:.1f} s before the runs",
        ),
        Row(
            GROUP,
            "claude_code.hook.noop.per_event",
            "15. Claude Code wall time added per hook event: /bin/true command hook",
            per_event["noop"],
            "ms",
        ),
        Row(
            GROUP,
            "claude_code.hook.agentspool.per_event",
            "15. Claude Code wall time added per hook event: agentspool hook",
            per_event["agentspool"],
            "ms",
            floor=Ref(per_event["noop"], "/bin/true command hook"),
            note=note_runs,
        ),
        Row(
            GROUP,
            "claude_code.hook.agentspool.beyond_noop",
            "15. agentspool hook beyond a no-op command hook, per event",
            per_event["agentspool"] - per_event["noop"],
            "ms",
            target=TARGET_BEYOND_NOOP_MS,
            note=(
                f"Claude Code's debug log timed the agentspool hook at median "
                f"{percentile(seen, 50):.0f} ms, p90 {percentile(seen, 90):.0f} ms, max "
                f"{seen[-1]:.0f} ms per event ({len(seen)} runs)"
            ),
        ),
    ]


def _turns() -> list[Any]:
    from tests.fakes.anthropic_api import text, tool_use, turn

    calls = [
        turn(tool_use("Bash", {"command": "true", "description": f"step {i}"}))
        for i in range(BASH_CALLS)
    ]
    return [*calls, turn(text("done"))]


def _hook_runs(debug_log: Path) -> tuple[int, list[float]]:
    """(hook events of the session, Claude Code's timing of each agentspool hook run)."""
    events = 0
    durations = []
    for line in debug_log.read_text(errors="replace").splitlines():
        found = HOOK_RUN.search(line) or SESSION_END_RUN.search(line)
        if not found or "/inbox/claude-code" not in found.group(2):
            continue  # not agentspool's hook (its command appends to the spool's inbox)
        if found.group(3) != "0":
            raise AssertionError(f"the agentspool hook exited {found.group(3)}: {line}")
        events += 1
        if found.re is HOOK_RUN:
            durations.append(float(found.group(4)))
    if not durations:
        raise AssertionError(f"no hook runs in Claude Code's debug log {debug_log}")
    return events, durations


def _sessions_in_spool(spool: Path) -> int:
    """Sessions the hooks' payloads make, once the worker's collector has taken them."""
    import json

    from agentspool.integrations.claude_code import collector
    from agentspool.producer import queuefile

    collected = collector.collect(str(spool), final=True)
    if collected.unreadable or collected.waiting:
        raise AssertionError(f"hook input left behind: {collected}")
    starts = 0
    for queue_dir in queuefile.list_queue_dirs(spool):
        conn = queuefile.connect(queue_dir, readonly=True)
        try:
            items = queuefile.read_pending(conn, 0, 10**9)
        finally:
            conn.close()
        starts += sum(1 for item in items if json.loads(item.data).get("type") == "session_start")
    return starts
